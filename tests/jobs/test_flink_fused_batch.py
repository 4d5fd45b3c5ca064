"""The fused layout's batch format (``RecordBatcher`` in Java packs it, ``split_batch`` unpacks it);
the Java side is exercised end to end by the Flink job tests (``test_flink_job_e2e.py``)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwarden.jobs.flink.fused import split_batch


def _pack(records: list[bytes]) -> bytes:
    """As ``RecordBatcher.emit``: big-endian int32 count, then int32 length + bytes per record."""
    return struct.pack(">i", len(records)) + b"".join(struct.pack(">i", len(r)) + r for r in records)


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_split_batch_gives_back_the_records_in_order(records: list[bytes]) -> None:
    assert split_batch(_pack(records)) == records


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        (_pack([b"abc", b"de"])[:-1], "overruns"),
        (_pack([b"abc"]) + b"x", "1 bytes after"),
        (struct.pack(">i", 2) + struct.pack(">i", 1) + b"a", "ends after 1"),
        (struct.pack(">i", 1) + struct.pack(">i", -5), "length -5"),
    ],
)
def test_split_batch_rejects_a_batch_that_does_not_hold_its_records(batch: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_batch(batch)
