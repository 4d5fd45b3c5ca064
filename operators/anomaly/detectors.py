"""Streaming detectors: one value per closed bucket in, a ``Score`` out, state as compact bytes.

Every detector scores a bucket against the baseline *before* that bucket, then folds it in. The
raw statistic is a signed z (observed - expected) / scale; the score maps the z in the configured
direction to [0, 1) as z / (z + 4). Until the baseline is trustworthy (``warm``), the score is 0
and nothing breaches. ``count_floor`` keeps the scale at least sqrt(expected) as for Poisson counts,
so a flat or sparse history (MAD = 0) cannot turn one extra event into an alert.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Protocol

from streamwarden.operators.anomaly._wire import Reader, StateFormatError, Writer
from streamwarden.operators.anomaly.spec import (
    DetectorConfig,
    HoltConfig,
    RobustZConfig,
    SeasonalConfig,
    _DetectorBase,
)

SCORE_HALF_Z = 4.0
"""The z at which the score is 0.5."""
MAD_TO_SIGMA = 1.4826
RUN_MIN_Z = 1.0
"""Every bucket of a sustained run must deviate by at least this many sigmas, in one direction."""


@dataclass(frozen=True, slots=True)
class Score:
    """The verdict on one closed bucket."""

    score: float
    """In [0, 1): 0 = as expected (or not warm yet), 0.5 = 4 sigmas off in the watched direction."""
    statistic: float
    """Signed z: (observed - expected) / scale, or the sustained z of the last few buckets if larger."""
    observed: float
    expected: float
    breach: bool
    """score >= threshold and |observed - expected| >= min_abs_delta, and the detector is warm."""
    warm: bool


def score_from_z(z_directed: float) -> float:
    """Map a non-negative directed z to [0, 1)."""
    if z_directed <= 0.0 or math.isnan(z_directed):
        return 0.0
    if math.isinf(z_directed):
        return 1.0
    return z_directed / (z_directed + SCORE_HALF_Z)


def effective_scale(cfg: _DetectorBase, expected: float, scale: float) -> float:
    """``scale`` raised to the configured floors."""
    floor = cfg.min_scale
    if cfg.count_floor:
        floor = max(floor, math.sqrt(max(expected, 1.0)))
    return max(scale, floor)


def threshold_z(cfg: _DetectorBase) -> float:
    """The z whose score equals the threshold."""
    return SCORE_HALF_Z * cfg.threshold / (1.0 - cfg.threshold)


def _directed(cfg: _DetectorBase, z: float) -> float:
    if cfg.direction == "up":
        return z
    if cfg.direction == "down":
        return -z
    return abs(z)


class Sustain:
    """The last few warm residuals, for the sustained statistic.

    One empty bucket on a series of 10 per minute is noise (z = -3.2); five in a row are an outage
    (z = -7 over the five). It only counts while every bucket in the window deviates by at least
    ``RUN_MIN_Z`` in the same direction, so it neither lingers after an anomaly ends nor adds up
    unrelated noise; each residual is clipped to the threshold z so one spike cannot dominate.
    """

    __slots__ = ("capacity", "pos", "residuals", "variances")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.residuals = array("f")
        self.variances = array("f")
        self.pos = 0

    def clear(self) -> None:
        del self.residuals[:]
        del self.variances[:]
        self.pos = 0

    def push(self, residual: float, variance: float) -> None:
        if self.capacity < 2:
            return
        if len(self.residuals) < self.capacity:
            self.residuals.append(residual)
            self.variances.append(variance)
        else:
            self.residuals[self.pos] = residual
            self.variances[self.pos] = variance
        self.pos = (self.pos + 1) % self.capacity

    def z(self) -> tuple[float, float] | None:
        """(z of the residual sum, mean residual) if the full window is one run, else ``None``."""
        if self.capacity < 2 or len(self.residuals) < self.capacity:
            return None
        zs = [r / math.sqrt(v) if v > 0 else 0.0 for r, v in zip(self.residuals, self.variances, strict=True)]
        if not (min(zs) >= RUN_MIN_Z or max(zs) <= -RUN_MIN_Z):
            return None
        total = math.fsum(self.residuals)
        return total / math.sqrt(math.fsum(self.variances)), total / self.capacity

    def write(self, w: Writer) -> None:
        w.u32(self.pos).floats(self.residuals).floats(self.variances)

    def read(self, r: Reader) -> None:
        self.pos, self.residuals, self.variances = r.u32(), r.floats(), r.floats()
        if len(self.residuals) != len(self.variances) or len(self.residuals) > max(self.capacity, 0):
            raise StateFormatError("sustain window does not match its capacity")


def decide(
    cfg: _DetectorBase, observed: float, expected: float, scale: float, warm: bool, sustain: Sustain
) -> Score:
    """The shared scoring rule: scale floors, per-bucket and sustained z, direction, threshold, min delta."""
    scale = effective_scale(cfg, expected, scale)
    residual = observed - expected
    z = residual / scale
    if not warm:
        sustain.clear()
        return Score(0.0, z, observed, expected, False, False)
    bound = threshold_z(cfg) * scale
    sustain.push(min(max(residual, -bound), bound), scale * scale)
    statistic, delta = z, residual
    sustained = sustain.z()
    if sustained is not None and _directed(cfg, sustained[0]) > _directed(cfg, z):
        statistic, delta = sustained
    score = score_from_z(_directed(cfg, statistic))
    breach = score >= cfg.threshold and abs(delta) >= cfg.min_abs_delta
    return Score(score, statistic, observed, expected, breach, True)


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


def median_mad(values: list[float]) -> tuple[float, float]:
    """Median and median absolute deviation (``values`` is reordered)."""
    med = _median(values)
    return med, _median([abs(v - med) for v in values])


class Detector(Protocol):
    """What the operator needs from a detector."""

    @property
    def kind(self) -> str: ...

    def update(self, value: float, bucket_start_ms: int, learn: bool = True) -> Score:
        """Score ``value`` (the bucket starting at ``bucket_start_ms``) against the baseline, then
        learn it unless ``learn`` is false (the operator freezes the baseline while an alert fires)."""
        ...

    def to_bytes(self) -> bytes: ...


class _Ring:
    """A float32 ring buffer of fixed capacity (float32: exact for counts below 2**24, half the bytes)."""

    __slots__ = ("capacity", "count", "pos", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values = array("f")
        self.pos = 0
        self.count = 0

    def push(self, value: float) -> None:
        if len(self.values) < self.capacity:
            self.values.append(value)
        else:
            self.values[self.pos] = value
        self.pos = (self.pos + 1) % self.capacity
        self.count += 1

    def items(self) -> list[float]:
        return self.values.tolist()

    def write(self, w: Writer) -> None:
        w.u32(self.pos).i64(self.count).floats(self.values)

    @classmethod
    def read(cls, r: Reader, capacity: int) -> _Ring:
        ring = cls(capacity)
        ring.pos, ring.count, ring.values = r.u32(), r.i64(), r.floats()
        if len(ring.values) > capacity or ring.pos >= capacity:
            raise StateFormatError(f"ring of {len(ring.values)} values does not fit capacity {capacity}")
        return ring


_ROBUST_VERSION = 1
_HOLT_VERSION = 1
_SEASONAL_VERSION = 1


class RobustZDetector:
    """z = (x - median) / (1.4826 * MAD) over the last ``window_buckets`` values."""

    kind = "robust_z"

    def __init__(self, cfg: RobustZConfig) -> None:
        self.cfg = cfg
        self._ring = _Ring(cfg.window_buckets)
        self._sustain = Sustain(cfg.sustain_buckets)

    def update(self, value: float, bucket_start_ms: int, learn: bool = True) -> Score:
        history = self._ring.items()
        if history:
            expected, mad = median_mad(history)
        else:
            expected, mad = value, 0.0
        warm = len(history) >= self.cfg.warmup_buckets
        result = decide(self.cfg, value, expected, MAD_TO_SIGMA * mad, warm, self._sustain)
        if learn:
            self._ring.push(value)
        return result

    def to_bytes(self) -> bytes:
        w = Writer().u8(_ROBUST_VERSION)
        self._ring.write(w)
        self._sustain.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: RobustZConfig, data: bytes) -> RobustZDetector:
        r = Reader(data, "robust_z detector")
        r.version(_ROBUST_VERSION)
        det = cls(cfg)
        det._ring = _Ring.read(r, cfg.window_buckets)
        det._sustain.read(r)
        r.done()
        return det


class HoltDetector:
    """Damped Holt level + trend; scale from an EW variance of (clipped) residuals."""

    kind = "holt"

    def __init__(self, cfg: HoltConfig) -> None:
        self.cfg = cfg
        self.n = 0
        self.level = 0.0
        self.trend = 0.0
        self.variance = 0.0
        self._sustain = Sustain(cfg.sustain_buckets)

    def update(self, value: float, bucket_start_ms: int, learn: bool = True) -> Score:
        cfg = self.cfg
        if self.n == 0:
            self.level, self.trend, self.variance, self.n = value, 0.0, 0.0, 1
            return decide(cfg, value, value, 0.0, False, self._sustain)
        expected = self.level + cfg.trend_damping * self.trend
        warm = self.n >= cfg.warmup_buckets
        scale = math.sqrt(self.variance)
        result = decide(cfg, value, expected, scale, warm, self._sustain)
        if not learn:
            return result
        learned = value
        if warm:
            # A spike moves the baseline by at most clip_sigmas (floored) sigmas per bucket.
            bound = cfg.clip_sigmas * effective_scale(cfg, expected, scale)
            learned = min(max(value, expected - bound), expected + bound)
        residual = learned - expected
        level = expected + cfg.alpha * residual
        self.trend = cfg.beta * (level - self.level) + (1.0 - cfg.beta) * cfg.trend_damping * self.trend
        self.level = level
        weight = max(cfg.variance_alpha, 1.0 / self.n)
        self.variance = (1.0 - weight) * self.variance + weight * residual * residual
        self.n = min(self.n + 1, 2**31)
        return result

    def to_bytes(self) -> bytes:
        w = Writer().u8(_HOLT_VERSION).i64(self.n).f64(self.level).f64(self.trend).f64(self.variance)
        self._sustain.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: HoltConfig, data: bytes) -> HoltDetector:
        r = Reader(data, "holt detector")
        r.version(_HOLT_VERSION)
        det = cls(cfg)
        det.n, det.level, det.trend, det.variance = r.i64(), r.f64(), r.f64(), r.f64()
        det._sustain.read(r)
        r.done()
        return det


class SeasonalDetector:
    """Expected = median over the last ``periods`` days of the same slot (interpolated between slots).

    A profile of ``periods x slots`` float32 slot means (the current day's slot accumulates until it
    ends), plus a ring of recent residuals for a robust scale and, optionally, a level correction.
    """

    kind = "seasonal"

    def __init__(self, cfg: SeasonalConfig) -> None:
        self.cfg = cfg
        self.slots = cfg.period_ms // cfg.slot_ms
        self.period_of_row = [-1] * cfg.periods
        self.profile = array("f", [math.nan]) * (cfg.periods * self.slots)
        self.cur_period = -1
        self.cur_slot = -1
        self.cur_sum = 0.0
        self.cur_count = 0
        self._residuals = _Ring(cfg.residual_window_buckets)
        self._sustain = Sustain(cfg.sustain_buckets)

    def _flush_slot(self) -> None:
        if self.cur_count == 0:
            return
        row = self.cur_period % self.cfg.periods
        if self.period_of_row[row] != self.cur_period:
            self.period_of_row[row] = self.cur_period
            base = row * self.slots
            for i in range(self.slots):
                self.profile[base + i] = math.nan
        self.profile[row * self.slots + self.cur_slot] = self.cur_sum / self.cur_count
        self.cur_sum, self.cur_count = 0.0, 0

    def _slot_median(self, period: int, slot: int) -> tuple[float, int]:
        """Median of ``slot`` over the stored periods before ``period`` (slot may wrap around)."""
        if slot < 0:
            period, slot = period - 1, slot + self.slots
        elif slot >= self.slots:
            period, slot = period + 1, slot - self.slots
        values = []
        for row, p in enumerate(self.period_of_row):
            if period - self.cfg.periods <= p < period:
                v = self.profile[row * self.slots + slot]
                if not math.isnan(v):
                    values.append(v)
        if not values:
            return math.nan, 0
        return _median(values), len(values)

    def expected_at(self, bucket_start_ms: int) -> tuple[float, int]:
        """Profile value at this time of day and the fewest past periods behind it."""
        cfg = self.cfg
        period = bucket_start_ms // cfg.period_ms
        pos = (bucket_start_ms % cfg.period_ms) / cfg.slot_ms - 0.5
        s0 = math.floor(pos)
        frac = pos - s0
        v0, n0 = self._slot_median(period, s0)
        v1, n1 = self._slot_median(period, s0 + 1)
        if n0 == 0 and n1 == 0:
            return math.nan, 0
        if n0 == 0:
            return v1, 0
        if n1 == 0:
            return v0, 0
        return (1.0 - frac) * v0 + frac * v1, min(n0, n1)

    def update(self, value: float, bucket_start_ms: int, learn: bool = True) -> Score:
        cfg = self.cfg
        period = bucket_start_ms // cfg.period_ms
        slot = (bucket_start_ms % cfg.period_ms) // cfg.slot_ms
        if (period, slot) != (self.cur_period, self.cur_slot):
            self._flush_slot()
            self.cur_period, self.cur_slot = period, slot
        profile_value, seen = self.expected_at(bucket_start_ms)
        if math.isnan(profile_value):
            result = decide(cfg, value, value, 0.0, False, self._sustain)
        else:
            history = self._residuals.items()
            shift, mad = median_mad(history) if history else (0.0, 0.0)
            expected = profile_value + (shift if cfg.level_correction else 0.0)
            expected = max(expected, 0.0) if cfg.count_floor else expected
            warm = seen >= cfg.min_periods and len(history) >= cfg.min_residuals
            result = decide(cfg, value, expected, MAD_TO_SIGMA * mad, warm, self._sustain)
            if learn:
                self._residuals.push(value - profile_value)
        self.cur_sum += value
        self.cur_count += 1
        return result

    def to_bytes(self) -> bytes:
        w = Writer().u8(_SEASONAL_VERSION).u32(self.slots).u32(self.cfg.periods)
        for p in self.period_of_row:
            w.i64(p)
        w.floats(self.profile)
        w.i64(self.cur_period).i64(self.cur_slot).f64(self.cur_sum).i64(self.cur_count)
        self._residuals.write(w)
        self._sustain.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: SeasonalConfig, data: bytes) -> SeasonalDetector:
        r = Reader(data, "seasonal detector")
        r.version(_SEASONAL_VERSION)
        det = cls(cfg)
        slots, periods = r.u32(), r.u32()
        if (slots, periods) != (det.slots, cfg.periods):
            raise StateFormatError(
                f"seasonal state has {periods} periods x {slots} slots; config wants {cfg.periods} x {det.slots}"
            )
        det.period_of_row = [r.i64() for _ in range(periods)]
        det.profile = r.floats()
        if len(det.profile) != slots * periods:
            raise StateFormatError("seasonal state: profile size does not match its shape")
        det.cur_period, det.cur_slot, det.cur_sum, det.cur_count = r.i64(), r.i64(), r.f64(), r.i64()
        det._residuals = _Ring.read(r, cfg.residual_window_buckets)
        det._sustain.read(r)
        r.done()
        return det


AnyDetector = RobustZDetector | HoltDetector | SeasonalDetector


def build_detector(cfg: DetectorConfig) -> AnyDetector:
    """A fresh detector for ``cfg``."""
    if isinstance(cfg, RobustZConfig):
        return RobustZDetector(cfg)
    if isinstance(cfg, HoltConfig):
        return HoltDetector(cfg)
    return SeasonalDetector(cfg)


def detector_from_bytes(cfg: DetectorConfig, data: bytes) -> AnyDetector:
    """Restore a detector of ``cfg``'s kind from ``to_bytes`` output."""
    if isinstance(cfg, RobustZConfig):
        return RobustZDetector.from_bytes(cfg, data)
    if isinstance(cfg, HoltConfig):
        return HoltDetector.from_bytes(cfg, data)
    return SeasonalDetector.from_bytes(cfg, data)
