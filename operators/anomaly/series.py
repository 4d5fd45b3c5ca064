"""Metric series: route events to series keys, bucket them in tumbling event-time windows.

A bucket ``[start, end)`` closes once the watermark reaches ``end + allowed_lateness_ms``. A ``count``
series sums its points per bucket and quiet buckets close with value 0 (a drop to zero is data); a
``gauge`` series averages its points per bucket and a quiet bucket closes as missing (value NaN,
never scored as 0). Either way buckets keep closing until the series has been idle for
``idle_expiry_ms``; the last zero bucket is marked ``last`` and the series is then forgotten, so
memory stays bounded by the series active within the horizon.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streamwarden.operators.anomaly._wire import Reader, StateFormatError, Writer
from streamwarden.operators.anomaly.spec import GLOBAL_SERIES_KEY, AnomalySpec, MetricSpec
from streamwarden.schemas import streamwarden_pb2 as pb

NO_TIME_MS = -(2**63)
"""Sentinel for 'no time yet' (smaller than every real event time)."""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One contribution to one series: what engines key by ``series_id`` and feed to an operator."""

    metric: str
    series_key: str
    time_ms: int
    amount: float = 1.0

    @property
    def series_id(self) -> str:
        return series_id(self.metric, self.series_key)


@dataclass(frozen=True, slots=True)
class ClosedBucket:
    """A closed tumbling bucket of one series. ``last``: the series expires after it."""

    metric: str
    series_key: str
    start_ms: int
    end_ms: int
    value: float
    """Sum of the points (count) or their mean (gauge); NaN = missing (a gauge bucket without points)."""
    last: bool = False

    @property
    def missing(self) -> bool:
        return self.value != self.value


def series_id(metric: str, series_key: str) -> str:
    """The engine key of a series: ``metric:key`` (metric names never contain ':')."""
    return f"{metric}:{series_key}"


def split_series_id(sid: str) -> tuple[str, str]:
    """Inverse of ``series_id``."""
    metric, _, key = sid.partition(":")
    return metric, key


def event_series_key(metric: MetricSpec, event: pb.Event) -> str | None:
    """The series ``event`` counts towards in ``metric``, or ``None`` if it does not count."""
    return _Route(metric).key(event)


class _Route:
    __slots__ = ("field", "group", "name", "types")

    def __init__(self, metric: MetricSpec) -> None:
        self.name = metric.name
        self.types = metric.event_type_values
        self.group, _, self.field = (metric.key or "").partition(".")

    def key(self, event: pb.Event) -> str | None:
        if self.types and event.type not in self.types:
            return None
        if not self.group:
            return GLOBAL_SERIES_KEY
        value = getattr(getattr(event, self.group), self.field)
        return str(value) if value else None


class SeriesRouter:
    """Event -> series points for every metric of a spec, precomputed once (the per-event fan-out)."""

    def __init__(self, spec: AnomalySpec) -> None:
        self.spec = spec
        self._routes = [_Route(m) for m in spec.metrics if m.source == "events"]
        self._dead_letter_metrics = [m.name for m in spec.metrics if m.source == "dead_letters"]

    def points(self, event: pb.Event) -> list[SeriesPoint]:
        """Every series point one decoded event contributes."""
        out = []
        t = event.event_time_ms
        for route in self._routes:
            key = route.key(event)
            if key is not None:
                out.append(SeriesPoint(route.name, key, t))
        return out

    def dead_letter_points(self, time_ms: int) -> list[SeriesPoint]:
        """The pipeline-health series points of one dead letter observed at ``time_ms``."""
        return [SeriesPoint(name, GLOBAL_SERIES_KEY, time_ms) for name in self._dead_letter_metrics]


_ROUTERS: dict[int, SeriesRouter] = {}


def router_for(spec: AnomalySpec) -> SeriesRouter:
    """A cached ``SeriesRouter`` for ``spec``."""
    router = _ROUTERS.get(id(spec))
    if router is None or router.spec is not spec:
        if len(_ROUTERS) > 16:
            _ROUTERS.clear()
        router = _ROUTERS[id(spec)] = SeriesRouter(spec)
    return router


def points_for_event(spec: AnomalySpec, event: pb.Event) -> list[SeriesPoint]:
    """Every series point one decoded event contributes (the fan-out engines key by series id)."""
    return router_for(spec).points(event)


def points_for_dead_letter(spec: AnomalySpec, time_ms: int) -> list[SeriesPoint]:
    """The pipeline-health series points of one dead letter observed at ``time_ms``."""
    return router_for(spec).dead_letter_points(time_ms)


def bucket_start(time_ms: int, bucket_ms: int, offset_ms: int = 0) -> int:
    """Start of the tumbling bucket holding ``time_ms``."""
    return (time_ms - offset_ms) // bucket_ms * bucket_ms + offset_ms


_BUCKETER_VERSION = 2
_BUCKETER_HEAD = struct.Struct("<qqqqBI")
_OPEN_BUCKET = struct.Struct("<qdI")


class SeriesBucketer:
    """Tumbling buckets of one series. ``add`` is O(1); ``close`` emits every closable bucket."""

    __slots__ = (
        "_bucket_ms",
        "_gauge",
        "_lateness_ms",
        "_offset_ms",
        "_open",
        "_quiet_buckets",
        "expired",
        "last_active_end_ms",
        "late_count",
        "metric",
        "next_start_ms",
        "series_key",
        "watermark_ms",
    )

    def __init__(self, metric: MetricSpec, series_key: str) -> None:
        self.metric = metric.name
        self.series_key = series_key
        self._bucket_ms = metric.bucket_ms
        self._offset_ms = metric.bucket_offset_ms
        self._lateness_ms = metric.allowed_lateness_ms
        self._quiet_buckets = -(-metric.idle_expiry_ms // metric.bucket_ms)
        self._gauge = metric.kind == "gauge"
        self._open: dict[int, tuple[float, int]] = {}
        self.next_start_ms = NO_TIME_MS
        self.last_active_end_ms = NO_TIME_MS
        self.watermark_ms = NO_TIME_MS
        self.late_count = 0
        self.expired = False

    def is_late(self, time_ms: int) -> bool:
        """Would ``time_ms`` land in a bucket that is already closed?"""
        # Every closed bucket had end + lateness <= the watermark, and the watermark only grows.
        start = bucket_start(time_ms, self._bucket_ms, self._offset_ms)
        return (
            self.watermark_ms != NO_TIME_MS
            and start + self._bucket_ms + self._lateness_ms <= self.watermark_ms
        )

    def add(self, time_ms: int, amount: float = 1.0) -> bool:
        """Count ``amount`` at ``time_ms``; return ``False`` (and count it) if the bucket has closed."""
        if self.expired:
            self._restart()
        if self.is_late(time_ms):
            self.late_count += 1
            return False
        start = bucket_start(time_ms, self._bucket_ms, self._offset_ms)
        total, n = self._open.get(start, (0.0, 0))
        self._open[start] = (total + amount, n + 1)
        if self.next_start_ms == NO_TIME_MS or start < self.next_start_ms:
            self.next_start_ms = start
        self.last_active_end_ms = max(self.last_active_end_ms, start + self._bucket_ms)
        return True

    def _restart(self) -> None:
        self._open.clear()
        self.next_start_ms = NO_TIME_MS
        self.last_active_end_ms = NO_TIME_MS
        self.expired = False

    def _expiry_end_ms(self) -> int:
        return self.last_active_end_ms + self._quiet_buckets * self._bucket_ms

    def close(self, watermark_ms: int) -> list[ClosedBucket]:
        """Close every bucket whose end + allowed lateness <= ``watermark_ms``, oldest first."""
        if watermark_ms > self.watermark_ms:
            self.watermark_ms = watermark_ms
        out: list[ClosedBucket] = []
        if self.next_start_ms == NO_TIME_MS or self.expired:
            return out
        step = self._bucket_ms
        expiry_end = self._expiry_end_ms()
        start = self.next_start_ms
        while start + step + self._lateness_ms <= self.watermark_ms:
            total, n = self._open.pop(start, (0.0, 0))
            value = (total / n if n else math.nan) if self._gauge else total
            last = start + step >= expiry_end
            out.append(ClosedBucket(self.metric, self.series_key, start, start + step, value, last))
            start += step
            if last:
                self.expired = True
                self._open.clear()
                break
        self.next_start_ms = start
        return out

    def next_close_watermark_ms(self) -> int | None:
        """The watermark at which ``close`` will next emit a bucket (an event-time timer), if any."""
        if self.next_start_ms == NO_TIME_MS or self.expired:
            return None
        return self.next_start_ms + self._bucket_ms + self._lateness_ms

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    def write(self, w: Writer) -> None:
        w.u8(_BUCKETER_VERSION).text(self.metric).text(self.series_key)
        w.fixed(
            _BUCKETER_HEAD,
            self.next_start_ms,
            self.last_active_end_ms,
            self.watermark_ms,
            self.late_count,
            int(self.expired),
            len(self._open),
        )
        for start in sorted(self._open):
            w.fixed(_OPEN_BUCKET, start, *self._open[start])

    @classmethod
    def read(cls, r: Reader, metrics: Mapping[str, MetricSpec]) -> SeriesBucketer:
        r.version(_BUCKETER_VERSION)
        name, key = r.text(), r.text()
        metric = metrics.get(name)
        if metric is None:
            raise StateFormatError(f"series state is for metric {name!r}, which the spec does not have")
        b = cls(metric, key)
        next_start, last_end, watermark, late, expired, n_open = r.fixed(_BUCKETER_HEAD)
        b.next_start_ms, b.last_active_end_ms, b.watermark_ms = int(next_start), int(last_end), int(watermark)
        b.late_count, b.expired = int(late), bool(expired)
        for _ in range(int(n_open)):
            start, total, n = r.fixed(_OPEN_BUCKET)
            b._open[int(start)] = (float(total), int(n))
        return b


_AGGREGATOR_VERSION = 1


class SeriesAggregator:
    """All series of a spec in one object: ``on_event`` / ``on_dead_letter``, then ``advance_to``.

    The un-keyed form of the metrics stage (replay, tests, a single-worker job). Keyed engines use
    ``points_for_event`` and one ``AnomalyOperator`` per series id instead; both give the same buckets.
    """

    def __init__(self, spec: AnomalySpec) -> None:
        self._router = SeriesRouter(spec)
        self._metrics = {m.name: m for m in spec.metrics}
        self._series: dict[tuple[str, str], SeriesBucketer] = {}
        self.watermark_ms = NO_TIME_MS
        self.late_count = 0

    def add_point(self, point: SeriesPoint) -> bool:
        """Apply one series point; ``False`` if it was late (counted in ``late_count``)."""
        sid = (point.metric, point.series_key)
        bucketer = self._series.get(sid)
        if bucketer is None:
            bucketer = SeriesBucketer(self._metrics[point.metric], point.series_key)
            bucketer.watermark_ms = self.watermark_ms
            if bucketer.is_late(point.time_ms):
                self.late_count += 1
                return False
            self._series[sid] = bucketer
        ok = bucketer.add(point.time_ms, point.amount)
        if not ok:
            self.late_count += 1
        return ok

    def on_event(self, event: pb.Event) -> int:
        """Count one decoded event in every series it belongs to; return how many it was applied to."""
        return sum(self.add_point(p) for p in self._router.points(event))

    def on_dead_letter(self, time_ms: int) -> int:
        """Count one dead letter observed at ``time_ms`` in the pipeline-health series."""
        return sum(self.add_point(p) for p in self._router.dead_letter_points(time_ms))

    def on_events(self, events: Iterable[pb.Event]) -> None:
        for event in events:
            self.on_event(event)

    def advance_to(self, watermark_ms: int) -> list[ClosedBucket]:
        """Close every closable bucket of every series, ordered by (end, metric, key); drop expired series."""
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        out: list[ClosedBucket] = []
        gone = []
        for sid, bucketer in self._series.items():
            out.extend(bucketer.close(self.watermark_ms))
            if bucketer.expired:
                gone.append(sid)
        for sid in gone:
            del self._series[sid]
        out.sort(key=lambda b: (b.end_ms, b.metric, b.series_key))
        return out

    @property
    def series_count(self) -> int:
        return len(self._series)

    def to_bytes(self) -> bytes:
        w = Writer().u8(_AGGREGATOR_VERSION).i64(self.watermark_ms).i64(self.late_count)
        w.u32(len(self._series))
        for sid in sorted(self._series):
            self._series[sid].write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, spec: AnomalySpec, data: bytes) -> SeriesAggregator:
        r = Reader(data, "SeriesAggregator")
        r.version(_AGGREGATOR_VERSION)
        agg = cls(spec)
        agg.watermark_ms, agg.late_count = r.i64(), r.i64()
        for _ in range(r.u32()):
            bucketer = SeriesBucketer.read(r, agg._metrics)
            agg._series[(bucketer.metric, bucketer.series_key)] = bucketer
        r.done()
        return agg
