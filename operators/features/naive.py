"""The naive reference: per key, the list of raw applied events, rescanned on every event.

This is the approach of Flink's fraud-detection demo, written straight from the definitions in
``window.py`` (same lateness rule, same bucket-aligned windows, exact distinct counts). It serves
as the brute-force recount in the tests and as the baseline of ``streamwarden bench velocity``;
its cost per event grows with the number of events in the longest window.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from streamwarden.operators.features.fanout import FIELD_INDEX, NUMBER_CAP, EventFacts
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, FeatureSpec
from streamwarden.operators.features.window import NO_TIME, PartialFeatures
from streamwarden.schemas import streamwarden_pb2 as pb


def _in_range(field: int, lo: int, hi: int, e: tuple[Any, ...]) -> bool:
    return bool(lo <= e[field] < hi)


_CREATED = FIELD_INDEX["account_created_ms"]
_TIME = FIELD_INDEX["time_ms"]


def _age_in_range(lo: int, hi: int, e: tuple[Any, ...]) -> bool:
    """``where: {field: account_age_s}``: the account's age in seconds at the event (spec.py)."""
    created = e[_CREATED]
    age = NUMBER_CAP if created <= 0 else max(0, e[_TIME] - created) // 1000
    return bool(lo <= age < hi)


def _has_attribute(key: str, value: str | None, e: tuple[Any, ...]) -> bool:
    return dict(e[_ATTRIBUTES]).get(key) == value


_ATTRIBUTES = FIELD_INDEX["attributes"]


class NaivePlan:
    """Per-kind column definitions for the naive recount."""

    def __init__(self, spec: FeatureSpec, kind_name: str) -> None:
        ent = spec.entities[kind_name]  # type: ignore[index]
        self.kind = ENTITY_KIND_VALUES[kind_name]
        self.allowed_lateness_ms = spec.allowed_lateness_ms
        self.windows = [(spec.windows[w].length_ms, spec.windows[w].bucket_ms) for w in ent.windows]
        self.columns: list[
            tuple[frozenset[int], Callable[[tuple[Any, ...]], bool] | None, str, int | None]
        ] = []
        for g in ent.groups:
            types = frozenset(int(pb.Event.Type.Value(t)) for t in g.event_types)
            where: Callable[[tuple[Any, ...]], bool] | None = None
            if g.where is not None and g.where.attribute is not None:
                key, value = g.where.attribute, g.where.equals
                where = partial(_has_attribute, key, value)
            elif g.where is not None:
                assert g.where.field is not None
                lo = g.where.min if g.where.min is not None else -(1 << 62)
                hi = g.where.max if g.where.max is not None else 1 << 62
                if g.where.field == "account_age_s":
                    where = partial(_age_in_range, lo, hi)
                else:
                    where = partial(_in_range, FIELD_INDEX[g.where.field], lo, hi)
            for a in g.aggregations:
                field = FIELD_INDEX[a.field] if a.field is not None else None
                self.columns.append((types, where, a.op, field))
        names = [a.name for g in ent.groups for a in g.aggregations]
        self.ratios = [(names.index(r.numerator), names.index(r.denominator), r.default) for r in ent.ratios]
        self.longest_ms = max(length for length, _ in self.windows)


class NaiveKeyState:
    """All applied events of one key; every query rescans them."""

    def __init__(self, plan: NaivePlan) -> None:
        self.plan = plan
        self.high_ms = NO_TIME
        self.late_events = 0
        self.events: list[EventFacts] = []

    def on_event(self, f: EventFacts) -> PartialFeatures:
        """Same contract as ``KeyState.on_event``."""
        late = f.time_ms < self.high_ms - self.plan.allowed_lateness_ms
        if late:
            self.late_events += 1
        else:
            self.events.append(f)
            if f.time_ms > self.high_ms:
                self.high_ms = f.time_ms
                self._prune()
        return PartialFeatures(f.event_id, self.plan.kind, self.values(), late, f.expect_mask)

    def _prune(self) -> None:
        h = self.high_ms
        first = min((h // g - length // g + 1) * g for length, g in self.plan.windows)
        if self.events and self.events[0].time_ms < first:
            self.events = [e for e in self.events if e.time_ms >= first]

    def window_events(self, w: int) -> list[EventFacts]:
        """The applied events inside window ``w`` as of the high-water mark."""
        length, g = self.plan.windows[w]
        hb = self.high_ms // g
        lo = hb - length // g + 1
        return [e for e in self.events if lo <= e.time_ms // g <= hb]

    def values(self) -> tuple[float, ...]:
        """The block, recomputed from the raw events."""
        out: list[float] = []
        per_window: list[list[float]] = []
        for w in range(len(self.plan.windows)):
            evs: list[tuple[Any, ...]] = list(self.window_events(w)) if self.high_ms != NO_TIME else []
            cols: list[float] = []
            for types, where, op, field in self.plan.columns:
                sel = [e for e in evs if e[2] in types and (where is None or where(e))]
                if op == "count":
                    cols.append(len(sel))
                elif op == "sum":
                    assert field is not None
                    cols.append(sum(e[field] for e in sel))
                else:
                    assert field is not None
                    cols.append(len({e[field] for e in sel if e[field]}))
            per_window.append(cols)
            out.extend(cols)
        for cols in per_window:
            for num, den, default in self.plan.ratios:
                out.append(cols[num] / cols[den] if cols[den] else default)
        return tuple(out)
