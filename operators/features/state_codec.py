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

Speed: between two encodes of a key usually only the head buckets change, so each window's ring
(closed buckets) is cached with its encoding per slot (``KeyState.ring_enc``; valid while the ring
equals the cached copy, re-encoding only the slots that differ; filled from the input by
``decode_state``), and so are the values part of each exact set (``KeyState.seen_enc``). An encode
then packs the header, the head vectors (once for equal consecutive ones) and the sets' ages.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from itertools import accumulate, compress, islice
from operator import lshift, ne
from typing import Any

from streamwarden.operators.errors import StreamwardenError
from streamwarden.operators.features.hll import SlidingHll
from streamwarden.operators.features.window import NO_TIME, KeyState, KindPlan

MAGIC = b"SWK"
LAYOUT_VERSION = 1
_HEADER = struct.Struct("<3sBBBIqQ")
_Q = struct.Struct("<q")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_MODE_COUNT = struct.Struct("<BI")
_EXACT_ONE = struct.Struct("<BIHI")
"""An exact set of one value: mode 0, count 1, its UTF-8 length and its age."""
_LEN_AGE = struct.Struct("<HI")
_WIDTH_FMT = ("B", "H", "I", "Q")
_INT_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}
_WIDTH_CODE = tuple(0 if bits <= 8 else 1 if bits <= 16 else 2 if bits <= 32 else 3 for bits in range(65))
"""Lane width code by the bit length of the largest lane (1/2/4/8-byte lanes)."""
_BIT_DIGITS = b"0" + b"1" * 255
"""``bytes.translate`` table: zero byte -> ``0``, any other -> ``1`` (lane bitmaps via ``int(_, 2)``)."""
_SATURATED_AGE = 0xFFFFFFFF
_MASK_64 = (1 << 64) - 1
_EMPTY_EXACT = b"\x00\x00\x00\x00\x00"
"""Mode 0 (exact) with no values."""

RingCache = tuple[list[int] | None, list[bytes] | None, int, bytes]
"""A window ring's part of the layout, for a copy of the ring: the copy (None: no ring), each slot's
encoding (``b""`` for empty slots; None if not known), the presence bits (slot ``i`` at bit ``i + 1``,
as in the window's bitmap) and the non-zero slots' encodings back to back."""
_NO_RING: RingCache = (None, None, 0, b"")

SetEncoding = tuple[dict[str, int], int, bytes, bytes]
"""An exact set's cached parts: the set and its size when encoded, its values' UTF-8 lengths (u16
each) and their UTF-8 bytes. Values are only ever appended to a set (``KeyState._compact``, which
removes some, resets the entry), so the entry holds for the first ``size`` values of that set."""

Packer = Callable[..., bytes]


class StateFormatError(StreamwardenError):
    """State bytes are corrupt, of an unknown layout version, or written under another spec."""


class PlanCodec:
    """A kind's layout constants and packers, built once per ``KindPlan`` (``plan.codec``)."""

    __slots__ = (
        "above_8",
        "above_16",
        "above_32",
        "bitmap_bytes",
        "lane_structs",
        "lanes_unpack",
        "mask_bytes",
        "n_cols",
        "pow2",
        "shifts",
        "slot_bits",
        "vec_bytes",
        "vec_head",
        "vec_pack",
        "window_pack",
        "window_unpack",
    )

    def __init__(self, plan: KindPlan) -> None:
        c = plan.n_cols
        self.n_cols = c
        self.vec_bytes = 8 * c
        self.lanes_unpack = struct.Struct(f"<{c}Q").unpack
        mask_bytes = self.mask_bytes = (c + 7) // 8
        self.pow2 = tuple(1 << i for i in range(c))
        every_lane = sum(1 << (64 * i) for i in range(c))
        self.above_8 = every_lane * (_MASK_64 ^ 0xFF)
        """Bits 8..63 of every lane: a vector without any has 1-byte lanes (width code 0)."""
        self.above_16 = every_lane * (_MASK_64 ^ 0xFFFF)
        self.above_32 = every_lane * (_MASK_64 ^ 0xFFFFFFFF)
        self.lane_structs = tuple(tuple(struct.Struct(f"<{k}{f}") for k in range(c + 1)) for f in _WIDTH_FMT)
        """Per width code, per number of present lanes: the lanes' struct."""
        self.vec_pack = _vector_packers(mask_bytes, self.lane_structs)
        """Per width code, per number of present lanes: ``(lane_bits, code, *lanes) -> bytes``."""
        self.shifts: dict[int, tuple[int, ...]] = {}
        """Lane bitmap -> bit offsets of its lanes (decoding; filled as met)."""
        self.slot_bits = tuple(2 << i for i in range(max(g.n for g in plan.geoms)))
        """Presence bit of ring slot ``i`` in a window's bitmap (``i + 1``; bit 0 is the head vector)."""
        self.bitmap_bytes = tuple((g.n + 8) // 8 for g in plan.geoms)
        """Per window: bytes of the presence bitmap of its ``n + 1`` vectors."""
        self.window_pack = tuple(_window_packer(nb) for nb in self.bitmap_bytes)
        """Per window: ``(head bucket index, presence bitmap) -> bytes``."""
        self.window_unpack = tuple(
            struct.Struct(f"<q{_INT_FMT[nb]}") if nb in _INT_FMT else None for nb in self.bitmap_bytes
        )
        """Per window: the struct of (head bucket index, presence bitmap), if of standard sizes."""
        self.vec_head = struct.Struct(f"<{_INT_FMT[mask_bytes]}B") if mask_bytes in _INT_FMT else None
        """The struct of a vector's (lane bitmap, width code), if of standard sizes."""


def _window_packer(bitmap_bytes: int) -> Packer:
    fmt = _INT_FMT.get(bitmap_bytes)
    if fmt is not None:
        return struct.Struct(f"<q{fmt}").pack

    def pack(head: int, bitmap: int) -> bytes:
        return ((head & _MASK_64) | bitmap << 64).to_bytes(8 + bitmap_bytes, "little")

    return pack


def _vector_packers(
    mask_bytes: int, lane_structs: tuple[tuple[struct.Struct, ...], ...]
) -> tuple[tuple[Packer, ...], ...]:
    mask_fmt = _INT_FMT.get(mask_bytes)
    if mask_fmt is not None:
        return tuple(
            tuple(struct.Struct(f"<{mask_fmt}B{s.format[1:]}").pack for s in by_k) for by_k in lane_structs
        )

    def make(lanes_pack: Packer) -> Packer:
        def pack(lane_bits: int, code: int, *lanes: int) -> bytes:
            head = (lane_bits | code << (8 * mask_bytes)).to_bytes(mask_bytes + 1, "little")
            return head + lanes_pack(*lanes)

        return pack

    return tuple(tuple(make(s.pack) for s in by_k) for by_k in lane_structs)


def _plan_codec(plan: KindPlan) -> PlanCodec:
    pc = plan.codec
    if pc is None:
        pc = plan.codec = PlanCodec(plan)
    return pc


@lru_cache(maxsize=4096)
def _lengths_struct(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}H")


@lru_cache(maxsize=4096)
def _ages_struct(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


@lru_cache(maxsize=4096)
def _columns_struct(count: int) -> struct.Struct:
    """``count`` UTF-8 lengths (u16) then ``count`` ages (u32)."""
    return struct.Struct(f"<{count}H{count}I")


def _vector_bytes(pc: PlanCodec, v: int) -> bytes:
    """One non-zero vector: lane bitmap, width code, the non-zero lanes."""
    if v & pc.above_8:
        lanes: tuple[int, ...] = pc.lanes_unpack(v.to_bytes(pc.vec_bytes, "little"))
        lane_bits = sum(compress(pc.pow2, lanes))
        code = 1 if not v & pc.above_16 else 2 if not v & pc.above_32 else 3
        return pc.vec_pack[code][lane_bits.bit_count()](lane_bits, code, *compress(lanes, lanes))
    # 1-byte lanes (code 0, so the byte after the lane bitmap is 0): each lane is its first byte.
    low = v.to_bytes(pc.vec_bytes, "little")[::8]
    lane_bits = int(low.translate(_BIT_DIGITS)[::-1], 2)
    return lane_bits.to_bytes(pc.mask_bytes + 1, "little") + low.replace(b"\x00", b"")


def ring_cache_entry(pc: PlanCodec, ring: list[int] | None, known: RingCache | None = None) -> RingCache:
    """The cache entry of ``ring``, re-encoding only the slots that differ from ``known``'s copy."""
    if ring is None:
        return _NO_RING
    if known is None or known[0] is None or known[1] is None or len(known[0]) != len(ring):
        encs = [_vector_bytes(pc, v) if v else b"" for v in ring]
    else:
        encs = known[1].copy()
        for i in compress(range(len(ring)), map(ne, ring, known[0])):
            v = ring[i]
            encs[i] = _vector_bytes(pc, v) if v else b""
    return (ring.copy(), encs, sum(compress(pc.slot_bits, ring)), b"".join(encs))


def set_encoding(seen: dict[str, int], known: SetEncoding | None = None) -> SetEncoding:
    """The parts of an exact set's encoding that only change with its values (``KeyState.seen_enc``),
    extending ``known`` when it holds the first values of ``seen``."""
    count = len(seen)
    values: list[str] | dict[str, int]
    if known is not None and known[0] is seen and known[1] < count:
        start, lengths, blob = known[1], known[2], known[3]
        values = list(islice(seen, start, None))
    else:
        start, lengths, blob = 0, b"", b""
        values = seen
    joined = "".join(values)
    if joined.isascii():  # one UTF-8 byte per character
        lengths += _lengths_struct(count - start).pack(*map(len, values))
        blob += joined.encode("ascii")
    else:
        raws = [v.encode("utf-8") for v in values]
        lengths += _lengths_struct(count - start).pack(*map(len, raws))
        blob += b"".join(raws)
    return (seen, count, lengths, blob)


def _hll_bytes(hll: SlidingHll) -> bytes:
    """Mode 1, then per window the non-zero bucket count and each such bucket's slot and registers."""
    out: list[bytes | bytearray] = [b"\x01"]
    m = hll.m
    zero = bytes(m)
    pack_u16 = _U16.pack
    for w, (_, n) in enumerate(hll.geoms):
        regs = hll.regs[w]
        parts: list[bytes | bytearray] = []
        for s in range(n):
            chunk = regs[s * m : s * m + m]
            if chunk != zero:
                parts.append(pack_u16(s))
                parts.append(chunk)
        out.append(pack_u16(len(parts) // 2))
        out.extend(parts)
    return b"".join(out)


def encode_state(state: KeyState) -> bytes:
    """The canonical bytes of ``state``."""
    plan = state.plan
    high = state.high_ms
    header = _HEADER.pack(
        MAGIC, LAYOUT_VERSION, plan.kind, len(plan.geoms), plan.fingerprint, high, state.late_events
    )
    if high == NO_TIME:
        return header
    pc = plan.codec
    if pc is None:
        pc = _plan_codec(plan)
    ring_cache = state.ring_enc
    if ring_cache is None:
        ring_cache = state.ring_enc = [None] * len(plan.geoms)
    out = [header]
    append = out.append
    big_t = state.total & plan.col_mask
    heads = state.heads
    b = state.b
    rings = state.rings
    last_v = 0
    last_bytes = b""
    for w, window_pack in enumerate(pc.window_pack):
        ring = rings[w]
        cached = ring_cache[w]
        if cached is None or ring != cached[0]:
            cached = ring_cache[w] = ring_cache_entry(pc, ring, cached)
        # Head bucket index and presence bitmap, the head vector (often the previous window's too),
        # then the ring's part.
        v = big_t - b[w]
        if v:
            append(window_pack(heads[w], cached[2] | 1))
            if v != last_v:
                last_v = v
                last_bytes = _vector_bytes(pc, v)
            append(last_bytes)
        else:
            append(window_pack(heads[w], cached[2]))
        append(cached[3])
    hlls = state.hlls
    set_cache = state.seen_enc
    for di, seen in enumerate(state.seen):
        if hlls is not None and (hll := hlls[di]) is not None:
            append(_hll_bytes(hll))
        elif not seen:
            append(_EMPTY_EXACT)
        elif len(seen) == 1:
            ((value, last),) = seen.items()
            raw = value.encode("utf-8")
            age = high - last
            append(_EXACT_ONE.pack(0, 1, len(raw), age if age < _SATURATED_AGE else _SATURATED_AGE))
            append(raw)
        else:
            # Exact set, columnar: mode, count, UTF-8 lengths (u16), ages (u32, saturated), bytes.
            if set_cache is None:
                set_cache = state.seen_enc = [None] * len(state.seen)
            enc = set_cache[di]
            count = len(seen)
            if enc is None or enc[0] is not seen or enc[1] != count:
                enc = set_cache[di] = set_encoding(seen, enc)
            append(_MODE_COUNT.pack(0, count))
            append(enc[2])
            lasts = seen.values()
            try:
                append(_ages_struct(count).pack(*[high - last for last in lasts]))
            except struct.error:  # an age beyond u32: saturate (that value is outside every window)
                append(_ages_struct(count).pack(*[min(high - last, _SATURATED_AGE) for last in lasts]))
            append(enc[3])
    return b"".join(out)


def _truncated(pos: int, need: int) -> StateFormatError:
    return StateFormatError(f"state truncated at byte {pos} (need {need} more)")


def decode_state(plan: KindPlan, data: bytes) -> KeyState:
    """Rebuild a ``KeyState`` from ``encode_state`` bytes; raise ``StateFormatError`` if unusable."""
    size = len(data)
    if size < _HEADER.size:
        raise _truncated(0, _HEADER.size)
    magic, version, kind, n_win, fingerprint, high, late = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StateFormatError("not a streamwarden key state (bad magic)")
    if version != LAYOUT_VERSION:
        raise StateFormatError(f"state layout version {version}, this build reads {LAYOUT_VERSION}")
    if kind != plan.kind or n_win != len(plan.geoms):
        raise StateFormatError(f"state is for kind {kind} with {n_win} windows, expected {plan.kind}")
    if fingerprint != plan.fingerprint:
        raise StateFormatError("state was written under a different feature spec (fingerprint differs)")
    state = KeyState(plan)
    state.late_events = late
    pos = _HEADER.size
    if high != NO_TIME:
        state.high_ms = high
        # Fixed-size fields are read with ``unpack_from`` / indexing, which raise past the end.
        try:
            pos = _decode_windows(state, data, pos)
            pos = _decode_distincts(state, data, pos)
        except (struct.error, IndexError) as exc:
            raise StateFormatError(f"state truncated ({exc})") from exc
    if pos != size:
        raise StateFormatError(f"{size - pos} trailing bytes after the state")
    return state


def _decode_windows(state: KeyState, data: bytes, pos: int) -> int:
    """Per window the head index and ``n + 1`` vectors, into ``state`` in canonical form (``T = 0``,
    so ``a = -(window value)`` and ``b = -(head bucket credits)``); returns the next position.

    A ring whose bytes are exactly what ``ring_cache_entry`` writes goes to the state's cache as is.
    """
    plan = state.plan
    pc = _plan_codec(plan)
    n_cols = pc.n_cols
    mask_bytes = pc.mask_bytes
    vec_head = pc.vec_head
    lane_structs = pc.lane_structs
    shifts_of = pc.shifts
    heads = state.heads
    rings = state.rings
    a = state.a
    b = state.b
    cache: list[RingCache | None] = []
    start = 0
    for w, geo in enumerate(plan.geoms):
        window_head = pc.window_unpack[w]
        if window_head is not None:
            head, bitmap = window_head.unpack_from(data, pos)
            pos += window_head.size
        else:
            end = pos + 8 + pc.bitmap_bytes[w]
            if end > len(data):
                raise _truncated(pos, end - pos)
            (head,) = _Q.unpack_from(data, pos)
            bitmap = int.from_bytes(data[pos + 8 : end], "little")
            pos = end
        head_v = 0
        ring_sum = 0
        ring: list[int] | None = None
        slots: list[bytes] | None = None
        ring_start = pos
        canonical = True
        count = geo.n + 1
        rest = bitmap
        while rest:
            low = rest & -rest
            rest ^= low
            i = low.bit_length() - 1
            if vec_head is not None:
                lane_bits, code = vec_head.unpack_from(data, pos)
            else:
                code = data[pos + mask_bytes]
                lane_bits = int.from_bytes(data[pos : pos + mask_bytes], "little")
            pos += mask_bytes + 1
            if code > 3:
                raise StateFormatError(f"bad lane width code {code}")
            shifts = shifts_of.get(lane_bits)
            if shifts is None:
                shifts = tuple(64 * c for c in range(n_cols) if lane_bits >> c & 1)
                if len(shifts_of) < 4096:
                    shifts_of[lane_bits] = shifts
            if not shifts or i >= count:
                raise StateFormatError("empty or out-of-range lane vector")
            lanes_struct = lane_structs[code][len(shifts)]
            lanes = lanes_struct.unpack_from(data, pos)
            vec_start = pos - mask_bytes - 1
            pos += lanes_struct.size
            v = sum(map(lshift, lanes, shifts))
            if i == 0:
                head_v = v
                ring_start = pos
            else:
                if ring is None:
                    ring = [0] * geo.n
                    slots = [b""] * geo.n
                ring[i - 1] = v
                ring_sum += v
                if canonical:
                    canonical = (
                        lane_bits >> n_cols == 0
                        and 0 not in lanes
                        and _WIDTH_CODE[max(lanes).bit_length()] == code
                    )
                    if slots is not None:
                        slots[i - 1] = bytes(data[vec_start:pos])
        heads[w] = head
        if ring is not None and not ring_sum:
            ring = None
        rings[w] = ring
        if ring is None:
            cache.append(_NO_RING)  # (also when the input had all-zero ring vectors)
        elif canonical:
            cache.append((ring.copy(), slots, bitmap & ~1, bytes(data[ring_start:pos])))
        else:
            cache.append(None)
        a_w = a[w] = -(head_v + ring_sum)
        b[w] = -head_v
        start += a_w << geo.shift
    state.total = 0
    state.start = start
    state.ring_enc = cache
    state._set_marks()
    return pos


def _decode_distincts(state: KeyState, data: bytes, pos: int) -> int:
    """Per distinct aggregation its exact set or HLL registers; returns the next position."""
    plan = state.plan
    size = len(data)
    high = state.high_ms
    for di in range(len(plan.distinct_cols)):
        mode = data[pos]
        pos += 1
        if mode == 0:
            (count,) = _U32.unpack_from(data, pos)
            pos += 4
            if not count:
                continue
            if count == 1:
                length, age = _LEN_AGE.unpack_from(data, pos)
                pos += 6
                if pos + length > size:
                    raise _truncated(pos, length)
                state.seen[di] = {data[pos : pos + length].decode("utf-8"): high - age}
                pos += length
                continue
            cols = _columns_struct(count)
            fields = cols.unpack_from(data, pos)
            pos += cols.size
            lengths = fields[:count]
            n_bytes = sum(lengths)
            if pos + n_bytes > size:
                raise _truncated(pos, n_bytes)
            blob = data[pos : pos + n_bytes]
            pos += n_bytes
            if blob.isascii():  # one character per byte: slice the decoded string
                text = blob.decode("ascii")
                ends = list(accumulate(lengths))
                values: Any = map(text.__getitem__, map(slice, [0, *ends[:-1]], ends))
            else:
                values = []
                at = 0
                for length in lengths:
                    values.append(blob[at : at + length].decode("utf-8"))
                    at += length
            seen = dict(zip(values, map(high.__sub__, fields[count:]), strict=True))
            if len(seen) != count:
                raise StateFormatError("duplicate value in an exact distinct set")
            state.seen[di] = seen
        elif mode == 1:
            hll = SlidingHll(plan.hll_precision, plan.hll_geoms, state.heads)
            m = hll.m
            for w, (_, n) in enumerate(plan.hll_geoms):
                regs = bytearray(n * m)
                (slots,) = _U16.unpack_from(data, pos)
                pos += 2
                for _ in range(slots):
                    (s,) = _U16.unpack_from(data, pos)
                    if s >= n:
                        raise StateFormatError(f"HLL bucket slot {s} out of range")
                    if pos + 2 + m > size:
                        raise _truncated(pos + 2, m)
                    regs[s * m : (s + 1) * m] = data[pos + 2 : pos + 2 + m]
                    pos += 2 + m
                hll.load_regs(w, regs)
            if state.hlls is None:
                state.hlls = [None] * len(plan.distinct_cols)
            state.hlls[di] = hll
        else:
            raise StateFormatError(f"bad distinct mode {mode}")
    return pos
