"""Versioned byte layout of a ``KeyState`` (engines keep it as bytes in keyed state; never pickle).

The core (``core/src/codec.rs``) writes layout 2 and reads layouts 1 and 2, so state saved by a
release that wrote layout 1 (a Flink savepoint, a Beam state) restores and is rewritten as layout 2 on
its next update. Both start with the magic ``SWK``, the layout version byte, the EntityKind byte, the
window count byte and the spec fingerprint (CRC-32, u32 LE; state written under another spec is
refused). ``NO_TIME`` as high-water mark means an empty state: nothing follows the header.

Layout 2 (varints are unsigned LEB128; a *vector* is, per 64 columns, a varint bitmap of the non-zero
lanes followed by those lanes as varints):

* header, then ``late_events`` (varint) and the high-water mark ``h`` (zigzag varint);
* per window: the number of non-empty closed buckets (varint), each as its age ``b(h) - b`` (varint,
  strictly decreasing, in ``1 .. n-1``) and its vector, then the head bucket's vector;
* per distinct aggregation a mode varint: exact (0): the value count (varint), then per value, in
  ascending hash order, its 64-bit hash (u64 LE) and its age ``h - last`` (varint); HyperLogLog (1):
  per window the number of non-zero buckets (varint), each as its age (varint) and ``2**p`` register
  bytes.

Values are stored as hashes, so no value length appears in the layout: a value of any length fits.
The encoding is canonical (empty buckets skipped, values sorted): ``encode(decode(b)) == b`` for
layout-2 bytes, and a restored state behaves exactly like the original.

Layout 1 (little-endian, written by the pure-Python engine up to #16):

* header ``<3sBBBIqQ``: magic, version (1), kind, window count, fingerprint, ``h`` (i64), late (u64);
* per window: head bucket index (i64), then ``n + 1`` lane vectors — the head bucket's credits, then
  ring slots ``0 .. n-1`` (bucket ``b`` at slot ``b % n``) — as a presence bitmap followed by each
  non-zero vector: a lane bitmap, a width code (0..3 for 1/2/4/8-byte lanes) and the non-zero lanes;
* per distinct aggregation: mode byte; exact (0): value count (u32), then the values' UTF-8 lengths
  (u16 each), their ages (u32 each, saturated), then the UTF-8 bytes back to back (a single value:
  length, age, bytes); HyperLogLog (1): per window the non-zero bucket count (u16), then per bucket
  its slot (u16) and ``2**p`` register bytes. Exact values are hashed when read.
"""

from __future__ import annotations

from collections.abc import Callable

from streamwarden.operators.errors import StreamwardenError
from streamwarden.operators.features import _core
from streamwarden.operators.features.window import KeyState, KindPlan

MAGIC = b"SWK"
LAYOUT_VERSION: int = _core.LAYOUT_VERSION
"""The layout this build writes; it also reads layout 1."""
READABLE_VERSIONS = (1, 2)


class StateFormatError(StreamwardenError):
    """State bytes are corrupt, of an unknown layout version, or written under another spec."""


encode_state: Callable[[KeyState], bytes] = _core.encode_state
"""The canonical layout-2 bytes of a ``KeyState`` (the core's function itself: it is on every update's
path in the engines, so no Python frame around it)."""


def decode_state(plan: KindPlan, data: bytes) -> KeyState:
    """Rebuild a ``KeyState`` from layout 1 or 2 bytes; raise ``StateFormatError`` if unusable."""
    try:
        return _core.decode_state(plan, data)
    except ValueError as exc:
        raise StateFormatError(str(exc)) from exc
