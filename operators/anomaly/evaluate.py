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

import numpy as np
import numpy.typing as npt

from streamwarden.operators.anomaly.backtest import backtest_metric, score_series
from streamwarden.operators.anomaly.benchmark import (
    PROFILES,
    ScoredSeries,
    best_threshold,
    nab_score,
    windowed_gaussian_scores,
)
from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.realistic import LabeledSeries
from streamwarden.operators.anomaly.series import ClosedBucket
from streamwarden.operators.anomaly.spec import EnsembleConfig, MetricSpec, SeasonalConfig, with_detector
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
    if isinstance(cfg, EnsembleConfig):
        return min(
            warmup_buckets(metric.model_copy(update={"detector": getattr(cfg, m)})) for m in cfg.members
        )
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


# ---------------------------------------------------------------- realistic series, window scorer

BASELINE = "windowed_gaussian"


@dataclass(frozen=True, slots=True)
class RealisticReport:
    """One detector on the realistic test suite."""

    detector: str
    nab: dict[str, float]
    """Profile -> normalized window score of the score column, threshold chosen on the calibration suite."""
    thresholds: dict[str, float]
    alert_nab_standard: float | None
    """Standard-profile score of the alert column (FIRING rows; the documented threshold, no tuning)."""
    false_alerts_per_series_day: float | None
    """FIRINGs outside every labeled window, per series-day (all series)."""
    recall_by_kind: dict[str, float]
    precision_by_kind: dict[str, float]
    """Alerts inside windows / all alerts, on the series of each anomaly kind (clean series: 'clean')."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def realistic_rows(
    base: MetricSpec, series: LabeledSeries, detector: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """(scores, FIRING rows) of ``detector`` on ``series``, rows in time order, through the CLI's path."""
    raw = base.model_dump()
    raw["kind"] = series.series_kind
    raw["detector"] = {**raw["detector"], "count_floor": None}
    metric = with_detector(MetricSpec.model_validate(raw), detector)
    tuned = backtest_metric(metric, series.times_ms)
    rows = score_series(tuned, series.times_ms, series.values)
    order = np.argsort(np.asarray(series.times_ms, dtype=np.int64), kind="stable")
    scores = np.array([rows[i].score for i in order])
    alerts = np.array([rows[i].alert for i in order], dtype=bool)
    return scores, alerts


def _detector_scores(
    base: MetricSpec, suite: Sequence[LabeledSeries], detector: str
) -> tuple[list[npt.NDArray[np.float64]], list[npt.NDArray[np.bool_]] | None]:
    if detector == BASELINE:
        return [windowed_gaussian_scores(s) for s in suite], None
    pairs = [realistic_rows(base, s, detector) for s in suite]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def evaluate_realistic(
    base: MetricSpec,
    calibration: Sequence[LabeledSeries],
    test: Sequence[LabeledSeries],
    detectors: Sequence[str],
) -> list[RealisticReport]:
    """Every detector (and ``BASELINE``) on ``test``, thresholds per profile chosen on ``calibration``."""
    scored_cal = [ScoredSeries.of(s) for s in calibration]
    scored_test = [ScoredSeries.of(s) for s in test]
    series_days = sum(s.days for s in test)
    out = []
    for detector in detectors:
        cal_scores, _ = _detector_scores(base, calibration, detector)
        test_scores, test_alerts = _detector_scores(base, test, detector)
        thresholds = {p: best_threshold(scored_cal, cal_scores, p) for p in PROFILES}
        nab = {p: nab_score(scored_test, [s >= thresholds[p] for s in test_scores], p) for p in PROFILES}
        alert_nab = fa_day = None
        recall: dict[str, float] = {}
        precision: dict[str, float] = {}
        if test_alerts is not None:
            alert_nab = nab_score(scored_test, test_alerts, "standard")
            false_alerts = 0
            hit: dict[str, list[int]] = {}
            inside: dict[str, list[int]] = {}
            for sc, alerts in zip(scored_test, test_alerts, strict=True):
                kind = sc.series.anomaly_kind or "clean"
                in_window = alerts & (sc.window_of_row >= 0)
                outside = alerts & (sc.window_of_row < 0)
                false_alerts += int(outside.sum())
                got = inside.setdefault(kind, [0, 0])
                got[0] += int(in_window.sum())
                got[1] += int(alerts.sum())
                h = hit.setdefault(kind, [0, 0])
                for w in range(len(sc.windows)):
                    h[0] += int((alerts & (sc.window_of_row == w)).any())
                    h[1] += 1
            fa_day = false_alerts / series_days if series_days else 0.0
            recall = {k: v[0] / v[1] for k, v in hit.items() if v[1]}
            precision = {k: (v[0] / v[1] if v[1] else 1.0) for k, v in inside.items()}
        out.append(RealisticReport(detector, nab, thresholds, alert_nab, fa_day, recall, precision))
    return out
