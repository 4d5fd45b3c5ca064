"""Versioned byte layout of a ``KeyState`` (engines keep it as bytes in keyed state; never pickle).

Layout v1 (little-endian):

* header ``<3sBBBIqQ``: magic ``SWK``, layout version (1), EntityKind, window count, spec fingerprint
  (CRC-32, so state written under another spec is refused), high-water mark (i64; ``NO_TIME`` = empty,
  nothing follows), late-event count (u64);
* per window: head bucket index (i64), then ``n + 1`` lane vectors — the head bucket's credits, then
  ring slots ``0 .. n-1`` — as a presence bitmap followed by each non-zero vector: a lane bitmap, a
  width code (0..3 for 1/2/4/8-byte lanes) and the non-zero lanes;
* per distinct aggregation: mode byte; exact (0): value count (u32), then the values' UTF-8 lengths
  (u16 each), their ages ``high - last`` (u32 each, saturated: a saturated value is outside every
  window), then the UTF-8 bytes back to back;
  HyperLogLog (1): per window the non-zero bucket count (u16), then per bucket its slot (u16) and
  ``2**p`` register bytes.

The encoding is canonical: only window contents are written (the cumulative total is rebased to 0 on
decoding, which changes no output), so ``decode(encode(s))`` re-encodes to the same bytes and then
behaves exactly like ``s``.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from operators.errors import StreamwardenError
from operators.features.hll import SlidingHll
from operators.features.window import NO_TIME, KeyState, KindPlan

MAGIC = b"SWK"
LAYOUT_VERSION = 1
_HEADER = struct.Struct("<3sBBBIqQ")
_Q = struct.Struct("<q")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_WIDTH_FMT = ("B", "H", "I", "Q")
_CODE_BYTE = (b"\x00", b"\x01", b"\x02", b"\x03")
_SATURATED_AGE = 0xFFFFFFFF


class StateFormatError(StreamwardenError):
    """State bytes are corrupt, of an unknown layout version, or written under another spec."""


@lru_cache(maxsize=512)
def _struct(fmt: str) -> struct.Struct:
    return struct.Struct(fmt)


def _width_code(top: int) -> int:
    if top < 1 << 8:
        return 0
    if top < 1 << 16:
        return 1
    if top < 1 << 32:
        return 2
    return 3


def _pack_vectors(out: list[bytes], vectors: list[int], n_cols: int) -> None:
    lane_unpack = _struct(f"<{n_cols}Q").unpack
    present_idx = [i for i, v in enumerate(vectors) if v]
    bitmap = 0
    for i in present_idx:
        bitmap |= 1 << i
    out.append(bitmap.to_bytes((len(vectors) + 7) // 8, "little"))
    n_mask_bytes = (n_cols + 7) // 8
    for i in present_idx:
        lanes = lane_unpack(vectors[i].to_bytes(8 * n_cols, "little"))
        present = [x for x in lanes if x]
        lane_bits = 0
        for c, x in enumerate(lanes):
            if x:
                lane_bits |= 1 << c
        code = _width_code(max(present))
        out.append(lane_bits.to_bytes(n_mask_bytes, "little"))
        out.append(_CODE_BYTE[code])
        out.append(_struct(f"<{len(present)}{_WIDTH_FMT[code]}").pack(*present))


def encode_state(state: KeyState) -> bytes:
    """The canonical bytes of ``state``."""
    plan = state.plan
    out = [
        _HEADER.pack(
            MAGIC,
            LAYOUT_VERSION,
            plan.kind,
            len(plan.geoms),
            plan.fingerprint,
            state.high_ms,
            state.late_events,
        )
    ]
    if state.high_ms == NO_TIME:
        return b"".join(out)
    big_t = state.total & plan.col_mask
    for w, geo in enumerate(plan.geoms):
        out.append(_Q.pack(state.heads[w]))
        ring = state.rings[w]
        _pack_vectors(out, [big_t - state.b[w], *(ring if ring is not None else [0] * geo.n)], plan.n_cols)
    high = state.high_ms
    for di, seen in enumerate(state.seen):
        hll = state.hlls[di] if state.hlls is not None else None
        if hll is None:
            # Exact set, columnar: count, UTF-8 lengths (u16), ages (u32, saturated), then the bytes.
            raws = [v.encode("utf-8") for v in seen] if seen else []
            out.append(b"\x00")
            out.append(_U32.pack(len(raws)))
            if raws:
                ages = [min(high - last, _SATURATED_AGE) for last in seen.values()]  # type: ignore[union-attr]
                out.append(_struct(f"<{len(raws)}H").pack(*map(len, raws)))
                out.append(_struct(f"<{len(raws)}I").pack(*ages))
                out.append(b"".join(raws))
        else:
            out.append(b"\x01")
            m = hll.m
            for w, (_, n) in enumerate(hll.geoms):
                regs = hll.regs[w]
                slots = [s for s in range(n) if any(regs[s * m : (s + 1) * m])]
                out.append(_U16.pack(len(slots)))
                for s in slots:
                    out.append(_U16.pack(s))
                    out.append(bytes(regs[s * m : (s + 1) * m]))
    return b"".join(out)


class _Reader:
    """Reads fields at increasing offsets; any overrun is a ``StateFormatError``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise StateFormatError(f"state truncated at byte {self.pos} (need {n} more)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        pos = self.pos
        if pos + fmt.size > len(self.data):
            raise StateFormatError(f"state truncated at byte {pos} (need {fmt.size} more)")
        self.pos = pos + fmt.size
        return fmt.unpack_from(self.data, pos)

    def byte(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise StateFormatError(f"state truncated at byte {pos} (need 1 more)")
        self.pos = pos + 1
        return self.data[pos]


def _read_vectors(r: _Reader, count: int, n_cols: int) -> list[int]:
    bitmap = int.from_bytes(r.take((count + 7) // 8), "little")
    n_mask_bytes = (n_cols + 7) // 8
    vectors = [0] * count
    i = 0
    while bitmap:
        if bitmap & 1:
            lane_bits = int.from_bytes(r.take(n_mask_bytes), "little")
            code = r.byte()
            if code > 3:
                raise StateFormatError(f"bad lane width code {code}")
            cols = [c for c in range(n_cols) if lane_bits >> c & 1]
            if not cols or i >= count:
                raise StateFormatError("empty or out-of-range lane vector")
            v = 0
            for c, x in zip(cols, r.unpack(_struct(f"<{len(cols)}{_WIDTH_FMT[code]}")), strict=True):
                v |= x << (64 * c)
            vectors[i] = v
        bitmap >>= 1
        i += 1
    if i > count:
        raise StateFormatError("vector bitmap out of range")
    return vectors


def decode_state(plan: KindPlan, data: bytes) -> KeyState:
    """Rebuild a ``KeyState`` from ``encode_state`` bytes; raise ``StateFormatError`` if unusable."""
    r = _Reader(data)
    magic, version, kind, n_win, fingerprint, high, late = r.unpack(_HEADER)
    if magic != MAGIC:
        raise StateFormatError("not a streamwarden key state (bad magic)")
    if version != LAYOUT_VERSION:
        raise StateFormatError(f"state layout version {version}, this build reads {LAYOUT_VERSION}")
    if kind != plan.kind or n_win != len(plan.geoms):
        raise StateFormatError(f"state is for kind {kind} with {n_win} windows, expected {plan.kind}")
    if fingerprint != plan.fingerprint:
        raise StateFormatError("state was written under a different feature spec (fingerprint differs)")
    state = KeyState(plan)
    state.late_events = int(late)
    if high == NO_TIME:
        if r.pos != len(data):
            raise StateFormatError(f"{len(data) - r.pos} trailing bytes after the state")
        return state
    state.high_ms = int(high)
    # Canonical form: T = 0, so a = -(window value) and b = -(head bucket credits).
    start = 0
    for w, geo in enumerate(plan.geoms):
        (head,) = r.unpack(_Q)
        vectors = _read_vectors(r, geo.n + 1, plan.n_cols)
        state.heads[w] = int(head)
        ring = vectors[1:]
        state.rings[w] = ring if any(ring) else None
        state.a[w] = -(vectors[0] + sum(ring))
        state.b[w] = -vectors[0]
        start += state.a[w] << geo.shift
    state.total = 0
    state.start = start
    state._set_marks()
    for di in range(len(plan.distinct_cols)):
        mode = r.byte()
        if mode == 0:
            (count,) = r.unpack(_U32)
            if count:
                lengths = r.unpack(_struct(f"<{count}H"))
                ages = r.unpack(_struct(f"<{count}I"))
                blob = r.take(sum(lengths))
                seen: dict[str, int] = {}
                pos = 0
                for length, age in zip(lengths, ages, strict=True):
                    seen[blob[pos : pos + length].decode("utf-8")] = state.high_ms - age
                    pos += length
                if len(seen) != count:
                    raise StateFormatError("duplicate value in an exact distinct set")
                state.seen[di] = seen
        elif mode == 1:
            hll = SlidingHll(plan.hll_precision, plan.hll_geoms, state.heads)
            m = hll.m
            for w, (_, n) in enumerate(plan.hll_geoms):
                regs = bytearray(n * m)
                (slots,) = r.unpack(_U16)
                for _ in range(slots):
                    (s,) = r.unpack(_U16)
                    if s >= n:
                        raise StateFormatError(f"HLL bucket slot {s} out of range")
                    regs[s * m : (s + 1) * m] = r.take(m)
                hll.load_regs(w, regs)
            if state.hlls is None:
                state.hlls = [None] * len(plan.distinct_cols)
            state.hlls[di] = hll
        else:
            raise StateFormatError(f"bad distinct mode {mode}")
    if r.pos != len(data):
        raise StateFormatError(f"{len(data) - r.pos} trailing bytes after the state")
    return state
