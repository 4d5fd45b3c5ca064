"""Assembly: join the partials of one event, by event id, into the ordered feature vector.

An event fans out to one partial per entity key plus one event-level partial (``event_partial``:
features read from the event itself); every partial carries the event's ``expect_mask``, so the
assembler knows what to wait for whichever partial comes first. When all have arrived the vector is
emitted at once. Blocks of entity kinds the event does not name (no device id, an event type the kind
does not read) hold the spec defaults and are not flagged. Blocks still missing ``timeout_ms`` after the
first partial of the event arrived are imputed with the same documented defaults (each aggregation's
and ratio's ``default``, 0 unless the spec says otherwise; for the event-level block the values of
``EVENT_DEFAULTS``) and their names are listed in ``FeatureVector.imputed``: the assembler never blocks.
Time is explicit (``now_ms``) so the caller picks the clock: processing time in the engines, and in
offline replay nothing ever times out because all partials of an event arrive together.

Event-level features (``event.<name>``): one-hot event type, UTC hour of day, account age in hours
(``account_age_h``; -1 with ``account_age_known = 0`` when the producer does not know it), play
duration, text length, URL and mention counts, and whether the content has a hash.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

from streamwarden.operators.features.fanout import EVENT_BIT, EventFacts
from streamwarden.operators.features.spec import (
    ENTITY_KIND_VALUES,
    EVENT_FEATURES,
    EVENT_TYPE_NAMES,
    FeatureSpec,
)
from streamwarden.operators.features.window import KindPlan, PartialFeatures, compile_plans

HOUR_MS = 3_600_000
_N_TYPES = len(EVENT_TYPE_NAMES)
_ONE_HOT: tuple[tuple[float, ...], ...] = tuple(
    tuple(1.0 if i == t - 1 else 0.0 for i in range(_N_TYPES)) for t in range(_N_TYPES + 1)
)
EVENT_DEFAULTS: tuple[float, ...] = (0.0,) * _N_TYPES + (0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
"""Imputed event-level block (only if the event-level partial itself timed out)."""


def event_features(f: EventFacts) -> tuple[float, ...]:
    """The event-level block, in ``EVENT_FEATURES`` order."""
    t = f[1]
    created = f[16]
    if created > 0:
        age_h = (t - created) / HOUR_MS if t > created else 0.0
        known = 1.0
    else:
        age_h = -1.0
        known = 0.0
    ty = f[2]
    return _ONE_HOT[ty if 0 <= ty <= _N_TYPES else 0] + (
        float(t // HOUR_MS % 24),
        age_h,
        known,
        float(f[12]),
        float(f[13]),
        float(f[14]),
        float(f[15]),
        1.0 if f[11] else 0.0,
    )


def event_partial(f: EventFacts) -> PartialFeatures:
    """The event-level partial the fan-out stage sends straight to the assembler."""
    return PartialFeatures(f[0], 0, event_features(f), False, f[17], f)


class FeatureVector(NamedTuple):
    """One event's assembled features, in ``FeatureSpec.feature_names()`` order."""

    event_id: str
    values: tuple[float, ...]
    imputed: tuple[str, ...]
    """Names of features imputed because their partial did not arrive before the timeout."""
    late_kinds: int
    """Bit k set: the entity of EntityKind k saw this event as late (not applied)."""
    facts: EventFacts | None
    """The event's facts (None only if the event-level partial itself timed out)."""

    @property
    def event_time_ms(self) -> int:
        """Event time, or 0 if unknown."""
        return self.facts.time_ms if self.facts is not None else 0


class VectorLayout:
    """Where each partial's block goes in the vector, its defaults, and the join itself: one definition
    for ``Assembler`` (in-process) and the engines' keyed assembly (``operators.pipeline``)."""

    def __init__(self, spec: FeatureSpec, plans: dict[int, KindPlan]) -> None:
        kinds = [ENTITY_KIND_VALUES[k] for k in spec.kinds()]
        self.kinds: tuple[int, ...] = tuple(kinds)
        """EntityKind values of the entity blocks, in vector order."""
        self.slot_of: dict[int, int] = {0: 0, **{k: i + 1 for i, k in enumerate(kinds)}}
        """Block index of each partial kind (0 = the event-level block)."""
        self.bits: tuple[int, ...] = (EVENT_BIT, *(1 << k for k in kinds))
        """``expect_mask`` bit of each block."""
        self.defaults: tuple[tuple[float, ...], ...] = (EVENT_DEFAULTS, *(plans[k].defaults for k in kinds))
        self.names: tuple[tuple[str, ...], ...] = (
            tuple(f"event.{n}" for n in EVENT_FEATURES),
            *(plans[k].names for k in kinds),
        )

    def join(
        self,
        eid: str,
        blocks: Sequence[tuple[float, ...] | None],
        seen: int,
        expect: int,
        late: int,
        facts: EventFacts | None,
        timed_out: bool,
    ) -> FeatureVector:
        """The ordered vector: missing blocks hold their defaults; those the event expected but that did
        not arrive before the timeout are listed in ``imputed``."""
        values: tuple[float, ...] = ()
        imputed: list[str] = []
        for i, block in enumerate(blocks):
            if block is None:
                block = self.defaults[i]
                if timed_out and expect & self.bits[i] and not seen & self.bits[i]:
                    imputed.extend(self.names[i])
            values += block
        return FeatureVector(eid, values, tuple(imputed), late, facts)


class Assembler:
    """Joins partials by event id. ``add`` for each partial; ``expire`` from a timer."""

    def __init__(self, spec: FeatureSpec, timeout_ms: int) -> None:
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        self.timeout_ms = timeout_ms
        self.layout = layout = VectorLayout(spec, compile_plans(spec))
        self._slot_of = layout.slot_of
        self._bits = layout.bits
        self._pending: dict[str, list[object]] = {}
        self._deadlines: deque[tuple[int, str]] = deque()
        self._done: dict[str, int] = {}
        self._done_order: deque[tuple[int, str]] = deque()
        self.duplicates = 0
        """Partials dropped because their kind already arrived or the event was already emitted."""
        self.timed_out = 0
        """Vectors emitted with imputed blocks."""

    @property
    def pending(self) -> int:
        """Events waiting for partials."""
        return len(self._pending)

    def add(self, p: PartialFeatures, now_ms: int) -> FeatureVector | None:
        """Take one partial; return the vector if this completed its event."""
        eid = p[0]
        bit = 1 << p[1]
        entry = self._pending.get(eid)
        if entry is None:
            if eid in self._done:
                self.duplicates += 1
                return None
            blocks: list[tuple[float, ...] | None] = [None] * len(self._bits)
            blocks[self._slot_of[p[1]]] = p[2]
            if p[4] == bit:
                return self._emit(eid, blocks, bit, bit, bit if p[3] else 0, p[5], now_ms, False)
            deadline = now_ms + self.timeout_ms
            self._pending[eid] = [bit, p[4], blocks, bit if p[3] else 0, p[5]]
            self._deadlines.append((deadline, eid))
            return None
        seen = entry[0]
        assert isinstance(seen, int)
        if seen & bit:
            self.duplicates += 1
            return None
        seen |= bit
        entry[0] = seen
        entry[2][self._slot_of[p[1]]] = p[2]  # type: ignore[index]
        if p[3]:
            entry[3] = entry[3] | bit  # type: ignore[operator]
        if p[5] is not None:
            entry[4] = p[5]
        if seen == entry[1]:
            del self._pending[eid]
            return self._emit(eid, entry[2], seen, seen, entry[3], entry[4], now_ms, False)  # type: ignore[arg-type]
        return None

    def expire(self, now_ms: int) -> list[FeatureVector]:
        """Emit, with imputed blocks, every event whose deadline is at or before ``now_ms``."""
        out: list[FeatureVector] = []
        dl = self._deadlines
        while dl and dl[0][0] <= now_ms:
            _, eid = dl.popleft()
            entry = self._pending.pop(eid, None)
            if entry is not None:
                self.timed_out += 1
                out.append(
                    self._emit(eid, entry[2], entry[0], entry[1], entry[3], entry[4], now_ms, True)  # type: ignore[arg-type]
                )
        done = self._done_order
        while done and done[0][0] <= now_ms:
            _, eid = done.popleft()
            self._done.pop(eid, None)
        return out

    def complete(self, facts: EventFacts, partials: list[PartialFeatures]) -> FeatureVector:
        """The vector of an event whose key partials are all in hand (offline replay, co-located
        stages): exactly what ``add`` returns when the last partial arrives, minus the join
        bookkeeping. ``partials`` are the key partials; the event-level block comes from ``facts``."""
        blocks = list(self.layout.defaults)
        blocks[0] = event_features(facts)
        slot_of = self._slot_of
        late = 0
        for p in partials:
            blocks[slot_of[p[1]]] = p[2]
            if p[3]:
                late |= 1 << p[1]
        values: tuple[float, ...] = ()
        for block in blocks:
            values += block  # faster than tuple(chain(...)) for a handful of blocks
        return FeatureVector(facts[0], values, (), late, facts)

    def _emit(
        self,
        eid: str,
        blocks: list[tuple[float, ...] | None],
        seen: int,
        expect: int,
        late: int,
        facts: EventFacts | None,
        now_ms: int,
        timed_out: bool,
    ) -> FeatureVector:
        forget = now_ms + self.timeout_ms
        self._done[eid] = forget
        self._done_order.append((forget, eid))
        return self.layout.join(eid, blocks, seen, expect, late, facts, timed_out)
