"""Backtest one recorded series through the streaming operator: any ``(time, value)`` rows in.

Rules (what ``streamwarden anomaly score`` documents):

- Rows may come in any order, with duplicated timestamps, irregular spacing and gaps. They are sorted
  by time (stable); the bucket length is the median spacing between *distinct* timestamps, snapped to
  a usual interval (1 s, 5 s, ..., 5 min, ..., 1 h, ..., 1 day) when within 2% of it (one minute if
  there is only one timestamp); buckets are aligned on the first timestamp.
- Rows that fall in one bucket (duplicates, a daylight-saving repeat, jitter) are aggregated by the
  series kind: ``count`` sums them (events per bucket), ``gauge`` averages them (a measured value).
- A bucket without rows is 0 for a ``count`` series (no events happened) and *missing* for a
  ``gauge`` (not scored, never treated as 0). A row whose value is empty or not finite is missing too.
- Buckets close in time order exactly as the watermark would close them in the stream, through one
  ``AnomalyOperator``; the series never expires inside a file, however long a gap is.
- Every row gets the score of its bucket; ``alert`` marks the last row of the bucket in which a
  FIRING started (or of the first bucket after a gap in which it started).
- ``history`` (a backfill) is bucketed the same way and taught to the detector first, so alerts are
  possible from the first row.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import bucket_start
from streamwarden.operators.anomaly.spec import MetricSpec
from streamwarden.operators.errors import StreamwardenError
from streamwarden.schemas import streamwarden_pb2 as pb

DEFAULT_BUCKET_MS = 60_000
"""The bucket length of a series with fewer than two distinct timestamps."""


class SeriesShapeError(StreamwardenError, ValueError):
    """The recorded series cannot be bucketed. ``row`` is 0-based (kept for callers; rarely raised now)."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


@dataclass(frozen=True, slots=True)
class RowResult:
    """The streaming path's verdict on one input row."""

    score: float
    statistic: float
    expected: float
    alert: bool
    """A FIRING transition happened in this row's bucket (marked on its last row) or the gap before it."""
    alerts: tuple[pb.AnomalyAlert, ...]
    bucket_start_ms: int
    detector: str


_ROUND_STEPS_MS = tuple(
    s * 1000 for s in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800)
) + tuple(h * 3_600_000 for h in (4, 6, 8, 12, 24))
"""Usual sampling intervals; a median spacing within ``ROUND_TOLERANCE`` of one is snapped to it."""
ROUND_TOLERANCE = 0.02


def infer_bucket_ms(times_ms: Sequence[int]) -> int:
    """Median spacing between distinct timestamps (any order), snapped to a usual interval (1 s .. 1 day)
    within 2% (jittered 5-minute rows give 5 minutes, not 5 min 1.3 s, so buckets do not drift
    against the clock); ``DEFAULT_BUCKET_MS`` if fewer than two timestamps."""
    distinct = sorted(set(times_ms))
    if len(distinct) < 2:
        return DEFAULT_BUCKET_MS
    gaps = [b - a for a, b in itertools.pairwise(distinct)]
    median = max(1, int(statistics.median_low(gaps)))
    for step in _ROUND_STEPS_MS:
        if abs(median - step) <= ROUND_TOLERANCE * step:
            return step
    return median


def backtest_metric(metric: MetricSpec, times_ms: Sequence[int]) -> MetricSpec:
    """``metric`` with buckets sized and aligned to the recorded series, never expiring inside it."""
    bucket_ms = infer_bucket_ms(times_ms)
    first = min(times_ms) if times_ms else 0
    span = (max(times_ms) - first) if times_ms else 0
    return metric.model_copy(
        update={
            "bucket_ms": bucket_ms,
            "bucket_offset_ms": first % bucket_ms,
            "idle_expiry_ms": max(metric.idle_expiry_ms, span + 2 * bucket_ms),
        }
    )


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def bucket_history(
    metric: MetricSpec, times_ms: Sequence[int], values: Sequence[float | None]
) -> tuple[int, list[float | None]]:
    """A backfill as consecutive buckets of ``metric`` (aggregated by its kind): (first start, values)."""
    step, offset = metric.bucket_ms, metric.bucket_offset_ms
    sums: dict[int, tuple[float, int]] = {}
    for t, v in zip(times_ms, values, strict=True):
        if _usable(v):
            start = bucket_start(t, step, offset)
            total, n = sums.get(start, (0.0, 0))
            sums[start] = (total + float(v), n + 1)  # type: ignore[arg-type]
    if not sums:
        return 0, []
    first, last = min(sums), max(sums)
    gauge = metric.kind == "gauge"
    out: list[float | None] = []
    for start in range(first, last + step, step):
        total, n = sums.get(start, (0.0, 0))
        out.append((total / n if n else None) if gauge else total)
    return first, out


def score_series(
    metric: MetricSpec,
    times_ms: Sequence[int],
    values: Sequence[float | None],
    history: tuple[int, Sequence[float | None]] | None = None,
) -> list[RowResult]:
    """Run the rows through one ``AnomalyOperator``; ``metric`` should come from ``backtest_metric``.
    Results are in input order. ``history``: (first bucket start, bucket values) to warm up from."""
    if len(times_ms) != len(values):
        raise ValueError("times_ms and values differ in length")
    op = AnomalyOperator(metric, "backtest")
    if history is not None:
        op.warm_up(history[0], history[1])
    step, lateness = metric.bucket_ms, metric.allowed_lateness_ms
    order = sorted(range(len(times_ms)), key=lambda i: times_ms[i])
    out: list[RowResult | None] = [None] * len(times_ms)
    i = 0
    while i < len(order):
        start = bucket_start(times_ms[order[i]], step, metric.bucket_offset_ms)
        rows = []
        while i < len(order) and bucket_start(times_ms[order[i]], step, metric.bucket_offset_ms) == start:
            rows.append(order[i])
            i += 1
        # First the empty buckets of a gap (as the watermark would close them), then this bucket.
        outcomes = op.close(start + lateness)
        usable = [values[r] for r in rows if _usable(values[r])]
        for r in rows:
            value = values[r]
            if _usable(value):
                op.add(times_ms[r], float(value))  # type: ignore[arg-type]
        outcomes += op.close(start + step + lateness)
        mine = outcomes[-1] if usable and outcomes else None
        alerts = tuple(a for o in outcomes for a in o.alerts)
        fired = any(o.fired for o in outcomes)
        for pos, r in enumerate(rows):
            last = pos == len(rows) - 1
            out[r] = RowResult(
                score=mine.score.score if mine is not None else 0.0,
                statistic=mine.score.statistic if mine is not None else 0.0,
                expected=mine.score.expected if mine is not None else math.nan,
                alert=fired and last,
                alerts=alerts if last else (),
                bucket_start_ms=start,
                detector=mine.score.detector if mine is not None else "",
            )
    return [r for r in out if r is not None]
