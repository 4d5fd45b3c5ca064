"""The fused layout's pure logic: its batch format (``RecordBatcher`` in Java packs it, ``split_batch``
unpacks it; the Java side is exercised end to end by the Flink job tests, ``test_flink_job_e2e.py``)
and which layout a job runs."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwarden.jobs.flink.fused import FLAG_BARRIER, split_batch
from streamwarden.jobs.flink.job import FlinkJobOptions, Layout, resolve_layout
from streamwarden.operators.errors import ConfigError


def _pack(records: list[bytes], flags: int = 0) -> bytes:
    """As ``RecordBatcher.emit``: big-endian int32 count, flags byte, int32 length + bytes per record."""
    body = b"".join(struct.pack(">i", len(r)) + r for r in records)
    return struct.pack(">iB", len(records), flags) + body


@given(st.lists(st.binary(max_size=300), max_size=40), st.sampled_from([0, FLAG_BARRIER]))
def test_split_batch_gives_back_the_records_in_order_and_the_flags(records: list[bytes], flags: int) -> None:
    assert split_batch(_pack(records, flags)) == (records, flags)


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        (_pack([b"abc", b"de"])[:-1], "overruns"),
        (_pack([b"abc"]) + b"x", "1 bytes after"),
        (struct.pack(">iB", 2, 0) + struct.pack(">i", 1) + b"a", "ends after 1"),
        (struct.pack(">iB", 1, 0) + struct.pack(">i", -5), "length -5"),
        (b"\x00\x00\x00", "no header"),
    ],
)
def test_split_batch_rejects_a_batch_that_does_not_hold_its_records(batch: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_batch(batch)


@pytest.mark.parametrize(
    ("layout", "parallelism", "naive", "want"),
    [
        ("auto", 1, False, "fused"),
        ("auto", 2, False, "staged"),
        ("auto", 1, True, "staged"),
        ("staged", 1, False, "staged"),
        ("fused", 1, False, "fused"),
    ],
)
def test_auto_layout_is_fused_at_parallelism_1_else_staged(
    layout: Layout, parallelism: int, naive: bool, want: str
) -> None:
    options = FlinkJobOptions(layout=layout, naive=naive)  # type: ignore[call-arg]
    assert resolve_layout(options, parallelism) == want


@pytest.mark.parametrize(("parallelism", "naive", "why"), [(2, False, "parallelism 2"), (1, True, "naive")])
def test_a_fused_layout_it_cannot_run_fails_at_start_up(parallelism: int, naive: bool, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        resolve_layout(FlinkJobOptions(layout="fused", naive=naive), parallelism)  # type: ignore[call-arg]
