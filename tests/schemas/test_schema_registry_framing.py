"""Confluent Schema Registry framing: records written by confluent-kafka's own ProtobufSerializer (with
the in-memory registry client confluent-kafka ships, ``MockSchemaRegistryClient``) decode as events;
bad framing is a dead letter that keeps the record; plain protobuf keeps working next to it."""

from __future__ import annotations

import pytest

# confluent-kafka's in-memory registry (the 'registry' extra; a real Schema Registry is a Java service)
from confluent_kafka.schema_registry._sync import mock_schema_registry_client as registry
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given
from hypothesis import strategies as st

from streamwarden.jobs.config import JobConfig
from streamwarden.jobs.schema_registry import accepted_schema_ids, event_serializer
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import (
    SCHEMA_VERSION,
    SourceRef,
    confluent_frame,
    decode_event,
    split_confluent_frame,
)

NOW_MS = 1_750_000_000_000
SRC = SourceRef("events", 0, 7)


def _event() -> pb.Event:
    return pb.Event(
        event_id="e-1",
        event_time_ms=NOW_MS - 1000,
        type=pb.Event.PLAY,
        schema_version=SCHEMA_VERSION,
        actor=pb.Actor(account_id="a1", ip="10.0.0.1"),
        attributes={"plan": "free", "region": "eu-west"},
    )


def _serialized(client: object) -> bytes:
    serializer = event_serializer(client)
    out = serializer(_event(), SerializationContext("events", MessageField.VALUE))
    assert isinstance(out, bytes)
    return out


def test_the_confluent_serializer_output_decodes_as_the_event() -> None:
    client = registry.MockSchemaRegistryClient({"url": "mock://streamwarden"})
    raw = _serialized(client)
    assert raw[0] == 0 and raw != _event().SerializeToString()  # really framed
    frame = split_confluent_frame(raw)
    assert frame.message_indexes == (0,)
    assert raw[frame.payload_offset :] == _event().SerializeToString()
    for framing in ("auto", "confluent"):
        out = decode_event(raw, SRC, now_ms=NOW_MS, framing=framing)  # type: ignore[arg-type]
        assert out == _event()
    # the ids the job accepts come from the registry's subject (TopicNameStrategy: events-value)
    ids = accepted_schema_ids(JobConfig(), client)
    assert ids == frozenset({frame.schema_id})
    assert decode_event(raw, SRC, now_ms=NOW_MS, schema_ids=ids) == _event()
    other = decode_event(raw, SRC, now_ms=NOW_MS, schema_ids=frozenset({frame.schema_id + 1}))
    assert isinstance(other, pb.DeadLetter)
    assert other.error_kind == pb.DeadLetter.UNKNOWN_SCHEMA_VERSION
    assert other.original == raw


def test_hand_built_framing_matches_the_serializer() -> None:
    client = registry.MockSchemaRegistryClient({"url": "mock://streamwarden"})
    raw = _serialized(client)
    frame = split_confluent_frame(raw)
    assert confluent_frame(_event().SerializeToString(), frame.schema_id) == raw


def test_plain_protobuf_still_decodes_under_auto_but_not_under_confluent() -> None:
    plain = _event().SerializeToString()
    assert decode_event(plain, SRC, now_ms=NOW_MS) == _event()
    refused = decode_event(plain, SRC, now_ms=NOW_MS, framing="confluent")
    assert isinstance(refused, pb.DeadLetter) and refused.error_kind == pb.DeadLetter.UNDECODABLE
    assert "magic byte" in refused.message
    framed = confluent_frame(plain, 3)
    refused = decode_event(framed, SRC, now_ms=NOW_MS, framing="plain")
    assert isinstance(refused, pb.DeadLetter) and refused.error_kind == pb.DeadLetter.UNDECODABLE


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\x00\x00\x00", "shorter than the header"),
        (b"\x00\x00\x00\x00\x01\x80", "truncated message index"),
        (confluent_frame(b"\x0a\x01x", 1, (2,)), "message index [2] is not Event"),
        (confluent_frame(b"\x0a\x01x", 1, (0, 1)), "message index [0, 1] is not Event"),
    ],
)
def test_bad_framing_is_a_dead_letter_with_the_reason(raw: bytes, needle: str) -> None:
    out = decode_event(raw, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.DeadLetter)
    assert out.error_kind == pb.DeadLetter.UNDECODABLE
    assert needle in out.message
    assert out.original == raw and out.source_offset == 7


def test_framing_is_checked_before_the_size_limit_is_lifted() -> None:
    from streamwarden.schemas.codec import RecordLimits

    big = confluent_frame(b"\x0a\x01x" * 1000, 1)
    out = decode_event(big, SRC, now_ms=NOW_MS, limits=RecordLimits(max_record_bytes=1024))
    assert isinstance(out, pb.DeadLetter) and out.error_kind == pb.DeadLetter.RECORD_TOO_LARGE


@given(st.binary(max_size=200))
def test_framed_decode_never_raises(tail: bytes) -> None:
    out = decode_event(b"\x00" + tail, SRC, now_ms=NOW_MS)
    assert isinstance(out, pb.Event | pb.DeadLetter)
