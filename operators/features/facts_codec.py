"""Versioned bytes of one event's ``EventFacts`` (between the Flink stages, in Flink's velocity log and
in the assembly state): never pickled.

* Layout 1 (facts without attributes, the common case: no extra byte): ``<B`` version, the integer
  fields as i64 and the string fields' UTF-8 lengths as u32 (both in field order), then the UTF-8
  strings back to back.
* Layout 2 (facts with attributes): layout 1 with version 2, then the attributes (``encode_attributes``).

Attributes: ``<H`` pair count, then per pair (in key order) ``<HH`` key and value UTF-8 lengths and the
two strings. u16 bounds them: a decoded event has at most ``limits.max_attributes`` (≤ 10,000) entries,
each within ``limits.max_id_bytes`` (≤ 65,535), or it is a dead letter before it has facts.
"""

from __future__ import annotations

import struct
from typing import Any

from streamwarden.operators.features.fanout import N_PLAIN_FIELDS, Attributes, EventFacts

FACTS_LAYOUT_VERSION = 1
"""Layout of facts without attributes (written for them, so their bytes are those of earlier releases)."""
FACTS_LAYOUT_ATTRIBUTES = 2
"""Layout of facts with attributes."""

_SAMPLE = EventFacts("", 0, 0, "", "", "", "", "", "", "", "", "", 0, 0, 0, 0, 0, 0)
_STR_FIELDS = tuple(i for i, v in enumerate(_SAMPLE[:N_PLAIN_FIELDS]) if isinstance(v, str))
_INT_FIELDS = tuple(i for i, v in enumerate(_SAMPLE[:N_PLAIN_FIELDS]) if not isinstance(v, str))
_FACTS_HEADER = struct.Struct(f"<B{len(_INT_FIELDS)}q{len(_STR_FIELDS)}I")
_N_INT = len(_INT_FIELDS)
_COUNT = struct.Struct("<H")
_PAIR = struct.Struct("<HH")
_new_facts = tuple.__new__


def encode_attributes(pairs: Attributes) -> bytes:
    """``<H`` count, then per pair ``<HH`` lengths and the UTF-8 key and value."""
    out = [_COUNT.pack(len(pairs))]
    for key, value in pairs:
        k, v = key.encode("utf-8"), value.encode("utf-8")
        out += (_PAIR.pack(len(k), len(v)), k, v)
    return b"".join(out)


def decode_attributes(data: bytes, pos: int) -> tuple[Attributes, int]:
    """Inverse of ``encode_attributes`` from ``pos``: (pairs, position after them)."""
    (n,) = _COUNT.unpack_from(data, pos)
    pos += _COUNT.size
    pairs: list[tuple[str, str]] = []
    for _ in range(n):
        nk, nv = _PAIR.unpack_from(data, pos)
        pos += _PAIR.size
        key = data[pos : pos + nk].decode("utf-8")
        pos += nk
        value = data[pos : pos + nv].decode("utf-8")
        pos += nv
        pairs.append((key, value))
    if pos > len(data):
        raise ValueError("attributes run past the end of the facts bytes")
    return tuple(pairs), pos


def encode_facts(f: EventFacts) -> bytes:
    """Layout 1 for facts without attributes, layout 2 (the attributes after the strings) with them."""
    fields: tuple[Any, ...] = f
    raws = [fields[i].encode("utf-8") for i in _STR_FIELDS]
    attributes: Attributes = fields[N_PLAIN_FIELDS] if len(fields) > N_PLAIN_FIELDS else ()
    version = FACTS_LAYOUT_ATTRIBUTES if attributes else FACTS_LAYOUT_VERSION
    head = _FACTS_HEADER.pack(version, *[fields[i] for i in _INT_FIELDS], *map(len, raws))
    if attributes:
        return head + b"".join(raws) + encode_attributes(attributes)
    return head + b"".join(raws)


def decode_facts(data: bytes) -> EventFacts:
    """Inverse of ``encode_facts`` (layouts 1 and 2); raises ``ValueError`` on another layout version."""
    head = _FACTS_HEADER.unpack_from(data, 0)
    version = head[0]
    if version != FACTS_LAYOUT_VERSION and version != FACTS_LAYOUT_ATTRIBUTES:
        raise ValueError(
            f"facts layout v{version} is not v{FACTS_LAYOUT_VERSION} or v{FACTS_LAYOUT_ATTRIBUTES}"
        )
    values: list[Any] = [None] * len(_SAMPLE)
    for i, v in zip(_INT_FIELDS, head[1 : 1 + _N_INT], strict=True):
        values[i] = v
    pos = _FACTS_HEADER.size
    for i, n in zip(_STR_FIELDS, head[1 + _N_INT :], strict=True):
        values[i] = data[pos : pos + n].decode("utf-8")
        pos += n
    values[N_PLAIN_FIELDS] = decode_attributes(data, pos)[0] if version == FACTS_LAYOUT_ATTRIBUTES else ()
    return _new_facts(EventFacts, values)
