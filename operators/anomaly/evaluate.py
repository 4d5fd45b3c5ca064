"""Score detectors on labeled synthetic series: precision, recall, detection delay, false alerts per day.

Every series runs through the same detector and lifecycle code as the stream (``AnomalyOperator``).
A window counts as detected if a FIRING starts in ``[start, end + DETECT_SLACK)`` (the m-of-n rule
needs a few buckets); a FIRING is true if it starts in ``[start, end + RECOVERY_SLACK)`` (the
baseline has to recover after a long anomaly, a second alert there is about the same incident).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import ClosedBucket
from streamwarden.operators.anomaly.spec import MetricSpec, SeasonalConfig, with_detector
from streamwarden.operators.anomaly.synth import ANOMALY_KINDS, SyntheticSeries

DETECT_SLACK = 5
RECOVERY_SLACK = 60


@dataclass(frozen=True, slots=True)
class DetectorReport:
    detector: str
    precision: float
    recall: float
    median_delay_buckets: float | None
    false_alerts_per_day_clean: float
    firing_total: int
    true_firing: int
    windows: int
    detected: int
    recall_by_kind: dict[str, float]
    warmup_buckets: int
    """Buckets of history before the detector may alert (1-minute buckets here)."""
    state_bytes: int
    """Largest serialized operator state of one series (bucketer + detector + lifecycle)."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def firing_indices(metric: MetricSpec, series: SyntheticSeries) -> list[int]:
    """Bucket indices of every FIRING transition for ``series``."""
    return _run(metric, series)[0]


def _run(metric: MetricSpec, series: SyntheticSeries) -> tuple[list[int], int]:
    op = AnomalyOperator(metric, series.name)
    out = []
    for i, (t, v) in enumerate(zip(series.times_ms(), series.values, strict=True)):
        outcome = op.on_bucket(ClosedBucket(metric.name, series.name, t, t + series.bucket_ms, v))
        if outcome.fired:
            out.append(i)
    return out, len(op.to_bytes())


def warmup_buckets(metric: MetricSpec) -> int:
    """History a detector needs before it may alert, in buckets of ``metric``."""
    cfg = metric.detector
    if isinstance(cfg, SeasonalConfig):
        return max(cfg.min_periods * cfg.period_ms // metric.bucket_ms, cfg.min_residuals)
    return cfg.warmup_buckets


def evaluate_detector(metric: MetricSpec, suite: Sequence[SyntheticSeries]) -> DetectorReport:
    """Run ``metric``'s detector and lifecycle on every series of ``suite``."""
    windows = detected = firing_total = true_firing = 0
    delays: list[int] = []
    clean_alerts = 0
    clean_days = 0.0
    state_bytes = 0
    per_kind_total = dict.fromkeys(ANOMALY_KINDS, 0)
    per_kind_hit = dict.fromkeys(ANOMALY_KINDS, 0)
    for series in suite:
        fired, size = _run(metric.model_copy(update={"bucket_ms": series.bucket_ms}), series)
        state_bytes = max(state_bytes, size)
        firing_total += len(fired)
        if not series.anomalies:
            clean_alerts += len(fired)
            clean_days += series.days
        for i in fired:
            if any(w.start <= i < w.end + RECOVERY_SLACK for w in series.anomalies):
                true_firing += 1
        for w in series.anomalies:
            windows += 1
            per_kind_total[w.kind] = per_kind_total.get(w.kind, 0) + 1
            hits = [i for i in fired if w.start <= i < w.end + DETECT_SLACK]
            if hits:
                detected += 1
                per_kind_hit[w.kind] = per_kind_hit.get(w.kind, 0) + 1
                delays.append(hits[0] - w.start)
    return DetectorReport(
        detector=metric.detector.kind,
        precision=true_firing / firing_total if firing_total else 1.0,
        recall=detected / windows if windows else 0.0,
        median_delay_buckets=float(statistics.median(delays)) if delays else None,
        false_alerts_per_day_clean=clean_alerts / clean_days if clean_days else 0.0,
        firing_total=firing_total,
        true_firing=true_firing,
        windows=windows,
        detected=detected,
        recall_by_kind={k: per_kind_hit[k] / n for k, n in per_kind_total.items() if n},
        warmup_buckets=warmup_buckets(metric),
        state_bytes=state_bytes,
    )


def evaluate(
    base: MetricSpec, suite: Sequence[SyntheticSeries], detectors: Sequence[str]
) -> list[DetectorReport]:
    """One report per detector kind, each with ``base``'s shared settings and lifecycle."""
    return [evaluate_detector(with_detector(base, kind), suite) for kind in detectors]
