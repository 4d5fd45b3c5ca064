"""The wire contracts: generated code is current, decoding turns every bad record into a precise dead letter."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import (
    SCHEMA_VERSION,
    SourceRef,
    decode_event,
    read_delimited,
    write_delimited,
)
from streamwarden.schemas.generate import main as generate_main

NOW_MS = 1_750_000_000_000
SRC = SourceRef("events", 2, 41)


def _event(**overrides: object) -> pb.Event:
    fields: dict[str, object] = {
        "event_id": "e-1",
        "event_time_ms": NOW_MS - 1000,
        "type": pb.Event.PLAY,
        "schema_version": SCHEMA_VERSION,
    }
    fields.update(overrides)
    return pb.Event(**fields)  # type: ignore[arg-type]


def test_generated_code_matches_proto_sources() -> None:
    assert generate_main(["--check"]) == 0


def test_valid_event_decodes() -> None:
    raw = _event(actor=pb.Actor(account_id="a1", ip="10.0.0.1")).SerializeToString()
    out = decode_event(raw, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.Event)
    assert out.actor.account_id == "a1"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"\xff\xff\xff\xff", pb.DeadLetter.UNDECODABLE),
        (_event(event_id="").SerializeToString(), pb.DeadLetter.MISSING_EVENT_ID),
        (_event(event_time_ms=0).SerializeToString(), pb.DeadLetter.MISSING_EVENT_TIME),
        (_event(event_time_ms=-5).SerializeToString(), pb.DeadLetter.NEGATIVE_EVENT_TIME),
        (_event(event_time_ms=NOW_MS + 3_600_000).SerializeToString(), pb.DeadLetter.FUTURE_EVENT_TIME),
        (_event(schema_version=99).SerializeToString(), pb.DeadLetter.UNKNOWN_SCHEMA_VERSION),
        (_event(type=pb.Event.TYPE_UNSPECIFIED).SerializeToString(), pb.DeadLetter.MISSING_TYPE),
        (b"", pb.DeadLetter.MISSING_EVENT_ID),  # schema_version 0 = current; then the empty id
    ],
)
def test_bad_records_become_dead_letters_with_reason_and_source(raw: bytes, kind: int) -> None:
    out = decode_event(raw, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.DeadLetter)
    assert out.error_kind == kind
    assert out.message
    assert (out.source_topic, out.source_partition, out.source_offset) == ("events", 2, 41)
    assert out.original == raw
    assert out.time_ms == NOW_MS


def test_missing_schema_version_means_the_current_one() -> None:
    out = decode_event(_event(schema_version=0).SerializeToString(), SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.Event)
    assert out.event_id == "e-1"


def test_attribute_limits_are_dead_letters() -> None:
    too_many = _event(attributes={f"k{i}": "v" for i in range(65)}).SerializeToString()
    out = decode_event(too_many, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.DeadLetter) and out.error_kind == pb.DeadLetter.FIELD_TOO_LONG
    assert "65 entries" in out.message
    long_value = _event(attributes={"plan": "x" * 2000}).SerializeToString()
    out = decode_event(long_value, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.DeadLetter) and out.error_kind == pb.DeadLetter.FIELD_TOO_LONG
    assert "attributes['plan'] value" in out.message
    ok = decode_event(_event(attributes={"plan": "free"}).SerializeToString(), SRC, now_ms=NOW_MS)
    assert isinstance(ok, pb.Event) and ok.attributes["plan"] == "free"


def test_future_check_is_off_without_a_clock() -> None:
    raw = _event(event_time_ms=NOW_MS + 3_600_000).SerializeToString()
    assert isinstance(decode_event(raw), pb.Event)


@given(st.binary(max_size=300))
def test_decode_never_raises(raw: bytes) -> None:
    out = decode_event(raw, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.Event | pb.DeadLetter)
    if isinstance(out, pb.DeadLetter):
        assert out.original == raw


@given(st.lists(st.binary(max_size=400), max_size=50))
def test_delimited_round_trip(payloads: list[bytes]) -> None:
    buf = io.BytesIO()
    assert write_delimited(buf, payloads) == len(payloads)
    buf.seek(0)
    assert list(read_delimited(buf)) == payloads


def test_delimited_truncated_tail_is_an_error() -> None:
    buf = io.BytesIO()
    write_delimited(buf, [b"abc", b"defgh"])
    cut = io.BytesIO(buf.getvalue()[:-2])
    with pytest.raises(ValueError, match="truncated"):
        list(read_delimited(cut))
