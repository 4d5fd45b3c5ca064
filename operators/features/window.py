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
The window maths run in the compiled core (``core/src/state.rs``, module ``_core``; why Rust: see
docs/architecture.md). Per window the core keeps the window values (one 64-bit lane per aggregation
column) and, once the window holds more than its head bucket, its closed buckets, sorted by index. An
in-order event adds to the window values; crossing a bucket boundary closes the head bucket and
evicts the buckets leaving the window (at most one per boundary crossed; a jump of a whole window
resets it at once), never a rescan of events. Out-of-order events within the lateness are credited to
their own, older bucket. Distinct counts keep, per value (its 64-bit BLAKE2b hash, ``hll.item_hash``:
collisions are negligible below the exact limit), the time it was last seen and count the value once,
in the bucket of its last occurrence: a value seen again moves that single credit forward (or
re-enters a window it had left). All of this is exact integer arithmetic.

This module compiles the spec into each kind's plan (``KindPlan``: nothing in the core knows a feature
by name) and re-exports the core's ``KeyState``.

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

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from streamwarden.operators.features import _core
from streamwarden.operators.features._core import KeyState
from streamwarden.operators.features.fanout import FIELD_INDEX, EventFacts
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, EVENT_TYPE_NAMES, FeatureSpec
from streamwarden.schemas import streamwarden_pb2 as pb

__all__ = ["MAX_SPAN_MS", "NO_TIME", "Geometry", "KeyState", "KindPlan", "PartialFeatures", "compile_plans"]

NO_TIME: int = _core.NO_TIME
"""High-water mark of a key that has applied no event yet."""

MAX_SPAN_MS = (1 << 62) - 1
"""Longest window plus lateness must stay below this (state ages are varints, not u32 as in layout v1)."""

_UNBOUNDED = 1 << 62


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


@dataclass(frozen=True, slots=True)
class Geometry:
    """One window of a kind: name, length W, bucket g and n = W / g."""

    name: str
    length_ms: int
    bucket_ms: int
    n: int


_Ops = tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]
"""(count columns, (column, facts field) sums, (distinct index, facts field) distincts)."""


class KindPlan:
    """The compiled spec of one entity kind: its columns, windows, per-event-type programs and output
    layout, handed to the core as plain numbers (``core``)."""

    def __init__(self, spec: FeatureSpec, kind_name: str) -> None:
        ent = spec.entities[kind_name]  # type: ignore[index]
        self.kind_name = kind_name
        self.kind = ENTITY_KIND_VALUES[kind_name]
        self.allowed_lateness_ms = spec.allowed_lateness_ms
        self.columns: list[tuple[str, str, str | None]] = [
            (a.name, a.op, a.field) for g in ent.groups for a in g.aggregations
        ]
        self.n_cols = len(self.columns)
        self.geoms = tuple(
            Geometry(w, spec.windows[w].length_ms, spec.windows[w].bucket_ms, spec.windows[w].n_buckets)
            for w in ent.windows
        )
        self.span_ms = max(g.length_ms for g in self.geoms) + self.allowed_lateness_ms
        if self.span_ms > MAX_SPAN_MS:
            raise ValueError(f"{kind_name}: longest window + allowed lateness exceeds {MAX_SPAN_MS} ms")
        col_index = {name: i for i, (name, _, _) in enumerate(self.columns)}
        self.distinct_cols = tuple(i for i, (_, op, _) in enumerate(self.columns) if op == "distinct")
        d_index = {c: i for i, c in enumerate(self.distinct_cols)}
        self.attr_tests = spec.attribute_tests()
        """The spec's attribute filters; test ``s`` is the core's numeric field ``N_FACTS + s`` (0 or 1)."""
        test_field = {test: _core.N_FACTS + s for s, test in enumerate(self.attr_tests)}
        programs: list[tuple[_Ops, list[tuple[int, int, int, _Ops]]]] = [(([], [], []), [])]
        for type_value in range(1, len(EVENT_TYPE_NAMES) + 1):
            type_name = pb.Event.Type.Name(type_value)  # type: ignore[arg-type]
            always: _Ops = ([], [], [])
            wheres: list[tuple[int, int, int, _Ops]] = []
            for g in ent.groups:
                if type_name not in g.event_types:
                    continue
                ops: _Ops = always if g.where is None else ([], [], [])
                for a in g.aggregations:
                    c = col_index[a.name]
                    if a.op == "count":
                        ops[0].append(c)
                    elif a.op == "sum":
                        assert a.field is not None
                        ops[1].append((c, FIELD_INDEX[a.field]))
                    else:
                        assert a.field is not None
                        ops[2].append((d_index[c], FIELD_INDEX[a.field]))
                if g.where is not None and g.where.attribute is not None:
                    assert g.where.equals is not None
                    wheres.append((test_field[g.where.attribute, g.where.equals], 1, 2, ops))
                elif g.where is not None:
                    assert g.where.field is not None
                    lo = g.where.min if g.where.min is not None else -_UNBOUNDED
                    hi = g.where.max if g.where.max is not None else _UNBOUNDED
                    field = (
                        _core.F_ACCOUNT_AGE_S
                        if g.where.field == "account_age_s"
                        else FIELD_INDEX[g.where.field]
                    )
                    wheres.append((field, lo, hi, ops))
            programs.append((always, wheres))
        n_win = len(self.geoms)
        self.ratios = tuple(
            (w * self.n_cols + col_index[r.numerator], w * self.n_cols + col_index[r.denominator], r.default)
            for w in range(n_win)
            for r in ent.ratios
        )
        self.names = tuple(spec.entity_feature_names(kind_name))
        aggs = {a.name: a for g in ent.groups for a in g.aggregations}
        defaults = [aggs[name].default for _ in self.geoms for name, _, _ in self.columns]
        defaults += [r.default for _ in self.geoms for r in ent.ratios]
        self.defaults = tuple(defaults)
        self.fingerprint = spec.fingerprint()
        self.core = _core.Plan(
            self,
            partial(tuple.__new__, PartialFeatures),
            self.kind,
            spec.allowed_lateness_ms,
            spec.exact_distinct_limit,
            spec.hll_precision,
            self.fingerprint,
            [(g.bucket_ms, g.n) for g in self.geoms],
            self.n_cols,
            list(self.distinct_cols),
            programs,
            list(self.ratios),
            self.span_ms,
            self.attr_tests,
        )
        """The core's copy of this plan (it refers back to this object as ``KeyState.plan``)."""


def compile_plans(spec: FeatureSpec) -> dict[int, KindPlan]:
    """One ``KindPlan`` per entity kind of the spec, keyed by EntityKind value."""
    return {ENTITY_KIND_VALUES[k]: KindPlan(spec, k) for k in spec.kinds()}
