"""Offline replay of the anomaly stage: records in arrival order in, ``AnomalyAlert``s out.

This is the reference the engine bindings must reproduce. It runs the keyed path engines run (one
``AnomalyOperator`` per series id, driven by event-time timers), with a deterministic watermark.

Processing contract, per record in the given (arrival) order:

1. Decode: ``bytes`` go through ``schemas.codec.decode_event`` with ``now_ms=None`` (no future-time
   check: wall time means nothing offline); a ``pb.Event`` is validated the same way; a bad record
   becomes a ``DeadLetter``.
2. Points: a valid event adds one point per metric it belongs to (``SeriesRouter``); a dead letter adds
   one point to every ``dead_letters`` metric at its ``time_ms`` or, when that is 0 (offline decoding
   has no clock), at the *stream time* = the largest event time seen so far. Dead letters before the
   first valid event have no time at all: they are counted in ``untimed_dead_letters`` and skipped.
3. Each point goes to its series' operator. A series without state gets a fresh operator that first
   learns the current watermark (``advance_to(W)``, which closes nothing), so a point behind the
   watermark is late for a new or expired series too. A late point (its bucket's
   ``end + allowed_lateness_ms <= W``) is counted in ``late_points`` and dropped (the side output).
4. Watermark: after every ``watermark_every_records``-th record (default: every record),
   ``W = max(W, max event time seen - out_of_orderness_ms)`` (the spec's ``out_of_orderness_ms`` when
   it sets one, else the job's passed in): the project's bounded-out-of-orderness
   watermark, emitted after the record that raised it, so record i is judged against the watermark of
   records 0..i-1. (Flink's built-in ``for_bounded_out_of_orderness`` emits ``max - ooo - 1`` and
   periodically; a binding that wants byte-equal output emits ``max - ooo`` per record.)
5. Timers: whenever W grows, every series whose ``next_timer_ms() <= W`` gets ``advance_to(W)``, in
   (timer, series id) order; its alerts are emitted; a series that reports ``expired`` is dropped,
   the others re-register ``next_timer_ms()``. Calling ``advance_to`` with W instead of the timer's
   own time gives the same buckets: no record arrives between the two.
6. End of input: first a last ordinary watermark step (for records since the previous step), then,
   with ``flush_at_end`` (bounded sources: Flink's final ``Long.MAX_VALUE`` watermark,
   Beam's watermark to infinity) W jumps to ``END_OF_INPUT_WATERMARK_MS`` and every series closes
   its remaining buckets up to its idle expiry, so every FIRING is closed by a RESOLVED. Without it
   (an unbounded source that stays open) the state stays as the last watermark left it.

Which buckets a series sees, and so its alerts, depends only on which of its points arrived before
the watermark passed each bucket's end plus allowed lateness; alerts of different series emitted at
the same watermark come out in timer order here, in any order from an engine: compare sorted by
``alert_sort_key``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import NO_TIME_MS, SeriesPoint, SeriesRouter
from streamwarden.operators.anomaly.spec import AnomalySpec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import (
    DEFAULT_MAX_FUTURE_MS,
    ErrorKind,
    SourceRef,
    dead_letter,
    decode_event,
    validate_event,
)

END_OF_INPUT_WATERMARK_MS = 2**63 - 1
"""The watermark at the end of a bounded input (Flink's ``Long.MAX_VALUE``)."""

_NOWHERE = SourceRef()

ReplayInput = bytes | pb.Event | pb.DeadLetter
"""A raw record, an already parsed event (validated again), or an already made dead letter."""


@dataclass(frozen=True, slots=True)
class EmittedAlert:
    """One alert and when, in the replay, it left the operator."""

    alert: pb.AnomalyAlert
    watermark_ms: int
    """The watermark that fired it (``END_OF_INPUT_WATERMARK_MS`` for the end-of-input flush)."""
    stream_time_ms: int
    """The largest event time seen when it was emitted (what 'now' is, in event time)."""
    records: int
    """How many input records had been consumed when it was emitted."""

    @property
    def at_end_of_input(self) -> bool:
        return self.watermark_ms == END_OF_INPUT_WATERMARK_MS


@dataclass(slots=True)
class ReplayResult:
    """Alerts plus the counters an engine run reports alongside them."""

    emitted: list[EmittedAlert] = field(default_factory=list)
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    untimed_dead_letters: int = 0
    """Dead letters without a time (before the first valid event): not counted in any series."""
    late_points: int = 0
    late_points_by_metric: Counter[str] = field(default_factory=Counter)
    watermark_ms: int = NO_TIME_MS
    max_event_time_ms: int = NO_TIME_MS
    open_series: int = 0
    """Series still holding state at the end (0 after an end-of-input flush)."""

    @property
    def alerts(self) -> list[pb.AnomalyAlert]:
        return [e.alert for e in self.emitted]


def alert_sort_key(alert: pb.AnomalyAlert) -> tuple[int, str, str, int]:
    """Order to compare alert lists across engines: (updated_ms, metric, series key, status)."""
    return (alert.updated_ms, alert.metric, alert.series_key, alert.status)


class AnomalyReplay:
    """The replay as a push object: ``push`` records one by one, then ``finish``.

    ``result`` holds everything emitted so far; see the module docstring for the contract.
    """

    def __init__(
        self,
        spec: AnomalySpec,
        *,
        out_of_orderness_ms: int,
        watermark_every_records: int = 1,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
        keep_emitted: bool = True,
    ) -> None:
        if out_of_orderness_ms < 0:
            raise ValueError("out_of_orderness_ms must be >= 0")
        if watermark_every_records < 1:
            raise ValueError("watermark_every_records must be >= 1")
        self.spec = spec
        self.out_of_orderness_ms = spec.alert_out_of_orderness_ms(out_of_orderness_ms)
        """The spec's own out-of-orderness if it sets one, else the job's (the argument)."""
        self.watermark_every_records = watermark_every_records
        self._max_future_ms = max_future_ms
        self._router = SeriesRouter(spec)
        self._ops: dict[str, AnomalyOperator] = {}
        self._timers: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._keep_emitted = keep_emitted
        self._touched: set[str] | None = None
        self.result = ReplayResult()

    def push(self, item: ReplayInput) -> list[EmittedAlert]:
        """Process one record (steps 1-5 of the contract); return the alerts it caused."""
        return self.push_decoded(self._decode(item))

    def push_decoded(self, record: pb.Event | pb.DeadLetter) -> list[EmittedAlert]:
        """``push`` for a record a job has already decoded and validated (its event or dead letter)."""
        res = self.result
        res.records += 1
        if isinstance(record, pb.Event):
            res.events += 1
            for point in self._router.points(record):
                self._add(point)
            if record.event_time_ms > res.max_event_time_ms:
                res.max_event_time_ms = record.event_time_ms
        else:
            res.dead_letters += 1
            time_ms = record.time_ms or res.max_event_time_ms
            if time_ms == NO_TIME_MS:
                res.untimed_dead_letters += 1
            else:
                for point in self._router.dead_letter_points(time_ms):
                    self._add(point)
        if res.records % self.watermark_every_records or res.max_event_time_ms == NO_TIME_MS:
            return []
        return self._advance(res.max_event_time_ms - self.out_of_orderness_ms)

    def finish(self, *, flush: bool = True) -> list[EmittedAlert]:
        """End of input: the last (partial) watermark step, then, with ``flush``, the final watermark."""
        res = self.result
        out = []
        if res.max_event_time_ms != NO_TIME_MS:
            out = self._advance(res.max_event_time_ms - self.out_of_orderness_ms)
        if flush:
            out += self._advance(END_OF_INPUT_WATERMARK_MS)
        res.open_series = len(self._ops)
        return out

    # ---- state, for an engine that keeps the series in memory and checkpoints what changed

    def track_changes(self) -> None:
        """From now on note every series an input or a watermark step changes (``take_changes``)."""
        self._touched = set()

    def take_changes(self) -> tuple[dict[str, bytes], list[str]]:
        """The series changed since the last call: ``({series id: operator bytes}, [series ids gone])``."""
        touched = self._touched
        if touched is None:
            return {}, []
        self._touched = set()
        ops = self._ops
        changed = {sid: ops[sid].to_bytes() for sid in touched if sid in ops}
        return changed, [sid for sid in touched if sid not in ops]

    @property
    def clock(self) -> tuple[int, int]:
        """``(watermark, max event time)``: with the series, all a restore needs."""
        return self.result.watermark_ms, self.result.max_event_time_ms

    def restore(self, series: dict[str, bytes], clock: tuple[int, int]) -> None:
        """Take over series bytes (``take_changes``) and a ``clock`` saved by another instance."""
        self.result.watermark_ms, self.result.max_event_time_ms = clock
        for sid, data in series.items():
            op = AnomalyOperator.from_bytes(self.spec, data)
            self._ops[sid] = op
            timer = op.next_timer_ms()
            if timer is not None:
                self._timers[sid] = timer
                heapq.heappush(self._heap, (timer, sid))

    def _decode(self, item: ReplayInput) -> pb.Event | pb.DeadLetter:
        if isinstance(item, bytes | bytearray | memoryview):
            return decode_event(bytes(item), now_ms=None, max_future_ms=self._max_future_ms)
        if isinstance(item, pb.Event):
            problem = validate_event(item, now_ms=None, max_future_ms=self._max_future_ms)
            if problem is None:
                return item
            return dead_letter(item.SerializeToString(), problem[0], problem[1], _NOWHERE, 0)
        if isinstance(item, pb.DeadLetter):
            return item
        return dead_letter(b"", ErrorKind.UNDECODABLE, f"not a record: {type(item).__name__}", _NOWHERE, 0)

    def _add(self, point: SeriesPoint) -> None:
        res = self.result
        sid = point.series_id
        op = self._ops.get(sid)
        fresh = op is None
        if op is None:
            op = AnomalyOperator.for_series(self.spec, point.metric, point.series_key)
            if res.watermark_ms != NO_TIME_MS:
                op.advance_to(res.watermark_ms)  # learns the watermark; it has no bucket to close
        if not op.add(point.time_ms, point.amount):
            res.late_points += 1
            res.late_points_by_metric[point.metric] += 1
            if not fresh and self._touched is not None:
                self._touched.add(sid)  # its late count is state
            return  # a fresh operator that only saw a late point keeps no state
        if self._touched is not None:
            self._touched.add(sid)
        if fresh:
            self._ops[sid] = op
        timer = op.next_timer_ms()
        if timer is not None and self._timers.get(sid) != timer:
            self._timers[sid] = timer
            heapq.heappush(self._heap, (timer, sid))

    def _advance(self, watermark_ms: int) -> list[EmittedAlert]:
        res = self.result
        if watermark_ms <= res.watermark_ms:
            return []
        res.watermark_ms = watermark_ms
        out: list[EmittedAlert] = []
        heap = self._heap
        while heap and heap[0][0] <= watermark_ms:
            timer, sid = heapq.heappop(heap)
            if self._timers.get(sid) != timer:
                continue  # superseded registration
            op = self._ops[sid]
            if self._touched is not None:
                self._touched.add(sid)
            for alert in op.advance_to(watermark_ms):
                out.append(EmittedAlert(alert, watermark_ms, res.max_event_time_ms, res.records))
            if op.expired:
                del self._ops[sid]
                del self._timers[sid]
                continue
            nxt = op.next_timer_ms()
            if nxt is None:  # pragma: no cover - a live series always has a next bucket
                del self._timers[sid]
                continue
            self._timers[sid] = nxt
            heapq.heappush(heap, (nxt, sid))
        if self._keep_emitted:
            res.emitted.extend(out)
        return out


def replay(
    items: Iterable[ReplayInput],
    spec: AnomalySpec,
    *,
    out_of_orderness_ms: int,
    watermark_every_records: int = 1,
    flush_at_end: bool = True,
) -> ReplayResult:
    """Run ``items`` (arrival order) through the anomaly stage; alerts plus counters."""
    r = AnomalyReplay(
        spec, out_of_orderness_ms=out_of_orderness_ms, watermark_every_records=watermark_every_records
    )
    for item in items:
        r.push(item)
    r.finish(flush=flush_at_end)
    return r.result


def replay_alerts(
    items: Iterable[ReplayInput],
    spec: AnomalySpec,
    *,
    out_of_orderness_ms: int,
    watermark_every_records: int = 1,
    flush_at_end: bool = True,
) -> list[pb.AnomalyAlert]:
    """The alerts of ``replay`` in emission order (the reference engines must reproduce)."""
    return replay(
        items,
        spec,
        out_of_orderness_ms=out_of_orderness_ms,
        watermark_every_records=watermark_every_records,
        flush_at_end=flush_at_end,
    ).alerts
