"""Anomaly stage on Beam: Kafka records → series points → per-series ``AnomalyOperator`` → ``alerts``.

::

    records ─ SeriesPointsFn [not keyed: decode, SeriesRouter, observed watermark, timer service]
            ─ (series id, (point | tick, ...)) per bundle ─ AnomalyFn [keyed by series id: AnomalyOperator bytes]
            ─ (fingerprint, AnomalyAlert bytes) ─▶ WriteToKafka(alerts)

It reproduces ``operators.anomaly.replay`` (the reference) record for record. The DirectRunner fires
event-time timers at the end of every bundle, whatever their time, so bucket closing cannot hang on
Beam timers. Instead ``SeriesPointsFn`` keeps the reference's watermark ``W = max event time seen -
out-of-orderness`` (raised after each record) and, per live series, a shadow ``SeriesBucketer`` (the
operator's bucket bookkeeping without detector or lifecycle) fed the same points and watermarks: it
knows exactly when the reference's timer for that series is due, and then sends a *tick* carrying W
to that series' key. ``AnomalyFn`` advances its operator to the W an element carries before adding
the point, so every bucket closes at the same watermark as in the reference and quiet series still
close their buckets (a drop to zero is data) while the stream moves on.

Late points (bucket already closed) are counted (``anomaly_late_points``) and dropped in
``SeriesPointsFn``. With ``flush_at_end`` (bounded inputs only: on the live runner the end-of-window
timer fires at every bundle end) each series closes its remaining buckets at the end of input, as the
reference's ``flush_at_end``. State is the operator's versioned bytes (``OperatorCoder``), never pickle.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.ptransform import PTransform
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from streamwarden.jobs.beam.coders import StateBytesCoder
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.jobs.beam.kafka_source import KafkaRecord
from streamwarden.operators.anomaly import AnomalyOperator, AnomalySpec, SeriesRouter, load_anomaly_spec
from streamwarden.operators.anomaly.replay import END_OF_INPUT_WATERMARK_MS
from streamwarden.operators.anomaly.series import NO_TIME_MS, SeriesBucketer, split_series_id
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef

SeriesItem = tuple[int, float, int]
"""``(point time ms | NO_TIME_MS for a tick, amount, watermark ms)``."""
SeriesElement = tuple[str, SeriesItem]
SeriesBatch = tuple[str, tuple[SeriesItem, ...]]
"""One series' points and ticks of one bundle, in order."""

_SPECS: dict[Path | None, AnomalySpec] = {}


def anomaly_spec(path: Path | None) -> AnomalySpec:
    """The anomaly spec at ``path`` (None = shipped default), loaded once per process."""
    spec = _SPECS.get(path)
    if spec is None:
        spec = _SPECS[path] = load_anomaly_spec(path)
    return spec


class SeriesPointsFn(beam.DoFn):
    """Records → series points and ticks keyed by series id (see the module docstring).

    One instance sees the whole stream in arrival order (the DirectRunner runs one worker); the
    watermark, stream time and shadow bucketers are instance state, rebuilt empty on a restart like
    the job's other state on that runner."""

    def __init__(
        self, config: StagesConfig, spec_path: Path | None = None, *, check_future: bool = True
    ) -> None:
        self._config = config
        self._spec_path = spec_path
        self._check_future = check_future
        self._late = Metrics.counter(METRICS_NAMESPACE, "anomaly_late_points")
        self._ticks = Metrics.counter(METRICS_NAMESPACE, "anomaly_ticks")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        self._spec = anomaly_spec(self._spec_path)
        self._router = SeriesRouter(self._spec)
        self._ooo_ms = self._spec.alert_out_of_orderness_ms(self._stages.out_of_orderness_ms)
        self._max_event_ms = NO_TIME_MS
        self._watermark_ms = NO_TIME_MS
        self._shadows: dict[str, SeriesBucketer] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def start_bundle(self) -> None:
        self._batches: dict[str, list[SeriesItem]] = {}
        self._earliest: Timestamp | None = None

    def process(self, rec: KafkaRecord, ts: Any = beam.DoFn.TimestampParam) -> None:
        batches = self._batches
        for sid, item in self._points(rec):
            items = batches.get(sid)
            if items is None:
                batches[sid] = [item]
            else:
                items.append(item)
        if self._earliest is None or ts < self._earliest:
            self._earliest = ts

    def finish_bundle(self) -> Iterator[WindowedValue]:
        """One element per series with its points and ticks of the bundle, in order (one state read
        and write per series and bundle instead of per point)."""
        ts = self._earliest if self._earliest is not None else Timestamp(0)
        for sid, items in self._batches.items():
            yield WindowedValue((sid, tuple(items)), ts, (GlobalWindow(),))
        self._batches = {}
        self._earliest = None

    def _points(self, rec: KafkaRecord) -> Iterator[SeriesElement]:
        now_ms = int(time.time() * 1000) if self._check_future else None
        out = self._stages.decode(rec.value, SourceRef(rec.topic, rec.partition, rec.offset), now_ms)
        w = self._watermark_ms
        if isinstance(out, pb.Event):
            points = self._router.points(out)
            if out.event_time_ms > self._max_event_ms:
                self._max_event_ms = out.event_time_ms
        else:
            t = out.time_ms or self._max_event_ms
            points = [] if t == NO_TIME_MS else self._router.dead_letter_points(t)
        for p in points:
            sid = p.series_id
            shadow = self._shadows.get(sid)
            fresh = shadow is None
            if shadow is None:
                metric_name, key = split_series_id(sid)
                shadow = SeriesBucketer(self._spec.metric(metric_name), key)
                if w != NO_TIME_MS:
                    shadow.close(w)
            if not shadow.add(p.time_ms, p.amount):
                self._late.inc()
                continue
            if fresh:
                self._shadows[sid] = shadow
            self._arm(sid, shadow)
            yield sid, (p.time_ms, p.amount, w)
        if self._max_event_ms != NO_TIME_MS:
            yield from self._advance(self._max_event_ms - self._ooo_ms)

    def _arm(self, sid: str, shadow: SeriesBucketer) -> None:
        due = shadow.next_close_watermark_ms()
        if due is not None and self._due.get(sid) != due:
            self._due[sid] = due
            heapq.heappush(self._heap, (due, sid))

    def _advance(self, watermark_ms: int) -> Iterator[SeriesElement]:
        if watermark_ms <= self._watermark_ms:
            return
        self._watermark_ms = watermark_ms
        heap = self._heap
        while heap and heap[0][0] <= watermark_ms:
            due, sid = heapq.heappop(heap)
            if self._due.get(sid) != due:
                continue  # superseded
            shadow = self._shadows[sid]
            shadow.close(watermark_ms)
            self._ticks.inc()
            yield sid, (NO_TIME_MS, 0.0, watermark_ms)
            del self._due[sid]
            if shadow.expired:
                del self._shadows[sid]
            else:
                self._arm(sid, shadow)


class _StateValue:
    """What the state cell holds: the live operator and the spec file it belongs to."""

    __slots__ = ("op", "spec_path")

    def __init__(self, op: AnomalyOperator, spec_path: Path | None) -> None:
        self.op = op
        self.spec_path = spec_path


class OperatorCoder(StateBytesCoder):
    """State cell ↔ bytes: the spec path (u16 length + UTF-8, empty = shipped spec), then the
    operator's own versioned layout (``AnomalyOperator.to_bytes``).

    The SDK harness caches state values between bundles, so the live operator is decoded only on a
    cache miss and encoded once per key per bundle, not once per point."""

    def encode(self, value: _StateValue) -> bytes:
        path = str(value.spec_path).encode() if value.spec_path is not None else b""
        return len(path).to_bytes(2, "little") + path + value.op.to_bytes()

    def decode(self, encoded: bytes) -> _StateValue:
        n = int.from_bytes(encoded[:2], "little")
        spec_path = Path(encoded[2 : 2 + n].decode()) if n else None
        return _StateValue(AnomalyOperator.from_bytes(anomaly_spec(spec_path), encoded[2 + n :]), spec_path)


OPERATOR = ReadModifyWriteStateSpec("operator", OperatorCoder())
_OPERATOR = beam.DoFn.StateParam(OPERATOR)
END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)
_END_OF_INPUT = beam.DoFn.TimerParam(END_OF_INPUT)


class AnomalyFn(beam.DoFn):
    """``(series id, point | tick)`` → ``(fingerprint, AnomalyAlert bytes)``: the series'
    ``AnomalyOperator`` (state: its bytes) advanced to the element's watermark, then fed the point."""

    def __init__(self, spec_path: Path | None = None, *, flush_at_end: bool = False) -> None:
        self._spec_path = spec_path
        self._flush_at_end = flush_at_end
        self._alerts = Metrics.counter(METRICS_NAMESPACE, "alerts")

    def setup(self) -> None:
        self._spec = anomaly_spec(self._spec_path)

    def _emit(self, alerts: list[pb.AnomalyAlert]) -> Iterator[tuple[bytes, bytes]]:
        for alert in alerts:
            self._alerts.inc()
            yield alert.fingerprint.encode(), alert.SerializeToString()

    def process(
        self, element: SeriesBatch, state: Any = _OPERATOR, end: Any = _END_OF_INPUT
    ) -> Iterator[tuple[bytes, bytes]]:
        sid, items = element
        cell: _StateValue | None = state.read()
        op = cell.op if cell is not None else None
        for time_ms, amount, watermark_ms in items:
            if op is not None and watermark_ms != NO_TIME_MS:
                yield from self._emit(op.advance_to(watermark_ms))
                if op.expired:
                    op = None
            if time_ms == NO_TIME_MS:  # a tick: the reference's timer for this series
                continue
            if op is None:
                op = AnomalyOperator.for_series_id(self._spec, sid)
                if watermark_ms != NO_TIME_MS:
                    op.advance_to(watermark_ms)  # learns the watermark; a fresh series has nothing to close
                if self._flush_at_end:
                    end.set(GlobalWindow().max_timestamp())
            op.add(time_ms, amount)  # SeriesPointsFn already dropped late points
        if op is None:
            if cell is not None:
                state.clear()
            return
        if cell is None or cell.op is not op:
            cell = _StateValue(op, self._spec_path)
        state.write(cell)  # updated in place

    @on_timer(END_OF_INPUT)
    def on_end_of_input(self, state: Any = _OPERATOR) -> Iterator[tuple[bytes, bytes]]:
        cell: _StateValue | None = state.read()
        if cell is None:
            return
        yield from self._emit(cell.op.advance_to(END_OF_INPUT_WATERMARK_MS))
        state.clear()


class AnomalyAlerts(PTransform[PCollection[KafkaRecord], PCollection[tuple[bytes, bytes]]]):
    """``KafkaRecord``s → ``(fingerprint, AnomalyAlert bytes)`` for the ``alerts`` topic.

    ``spec_path``: anomaly spec YAML (None = shipped); ``flush_at_end`` only for bounded inputs."""

    def __init__(
        self,
        config: StagesConfig,
        spec_path: Path | None = None,
        *,
        check_future: bool = True,
        flush_at_end: bool = False,
    ) -> None:
        super().__init__()
        self._config = config
        self._spec_path = spec_path
        self._check_future = check_future
        self._flush_at_end = flush_at_end

    def expand(self, records: PCollection[KafkaRecord]) -> PCollection[tuple[bytes, bytes]]:
        anomaly_spec(self._spec_path)  # a bad spec fails at construction, naming the file
        points: PCollection[tuple[bytes, bytes]] = (
            records
            | "SeriesPoints"
            >> beam.ParDo(SeriesPointsFn(self._config, self._spec_path, check_future=self._check_future))
            | "Anomaly" >> beam.ParDo(AnomalyFn(self._spec_path, flush_at_end=self._flush_at_end))
        )
        return points
