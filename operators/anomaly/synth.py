"""Synthetic count series with labeled anomaly windows, for detector tests and the evaluation.

A series is Poisson counts per bucket around a rate with daily seasonality, a small day-to-day level
drift and gamma over-dispersion (real traffic is noisier than Poisson). Anomalies are injected after
``quiet_days`` (so every detector has had its warm-up) in non-overlapping windows:

- ``spike``: 2-6 buckets at 3-8x the rate;
- ``level_shift``: 60-240 buckets at 1.8-3x or 0.25-0.45x the rate, then back to normal;
- ``drop_to_zero``: 10-60 buckets of exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DAY_MS = 86_400_000
ANOMALY_KINDS = ("spike", "level_shift", "drop_to_zero")


@dataclass(frozen=True, slots=True)
class AnomalyWindow:
    """Buckets ``[start, end)`` (indices into the series) hold an injected anomaly."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class SyntheticSeries:
    name: str
    start_ms: int
    bucket_ms: int
    values: tuple[float, ...]
    anomalies: tuple[AnomalyWindow, ...]
    base_rate: float
    amplitude: float

    def times_ms(self) -> list[int]:
        return [self.start_ms + i * self.bucket_ms for i in range(len(self.values))]

    @property
    def days(self) -> float:
        return len(self.values) * self.bucket_ms / DAY_MS


def rate_curve(
    n: int,
    *,
    start_ms: int,
    bucket_ms: int,
    base_rate: float,
    amplitude: float,
    phase: float,
    rng: np.random.Generator,
    day_drift: float = 0.03,
) -> npt.NDArray[np.float64]:
    """Expected count per bucket: base * (1 + amplitude * sin(daily)) * per-day drift factor."""
    t = start_ms + np.arange(n, dtype=np.int64) * bucket_ms
    day = (t // DAY_MS).astype(np.int64)
    day_factor = 1.0 + rng.normal(0.0, day_drift, size=int(day.max() - day.min()) + 1)
    tod = (t % DAY_MS) / DAY_MS
    shape = 1.0 + amplitude * np.sin(2.0 * math.pi * tod + phase)
    return np.asarray(base_rate * shape * day_factor[day - day.min()], dtype=np.float64)


def _sample(
    rng: np.random.Generator, rate: npt.NDArray[np.float64], dispersion: float
) -> npt.NDArray[np.float64]:
    if dispersion > 0:
        k = 1.0 / dispersion
        rate = rate * rng.gamma(k, 1.0 / k, size=rate.shape)
    return rng.poisson(rate).astype(np.float64)


def generate_series(
    seed: int,
    *,
    name: str = "series",
    days: float = 6.0,
    bucket_ms: int = 60_000,
    start_ms: int = 1_700_006_400_000,
    base_rate: float | None = None,
    amplitude: float | None = None,
    anomalies_per_day: float = 1.0,
    quiet_days: float = 2.5,
    kinds: Sequence[str] = ANOMALY_KINDS,
    dispersion: float = 0.01,
) -> SyntheticSeries:
    """One series; ``anomalies_per_day=0`` gives a clean series. Same seed, same series."""
    rng = np.random.default_rng(seed)
    n = int(days * DAY_MS // bucket_ms)
    base = base_rate if base_rate is not None else float(math.exp(rng.uniform(math.log(5), math.log(500))))
    amp = amplitude if amplitude is not None else float(rng.uniform(0.0, 0.7))
    phase = float(rng.uniform(0, 2 * math.pi))
    rate = rate_curve(
        n, start_ms=start_ms, bucket_ms=bucket_ms, base_rate=base, amplitude=amp, phase=phase, rng=rng
    )
    windows: list[AnomalyWindow] = []
    first = int(quiet_days * DAY_MS // bucket_ms)
    wanted = round(anomalies_per_day * (days - quiet_days))
    gap = 360
    attempts = 0
    while len(windows) < wanted and attempts < 1000 and first < n:
        attempts += 1
        kind = str(rng.choice(list(kinds)))
        length = {"spike": (2, 7), "level_shift": (60, 241), "drop_to_zero": (10, 61)}[kind]
        size = int(rng.integers(*length))
        start = int(rng.integers(first, max(first + 1, n - size - gap)))
        if any(start < w.end + gap and w.start < start + size + gap for w in windows):
            continue
        windows.append(AnomalyWindow(kind, start, start + size))
    windows.sort(key=lambda w: w.start)
    for w in windows:
        if w.kind == "spike":
            rate[w.start : w.end] *= rng.uniform(3.0, 8.0)
        elif w.kind == "level_shift":
            up = rng.random() < 0.5
            rate[w.start : w.end] *= rng.uniform(1.8, 3.0) if up else rng.uniform(0.25, 0.45)
    values = _sample(rng, rate, dispersion)
    for w in windows:
        if w.kind == "drop_to_zero":
            values[w.start : w.end] = 0.0
    return SyntheticSeries(
        name=name,
        start_ms=start_ms,
        bucket_ms=bucket_ms,
        values=tuple(float(v) for v in values),
        anomalies=tuple(windows),
        base_rate=base,
        amplitude=amp,
    )


def generate_suite(
    seed: int, *, anomalous: int = 16, clean: int = 8, days: float = 6.0, bucket_ms: int = 60_000
) -> list[SyntheticSeries]:
    """``anomalous`` labeled series plus ``clean`` ones (no anomalies), all reproducible from ``seed``."""
    suite = []
    for i in range(anomalous):
        suite.append(
            generate_series(seed * 10_007 + i, name=f"anomalous-{i}", days=days, bucket_ms=bucket_ms)
        )
    for i in range(clean):
        suite.append(
            generate_series(
                seed * 10_007 + 5_000 + i,
                name=f"clean-{i}",
                days=days,
                bucket_ms=bucket_ms,
                anomalies_per_day=0,
            )
        )
    return suite
