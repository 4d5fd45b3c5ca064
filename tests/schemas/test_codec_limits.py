"""No single record can break decoding: size, string-length and time bounds are dead letters of their
own kind, dead letters stay under the producer's limit, and arbitrary bytes never raise."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import (
    DEFAULT_LIMITS,
    MAX_EVENT_TIME_MS,
    SCHEMA_VERSION,
    RecordLimits,
    SourceRef,
    decode_event,
)

SOURCE = SourceRef("events", 2, 41)
Kind = pb.DeadLetter.ErrorKind


def _event(**overrides: object) -> pb.Event:
    event = pb.Event(
        event_id="e1",
        event_time_ms=1_735_689_600_000,
        type=pb.Event.PLAY,
        schema_version=SCHEMA_VERSION,
        actor=pb.Actor(account_id="a1", ip="10.0.0.1", device_id="d1", asn=7, user_agent="ua"),
        target=pb.Target(content_id="t1"),
    )
    for path, value in overrides.items():
        node: object = event
        *parents, leaf = path.split("__")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return event


def _letter(raw: bytes, limits: RecordLimits = DEFAULT_LIMITS) -> pb.DeadLetter:
    out = decode_event(raw, SOURCE, now_ms=None, limits=limits)
    assert isinstance(out, pb.DeadLetter)
    assert (out.source_topic, out.source_partition, out.source_offset) == ("events", 2, 41)
    return out


def test_event_time_at_the_int64_limit_is_out_of_range_not_a_crash() -> None:
    letter = _letter(_event(event_time_ms=2**63 - 1).SerializeToString())
    assert letter.error_kind == Kind.EVENT_TIME_OUT_OF_RANGE
    ok = decode_event(_event(event_time_ms=MAX_EVENT_TIME_MS).SerializeToString(), SOURCE)
    assert isinstance(ok, pb.Event)


def test_an_id_longer_than_its_limit_names_the_field() -> None:
    letter = _letter(_event(actor__account_id="x" * 70_000).SerializeToString())
    assert letter.error_kind == Kind.FIELD_TOO_LONG
    assert "actor.account_id" in letter.message and "70000" in letter.message
    # multi-byte characters count in bytes: 300 x 4 bytes > 1024
    letter = _letter(_event(target__content_id="\U0001f3b5" * 300).SerializeToString())
    assert "target.content_id is 1200 bytes" in letter.message
    assert isinstance(
        decode_event(_event(actor__user_agent="u" * 5000).SerializeToString(), SOURCE), pb.Event
    )


def test_a_huge_record_is_dead_lettered_unparsed_and_cut_to_the_limit() -> None:
    raw = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    letter = _letter(raw)
    assert letter.error_kind == Kind.RECORD_TOO_LARGE
    keep = DEFAULT_LIMITS.max_dead_letter_original_bytes
    assert letter.original == raw[:keep]
    assert letter.original_size == len(raw)
    assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(letter.SerializeToString()) < keep + 2000


def test_small_dead_letters_keep_the_whole_record_and_no_hash() -> None:
    raw = b"\xff\x00garbage"
    letter = _letter(raw)
    assert letter.error_kind == Kind.UNDECODABLE
    assert (letter.original, letter.original_size, letter.original_sha256) == (raw, len(raw), "")


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    out = decode_event(raw, SOURCE, now_ms=1_735_689_600_000)
    if isinstance(out, pb.DeadLetter):
        assert out.error_kind != Kind.ERROR_KIND_UNSPECIFIED
        assert out.message
        assert out.original == raw


@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=3000),
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_extreme_field_values_never_raise(time_ms: int, text: str, junk: bytes, asn: int) -> None:
    event = _event(event_time_ms=time_ms, actor__account_id=text, actor__asn=asn, actor__user_agent=text * 3)
    raw = event.SerializeToString() + junk
    limits = RecordLimits(max_id_bytes=512, max_text_bytes=1024)
    out = decode_event(raw, SOURCE, now_ms=None, limits=limits)
    if isinstance(out, pb.Event):
        assert 0 < out.event_time_ms <= MAX_EVENT_TIME_MS
        assert len(out.actor.account_id.encode()) <= 512
    else:
        assert out.error_kind != Kind.ERROR_KIND_UNSPECIFIED
