"""The NAB-style window scorer: its fixed points (never detecting = 0, perfect = 100) and its weights."""

from __future__ import annotations

import numpy as np

from streamwarden.operators.anomaly.benchmark import (
    PROFILES,
    ScoredSeries,
    nab_score,
    windowed_gaussian_scores,
)
from streamwarden.operators.anomaly.realistic import LabeledAnomaly, LabeledSeries, generate_labeled

MIN = 60_000


def _series(n: int = 1000, onsets: tuple[int, ...] = (400, 800)) -> LabeledSeries:
    times = tuple(i * MIN for i in range(n))
    anomalies = tuple(LabeledAnomaly("spike", o, o + 1, o * MIN) for o in onsets)
    return LabeledSeries("s", "gauge", MIN, times, tuple(0.0 for _ in times), anomalies, "spike")


def test_never_detecting_scores_zero_and_first_row_of_every_window_scores_100() -> None:
    sc = ScoredSeries.of(_series())
    none = np.zeros(1000, dtype=bool)
    perfect = np.zeros(1000, dtype=bool)
    for w in range(len(sc.windows)):
        perfect[int(np.argmax(sc.window_of_row == w))] = True
    for profile in PROFILES:
        assert nab_score([sc], [none], profile) == 0.0
        # The first row inside a window sits a hair after its start: worth just under A_tp.
        assert 99.0 < nab_score([sc], [perfect], profile) <= 100.0


def test_early_detection_beats_late_and_false_positives_cost() -> None:
    sc = ScoredSeries.of(_series())
    rows = np.where(sc.window_of_row == 0)[0]
    early, late = np.zeros(1000, dtype=bool), np.zeros(1000, dtype=bool)
    early[rows[len(rows) // 4]] = True
    late[rows[-1]] = True
    assert nab_score([sc], [early], "standard") > nab_score([sc], [late], "standard")
    noisy = early.copy()
    noisy[200] = True  # after probation (150 rows), before every window
    assert nab_score([sc], [noisy], "standard") < nab_score([sc], [early], "standard")
    assert nab_score([sc], [noisy], "low_fp") < nab_score([sc], [noisy], "standard")
    # Probation rows never count.
    probation = early.copy()
    probation[10] = True
    assert nab_score([sc], [probation], "standard") == nab_score([sc], [early], "standard")


def test_windowed_gaussian_scores_a_spike_above_its_neighbours() -> None:
    series = generate_labeled(12, "spike", "spike")
    scores = windowed_gaussian_scores(series)
    sc = ScoredSeries.of(series)
    assert scores.shape == (len(series.times_ms),)
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    onset_rows = [int(np.argmin(np.abs(sc.times_ms - a.onset_ms))) for a in series.anomalies]
    assert max(scores[r] for r in onset_rows) > float(np.median(scores))
