"""Encode/decode helpers for the wire contracts.

Decoding never raises on the hot path: bad bytes become a ``DeadLetter`` carrying the reason and
the record's source coordinates. The file format for event/label dumps is length-delimited protobuf
(each message preceded by its size as a base-128 varint, as ``writeDelimitedTo`` in Java).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from google.protobuf.message import DecodeError

from streamwarden.schemas import streamwarden_pb2 as pb

SCHEMA_VERSION = 1
"""The ``Event.schema_version`` this code writes and the only one it accepts."""

SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
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
    ua = a.user_agent
    if len(ua) * 4 > limits.max_text_bytes and (n := len(ua.encode("utf-8"))) > limits.max_text_bytes:
        return "actor.user_agent", n, limits.max_text_bytes
    return None


def validate_event(
    event: pb.Event, *, now_ms: int | None, max_future_ms: int, limits: RecordLimits = DEFAULT_LIMITS
) -> tuple[int, str] | None:
    """Return ``(error kind, reason)`` if ``event`` breaks the contract, else ``None``."""
    if event.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
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
) -> pb.Event | pb.DeadLetter:
    """Parse and validate one ``Event``; on any problem return a ``DeadLetter`` instead of raising.

    ``now_ms`` is the decoder's clock for the future-time check; ``None`` disables that check
    (offline replay of recorded traffic, where wall-clock time is meaningless).
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
    event = pb.Event()
    try:
        event.ParseFromString(data)
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
