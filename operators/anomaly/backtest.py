"""Backtest one recorded series through the streaming operator, row by row.

Each row becomes the amount of one bucket; the bucket length is the median spacing of the rows and
the buckets are aligned on the first row. After each row the watermark closes that row's bucket,
exactly as the streaming job would once the watermark passes it. Missing rows are empty buckets
(value 0), as in the stream.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import bucket_start
from streamwarden.operators.anomaly.spec import MetricSpec
from streamwarden.operators.errors import StreamwardenError
from streamwarden.schemas import streamwarden_pb2 as pb


class SeriesShapeError(StreamwardenError, ValueError):
    """The recorded series cannot be bucketed (too short, unordered, or irregular). ``row`` is 0-based."""

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
    """A FIRING transition happened at this row (or in an empty bucket just before it)."""
    alerts: tuple[pb.AnomalyAlert, ...]


def infer_bucket_ms(times_ms: Sequence[int]) -> int:
    """Median spacing of strictly increasing timestamps."""
    if len(times_ms) < 2:
        raise SeriesShapeError("need at least two rows to infer the bucket length")
    gaps = []
    for i in range(1, len(times_ms)):
        gap = times_ms[i] - times_ms[i - 1]
        if gap <= 0:
            raise SeriesShapeError("timestamps must be strictly increasing", row=i)
        gaps.append(gap)
    return int(statistics.median_low(gaps))


def backtest_metric(metric: MetricSpec, times_ms: Sequence[int]) -> MetricSpec:
    """``metric`` with buckets sized and aligned to the recorded series."""
    bucket_ms = infer_bucket_ms(times_ms)
    offset_ms = times_ms[0] % bucket_ms
    return metric.model_copy(
        update={
            "bucket_ms": bucket_ms,
            "bucket_offset_ms": offset_ms,
            "idle_expiry_ms": max(metric.idle_expiry_ms, bucket_ms),
        }
    )


def score_series(metric: MetricSpec, times_ms: Sequence[int], values: Sequence[float]) -> list[RowResult]:
    """Run the rows through one ``AnomalyOperator``; ``metric`` should come from ``backtest_metric``."""
    if len(times_ms) != len(values):
        raise ValueError("times_ms and values differ in length")
    op = AnomalyOperator(metric, "backtest")
    step = metric.bucket_ms
    previous = None
    out = []
    for row, (t, v) in enumerate(zip(times_ms, values, strict=True)):
        start = bucket_start(t, step, metric.bucket_offset_ms)
        if previous is not None and start <= previous:
            raise SeriesShapeError(
                f"timestamp falls in the same {step} ms bucket as the row before (spacing is irregular)",
                row=row,
            )
        previous = start
        # First the empty buckets of a gap (as the watermark would close them), then this row's bucket.
        outcomes = op.close(start + metric.allowed_lateness_ms)
        op.add(t, v)
        outcomes += op.close(start + step + metric.allowed_lateness_ms)
        mine = outcomes[-1]
        alerts = tuple(a for o in outcomes for a in o.alerts)
        out.append(
            RowResult(
                score=mine.score.score,
                statistic=mine.score.statistic,
                expected=mine.score.expected,
                alert=any(o.fired for o in outcomes),
                alerts=alerts,
            )
        )
    return out
