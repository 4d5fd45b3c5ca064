"""Anomaly stage on Flink: series points (from the decode stage) → per-series ``AnomalyOperator`` →
``alerts``, keyed by series id. It follows ``operators.anomaly.replay`` (the reference):

* the decode stage (``SeriesPoints``) turns each record into points (``SeriesRouter``: events, and dead
  letters at their time or the stream time) and stamps each with the reference's watermark as of the
  previous records, ``W = max event time - out-of-orderness``;
* ``AnomalyFunction`` advances the series' operator to the ``W`` a point carries before adding it, so a
  point is late (dropped, counted) exactly when the reference says so, a fresh series first learns
  ``W``, and an expired series starts over;
* quiet series still close their buckets: an event-time timer at ``next_timer_ms()``, driven by Flink's
  watermark over the points (stamped with the stream's max event time, so it never runs ahead of the
  reference's ``W``); at the end of a bounded input the final watermark closes every series, as the
  reference's ``flush_at_end``. Alerts come out at other moments than in the reference, but the same.

State, per series, is one ``ValueState[bytes]``: the operator's versioned bytes (``to_bytes``) as a base
plus a log of the steps applied since (``<qdq``: point time or ``NO_TIME_MS`` for a timer step, amount,
watermark), replayed on a cache miss; ``AnomalyOperator`` is deterministic, so that is the same state.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from pyflink.common import Row
from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_value_state
from streamwarden.operators.anomaly import AnomalyOperator, AnomalySpec, SeriesRouter, load_anomaly_spec
from streamwarden.operators.anomaly.series import NO_TIME_MS
from streamwarden.schemas import streamwarden_pb2 as pb

_STEP = struct.Struct("<qdq")
_BASE = struct.Struct("<BI")
SERIES_LAYOUT_VERSION = 1
_SPECS: dict[Path | None, AnomalySpec] = {}


def anomaly_spec(path: Path | None) -> AnomalySpec:
    """The anomaly spec at ``path`` (None = shipped default), loaded once per process."""
    spec = _SPECS.get(path)
    if spec is None:
        spec = _SPECS[path] = load_anomaly_spec(path)
    return spec


def point_value(series_id: str, time_ms: int, amount: float, watermark_ms: int) -> bytes:
    """What the decode stage sends per point: ``<qdq`` (time, amount, reference watermark), series id."""
    return _STEP.pack(time_ms, amount, watermark_ms) + series_id.encode("utf-8")


class SeriesPoints:
    """The reference's per-record bookkeeping for one decode instance: points of each record, each with
    the watermark of the records before it, and the Flink timestamp to give them (max event time)."""

    def __init__(self, spec_path: Path | None, out_of_orderness_ms: int) -> None:
        spec = anomaly_spec(spec_path)
        self._router = SeriesRouter(spec)
        self._ooo_ms = spec.alert_out_of_orderness_ms(out_of_orderness_ms)
        self.max_event_ms = NO_TIME_MS

    def of(self, record: pb.Event | pb.DeadLetter) -> list[tuple[str, bytes]]:
        """``[(series id, point_value)]`` of one decoded record (in arrival order)."""
        max_ms = self.max_event_ms
        w = max_ms - self._ooo_ms if max_ms != NO_TIME_MS else NO_TIME_MS
        if isinstance(record, pb.Event):
            points = self._router.points(record)
            if record.event_time_ms > max_ms:
                self.max_event_ms = record.event_time_ms
        else:
            t = record.time_ms or max_ms
            points = [] if t == NO_TIME_MS else self._router.dead_letter_points(t)
        return [(p.series_id, point_value(p.series_id, p.time_ms, p.amount, w)) for p in points]


class _Series:
    __slots__ = ("base", "log", "logged", "op", "timer_ms")

    def __init__(self, op: AnomalyOperator, base: bytes, log: bytes, logged: int) -> None:
        self.op = op
        self.base = base
        self.log = log
        self.logged = logged
        self.timer_ms = 0


class AnomalyFunction(KeyedProcessFunction):  # type: ignore[misc]
    """``point_value`` keyed by series id → ``Row(fingerprint bytes, AnomalyAlert bytes)``."""

    def __init__(
        self, spec_path: Path | None = None, *, compact_every: int = 32, cache_series: int = 100_000
    ) -> None:
        self._spec_path = spec_path
        self._compact_every = compact_every
        self._cache_series = cache_series

    def open(self, runtime_context: RuntimeContext) -> None:
        self._spec = anomaly_spec(self._spec_path)
        self._state = bytes_value_state(runtime_context, "anomaly")
        self._cache: OrderedDict[str, _Series] = OrderedDict()
        self._counters = StageCounters(runtime_context, ("alerts", "anomaly_late_points", "expired_series"))

    def close(self) -> None:
        self._counters.flush()

    # ---- state

    def _load(self, sid: str) -> _Series | None:
        raw = self._state.value()
        if raw is None:
            return None
        version, n_base = _BASE.unpack_from(raw, 0)
        if version != SERIES_LAYOUT_VERSION:
            raise ValueError(f"series state layout v{version} is not v{SERIES_LAYOUT_VERSION}")
        base = raw[_BASE.size : _BASE.size + n_base]
        log = raw[_BASE.size + n_base :]
        op = (
            AnomalyOperator.from_bytes(self._spec, base)
            if base
            else AnomalyOperator.for_series_id(self._spec, sid)
        )
        for t, amount, w in _STEP.iter_unpack(log):
            if w != NO_TIME_MS:
                op.advance_to(w)
            if t != NO_TIME_MS:
                op.add(t, amount)
        return _Series(op, base, log, len(log) // _STEP.size)

    def _series(self, sid: str) -> _Series | None:
        series = self._cache.get(sid)
        if series is not None:
            self._cache.move_to_end(sid)
            return series
        series = self._load(sid)
        if series is not None:
            self._remember(sid, series)
        return series

    def _remember(self, sid: str, series: _Series) -> None:
        self._cache[sid] = series
        if len(self._cache) > self._cache_series:
            self._cache.popitem(last=False)

    def _write(self, series: _Series, step: bytes) -> None:
        if series.logged + 1 >= self._compact_every:
            series.base, series.log, series.logged = series.op.to_bytes(), b"", 0
        else:
            series.log += step
            series.logged += 1
        self._state.update(_BASE.pack(SERIES_LAYOUT_VERSION, len(series.base)) + series.base + series.log)

    def _drop(self, sid: str) -> None:
        self._state.clear()
        self._cache.pop(sid, None)
        self._counters.inc("expired_series")

    def _arm(self, series: _Series, ctx: KeyedProcessFunction.Context) -> None:
        due = series.op.next_timer_ms()
        if due is not None and due != series.timer_ms:
            ctx.timer_service().register_event_time_timer(due)
            series.timer_ms = due

    def _emit(self, alerts: list[pb.AnomalyAlert]) -> Iterator[Row]:
        for alert in alerts:
            self._counters.inc("alerts")
            yield Row(alert.fingerprint.encode("utf-8"), alert.SerializeToString())

    # ---- elements and timers

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        t, amount, w = _STEP.unpack_from(value, 0)
        sid = value[_STEP.size :].decode("utf-8")
        series = self._series(sid)
        if series is not None and w != NO_TIME_MS:
            yield from self._emit(series.op.advance_to(w))
            if series.op.expired:
                self._drop(sid)
                series = None
        if series is None:
            op = AnomalyOperator.for_series_id(self._spec, sid)
            if w != NO_TIME_MS:
                op.advance_to(w)  # learns the watermark; a fresh series has nothing to close
            if not op.add(t, amount):
                self._counters.inc("anomaly_late_points")
                return  # a fresh series that only saw a late point keeps no state
            series = _Series(op, b"", b"", 0)
            self._remember(sid, series)
        elif not series.op.add(t, amount):
            self._counters.inc("anomaly_late_points")  # still a step: the late count is state
        self._write(series, _STEP.pack(t, amount, w))
        self._arm(series, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        sid: str = ctx.get_current_key()
        series = self._series(sid)
        if series is None:
            return
        w = max(timestamp, ctx.timer_service().current_watermark())
        yield from self._emit(series.op.advance_to(w))
        if series.op.expired:
            self._drop(sid)
            return
        self._write(series, _STEP.pack(NO_TIME_MS, 0.0, w))
        self._arm(series, ctx)
