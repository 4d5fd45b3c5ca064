"""Detectors on synthetic series with known anomalies: detected within a stated delay, quiet otherwise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from streamwarden.operators.anomaly.detectors import (
    HoltDetector,
    RobustZDetector,
    SeasonalDetector,
    build_detector,
    detector_from_bytes,
    score_from_z,
)
from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import ClosedBucket
from streamwarden.operators.anomaly.spec import (
    HoltConfig,
    LifecycleConfig,
    MetricSpec,
    RobustZConfig,
    SeasonalConfig,
)
from streamwarden.operators.anomaly.synth import DAY_MS, generate_series

BUCKET_MS = 60_000
MAX_DELAY_BUCKETS = {"spike": 2, "drop_to_zero": 3, "level_shift": 3, "level_down": 5}
"""Stated detection delays in buckets after the anomaly starts: the m-of-n rule (2 of 3) costs one
bucket; a moderate drop (0.3x, about 5 sigma per bucket) needs the 5-bucket sustained statistic."""
RECOVERY_SLACK = 60


def _metric(detector: RobustZConfig | HoltConfig | SeasonalConfig) -> MetricSpec:
    return MetricSpec(name="m", detector=detector, lifecycle=LifecycleConfig())  # type: ignore[call-arg]


def _firings(detector_cfg, values: list[float], start_ms: int) -> list[int]:
    metric = _metric(detector_cfg)
    op = AnomalyOperator(metric, "k")
    fired = []
    for i, v in enumerate(values):
        t = start_ms + i * BUCKET_MS
        if op.on_bucket(ClosedBucket("m", "k", t, t + BUCKET_MS, v)).fired:
            fired.append(i)
    return fired


def _inject(values: list[float], rng: np.random.Generator, start: int) -> list[tuple[str, int, int]]:
    """Spike, level shift (up), drop to zero and a level shift down, 400 buckets apart, in place."""
    windows = [("spike", start, start + 3), ("level_shift", start + 400, start + 520)]
    windows += [("drop_to_zero", start + 900, start + 930), ("level_down", start + 1300, start + 1420)]
    for kind, a, b in windows:
        for i in range(a, b):
            if kind == "spike":
                values[i] = float(rng.poisson(values[i] * 5))
            elif kind == "level_shift":
                values[i] = float(rng.poisson(values[i] * 2.5))
            elif kind == "drop_to_zero":
                values[i] = 0.0
            else:
                values[i] = float(rng.poisson(values[i] * 0.3))
    return windows


@pytest.mark.parametrize(
    "cfg",
    [RobustZConfig(), HoltConfig(), SeasonalConfig()],
    ids=["robust_z", "holt", "seasonal"],
)
def test_known_anomalies_are_detected_within_the_stated_delay(cfg) -> None:
    series = generate_series(11, days=4.0, base_rate=80.0, amplitude=0.0, anomalies_per_day=0)
    values = list(series.values)
    start = int(2.2 * DAY_MS // BUCKET_MS)  # after every detector's warm-up (seasonal needs 2 days)
    windows = _inject(values, np.random.default_rng(5), start)
    fired = _firings(cfg, values, series.start_ms)
    for kind, a, b in windows:
        hits = [i for i in fired if a <= i < b]
        assert hits, f"{cfg.kind} missed the {kind} at {a}..{b}"
        delay = hits[0] - a
        assert delay <= MAX_DELAY_BUCKETS[kind], f"{cfg.kind}: {kind} detected after {delay} buckets"
    false = [i for i in fired if not any(a <= i < b + RECOVERY_SLACK for _, a, b in windows)]
    assert false == [], f"{cfg.kind} fired outside the anomaly windows at {false}"


def test_seasonal_detector_is_quiet_on_a_clean_seasonal_baseline_and_catches_an_off_hours_surge() -> None:
    series = generate_series(3, days=5.0, base_rate=120.0, amplitude=0.6, anomalies_per_day=0)
    values = list(series.values)
    assert _firings(SeasonalConfig(), values, series.start_ms) == []
    # Double the traffic for an hour at the daily trough: well inside the daily range, so a
    # detector without a seasonal baseline has to be loose, but seasonal sees it.
    day = DAY_MS // BUCKET_MS
    trough = 3 * day + int(np.argmin(values[3 * day : 4 * day]))
    a, b = max(trough - 30, 3 * day), max(trough - 30, 3 * day) + 60
    for i in range(a, b):
        values[i] *= 2.0
    fired = _firings(SeasonalConfig(), values, series.start_ms)
    assert fired and a <= fired[0] <= a + MAX_DELAY_BUCKETS["level_shift"]
    assert all(a <= i < b + RECOVERY_SLACK for i in fired)


def test_no_score_and_no_alert_during_warmup() -> None:
    cfg = RobustZConfig(window_buckets=40, warmup_buckets=20)
    det = RobustZDetector(cfg)
    for i in range(19):
        s = det.update(10.0 if i % 2 else 1000.0, i * BUCKET_MS)  # wild values: nothing is trustworthy yet
        assert not s.warm and s.score == 0.0 and not s.breach
    det.update(10.0, 19 * BUCKET_MS)
    assert det.update(10_000.0, 20 * BUCKET_MS).warm


def test_seasonal_warmup_needs_min_periods_of_history() -> None:
    cfg = SeasonalConfig(min_periods=2)
    det = SeasonalDetector(cfg)
    day = DAY_MS // BUCKET_MS
    for i in range(2 * day):
        s = det.update(50.0, i * BUCKET_MS)
        assert not s.warm, f"warm after {i} buckets, before two days of history"
    # The first half slot of day 3 interpolates with the last slot of day 2, which has one past day.
    slot = cfg.slot_ms // BUCKET_MS
    warm = [det.update(50.0, (2 * day + i) * BUCKET_MS).warm for i in range(slot)]
    assert warm[-1] and not warm[0]


@pytest.mark.parametrize(
    "direction,spike,fires", [("up", 500.0, True), ("up", 0.0, False), ("down", 0.0, True)]
)
def test_direction(direction: str, spike: float, fires: bool) -> None:
    det = RobustZDetector(RobustZConfig(direction=direction, sustain_buckets=0))  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    for i in range(60):
        det.update(float(rng.poisson(100)), i * BUCKET_MS)
    s = det.update(spike, 60 * BUCKET_MS)
    assert s.breach is fires
    assert (s.statistic > 0) is (spike > 100)


def test_score_is_a_calibrated_tail_probability_strictly_monotone_below_one() -> None:
    zs = [0.5, 1.0, 4.0, 6.0, 12.0, 30.0, 36.0, 40.0, 100.0, 1e3, 1e6]
    scores = [score_from_z(z) for z in zs]
    assert all(0.0 < s < 1.0 for s in scores)
    assert all(a < b for a, b in itertools.pairwise(scores))  # no ties, even far out
    # 0.5 = two-sided p of one in a million (|z| = 4.8916); one-sided 'up' halves p.
    assert score_from_z(4.891638) == pytest.approx(0.5, abs=1e-6)
    assert score_from_z(-4.891638) == pytest.approx(0.5, abs=1e-6)
    assert score_from_z(4.753424, "up") == pytest.approx(0.5, abs=1e-6)
    assert score_from_z(-3.0, "up") < 0.01 and score_from_z(math.nan) == 0.0
    assert score_from_z(math.inf) < 1.0
    # The tail is computed in log space: agrees with erfc where erfc does not underflow.
    z = 30.0
    p = math.erfc(z / math.sqrt(2.0))
    assert score_from_z(z) == pytest.approx(-math.log10(p) / (-math.log10(p) + 6.0), rel=1e-9)


def test_relative_floor_makes_small_and_large_series_mean_the_same() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 1.0, size=200)
    verdicts = []
    for level, unit in [(0.1, 0.01), (1e6, 1e5)]:
        det = RobustZDetector(RobustZConfig(sustain_buckets=0, count_floor=False))
        for i, e in enumerate(noise):
            det.update(level + unit * e, i * BUCKET_MS)
        verdicts.append(det.update(level + 8 * unit, 200 * BUCKET_MS).score)
    assert verdicts[0] == pytest.approx(verdicts[1], rel=1e-3) and verdicts[0] > 0.5


def test_count_floor_keeps_a_flat_history_from_alerting_on_one_extra_event() -> None:
    det = RobustZDetector(RobustZConfig(sustain_buckets=0, count_floor=True))
    for i in range(60):
        det.update(3.0, i * BUCKET_MS)  # MAD = 0
    assert not det.update(4.0, 60 * BUCKET_MS).breach
    assert det.update(30.0, 61 * BUCKET_MS).breach


def test_min_abs_delta_suppresses_tiny_series() -> None:
    det = RobustZDetector(RobustZConfig(min_abs_delta=20, sustain_buckets=0))
    for i in range(60):
        det.update(1.0, i * BUCKET_MS)
    s = det.update(15.0, 60 * BUCKET_MS)
    assert s.score > 0.6 and not s.breach


def test_sustained_statistic_catches_a_small_series_going_dark_and_stays_firing_until_it_recovers() -> None:
    rng = np.random.default_rng(2)
    values = [float(v) for v in rng.poisson(10, size=200)] + [0.0] * 40 + [10.0] * 20
    one_bucket = _metric(RobustZConfig(sustain_buckets=0))
    sustained = _metric(RobustZConfig(sustain_buckets=5))
    blind = [i for i in _firings(one_bucket.detector, values, 0) if i < 240]
    assert blind == [], "one empty bucket at rate 10 is only ~3.2 sigma"
    # Hold the baseline for the whole outage (the default, 20 buckets, favours re-adapting to a new regime).
    held = sustained.model_copy(update={"lifecycle": LifecycleConfig(freeze_baseline_buckets=60)})
    op = AnomalyOperator(held, "k")
    transitions = []
    for i, v in enumerate(values):
        for alert in op.on_bucket(ClosedBucket("m", "k", i * BUCKET_MS, (i + 1) * BUCKET_MS, v)).alerts:
            transitions.append((i, alert.status))
    firing, resolved = 1, 2
    assert [s for _, s in transitions] == [firing, resolved]
    assert 200 <= transitions[0][0] <= 206
    # The baseline is frozen while firing: the dead series does not become the new normal.
    assert transitions[1][0] >= 240


@pytest.mark.parametrize(
    "cfg",
    [RobustZConfig(), HoltConfig(), SeasonalConfig(slot_ms=3_600_000)],
    ids=["robust_z", "holt", "seasonal"],
)
def test_state_round_trip_mid_stream_gives_identical_scores(cfg) -> None:
    series = generate_series(4, days=3.0, anomalies_per_day=2, quiet_days=2.1)
    times, values = series.times_ms(), series.values
    straight = build_detector(cfg)
    expected = [straight.update(v, t) for t, v in zip(times, values, strict=True)]
    restored = build_detector(cfg)
    got = []
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if i % 997 == 0:
            blob = restored.to_bytes()
            restored = detector_from_bytes(cfg, blob)
        got.append(restored.update(v, t))
    assert got == expected


def test_state_is_compact() -> None:
    det = RobustZDetector(RobustZConfig(window_buckets=60))
    holt = HoltDetector(HoltConfig())
    for i in range(500):
        det.update(float(i % 7), i * BUCKET_MS)
        holt.update(float(i % 7), i * BUCKET_MS)
    # Fixed parts: sustain window, long-run floor, lag-1 autocorrelation (with its 8 pending residuals).
    assert len(det.to_bytes()) < 60 * 4 + 200
    assert len(holt.to_bytes()) < 200
