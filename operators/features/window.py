"""Sliding event-time window state per key: one ``KeyState`` per (entity kind, entity id).

Semantics (the brute-force recounts in the tests and ``naive.py`` implement exactly this)
-----------------------------------------------------------------------------------------
* Events reach a key in *arrival order*. The key's high-water mark ``h`` is the largest event time
  among the events applied to it so far.
* Lateness is decided per key, from its own state only (so it is the same under any parallelism and
  any watermark timing): an event with ``t < h - allowed_lateness_ms`` is *late*. It is counted
  (``late_events``), flagged in its partial, and not applied. Every other event is applied, and
  ``h = max(h, t)``.
* A window of length ``W`` with bucket granularity ``g`` (``n = W / g`` buckets, epoch-aligned:
  bucket ``b(t) = t // g``) covers, as of ``h``, the buckets ``b(h) - n + 1 .. b(h)``: the event-time
  interval ``[(b(h) + 1) * g - W, (b(h) + 1) * g)``, as a Flink sliding window of size ``W`` and slide
  ``g`` that ends right after ``h``. It spans between ``W - g`` and ``W`` of history before ``h``.
* The partial emitted for an applied event holds the key's features as of ``h`` after applying it
  (for an in-order event ``h`` is the event's own time; an out-of-order event within the lateness
  sees its key as of the newest time applied there, and is itself included unless it falls before
  the window's first bucket). A late event's partial holds the features as of ``h``, unchanged.
* ``count``: matching applied events in the window's buckets; ``sum``: the sum of the field over them;
  ``distinct``: the number of distinct non-empty values among them (exact until the key tracks
  ``exact_distinct_limit`` values and more than half of them are still in some window, then
  HyperLogLog, see ``hll.py``); ratio ``a / b`` per window, ``default`` when ``b == 0``.

Representation (why it is O(1) per event)
-----------------------------------------
The C aggregation columns of all W windows live in 64-bit lanes of single Python integers (lane
``w * C + c``), so one integer addition updates every column of every window. ``total`` holds the
cumulative credits ``T`` of each column, replicated in every window's lane group; per window, ``a[w]``
is ``T`` minus the window's value and ``b[w]`` is ``T`` minus the head bucket's credits, and ``start``
holds the ``a[w]`` in their lane groups, so the window values are ``total - start``, extracted with one
``to_bytes`` + ``struct.unpack``. When a window slides, the closed head bucket (``T - b[w]``) goes to a
ring of ``n`` slots and the slots leaving the window are added to ``a[w]``: at most one slot per bucket
boundary crossed (a jump of a whole window resets it at once), never a rescan of events. When bucket
sizes divide each other (the default spec), a time that stays in a fine bucket stays in every coarser
one, so the loops stop at the first window that does not move. Out-of-order events within the
lateness are credited to their own, older bucket. Distinct counts keep, per value, the time it was
last seen and count the value once, in the bucket of its last occurrence: a value seen again moves
that single credit forward (or re-enters a window it had left), which keeps them exact with the same
lane machinery. All of this is exact integer arithmetic; only window values and bucket contents,
which are never negative, are ever unpacked.

Why "as of the high-water mark" rather than "as of the event's own time" for out-of-order events: the
state then never needs the history after an older time (an exact distinct count as of a past time
would need every occurrence of every value), it matches what a decision made now can know, and for
in-order events, the vast majority, the two are the same.

Expiry: ``expiry_ms() = h + longest window + allowed_lateness_ms``. Dropping the state once the
engine's watermark passes it changes no later output for any event at most ``allowed_lateness_ms``
behind that watermark (such an event is at least one longest window after ``h``, so nothing old is in
any of its windows, and it is not late against ``h``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, NamedTuple

from streamwarden.operators.features.fanout import FIELD_INDEX, EventFacts
from streamwarden.operators.features.hll import SlidingHll, item_hash
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, EVENT_TYPE_NAMES, FeatureSpec, WindowSpec
from streamwarden.schemas import streamwarden_pb2 as pb

if TYPE_CHECKING:  # the codec imports this module, never the other way round
    from streamwarden.operators.features.state_codec import PlanCodec, RingCache, SetEncoding

LANE_BITS = 64
NO_TIME = -(1 << 62)
"""High-water mark of a key that has applied no event yet."""

MAX_SPAN_MS = (1 << 32) - 2
"""Longest window plus lateness must stay below this (exact-distinct times are stored as u32 ages)."""


class PartialFeatures(NamedTuple):
    """One key's features as of one event: the velocity operator's output, the assembler's input."""

    event_id: str
    kind: int
    """EntityKind value of the block; 0 for the event-level partial."""
    values: tuple[float, ...]
    """The kind's block, in ``FeatureSpec.entity_feature_names(kind)`` order."""
    late: bool
    """The event was late for this key: not applied, values as of the key's high-water mark."""
    expect_mask: int
    """Which partials the event fans out to (see ``EventFacts.expect_mask``)."""
    facts: EventFacts | None = None
    """The event's facts, on the event-level partial only."""


class _Program(NamedTuple):
    """What one event type adds to one entity kind's columns."""

    delta: int
    """Replicated lane deltas of the count columns that always apply."""
    sums: tuple[tuple[int, int], ...]
    """(facts field index, replicated lane unit) per sum column."""
    distincts: tuple[tuple[int, int], ...]
    """(distinct aggregation index, facts field index)."""
    wheres: tuple[tuple[int, int, int, int, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]], ...]
    """Range-filtered groups: (field index, lo, hi, delta, sums, distincts); lo/hi inclusive/exclusive."""


_EMPTY_PROGRAM = _Program(0, (), (), ())


@dataclass(frozen=True, slots=True)
class Geometry:
    """One window of a kind: name, length W, bucket g, n = W / g, and its lane-group shift."""

    name: str
    length_ms: int
    bucket_ms: int
    n: int
    shift: int


class KindPlan:
    """The compiled spec of one entity kind: lane layout, per-type programs, output layout."""

    def __init__(self, spec: FeatureSpec, kind_name: str) -> None:
        ent = spec.entities[kind_name]  # type: ignore[index]
        self.kind_name = kind_name
        self.kind = ENTITY_KIND_VALUES[kind_name]
        self.allowed_lateness_ms = spec.allowed_lateness_ms
        self.exact_limit = spec.exact_distinct_limit
        self.hll_precision = spec.hll_precision
        columns: list[tuple[str, str, str | None]] = [
            (a.name, a.op, a.field) for g in ent.groups for a in g.aggregations
        ]
        self.columns = columns
        c_count = len(columns)
        self.n_cols = c_count
        wspecs: list[tuple[str, WindowSpec]] = [(w, spec.windows[w]) for w in ent.windows]
        self.geoms = tuple(
            Geometry(name, ws.length_ms, ws.bucket_ms, ws.n_buckets, LANE_BITS * c_count * i)
            for i, (name, ws) in enumerate(wspecs)
        )
        self.hll_geoms = tuple((g.bucket_ms, g.n) for g in self.geoms)
        by_bucket = sorted(range(len(self.geoms)), key=lambda w: self.geoms[w].bucket_ms)
        self.wgeo = tuple(
            (w, self.geoms[w].bucket_ms, self.geoms[w].n, self.geoms[w].shift) for w in by_bucket
        )
        """Per window, finest bucket first: (index, bucket_ms, n, lane-group shift), for the hot loops."""
        self.finest = by_bucket[0]
        self.finest_ms = self.geoms[by_bucket[0]].bucket_ms
        grains = [self.geoms[w].bucket_ms for w in by_bucket]
        self.nested = all(b % a == 0 for a, b in pairwise(grains))
        """Each bucket size divides the next: two times in one fine bucket share every coarser one,
        so the hot loops stop at the first window whose bucket does not change."""
        n_win = len(self.geoms)
        self.col_mask = (1 << (LANE_BITS * c_count)) - 1
        self.longest_ms = max(g.length_ms for g in self.geoms)
        self.span_ms = self.longest_ms + self.allowed_lateness_ms
        if self.span_ms > MAX_SPAN_MS:
            raise ValueError(f"{kind_name}: longest window + allowed lateness exceeds {MAX_SPAN_MS} ms")

        def unit(c: int) -> int:
            return 1 << (LANE_BITS * c)

        def rep(c: int) -> int:
            return sum(1 << (LANE_BITS * (w * c_count + c)) for w in range(n_win))

        col_index = {name: i for i, (name, _, _) in enumerate(columns)}
        distinct_cols = [i for i, (_, op, _) in enumerate(columns) if op == "distinct"]
        self.distinct_cols = tuple(distinct_cols)
        self.distinct_units = tuple(unit(c) for c in distinct_cols)
        self.distinct_reps = tuple(rep(c) for c in distinct_cols)
        d_index = {c: i for i, c in enumerate(distinct_cols)}
        self.hll_positions = tuple(tuple(w * c_count + c for w in range(n_win)) for c in distinct_cols)

        programs: list[_Program] = [_EMPTY_PROGRAM]
        for type_value in range(1, len(EVENT_TYPE_NAMES) + 1):
            type_name = pb.Event.Type.Name(type_value)  # type: ignore[arg-type]
            delta = 0
            sums: list[tuple[int, int]] = []
            dists: list[tuple[int, int]] = []
            wheres = []
            for g in ent.groups:
                if type_name not in g.event_types:
                    continue
                g_delta = 0
                g_sums: list[tuple[int, int]] = []
                g_dists: list[tuple[int, int]] = []
                for a in g.aggregations:
                    c = col_index[a.name]
                    if a.op == "count":
                        g_delta += rep(c)
                    elif a.op == "sum":
                        assert a.field is not None
                        g_sums.append((FIELD_INDEX[a.field], rep(c)))
                    else:
                        assert a.field is not None
                        g_dists.append((d_index[c], FIELD_INDEX[a.field]))
                if g.where is None:
                    delta += g_delta
                    sums.extend(g_sums)
                    dists.extend(g_dists)
                else:
                    lo = g.where.min if g.where.min is not None else -(1 << 62)
                    hi = g.where.max if g.where.max is not None else 1 << 62
                    wheres.append(
                        (FIELD_INDEX[g.where.field], lo, hi, g_delta, tuple(g_sums), tuple(g_dists))
                    )
            programs.append(_Program(delta, tuple(sums), tuple(dists), tuple(wheres)))
        self.programs = tuple(programs)

        self.n_lanes = n_win * c_count
        self.n_bytes = 8 * self.n_lanes
        self.unpack = struct.Struct(f"<{self.n_lanes}Q").unpack
        ratios = []
        for w in range(n_win):
            for r in ent.ratios:
                num = w * c_count + col_index[r.numerator]
                den = w * c_count + col_index[r.denominator]
                ratios.append((num, den, r.default))
        self.ratios = tuple(ratios)
        self.with_ratios = _compile_ratios(self.ratios)
        """``vals -> vals + ratios`` as one straight-line function (None without ratios)."""
        self.names = tuple(spec.entity_feature_names(kind_name))
        aggs = {a.name: a for g in ent.groups for a in g.aggregations}
        defaults = [aggs[name].default for _ in self.geoms for name, _, _ in columns]
        defaults += [r.default for _ in self.geoms for r in ent.ratios]
        self.defaults = tuple(defaults)
        self.fingerprint = spec.fingerprint()
        self.codec: PlanCodec | None = None
        """The state layout's per-kind constants, built by ``state_codec`` on first use."""


def _compile_ratios(
    ratios: tuple[tuple[int, int, float], ...],
) -> Callable[[tuple[float, ...]], tuple[float, ...]] | None:
    """A function appending the ratios to a block's lane values, without a loop or a comprehension
    (generated once per kind: the per-event path then runs one tuple display)."""
    if not ratios:
        return None
    env: dict[str, Any] = {f"_d{i}": dft for i, (_, _, dft) in enumerate(ratios)}
    terms = ", ".join(f"v[{n}] / v[{d}] if v[{d}] else _d{i}" for i, (n, d, _) in enumerate(ratios))
    exec(f"def with_ratios(v):\n    return v + ({terms},)\n", env)  # generated from ints only
    fn: Callable[[tuple[float, ...]], tuple[float, ...]] = env["with_ratios"]
    return fn


def compile_plans(spec: FeatureSpec) -> dict[int, KindPlan]:
    """One ``KindPlan`` per entity kind of the spec, keyed by EntityKind value."""
    return {ENTITY_KIND_VALUES[k]: KindPlan(spec, k) for k in spec.kinds()}


class KeyState:
    """All windows of one (entity kind, entity id). Not thread-safe; one owner at a time."""

    __slots__ = (
        "a",
        "b",
        "head_start_ms",
        "heads",
        "high_ms",
        "hlls",
        "late_events",
        "next_ms",
        "plan",
        "ring_enc",
        "rings",
        "seen",
        "seen_enc",
        "start",
        "tick",
        "total",
    )

    def __init__(self, plan: KindPlan) -> None:
        self.plan = plan
        self.high_ms = NO_TIME
        self.late_events = 0
        n_win = len(plan.geoms)
        self.heads: list[int] = [NO_TIME] * n_win
        """Head bucket index per window."""
        self.rings: list[list[int] | None] = [None] * n_win
        """Closed in-window buckets per window (C-lane ints, slot ``b % n``); None = all empty."""
        self.total = 0
        """Cumulative credits T (C lanes) replicated into every window's lane group."""
        self.a: list[int] = [0] * n_win
        """Per window: T minus the window's value (C lanes)."""
        self.b: list[int] = [0] * n_win
        """Per window: T minus the head bucket's credits (C lanes)."""
        self.start = 0
        """``a`` placed in the windows' lane groups: the window values are ``total - start``."""
        self.next_ms = NO_TIME
        """Earliest time at which some window's head bucket changes."""
        self.head_start_ms = NO_TIME
        """Latest head-bucket start over the windows: times >= it are in every head bucket."""
        self.seen: list[dict[str, int] | None] = [None] * len(plan.distinct_cols)
        """Exact distinct tracking: value -> last event time; None before the first value and once the
        aggregation uses HLL."""
        self.hlls: list[SlidingHll | None] | None = None
        """Per distinct aggregation its HLL once it switched (None = all exact)."""
        self.tick = 0
        """Free for the owner's expiry index (``VelocityStore``); not part of the state bytes."""
        self.ring_enc: list[RingCache | None] | None = None
        """``state_codec``'s cache of each ring's encoding (checked against a copy of the ring, so ring
        changes need no bookkeeping), allocated by the first encode; not part of the state."""
        self.seen_enc: list[SetEncoding | None] | None = None
        """``state_codec``'s cache of each exact set's values part, checked against the set's identity
        and size (inserts only append); not part of the state. Removing values must reset the entry."""

    # ------------------------------------------------------------------ hot path
    def on_event(self, facts: EventFacts) -> PartialFeatures:
        """Apply one event (unless late) and return the key's features as of its high-water mark."""
        f: tuple[Any, ...] = facts  # indexed by compiled field numbers below
        plan = self.plan
        t = f[1]
        high = self.high_ms
        if t > high:
            self.high_ms = t
            if t >= self.next_ms:
                if high == NO_TIME:
                    self._start(t)
                else:
                    self._advance(t)
        elif t < high - plan.allowed_lateness_ms:
            self.late_events += 1
            return self._partial(facts, True)
        prog = plan.programs[f[2]]
        d = prog[0]
        for fi, u in prog[1]:
            v = f[fi]
            if v:
                d += v * u
        dists = prog[2]
        if prog[3]:
            dists, extra = self._wheres(facts, prog, dists)
            d += extra
        if dists:
            hs = self.head_start_ms
            seen_all = self.seen
            # Moves are linear in the lane unit, so values last seen at the same time move together.
            move_o = 0
            move_u = 0
            for di, fi in dists:
                x = f[fi]
                if not x:
                    continue
                seen = seen_all[di]
                if seen is None:
                    if self.hlls is not None and self.hlls[di] is not None:
                        self._hll_add(di, x, t)
                    else:
                        seen_all[di] = {x: t}
                        d += plan.distinct_reps[di]
                    continue
                o = seen.get(x)
                if o is None:
                    seen[x] = t
                    d += plan.distinct_reps[di]
                    if len(seen) >= plan.exact_limit:
                        self._compact(di)
                elif t > o:
                    seen[x] = t
                    if o < hs:
                        if o == move_o:
                            move_u += plan.distinct_units[di]
                        else:
                            if move_u:
                                self._move(move_u, move_o, t)
                            move_o = o
                            move_u = plan.distinct_units[di]
            if move_u:
                self._move(move_u, move_o, t)
        if d:
            total = self.total = self.total + d
            if t < self.head_start_ms:
                self._place(d & plan.col_mask, t)
        else:
            total = self.total
        # Inlined ``_partial`` (the hot path): the window values of every lane, ratios, HLL estimates.
        vals = plan.unpack((total - self.start).to_bytes(plan.n_bytes, "little"))
        if self.hlls is not None:
            vals = self._hll_values(vals)
        with_ratios = plan.with_ratios
        if with_ratios is not None:
            vals = with_ratios(vals)
        return _new_partial(PartialFeatures, (f[0], plan.kind, vals, False, f[17], None))

    @staticmethod
    def _wheres(
        facts: EventFacts, prog: _Program, dists: tuple[tuple[int, int], ...]
    ) -> tuple[tuple[tuple[int, int], ...], int]:
        """Range-filtered groups: the extra lane delta and distinct columns of those that pass."""
        f: tuple[Any, ...] = facts
        extra = 0
        for fi, lo, hi, g_delta, g_sums, g_dists in prog.wheres:
            v = f[fi]
            if lo <= v < hi:
                extra += g_delta
                for sfi, u in g_sums:
                    sv = f[sfi]
                    if sv:
                        extra += sv * u
                if g_dists:
                    dists = dists + g_dists
        return dists, extra

    def _partial(self, f: EventFacts, late: bool) -> PartialFeatures:
        plan = self.plan
        vals = plan.unpack((self.total - self.start).to_bytes(plan.n_bytes, "little"))
        if self.hlls is not None:
            vals = self._hll_values(vals)
        if plan.with_ratios is not None:
            vals = plan.with_ratios(vals)
        return _new_partial(PartialFeatures, (f[0], plan.kind, vals, late, f[17], None))

    # ------------------------------------------------------------------ window maintenance
    def _advance(self, t: int) -> None:
        """Slide the windows whose head bucket is before ``t``'s (``t`` is the new high-water mark)."""
        plan = self.plan
        heads = self.heads
        a = self.a
        b = self.b
        rings = self.rings
        big_t = self.total & plan.col_mask
        start = self.start
        nested = plan.nested
        for w, g, n, sh in plan.wgeo:
            bt = t // g
            h = heads[w]
            if bt <= h:
                if nested:
                    break
                continue
            if bt - h >= n:
                da = big_t - a[w]
                if da:
                    start += da << sh
                    a[w] = big_t
                b[w] = big_t
                rings[w] = None
            else:
                ring = rings[w]
                if ring is None:
                    ring = rings[w] = [0] * n
                ring[h % n] = big_t - b[w]
                b[w] = big_t
                # Buckets h - n + 1 .. bt - n leave the window: one or two slices of the ring (slot
                # contents are never negative, so a zero sum means nothing to move).
                lo = (h + 1) % n
                hi = lo + bt - h
                if hi <= n:
                    acc = sum(ring[lo:hi])
                    if acc:
                        ring[lo:hi] = _ZEROS[: hi - lo]
                else:
                    hi -= n
                    acc = sum(ring[lo:]) + sum(ring[:hi])
                    if acc:
                        ring[lo:] = _ZEROS[: n - lo]
                        ring[:hi] = _ZEROS[:hi]
                if acc:
                    a[w] += acc
                    start += acc << sh
            heads[w] = bt
        self.start = start
        if nested:
            g = plan.finest_ms
            h = heads[plan.finest]
            self.next_ms = (h + 1) * g
            self.head_start_ms = h * g
        else:
            self._set_marks()
        if self.hlls is not None:
            for hll in self.hlls:
                if hll is not None:
                    hll.advance(t)

    def _start(self, t: int) -> None:
        """First event of a fresh state: every window starts empty with its head bucket at ``t``."""
        plan = self.plan
        heads = self.heads
        for w, g, _, _ in plan.wgeo:
            heads[w] = t // g
        self._set_marks()

    def _set_marks(self) -> None:
        """Recompute ``next_ms`` and ``head_start_ms`` from the heads."""
        plan = self.plan
        heads = self.heads
        if plan.nested:
            w, g, _, _ = plan.wgeo[0]
            h = heads[w]
            self.next_ms = (h + 1) * g
            self.head_start_ms = h * g
        else:
            self.next_ms = min((heads[w] + 1) * g for w, g, _, _ in plan.wgeo)
            self.head_start_ms = max(heads[w] * g for w, g, _, _ in plan.wgeo)

    def _place(self, delta: int, t: int) -> None:
        """Credit an out-of-order event's C-lane ``delta`` to its own (closed) bucket per window."""
        heads = self.heads
        nested = self.plan.nested
        for w, g, n, sh in self.plan.wgeo:
            bt = t // g
            h = heads[w]
            if bt >= h:
                if nested:
                    break
                continue
            self.b[w] += delta
            if bt <= h - n:
                self.a[w] += delta
                self.start += delta << sh
            else:
                ring = self.rings[w]
                if ring is None:
                    ring = self.rings[w] = [0] * n
                ring[bt % n] += delta

    def _move(self, u: int, o: int, t: int) -> None:
        """Values last seen at ``o`` are seen again at ``t > o``: move their credits (lane units ``u``,
        one per distinct column) to ``t``'s bucket."""
        plan = self.plan
        heads = self.heads
        rings = self.rings
        a = self.a
        nested = plan.nested
        gone = 0
        for w, g, n, sh in plan.wgeo:
            ob = o // g
            nb = t // g
            if ob == nb:
                if nested:
                    break
                continue
            h = heads[w]
            if nb <= h - n:
                continue  # both occurrences are before this window
            ring = rings[w]
            if ring is None:
                ring = rings[w] = [0] * n
            if ob <= h - n:
                # The old credits already left the window (they stay in ``a``): the values re-enter.
                a[w] -= u
                gone += u << sh
            else:
                ring[ob % n] -= u
            if nb < h:
                ring[nb % n] += u
            else:
                self.b[w] -= u
        if gone:
            self.start -= gone

    # ------------------------------------------------------------------ distinct counts
    def _compact(self, di: int) -> None:
        """The exact set hit its limit: drop values outside every window; if still large, go HLL."""
        plan = self.plan
        seen = self.seen[di]
        assert seen is not None
        if self.seen_enc is not None:
            self.seen_enc[di] = None
        cutoff = min((h - g.n + 1) * g.bucket_ms for h, g in zip(self.heads, plan.geoms, strict=True))
        for value in [v for v, last in seen.items() if last < cutoff]:
            del seen[value]
        if 2 * len(seen) > plan.exact_limit:
            hll = SlidingHll(plan.hll_precision, plan.hll_geoms, self.heads)
            for value, last in seen.items():
                hll.add(item_hash(value), last)
            self.seen[di] = None
            if self.hlls is None:
                self.hlls = [None] * len(plan.distinct_cols)
            self.hlls[di] = hll

    def _hll_add(self, di: int, x: str, t: int) -> None:
        assert self.hlls is not None
        hll = self.hlls[di]
        assert hll is not None
        hll.add(item_hash(x), t)

    def _hll_values(self, vals: tuple[float, ...]) -> tuple[float, ...]:
        assert self.hlls is not None
        out = list(vals)
        positions = self.plan.hll_positions
        for di, hll in enumerate(self.hlls):
            if hll is not None:
                est = hll.est
                for w, pos in enumerate(positions[di]):
                    e = est[w]
                    out[pos] = e if e is not None else hll.estimate(w)
        return tuple(out)

    # ------------------------------------------------------------------ queries
    def expiry_ms(self) -> int:
        """Event time after which the engine may drop this state (see the module docstring)."""
        return self.high_ms + self.plan.span_ms

    def values(self) -> tuple[float, ...]:
        """The key's current block (as of its high-water mark), without applying anything."""
        return self._partial(_NO_FACTS, False).values


_new_partial = tuple.__new__
_ZEROS = [0] * 1024
"""Zeros to clear ring slices with (a window has at most 1024 buckets)."""
_NO_FACTS = EventFacts("", 0, 0, "", "", "", "", "", "", "", "", "", 0, 0, 0, 0, 0, 0)
