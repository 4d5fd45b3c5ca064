"""Window-based scoring of the kind public streaming benchmarks use, plus the windowed-Gaussian baseline.

The scorer follows the published NAB rules (Lavin & Ahmad 2015), written from their description:

- every labeled anomaly gets a window of width 10% of the series' time span divided by its number of
  anomalies, centered on the onset; the first 15% of rows are probation (ignored);
- a row *detects* when its score >= the threshold. Per window only the earliest detection counts, worth
  ``A_tp * sigma(y) / sigma(-1)`` with ``sigma(y) = 2 / (1 + e^(5y)) - 1`` and ``y`` from -1 (window start)
  to 0 (window end): early is worth more; a window without detection costs ``A_fn``;
- a detection outside every window costs ``A_fp * sigma(y)`` (negative), ``y`` = distance after the
  previous window's end in window widths (an FP right after a window costs little), or ``-A_fp`` when
  no window precedes it;
- the suite total is normalized: 100 * (raw - null) / (perfect - null), null = never detecting
  (``-A_fn`` per window), perfect = every window at its first row (``A_tp`` per window);
- profiles: standard (A_tp 1, A_fp 0.11, A_fn 1), low FP (A_fp 0.22), low FN (A_fn 2).

The threshold of a detector is chosen per profile on a *separate* calibration suite (another seed) and
then applied to the test suite: no detector sees the series it is scored on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamwarden.operators.anomaly.realistic import PROBATION, LabeledSeries

PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 0.11, 1.0),
    "low_fp": (1.0, 0.22, 1.0),
    "low_fn": (1.0, 0.11, 2.0),
}
"""profile -> (A_tp, A_fp, A_fn)."""

THRESHOLDS = tuple(
    sorted({round(0.3 + 0.01 * i, 2) for i in range(70)} | {1.0 - 10.0**-k for k in range(2, 13)})
)
"""Candidate thresholds (dense in [0.3, 1), plus 1 - 10^-k for saturating scores like the baseline's)."""


def scaled_sigmoid(y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = 2.0 / (1.0 + np.exp(np.minimum(5.0 * y, 700.0))) - 1.0
    return np.asarray(np.where(y > 3.0, -1.0, out), dtype=np.float64)


_MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


@dataclass(frozen=True, slots=True)
class ScoredSeries:
    """One series' rows (time order) with the precomputed NAB weights of a detection on each row."""

    series: LabeledSeries
    times_ms: npt.NDArray[np.int64]
    window_of_row: npt.NDArray[np.int64]
    """Index of the window holding the row, -1 outside, -2 in probation."""
    tp_value: npt.NDArray[np.float64]
    fp_value: npt.NDArray[np.float64]
    """scaled sigmoid (<= 0) of an FP on this row, before the A_fp weight."""
    windows: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, series: LabeledSeries) -> ScoredSeries:
        times = np.asarray(series.times_ms, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        times = times[order]
        n = len(times)
        span = float(times[-1] - times[0]) if n else 0.0
        k = len(series.anomalies)
        windows: list[tuple[int, int]] = []
        if k:
            width = 0.1 * span / k
            for a in series.anomalies:
                windows.append((int(a.onset_ms - width / 2), int(a.onset_ms + width / 2)))
        window_of_row = np.full(n, -1, dtype=np.int64)
        tp_value = np.zeros(n)
        fp_value = np.full(n, -1.0)
        for w, (lo, hi) in enumerate(windows):
            inside = (times >= lo) & (times <= hi)
            window_of_row[inside] = w
            y = -(hi - times[inside]) / max(hi - lo, 1)
            tp_value[inside] = scaled_sigmoid(y.astype(np.float64)) / _MAX_TP
            after = times > hi
            y_fp = (times[after] - hi) / max(hi - lo, 1)
            fp_value[after] = scaled_sigmoid(y_fp.astype(np.float64))
        window_of_row[: int(PROBATION * n)] = -2
        return cls(series, times, window_of_row, tp_value, fp_value, tuple(windows))

    def order(self) -> npt.NDArray[np.int64]:
        return np.argsort(np.asarray(self.series.times_ms, dtype=np.int64), kind="stable")

    def raw(self, detected: npt.NDArray[np.bool_], profile: str) -> tuple[float, int, int, int]:
        """(raw score, true positives, false negatives, false positives) of a detection mask (time order)."""
        a_tp, a_fp, a_fn = PROFILES[profile]
        total, tp, fn = 0.0, 0, 0
        for w in range(len(self.windows)):
            hits = detected & (self.window_of_row == w)
            if hits.any():
                total += a_tp * float(self.tp_value[hits].max())
                tp += 1
            else:
                total -= a_fn
                fn += 1
        fps = detected & (self.window_of_row == -1)
        total += a_fp * float(self.fp_value[fps].sum())
        return total, tp, fn, int(fps.sum())


def nab_score(scored: Sequence[ScoredSeries], masks: Sequence[npt.NDArray[np.bool_]], profile: str) -> float:
    """Normalized suite score (0 = never detecting, 100 = perfect) of detection masks in time order."""
    a_tp, _, a_fn = PROFILES[profile]
    windows = sum(len(s.windows) for s in scored)
    raw = sum(s.raw(m, profile)[0] for s, m in zip(scored, masks, strict=True))
    null, perfect = -a_fn * windows, a_tp * windows
    return 100.0 * (raw - null) / (perfect - null) if perfect > null else 0.0


def best_threshold(
    scored: Sequence[ScoredSeries], scores: Sequence[npt.NDArray[np.float64]], profile: str
) -> float:
    """The candidate threshold with the highest suite score (ties: the higher threshold)."""
    best, best_t = -math.inf, THRESHOLDS[-1]
    for t in THRESHOLDS:
        value = nab_score(scored, [s >= t for s in scores], profile)
        if value > best or (value == best and t > best_t):
            best, best_t = value, t
    return best_t


class WindowedGaussian:
    """NAB's windowed-Gaussian baseline: mean and std of the last ``window`` values, refreshed every
    ``step`` values; score = 1 - two-sided tail probability of the value's z."""

    def __init__(self, window: int = 6400, step: int = 100) -> None:
        self.window: deque[float] = deque(maxlen=window)
        self.step = step
        self.pending = 0
        self.mean = 0.0
        self.std = 0.0

    def update(self, value: float) -> float:
        score = 0.0
        if self.window and self.std > 0:
            z = abs(value - self.mean) / self.std
            score = 1.0 - math.erfc(z / math.sqrt(2.0))
        self.window.append(value)
        self.pending += 1
        if self.pending >= self.step or len(self.window) < self.step:
            self.pending = 0
            arr = np.fromiter(self.window, dtype=np.float64)
            self.mean, self.std = float(arr.mean()), float(arr.std())
        return score


def windowed_gaussian_scores(series: LabeledSeries) -> npt.NDArray[np.float64]:
    """Baseline scores of the rows in time order (rows with a missing value score 0)."""
    det = WindowedGaussian()
    order = np.argsort(np.asarray(series.times_ms, dtype=np.int64), kind="stable")
    out = np.zeros(len(order))
    for pos, i in enumerate(order):
        v = series.values[i]
        out[pos] = det.update(v) if math.isfinite(v) else 0.0
    return out
