"""Encode/decode helpers for the wire contracts.

Decoding never raises on the hot path: bad bytes become a ``DeadLetter`` carrying the reason and
the record's source coordinates. The file format for event/label dumps is length-delimited protobuf
(each message preceded by its size as a base-128 varint, as ``writeDelimitedTo`` in Java).

Kafka records are either a plain serialized ``Event`` or an ``Event`` in Confluent Schema Registry
framing (what ``confluent_kafka.schema_registry.protobuf.ProtobufSerializer`` and the Java
``KafkaProtobufSerializer`` write): magic byte 0, the schema id as 4 bytes big-endian, the message
index path as zig-zag varints (a count, then the indexes; the single byte 0 stands for ``[0]``, the
first message of the file), then the protobuf payload. A plain protobuf message never starts with byte 0
(field number 0 is invalid), so the two are told apart by the first byte (``framing="auto"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from google.protobuf.message import DecodeError

from streamwarden.schemas import streamwarden_pb2 as pb

SCHEMA_VERSION = 1
"""The ``Event.schema_version`` this code writes and the only one it accepts (0, the proto3 default of a
producer that does not set it, means this one)."""

SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
CONFLUENT_MAGIC = 0
"""First byte of a record in Confluent Schema Registry framing."""
Framing = Literal["auto", "plain", "confluent"]
"""How Kafka records carry an ``Event``: ``plain`` protobuf, ``confluent`` Schema Registry framing, or
``auto`` (by the first byte)."""
DEFAULT_MAX_FUTURE_MS = 5 * 60 * 1000
"""Events stamped further than this ahead of the decoder's clock are rejected as FUTURE_EVENT_TIME."""

MAX_EVENT_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the largest event time accepted (engines turn times into microseconds)."""

ErrorKind = pb.DeadLetter.ErrorKind


@dataclass(frozen=True, slots=True)
class RecordLimits:
    """Bounds that keep one record from stopping the job: each violation is a dead letter of its own kind."""

    max_record_bytes: int = 256 * 1024
    """Larger records are dead-lettered as ``RECORD_TOO_LARGE`` unparsed (an event is ~150 bytes)."""
    max_id_bytes: int = 1024
    """Limit of every id-like string (event, account, IP, device, country, target, content hash)."""
    max_text_bytes: int = 8192
    """Limit of free-text strings (the user agent)."""
    max_dead_letter_original_bytes: int = 64 * 1024
    """A dead letter keeps at most this much of the original record (then its size and SHA-256), so a
    dead letter never exceeds the producer's message size limit."""
    max_message_chars: int = 1000
    """A dead letter's reason is cut to this length."""
    max_attributes: int = 64
    """Most ``Event.attributes`` entries an event may carry (each key and value within ``max_id_bytes``)."""


DEFAULT_LIMITS = RecordLimits()


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a raw record came from: enough to find it again in Kafka."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


def dead_letter(
    raw: bytes,
    kind: int,
    message: str,
    source: SourceRef,
    time_ms: int,
    *,
    limits: RecordLimits = DEFAULT_LIMITS,
    stage: str = "",
) -> pb.DeadLetter:
    """Build the dead-letter record for ``raw``: kept byte for byte up to
    ``limits.max_dead_letter_original_bytes``, beyond that cut short with its SHA-256 recorded."""
    keep = limits.max_dead_letter_original_bytes
    truncated = len(raw) > keep
    if len(message) > limits.max_message_chars:
        message = message[: limits.max_message_chars - 1] + "…"
    return pb.DeadLetter(
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        original=raw[:keep] if truncated else raw,
        error_kind=kind,  # type: ignore[arg-type]
        message=message,
        time_ms=time_ms,
        original_size=len(raw),
        original_sha256=hashlib.sha256(raw).hexdigest() if truncated else "",
        stage=stage,
    )


def _too_long(event: pb.Event, limits: RecordLimits) -> tuple[str, int, int] | None:
    """The first string field over its limit: ``(field path, length in bytes, limit)``."""
    a, t, c = event.actor, event.target, event.content
    ids = (
        ("event_id", event.event_id),
        ("actor.account_id", a.account_id),
        ("actor.ip", a.ip),
        ("actor.device_id", a.device_id),
        ("actor.country", a.country),
        ("target.account_id", t.account_id),
        ("target.content_id", t.content_id),
        ("content.content_hash", c.content_hash),
    )
    for name, value in ids:
        # len(str) <= len(utf-8) <= 4 * len(str): the encode runs only for strings near the limit.
        if len(value) * 4 > limits.max_id_bytes and (n := len(value.encode("utf-8"))) > limits.max_id_bytes:
            return name, n, limits.max_id_bytes
    for key, value in event.attributes.items():
        for part, text in (("key", key), ("value", value)):
            if len(text) * 4 > limits.max_id_bytes and (n := len(text.encode("utf-8"))) > limits.max_id_bytes:
                return f"attributes[{key[:40]!r}] {part}", n, limits.max_id_bytes
    ua = a.user_agent
    if len(ua) * 4 > limits.max_text_bytes and (n := len(ua.encode("utf-8"))) > limits.max_text_bytes:
        return "actor.user_agent", n, limits.max_text_bytes
    return None


def validate_event(
    event: pb.Event, *, now_ms: int | None, max_future_ms: int, limits: RecordLimits = DEFAULT_LIMITS
) -> tuple[int, str] | None:
    """Return ``(error kind, reason)`` if ``event`` breaks the contract, else ``None``."""
    if event.schema_version and event.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        return ErrorKind.UNKNOWN_SCHEMA_VERSION, (
            f"schema_version {event.schema_version} not in {sorted(SUPPORTED_SCHEMA_VERSIONS)}"
        )
    if not event.event_id:
        return ErrorKind.MISSING_EVENT_ID, "event_id is empty"
    if event.event_time_ms == 0:
        return ErrorKind.MISSING_EVENT_TIME, "event_time_ms is missing (0)"
    if event.event_time_ms < 0:
        return ErrorKind.NEGATIVE_EVENT_TIME, f"event_time_ms {event.event_time_ms} is negative"
    if event.event_time_ms > MAX_EVENT_TIME_MS:
        return (
            ErrorKind.EVENT_TIME_OUT_OF_RANGE,
            f"event_time_ms {event.event_time_ms} is after {MAX_EVENT_TIME_MS} (year 9999)",
        )
    if now_ms is not None and event.event_time_ms > now_ms + max_future_ms:
        ahead = event.event_time_ms - now_ms
        return (
            ErrorKind.FUTURE_EVENT_TIME,
            f"event_time_ms is {ahead} ms ahead of now (limit {max_future_ms})",
        )
    if event.type == pb.Event.TYPE_UNSPECIFIED:
        return ErrorKind.MISSING_TYPE, "type is TYPE_UNSPECIFIED"
    if len(event.attributes) > limits.max_attributes:
        return (
            ErrorKind.FIELD_TOO_LONG,
            f"attributes has {len(event.attributes)} entries (limit {limits.max_attributes})",
        )
    long_field = _too_long(event, limits)
    if long_field is not None:
        name, n, limit = long_field
        return ErrorKind.FIELD_TOO_LONG, f"{name} is {n} bytes (limit {limit})"
    return None


def decode_event(
    raw: bytes | None,
    source: SourceRef = SourceRef(),
    *,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    limits: RecordLimits = DEFAULT_LIMITS,
    framing: Framing = "auto",
    schema_ids: frozenset[int] | None = None,
) -> pb.Event | pb.DeadLetter:
    """Parse and validate one ``Event``; on any problem return a ``DeadLetter`` instead of raising.

    ``now_ms`` is the decoder's clock for the future-time check; ``None`` disables that check
    (offline replay of recorded traffic, where wall-clock time is meaningless). ``framing`` says how the
    record carries the event (module docstring); ``schema_ids``, if given, are the Schema Registry ids a
    framed record may name (others are ``UNKNOWN_SCHEMA_VERSION``). The framing is checked before the
    payload is parsed.
    """
    data = raw if raw is not None else b""
    if len(data) > limits.max_record_bytes:
        return dead_letter(
            data,
            ErrorKind.RECORD_TOO_LARGE,
            f"record is {len(data)} bytes (limit {limits.max_record_bytes})",
            source,
            _t(now_ms),
            limits=limits,
        )
    payload = data
    if framing == "confluent" or (framing == "auto" and data[:1] == b"\x00"):
        try:
            frame = split_confluent_frame(data)
        except ValueError as exc:
            return dead_letter(data, ErrorKind.UNDECODABLE, str(exc), source, _t(now_ms), limits=limits)
        if frame.message_indexes != EVENT_MESSAGE_INDEXES:
            return dead_letter(
                data,
                ErrorKind.UNDECODABLE,
                f"Schema Registry message index {list(frame.message_indexes)} is not Event "
                f"({list(EVENT_MESSAGE_INDEXES)}) in schema id {frame.schema_id}",
                source,
                _t(now_ms),
                limits=limits,
            )
        if schema_ids is not None and frame.schema_id not in schema_ids:
            return dead_letter(
                data,
                ErrorKind.UNKNOWN_SCHEMA_VERSION,
                f"Schema Registry schema id {frame.schema_id} is not one of {sorted(schema_ids)}",
                source,
                _t(now_ms),
                limits=limits,
            )
        payload = data[frame.payload_offset :]
    event = pb.Event()
    try:
        event.ParseFromString(payload)
    except (DecodeError, RecursionError, ValueError) as exc:
        return dead_letter(
            data,
            ErrorKind.UNDECODABLE,
            f"not a valid Event protobuf: {exc}",
            source,
            _t(now_ms),
            limits=limits,
        )
    problem = validate_event(event, now_ms=now_ms, max_future_ms=max_future_ms, limits=limits)
    if problem is not None:
        return dead_letter(data, problem[0], problem[1], source, _t(now_ms), limits=limits)
    return event


@dataclass(frozen=True, slots=True)
class ConfluentFrame:
    """The Schema Registry header of one record."""

    schema_id: int
    message_indexes: tuple[int, ...]
    """Path of the message type in the schema's file: ``(0,)`` is its first top-level message."""
    payload_offset: int
    """Where the protobuf payload starts."""


EVENT_MESSAGE_INDEXES: tuple[int, ...] = (
    list(pb.DESCRIPTOR.message_types_by_name).index(pb.Event.DESCRIPTOR.name),
)
"""``Event``'s index path in ``streamwarden.proto`` (the schema a producer registers)."""

_MAX_INDEXES = 16


def _zigzag_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("Schema Registry framing: truncated message index varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("Schema Registry framing: message index varint longer than 10 bytes")


def split_confluent_frame(data: bytes) -> ConfluentFrame:
    """Read the Confluent Schema Registry header of ``data``; ``ValueError`` says what is wrong."""
    if len(data) < 6:
        raise ValueError(f"Schema Registry framing: record is {len(data)} bytes, shorter than the header")
    if data[0] != CONFLUENT_MAGIC:
        raise ValueError(f"Schema Registry framing: magic byte is {data[0]}, expected {CONFLUENT_MAGIC}")
    schema_id = int.from_bytes(data[1:5], "big")
    count, pos = _zigzag_varint(data, 5)
    if count == 0:  # the one-byte shorthand for [0]
        return ConfluentFrame(schema_id, (0,), pos)
    if not 0 < count <= _MAX_INDEXES:
        raise ValueError(f"Schema Registry framing: message index count {count} out of range")
    indexes = []
    for _ in range(count):
        index, pos = _zigzag_varint(data, pos)
        if index < 0:
            raise ValueError(f"Schema Registry framing: negative message index {index}")
        indexes.append(index)
    return ConfluentFrame(schema_id, tuple(indexes), pos)


def confluent_frame(payload: bytes, schema_id: int, message_indexes: tuple[int, ...] = (0,)) -> bytes:
    """``payload`` in Schema Registry framing (what the Confluent serializers write)."""
    if message_indexes == (0,):
        index_bytes = b"\x00"
    else:
        zz = [(i << 1) ^ (i >> 63) for i in (len(message_indexes), *message_indexes)]
        index_bytes = b"".join(_encode_varint(v) for v in zz)
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big") + index_bytes + payload


def _t(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else 0


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def write_delimited(stream: BinaryIO, payloads: Iterable[bytes]) -> int:
    """Write each payload preceded by its varint length; return how many were written."""
    n = 0
    for payload in payloads:
        stream.write(_encode_varint(len(payload)))
        stream.write(payload)
        n += 1
    return n


def read_delimited(stream: BinaryIO) -> Iterator[bytes]:
    """Yield the payloads of a length-delimited stream; raise ``ValueError`` on a truncated tail."""
    while True:
        size = 0
        shift = 0
        while True:
            b = stream.read(1)
            if not b:
                if shift == 0:
                    return
                raise ValueError("truncated varint length at end of stream")
            size |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                break
            shift += 7
            if shift > 63:
                raise ValueError("varint length longer than 10 bytes")
        payload = stream.read(size)
        if len(payload) != size:
            raise ValueError(f"truncated record: expected {size} bytes, got {len(payload)}")
        yield payload
