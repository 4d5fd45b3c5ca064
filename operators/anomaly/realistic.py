"""Labeled series that look like operations data, for ``streamwarden anomaly eval``.

Each series is a ``gauge`` (a measured value: latency, CPU %, temperature; Gaussian AR(1) noise,
relative to the level) or a ``count`` (events per bucket: over-dispersed Poisson around a rate), with
a level drawn log-uniformly from 0.05 to 10^5 (small and large magnitudes), daily seasonality, a
weekly (weekend) factor, a linear trend, and recording faults: about 1% of rows duplicated (the
duplicate's value differs a little, as a daylight-saving repeat does), about 2% of rows dropped,
sometimes a block of missing rows, and jittered timestamps on some series.

An anomalous series carries one to three anomalies of ONE kind (so precision per kind is defined),
all after the first 15% (the scorer's probation) plus two days of warm-up:

- ``spike`` / ``dip``: 1-3 buckets 6-15 noise sigmas up / down;
- ``level_shift``: from the onset on, the level moves by 4-10 sigmas (or 25-60%), up or down, for good;
- ``variance_change``: 100-400 buckets with 4-6x the noise;
- ``flatline``: 60-300 buckets stuck (a gauge repeats its last value, a count drops to 0).

Clean series have none. Every number comes from ``seed``: same seed, same suite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamwarden.operators.anomaly.synth import DAY_MS

REALISTIC_KINDS = ("spike", "dip", "level_shift", "variance_change", "flatline")
PROBATION = 0.15
"""Leading fraction of every series the scorer ignores (NAB's probationary period)."""


@dataclass(frozen=True, slots=True)
class LabeledAnomaly:
    kind: str
    onset: int
    """Index (into the de-duplicated bucket grid, = the row of the onset) where the anomaly starts."""
    end: int
    onset_ms: int


@dataclass(frozen=True, slots=True)
class LabeledSeries:
    name: str
    series_kind: str
    """``count`` or ``gauge``."""
    bucket_ms: int
    times_ms: tuple[int, ...]
    values: tuple[float, ...]
    anomalies: tuple[LabeledAnomaly, ...]
    anomaly_kind: str | None

    @property
    def days(self) -> float:
        return (self.times_ms[-1] - self.times_ms[0] + self.bucket_ms) / DAY_MS


def generate_labeled(seed: int, name: str, anomaly_kind: str | None) -> LabeledSeries:
    """One series; ``anomaly_kind`` None gives a clean one."""
    rng = np.random.default_rng(seed)
    bucket_ms = int(rng.choice([60_000, 300_000, 300_000, 600_000, 3_600_000]))
    n = int(rng.integers(2500, 4000)) if bucket_ms < 3_600_000 else int(rng.integers(1500, 2500))
    start_ms = 1_700_006_400_000 + int(rng.integers(0, 7)) * DAY_MS
    t = start_ms + np.arange(n, dtype=np.int64) * bucket_ms
    series_kind = "count" if rng.random() < 0.5 else "gauge"
    level = float(math.exp(rng.uniform(math.log(0.05), math.log(1e5))))
    if series_kind == "count":
        level = max(level, 2.0)
    tod = (t % DAY_MS) / DAY_MS
    dow = (t // DAY_MS) % 7
    daily = 1.0 + rng.uniform(0.0, 0.5) * np.sin(2 * math.pi * tod + rng.uniform(0, 2 * math.pi))
    weekly = np.where(dow >= 5, 1.0 - rng.uniform(0.0, 0.3), 1.0)
    trend = 1.0 + rng.uniform(-0.2, 0.4) * np.arange(n) / n
    mean = level * daily * weekly * trend
    rel_noise = float(rng.uniform(0.02, 0.1))
    sigma = rel_noise * level
    anomalies: list[LabeledAnomaly] = []
    if anomaly_kind is not None:
        # After probation and two days of warm-up, but always with room for the anomaly (short 1-minute series).
        first = min(max(int(PROBATION * n), int(2 * DAY_MS / bucket_ms)) + 20, n - 200)
        count = int(rng.integers(1, 4))
        spacing = (n - first) // count
        for k in range(count):
            lo = first + k * spacing
            onset = int(rng.integers(lo, lo + max(1, spacing // 2)))
            length = {"spike": (1, 4), "dip": (1, 4), "level_shift": (n, n + 1)}.get(
                anomaly_kind, (100, 401) if anomaly_kind == "variance_change" else (60, 301)
            )
            end = min(n, onset + int(rng.integers(*length)))
            anomalies.append(LabeledAnomaly(anomaly_kind, onset, end, int(t[onset])))
            if anomaly_kind == "level_shift":
                break  # a shift lasts; one per series
    noise_scale = np.ones(n)
    for a in anomalies:
        if a.kind == "variance_change":
            noise_scale[a.onset : a.end] = rng.uniform(4.0, 6.0)
        elif a.kind == "level_shift":
            up = rng.random() < 0.5
            size = max(rng.uniform(4.0, 10.0) * sigma, rng.uniform(0.25, 0.6) * level)
            mean[a.onset :] = np.maximum(mean[a.onset :] + (size if up else -size), 0.05 * level)
    if series_kind == "gauge":
        phi = float(rng.uniform(0.0, 0.7))
        eps = rng.normal(0.0, 1.0, size=n)
        ar = np.empty(n)
        ar[0] = eps[0]
        for i in range(1, n):
            ar[i] = phi * ar[i - 1] + math.sqrt(1 - phi * phi) * eps[i]
        values = mean + sigma * noise_scale * ar
    else:
        disp = rng.gamma(20.0, 1.0 / 20.0, size=n)
        lam = np.maximum(mean * disp, 0.0)
        values = rng.poisson(lam).astype(np.float64)
        extra = noise_scale > 1.0
        values[extra] = np.maximum(
            0.0,
            values[extra]
            + rng.normal(0.0, 1.0, size=int(extra.sum())) * noise_scale[extra] * np.sqrt(lam[extra] + 1),
        ).round()
        sigma = math.sqrt(level)
    for a in anomalies:
        if a.kind in ("spike", "dip"):
            size = rng.uniform(6.0, 15.0) * sigma
            sign = 1.0 if a.kind == "spike" else -1.0
            values[a.onset : a.end] = values[a.onset : a.end] + sign * size
            if series_kind == "count":
                values[a.onset : a.end] = np.maximum(values[a.onset : a.end], 0.0).round()
        elif a.kind == "flatline":
            values[a.onset : a.end] = 0.0 if series_kind == "count" else values[a.onset - 1]
    # Recording faults: drop rows (never an onset), duplicate rows, a missing block, jitter.
    keep = rng.random(n) >= 0.02
    if rng.random() < 0.3:
        gap_at = int(rng.integers(int(0.2 * n), int(0.9 * n)))
        keep[gap_at : gap_at + int(rng.integers(5, 60))] = False
    for a in anomalies:
        keep[a.onset] = True
    times = t.astype(np.int64)
    if rng.random() < 0.3:
        times = times + rng.integers(-bucket_ms // 10, bucket_ms // 10 + 1, size=n)
    rows_t: list[int] = []
    rows_v: list[float] = []
    for i in range(n):
        if not keep[i]:
            continue
        rows_t.append(int(times[i]))
        rows_v.append(float(values[i]))
        if rng.random() < 0.01:
            rows_t.append(int(times[i]))
            rows_v.append(float(values[i]) * float(rng.uniform(0.97, 1.03)))
    return LabeledSeries(
        name=name,
        series_kind=series_kind,
        bucket_ms=bucket_ms,
        times_ms=tuple(rows_t),
        values=tuple(rows_v),
        anomalies=tuple(anomalies),
        anomaly_kind=anomaly_kind,
    )


def realistic_suite(seed: int, per_kind: int = 6, clean: int = 10) -> list[LabeledSeries]:
    """``per_kind`` anomalous series of every kind plus ``clean`` clean ones."""
    out = []
    for k, kind in enumerate(REALISTIC_KINDS):
        for i in range(per_kind):
            out.append(generate_labeled(seed * 100_003 + k * 1_000 + i, f"{kind}-{i}", kind))
    for i in range(clean):
        out.append(generate_labeled(seed * 100_003 + 9_000 + i, f"clean-{i}", None))
    return out
