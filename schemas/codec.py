"""Encode/decode helpers for the wire contracts.

Decoding never raises on the hot path: bad bytes become a ``DeadLetter`` carrying the reason and
the record's source coordinates. The file format for event/label dumps is length-delimited protobuf
(each message preceded by its size as a base-128 varint, as ``writeDelimitedTo`` in Java).
"""

from __future__ import annotations

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

ErrorKind = pb.DeadLetter.ErrorKind


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a raw record came from: enough to find it again in Kafka."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


def dead_letter(raw: bytes, kind: int, message: str, source: SourceRef, time_ms: int) -> pb.DeadLetter:
    """Build the dead-letter record for ``raw`` (kept byte for byte)."""
    return pb.DeadLetter(
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        original=raw,
        error_kind=kind,  # type: ignore[arg-type]
        message=message,
        time_ms=time_ms,
    )


def validate_event(event: pb.Event, *, now_ms: int | None, max_future_ms: int) -> tuple[int, str] | None:
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
    if now_ms is not None and event.event_time_ms > now_ms + max_future_ms:
        ahead = event.event_time_ms - now_ms
        return (
            ErrorKind.FUTURE_EVENT_TIME,
            f"event_time_ms is {ahead} ms ahead of now (limit {max_future_ms})",
        )
    if event.type == pb.Event.TYPE_UNSPECIFIED:
        return ErrorKind.MISSING_TYPE, "type is TYPE_UNSPECIFIED"
    return None


def decode_event(
    raw: bytes | None,
    source: SourceRef = SourceRef(),
    *,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> pb.Event | pb.DeadLetter:
    """Parse and validate one ``Event``; on any problem return a ``DeadLetter`` instead of raising.

    ``now_ms`` is the decoder's clock for the future-time check; ``None`` disables that check
    (offline replay of recorded traffic, where wall-clock time is meaningless).
    """
    data = raw if raw is not None else b""
    event = pb.Event()
    try:
        event.ParseFromString(data)
    except DecodeError as exc:
        return dead_letter(
            data, ErrorKind.UNDECODABLE, f"not a valid Event protobuf: {exc}", source, _t(now_ms)
        )
    problem = validate_event(event, now_ms=now_ms, max_future_ms=max_future_ms)
    if problem is not None:
        return dead_letter(data, problem[0], problem[1], source, _t(now_ms))
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
