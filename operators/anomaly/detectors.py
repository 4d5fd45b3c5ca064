"""Streaming detectors: one value per closed bucket in, a ``Score`` out, state as compact bytes.

Every detector scores a bucket against the baseline *before* that bucket, then folds it in. The raw
statistic is a signed z = (observed - expected) / scale. The score is calibrated the same way for
every detector and every series: the tail probability p of the bucket under the detector's robust
Gaussian model (two-sided for direction 'both', one-sided otherwise) gives the surprise
s = -log10(p), and score = s / (s + 6) in [0, 1): 0.5 means p = 1e-6, 0.6 means 1e-9, 0.75 means
1e-18. It is strictly increasing in |z| (no ties at the top: p is computed in log space, so a 40-sigma
bucket still scores above a 39-sigma one). The scale is floored relative to the series' own history
(long-run bucket-to-bucket noise and level) and, for counts, at the Poisson sqrt(expected), never at
an absolute count, so a series around 0.1 and one around 10^6 get the same meaning. Until the
baseline is trustworthy (``warm``) the score is 0 and nothing breaches.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

from streamwarden.operators.anomaly._wire import Reader, StateFormatError, Writer
from streamwarden.operators.anomaly.spec import (
    CusumConfig,
    DetectorConfig,
    EnsembleConfig,
    HoltConfig,
    RobustZConfig,
    SeasonalConfig,
    _DetectorBase,
)

SCORE_HALF_SURPRISE = 6.0
"""The surprise -log10(p) at which the score is 0.5 (p = one in a million)."""
MAD_TO_SIGMA = 1.4826
MASD_TO_SIGMA = 1.1284
"""E|x_t - x_(t-1)| = 2 sigma / sqrt(pi) for independent Gaussian noise."""
RUN_MIN_Z = 1.0
"""Every bucket of a sustained run must deviate by at least this many sigmas, in one direction."""
_LN10 = math.log(10.0)
_HALF_LN_2PI = 0.5 * math.log(2.0 * math.pi)
_TOP_SCORE = math.nextafter(1.0, 0.0)


@dataclass(frozen=True, slots=True)
class Score:
    """The verdict on one closed bucket."""

    score: float
    """In [0, 1): s / (s + 6), s = -log10(tail probability); 0 = as expected (or not warm yet)."""
    statistic: float
    """Signed z: (observed - expected) / scale, or the sustained z of the last few buckets if larger."""
    observed: float
    expected: float
    breach: bool
    """score >= threshold and |observed - expected| >= min_abs_delta, and the detector is warm."""
    warm: bool
    detector: str = ""
    """Which detector produced it (an ensemble names its deciding member)."""


def log10_upper_tail(z: float) -> float:
    """log10 P(Z >= z) for a standard normal Z, accurate far into the tail (no underflow)."""
    if z < 35.0:
        return math.log10(0.5 * math.erfc(z / math.sqrt(2.0)))
    inv2 = 1.0 / (z * z)
    ln_q = -0.5 * z * z - math.log(z) - _HALF_LN_2PI + math.log1p(-inv2 + 3.0 * inv2 * inv2)
    return ln_q / _LN10


def surprise(z: float, direction: str) -> float:
    """-log10 of the tail probability of signed ``z`` in the watched direction (0 = unsurprising)."""
    if math.isnan(z):
        return 0.0
    if direction == "both":
        z = abs(z)
        if math.isinf(z):
            return math.inf
        return max(0.0, -math.log10(2.0) - log10_upper_tail(z))
    directed = z if direction == "up" else -z
    if math.isinf(directed):
        return math.inf if directed > 0 else 0.0
    return max(0.0, -log10_upper_tail(directed))


def score_from_surprise(s: float) -> float:
    """Map a surprise (-log10 p) to [0, 1), strictly increasing."""
    if not s > 0.0:
        return 0.0
    if math.isinf(s):
        return _TOP_SCORE
    return min(s / (s + SCORE_HALF_SURPRISE), _TOP_SCORE)


def score_from_z(z: float, direction: str = "both") -> float:
    """The calibrated score of signed ``z``."""
    return score_from_surprise(surprise(z, direction))


def surprise_for_score(score: float) -> float:
    """Inverse of ``score_from_surprise``."""
    return SCORE_HALF_SURPRISE * score / (1.0 - score)


def threshold_z(cfg: _DetectorBase) -> float:
    """The |z| whose score equals the threshold (in the configured direction)."""
    log_p = -surprise_for_score(cfg.threshold) + (math.log10(2.0) if cfg.direction == "both" else 0.0)
    p = 10.0**log_p
    if p <= 1e-300:
        return 37.0
    return -NormalDist().inv_cdf(min(p, 0.5))


def _directed(cfg: _DetectorBase, z: float) -> float:
    if cfg.direction == "up":
        return z
    if cfg.direction == "down":
        return -z
    return abs(z)


class LongRun:
    """The series' own long-run noise and level, for the relative scale floor.

    EW means (weight max(1/n, ``ALPHA``): a plain mean at first) of the absolute bucket-to-bucket
    change and of the absolute value. O(1), 32 bytes of state."""

    ALPHA = 0.005
    __slots__ = ("abs_level", "last", "masd", "n")

    def __init__(self) -> None:
        self.n = 0
        self.last = 0.0
        self.masd = 0.0
        self.abs_level = 0.0

    def push(self, value: float) -> None:
        if self.n > 0:
            w = max(1.0 / self.n, self.ALPHA)
            self.masd += w * (abs(value - self.last) - self.masd)
        w = max(1.0 / (self.n + 1), self.ALPHA)
        self.abs_level += w * (abs(value) - self.abs_level)
        self.last = value
        self.n = min(self.n + 1, 2**31)

    def floor(self, cfg: _DetectorBase, expected: float) -> float:
        floor = max(
            cfg.min_scale,
            cfg.rel_scale_floor * self.masd / MASD_TO_SIGMA,
            cfg.rel_level_floor * self.abs_level,
        )
        if cfg.count_floor:
            floor = max(floor, math.sqrt(max(expected, 1.0)))
        return floor

    def write(self, w: Writer) -> None:
        w.i64(self.n).f64(self.last).f64(self.masd).f64(self.abs_level)

    def read(self, r: Reader) -> None:
        self.n, self.last, self.masd, self.abs_level = r.i64(), r.f64(), r.f64(), r.f64()


class Lag1:
    """EW lag-1 autocorrelation of a detector's standardized residuals (clipped to +-4).

    Sums of n autocorrelated residuals vary (1 + rho) / (1 - rho) times more than independent ones
    (AR(1) long-run variance): the sustained statistic and CUSUM divide by that, so an ordinary
    autocorrelated gauge does not look like a level shift. Only residuals the baseline learned are
    fed, and they reach the estimate ``DELAY`` buckets late, so a shift in progress never inflates
    its own variance. O(1), under 100 bytes."""

    ALPHA = 0.01
    MAX_RHO = 0.95
    MIN_N = 10
    DELAY = 8
    __slots__ = ("c0", "c1", "last", "n", "pending")

    def __init__(self) -> None:
        self.n = 0
        self.last = 0.0
        self.c0 = 0.0
        self.c1 = 0.0
        self.pending = array("f")

    def push(self, z: float) -> None:
        """A learned residual's z (``nan`` = a gap in the learned sequence: breaks the pairing)."""
        self.pending.append(z)
        if len(self.pending) > self.DELAY:
            self._fold(self.pending.pop(0))

    def _fold(self, z: float) -> None:
        if math.isnan(z):
            self.last = math.nan
            return
        z = min(max(z, -4.0), 4.0)
        w = max(1.0 / (self.n + 1), self.ALPHA)
        self.c0 += w * (z * z - self.c0)
        if self.n > 0 and not math.isnan(self.last):
            self.c1 += max(1.0 / self.n, self.ALPHA) * (z * self.last - self.c1)
        self.last = z
        self.n = min(self.n + 1, 2**31)

    @property
    def rho(self) -> float:
        if self.n < self.MIN_N or self.c0 <= 0.0:
            return 0.0
        return min(max(self.c1 / self.c0, 0.0), self.MAX_RHO)

    @property
    def inflation(self) -> float:
        """Variance of a long sum relative to independent residuals: (1 + rho) / (1 - rho)."""
        rho = self.rho
        return (1.0 + rho) / (1.0 - rho)

    def write(self, w: Writer) -> None:
        w.i64(self.n).f64(self.last).f64(self.c0).f64(self.c1).floats(self.pending)

    def read(self, r: Reader) -> None:
        self.n, self.last, self.c0, self.c1, self.pending = r.i64(), r.f64(), r.f64(), r.f64(), r.floats()
        if len(self.pending) > self.DELAY:
            raise StateFormatError("lag-1 estimator: too many pending residuals")


class Sustain:
    """The last few warm residuals, for the sustained statistic.

    One empty bucket on a series of 10 per minute is noise (z = -3.2); five in a row are an outage
    (z = -7 over the five). It only counts while every bucket in the window deviates by at least
    ``RUN_MIN_Z`` in the same direction, so it neither lingers after an anomaly ends nor adds up
    unrelated noise; each residual is clipped to the threshold z so one spike cannot dominate. The
    variance of the sum is inflated for the residuals' own autocorrelation (``Lag1``).
    """

    __slots__ = ("capacity", "lag1", "last_z", "pos", "residuals", "variances")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.residuals = array("f")
        self.variances = array("f")
        self.pos = 0
        self.lag1 = Lag1()
        self.last_z = math.nan
        """The per-bucket z of the bucket just scored (nan: not warm)."""

    def learned(self) -> None:
        """The bucket just scored went into the baseline: its z feeds the autocorrelation estimate."""
        if self.capacity >= 2:
            self.lag1.push(self.last_z)

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
        return total / math.sqrt(math.fsum(self.variances) * self.lag1.inflation), total / self.capacity

    def write(self, w: Writer) -> None:
        w.u32(self.pos).floats(self.residuals).floats(self.variances)
        self.lag1.write(w)

    def read(self, r: Reader) -> None:
        self.pos, self.residuals, self.variances = r.u32(), r.floats(), r.floats()
        self.lag1.read(r)
        if len(self.residuals) != len(self.variances) or len(self.residuals) > max(self.capacity, 0):
            raise StateFormatError("sustain window does not match its capacity")


def decide(
    cfg: _DetectorBase,
    observed: float,
    expected: float,
    scale: float,
    warm: bool,
    sustain: Sustain,
    longrun: LongRun,
) -> Score:
    """The shared scoring rule: scale floors, per-bucket and sustained z, direction, threshold, min delta."""
    scale = max(scale, longrun.floor(cfg, expected))
    residual = observed - expected
    z = residual / scale
    if not warm:
        sustain.clear()
        sustain.last_z = math.nan
        return Score(0.0, z, observed, expected, False, False, cfg.kind)
    sustain.last_z = z
    bound = threshold_z(cfg) * scale
    sustain.push(min(max(residual, -bound), bound), scale * scale)
    statistic, delta = z, residual
    sustained = sustain.z()
    if sustained is not None and _directed(cfg, sustained[0]) > _directed(cfg, z):
        statistic, delta = sustained
    score = score_from_z(statistic, cfg.direction)
    breach = score >= cfg.threshold and abs(delta) >= cfg.min_abs_delta
    return Score(score, statistic, observed, expected, breach, True, cfg.kind)


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

    def update(
        self, value: float, bucket_start_ms: int, learn: bool = True, hold_above: float = math.inf
    ) -> Score:
        """Score ``value`` (the bucket starting at ``bucket_start_ms``) against the baseline, then
        learn it, unless ``learn`` is false or its score is >= ``hold_above`` (while an alert fires the
        operator holds anomalous buckets out of the baseline but still lets it follow clean ones)."""
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

    def latest(self, n: int) -> list[float]:
        """The last ``n`` values pushed (fewer if the ring holds fewer)."""
        size = len(self.values)
        n = min(n, size)
        return [self.values[(self.pos - 1 - i) % size] for i in range(n)]

    def write(self, w: Writer) -> None:
        w.u32(self.pos).i64(self.count).floats(self.values)

    @classmethod
    def read(cls, r: Reader, capacity: int) -> _Ring:
        ring = cls(capacity)
        ring.pos, ring.count, ring.values = r.u32(), r.i64(), r.floats()
        if len(ring.values) > capacity or ring.pos >= capacity:
            raise StateFormatError(f"ring of {len(ring.values)} values does not fit capacity {capacity}")
        return ring


_ROBUST_VERSION = 3
_HOLT_VERSION = 3
_SEASONAL_VERSION = 3
_CUSUM_VERSION = 2
_ENSEMBLE_VERSION = 2


class RobustZDetector:
    """z = (x - median) / (1.4826 * MAD) over the last ``window_buckets`` values."""

    kind = "robust_z"

    def __init__(self, cfg: RobustZConfig) -> None:
        self.cfg = cfg
        self._ring = _Ring(cfg.window_buckets)
        self._sustain = Sustain(cfg.sustain_buckets)
        self._longrun = LongRun()

    def update(
        self, value: float, bucket_start_ms: int, learn: bool = True, hold_above: float = math.inf
    ) -> Score:
        history = self._ring.items()
        if history:
            expected, mad = median_mad(history)
        else:
            expected, mad = value, 0.0
        warm = len(history) >= self.cfg.warmup_buckets
        result = decide(self.cfg, value, expected, MAD_TO_SIGMA * mad, warm, self._sustain, self._longrun)
        if learn and result.score < hold_above:
            self._sustain.learned()
            self._ring.push(value)
            self._longrun.push(value)
        return result

    def to_bytes(self) -> bytes:
        w = Writer().u8(_ROBUST_VERSION)
        self._ring.write(w)
        self._sustain.write(w)
        self._longrun.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: RobustZConfig, data: bytes) -> RobustZDetector:
        r = Reader(data, "robust_z detector")
        r.version(_ROBUST_VERSION)
        det = cls(cfg)
        det._ring = _Ring.read(r, cfg.window_buckets)
        det._sustain.read(r)
        det._longrun.read(r)
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
        self._longrun = LongRun()

    def update(
        self, value: float, bucket_start_ms: int, learn: bool = True, hold_above: float = math.inf
    ) -> Score:
        cfg = self.cfg
        if self.n == 0:
            result = decide(cfg, value, value, 0.0, False, self._sustain, self._longrun)
            if learn:
                self.level, self.trend, self.variance, self.n = value, 0.0, 0.0, 1
                self._longrun.push(value)
            return result
        expected = self.level + cfg.trend_damping * self.trend
        warm = self.n >= cfg.warmup_buckets
        scale = math.sqrt(self.variance)
        result = decide(cfg, value, expected, scale, warm, self._sustain, self._longrun)
        if not learn or result.score >= hold_above:
            return result
        self._sustain.learned()
        learned = value
        if warm:
            # A spike moves the baseline by at most clip_sigmas (floored) sigmas per bucket.
            bound = cfg.clip_sigmas * max(scale, self._longrun.floor(cfg, expected))
            learned = min(max(value, expected - bound), expected + bound)
        residual = learned - expected
        level = expected + cfg.alpha * residual
        self.trend = cfg.beta * (level - self.level) + (1.0 - cfg.beta) * cfg.trend_damping * self.trend
        self.level = level
        weight = max(cfg.variance_alpha, 1.0 / self.n)
        self.variance = (1.0 - weight) * self.variance + weight * residual * residual
        self.n = min(self.n + 1, 2**31)
        self._longrun.push(value)
        return result

    def to_bytes(self) -> bytes:
        w = Writer().u8(_HOLT_VERSION).i64(self.n).f64(self.level).f64(self.trend).f64(self.variance)
        self._sustain.write(w)
        self._longrun.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: HoltConfig, data: bytes) -> HoltDetector:
        r = Reader(data, "holt detector")
        r.version(_HOLT_VERSION)
        det = cls(cfg)
        det.n, det.level, det.trend, det.variance = r.i64(), r.f64(), r.f64(), r.f64()
        det._sustain.read(r)
        det._longrun.read(r)
        r.done()
        return det


def seasonal_slots(cfg: SeasonalConfig, bucket_ms: int) -> int:
    """Profile slots per period: the configured slot, widened to the bucket when buckets are longer
    (hourly buckets on a 15-minute profile would leave 3 of 4 slots forever empty)."""
    return max(1, cfg.period_ms // max(cfg.slot_ms, bucket_ms))


class SeasonalDetector:
    """Expected = median over the last ``periods`` periods of the same slot (interpolated between slots).

    A profile of ``periods x slots`` float32 slot means (the current period's slot accumulates until it
    ends), plus a ring of recent residuals for a robust scale and, optionally, a level correction.
    Buckets are placed by their midpoint, so any bucket length works, shorter or longer than a slot.
    """

    kind = "seasonal"

    def __init__(self, cfg: SeasonalConfig, bucket_ms: int = 60_000) -> None:
        self.cfg = cfg
        self.bucket_ms = bucket_ms
        self.slots = seasonal_slots(cfg, bucket_ms)
        self.slot_width = cfg.period_ms / self.slots
        self.period_of_row = [-1] * cfg.periods
        self.profile = array("f", [math.nan]) * (cfg.periods * self.slots)
        self.cur_period = -1
        self.cur_slot = -1
        self.cur_sum = 0.0
        self.cur_count = 0
        self._residuals = _Ring(cfg.residual_window_buckets)
        self._sustain = Sustain(cfg.sustain_buckets)
        self._longrun = LongRun()

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

    def _place(self, bucket_start_ms: int) -> tuple[int, float]:
        mid = bucket_start_ms + self.bucket_ms // 2
        return mid // self.cfg.period_ms, (mid % self.cfg.period_ms) / self.slot_width

    def expected_at(self, bucket_start_ms: int) -> tuple[float, int]:
        """Profile value at this time of the period and the fewest past periods behind it."""
        period, pos = self._place(bucket_start_ms)
        pos -= 0.5
        s0 = math.floor(pos)
        frac = pos - s0
        v0, n0 = self._slot_median(period, s0)
        v1, n1 = self._slot_median(period, s0 + 1)
        if n0 == 0 and n1 == 0:
            return math.nan, 0
        if n0 == 0:
            return v1, n1
        if n1 == 0:
            return v0, n0
        return (1.0 - frac) * v0 + frac * v1, min(n0, n1)

    def update(
        self, value: float, bucket_start_ms: int, learn: bool = True, hold_above: float = math.inf
    ) -> Score:
        cfg = self.cfg
        period, pos = self._place(bucket_start_ms)
        slot = min(int(pos), self.slots - 1)
        if (period, slot) != (self.cur_period, self.cur_slot):
            self._flush_slot()
            self.cur_period, self.cur_slot = period, slot
        profile_value, seen = self.expected_at(bucket_start_ms)
        if math.isnan(profile_value):
            result = decide(cfg, value, value, 0.0, False, self._sustain, self._longrun)
        else:
            history = self._residuals.items()
            mad = median_mad(history)[1] if history else 0.0
            shift = _median(self._residuals.latest(cfg.level_buckets)) if history else 0.0
            expected = profile_value + (shift if cfg.level_correction else 0.0)
            expected = max(expected, 0.0) if cfg.count_floor else expected
            warm = seen >= cfg.min_periods and len(history) >= cfg.min_residuals
            result = decide(cfg, value, expected, MAD_TO_SIGMA * mad, warm, self._sustain, self._longrun)
        learn = learn and result.score < hold_above
        if learn and not math.isnan(profile_value):
            self._sustain.learned()
            self._residuals.push(value - profile_value)
        if learn:
            self._longrun.push(value)
            # The profile only learns what the baseline learns (a held anomaly stays out of it).
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
        self._longrun.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: SeasonalConfig, data: bytes, bucket_ms: int = 60_000) -> SeasonalDetector:
        r = Reader(data, "seasonal detector")
        r.version(_SEASONAL_VERSION)
        det = cls(cfg, bucket_ms)
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
        det._longrun.read(r)
        r.done()
        return det


def cusum_log10_tail(h: float, k: float) -> float:
    """log10 P(S >= h) for a one-sided CUSUM with allowance ``k`` on N(0, 1) input, in its stationary
    regime: P(Z >= k) * e^(-2kh) (a reflected random walk with drift -k has an exponential tail of
    rate 2k). At h = 0+ it is P(Z >= k): one bucket k sigmas out."""
    return log10_upper_tail(k) - 2.0 * k * h / _LN10


def cusum_height_for(s: float, k: float) -> float:
    """The height whose one-sided surprise is ``s`` (inverse of ``cusum_log10_tail``)."""
    return max(0.0, (s + log10_upper_tail(k)) * _LN10 / (2.0 * k))


class CusumDetector:
    """Two-sided CUSUM on residuals standardized by an EW scale, against a slow EW baseline.

    S+ = max(0, S+ + z - k), S- = max(0, S- - z - k) with z clipped to +-``clip_sigmas`` (one spike
    cannot make a shift) and divided by the residuals' autocorrelation inflation (``Lag1``), so an
    AR(1) gauge wanders like independent noise. The surprise is the stationary tail of the height
    (``cusum_log10_tail``; two-sided: twice the probability). When a side passes ``reset_at`` the
    level has moved for good: the baseline jumps to the recent (fast EW) level and both sides restart.
    While held (an alert is open) the baseline stays, and the heights are capped at the hold level:
    the CUSUM keeps the alert open while the shift lasts and lets it go the first bucket it ends."""

    kind = "cusum"

    def __init__(self, cfg: CusumConfig) -> None:
        self.cfg = cfg
        self.n = 0
        self.mean = 0.0
        self.fast = 0.0
        self.variance = 0.0
        self.s_up = 0.0
        self.s_down = 0.0
        self._longrun = LongRun()
        self._lag1 = Lag1()

    def _surprise(self, s_up: float, s_down: float) -> tuple[float, float]:
        """(surprise, sign) of the heights in the configured direction."""
        cfg = self.cfg
        if cfg.direction == "up":
            height, sign = s_up, 1.0
        elif cfg.direction == "down":
            height, sign = s_down, -1.0
        else:
            height, sign = (s_up, 1.0) if s_up >= s_down else (s_down, -1.0)
        if height <= 0.0:
            return 0.0, sign
        log_p = cusum_log10_tail(height, cfg.k) + (math.log10(2.0) if cfg.direction == "both" else 0.0)
        return max(0.0, -log_p), sign

    def update(
        self, value: float, bucket_start_ms: int, learn: bool = True, hold_above: float = math.inf
    ) -> Score:
        cfg = self.cfg
        if self.n == 0:
            result = Score(0.0, 0.0, value, value, False, False, self.kind)
            if learn:
                self.mean = self.fast = value
                self.n = 1
                self._longrun.push(value)
            return result
        expected = self.mean
        scale = max(math.sqrt(self.variance), self._longrun.floor(cfg, expected))
        z = (value - expected) / scale
        zc = min(max(z, -cfg.clip_sigmas), cfg.clip_sigmas)
        zw = zc / math.sqrt(self._lag1.inflation)
        warm = self.n >= cfg.warmup_buckets
        s_up = max(0.0, self.s_up + zw - cfg.k) if warm else 0.0
        s_down = max(0.0, self.s_down - zw - cfg.k) if warm else 0.0
        held = False
        if warm and math.isfinite(hold_above):
            # The height of the hold level (a hair above it, so a capped bucket still scores >= it).
            extra = math.log10(2.0) if cfg.direction == "both" else 0.0
            cap = cusum_height_for((surprise_for_score(hold_above) + extra) * (1 + 1e-9) + 1e-9, cfg.k)
            held = max(s_up, s_down) >= cap
            s_up, s_down = min(s_up, cap), min(s_down, cap)
        s, sign = self._surprise(s_up, s_down)
        score = score_from_surprise(s) if warm else 0.0
        # The statistic is reported as the z of the same tail probability, signed by the side.
        stat = sign * (-NormalDist().inv_cdf(min(0.5, 10.0**-s))) if s < 300 else sign * 37.0
        run = self.fast - expected
        delta = run if abs(run) > abs(value - expected) else value - expected
        breach = warm and score >= cfg.threshold and abs(delta) >= cfg.min_abs_delta
        result = Score(score, stat if warm else z, value, expected, breach, warm, self.kind)
        if not learn:
            return result
        self.s_up, self.s_down = s_up, s_down
        if held or score >= hold_above:
            return result
        self.fast += 0.3 * (value - self.fast)
        if max(self.s_up, self.s_down) >= cfg.reset_at:
            self.mean = self.fast
            self.s_up = self.s_down = 0.0
        else:
            self.mean += (
                cfg.alpha * zc * scale if warm else max(cfg.alpha, 1.0 / (self.n + 1)) * (value - self.mean)
            )
        if warm:
            self._lag1.push(z)
        resid = zc * scale
        weight = max(cfg.variance_alpha, 1.0 / self.n)
        self.variance = (1.0 - weight) * self.variance + weight * resid * resid
        self.n = min(self.n + 1, 2**31)
        self._longrun.push(value)
        return result

    def to_bytes(self) -> bytes:
        w = Writer().u8(_CUSUM_VERSION).i64(self.n).f64(self.mean).f64(self.fast).f64(self.variance)
        w.f64(self.s_up).f64(self.s_down)
        self._longrun.write(w)
        self._lag1.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: CusumConfig, data: bytes) -> CusumDetector:
        r = Reader(data, "cusum detector")
        r.version(_CUSUM_VERSION)
        det = cls(cfg)
        det.n, det.mean, det.fast, det.variance = r.i64(), r.f64(), r.f64(), r.f64()
        det.s_up, det.s_down = r.f64(), r.f64()
        det._longrun.read(r)
        det._lag1.read(r)
        r.done()
        return det


MemberDetector = RobustZDetector | HoltDetector | SeasonalDetector | CusumDetector
_SHARED_FIELDS = (
    "direction",
    "min_abs_delta",
    "count_floor",
    "min_scale",
    "rel_scale_floor",
    "rel_level_floor",
)


def ensemble_members(cfg: EnsembleConfig) -> list[RobustZConfig | HoltConfig | SeasonalConfig | CusumConfig]:
    """The member configs, with the ensemble's shared settings (direction, floors, min delta) applied."""
    shared = {name: getattr(cfg, name) for name in _SHARED_FIELDS}
    out: list[RobustZConfig | HoltConfig | SeasonalConfig | CusumConfig] = []
    for kind in cfg.members:
        member = getattr(cfg, kind)
        out.append(member.model_copy(update=shared))
    return out


class EnsembleDetector:
    """Several members on one series; each learns as if alone. A member's surprise is rescaled so its
    own threshold maps to the ensemble's (s x s_ensemble / s_member): members with calibrated
    thresholds of their own stay comparable. ``combine``:

    - ``fallback`` (default): the first *warm* member in ``members`` order decides. The order goes
      from the most informed model to the quickest to warm up (seasonal needs two days, Holt 30
      buckets), so a young series is covered and a mature one gets the best model, never the noise
      of the others (on the realistic evaluation every union of members raised false alerts).
    - ``max``: the member most surprising relative to its threshold decides (the ensemble breaches
      when any member breaches its own threshold)."""

    kind = "ensemble"

    def __init__(self, cfg: EnsembleConfig, bucket_ms: int = 60_000) -> None:
        self.cfg = cfg
        member_cfgs = ensemble_members(cfg)
        self.members: list[MemberDetector] = [_build_member(m, bucket_ms) for m in member_cfgs]
        target = surprise_for_score(cfg.threshold)
        self._gain = [target / surprise_for_score(m.threshold) for m in member_cfgs]

    def update(
        self, value: float, bucket_start_ms: int, learn: bool = True, hold_above: float = math.inf
    ) -> Score:
        cfg = self.cfg
        hold_s = surprise_for_score(hold_above) if math.isfinite(hold_above) else math.inf
        scores = []
        for member, gain in zip(self.members, self._gain, strict=True):
            # The member score that maps to the hold level once rescaled.
            member_hold = score_from_surprise(hold_s / gain) if math.isfinite(hold_s) else math.inf
            scores.append(member.update(value, bucket_start_ms, learn, member_hold))
        warm = [(s, g) for s, g in zip(scores, self._gain, strict=True) if s.warm]
        if not warm:
            first = scores[0]
            return Score(0.0, first.statistic, value, first.expected, False, False, self.kind)
        if cfg.combine == "fallback":
            best, gain = warm[0]
        else:
            best, gain = max(warm, key=lambda sg: surprise_for_score(sg[0].score) * sg[1])
        score = score_from_surprise(surprise_for_score(best.score) * gain)
        breach = score >= cfg.threshold and abs(best.observed - best.expected) >= cfg.min_abs_delta
        return Score(score, best.statistic, value, best.expected, breach, True, best.detector)

    def to_bytes(self) -> bytes:
        w = Writer().u8(_ENSEMBLE_VERSION).u32(len(self.members))
        for m in self.members:
            w.text(m.kind).blob(m.to_bytes())
        return w.getvalue()

    @classmethod
    def from_bytes(cls, cfg: EnsembleConfig, data: bytes, bucket_ms: int = 60_000) -> EnsembleDetector:
        r = Reader(data, "ensemble detector")
        r.version(_ENSEMBLE_VERSION)
        det = cls(cfg, bucket_ms)
        n = r.u32()
        if n != len(det.members):
            raise StateFormatError(f"ensemble state has {n} members, config has {len(det.members)}")
        restored: list[MemberDetector] = []
        for member_cfg, current in zip(ensemble_members(cfg), det.members, strict=True):
            kind = r.text()
            if kind != current.kind:
                raise StateFormatError(f"ensemble state member {kind!r} where config has {current.kind!r}")
            restored.append(_member_from_bytes(member_cfg, r.blob(), bucket_ms))
        det.members = restored
        r.done()
        return det


AnyDetector = RobustZDetector | HoltDetector | SeasonalDetector | CusumDetector | EnsembleDetector


def _build_member(
    cfg: RobustZConfig | HoltConfig | SeasonalConfig | CusumConfig, bucket_ms: int
) -> MemberDetector:
    if isinstance(cfg, RobustZConfig):
        return RobustZDetector(cfg)
    if isinstance(cfg, HoltConfig):
        return HoltDetector(cfg)
    if isinstance(cfg, CusumConfig):
        return CusumDetector(cfg)
    return SeasonalDetector(cfg, bucket_ms)


def _member_from_bytes(
    cfg: RobustZConfig | HoltConfig | SeasonalConfig | CusumConfig, data: bytes, bucket_ms: int
) -> MemberDetector:
    if isinstance(cfg, RobustZConfig):
        return RobustZDetector.from_bytes(cfg, data)
    if isinstance(cfg, HoltConfig):
        return HoltDetector.from_bytes(cfg, data)
    if isinstance(cfg, CusumConfig):
        return CusumDetector.from_bytes(cfg, data)
    return SeasonalDetector.from_bytes(cfg, data, bucket_ms)


def build_detector(cfg: DetectorConfig, bucket_ms: int = 60_000) -> AnyDetector:
    """A fresh detector for ``cfg`` on buckets of ``bucket_ms``."""
    if isinstance(cfg, EnsembleConfig):
        return EnsembleDetector(cfg, bucket_ms)
    return _build_member(cfg, bucket_ms)


def detector_from_bytes(cfg: DetectorConfig, data: bytes, bucket_ms: int = 60_000) -> AnyDetector:
    """Restore a detector of ``cfg``'s kind from ``to_bytes`` output."""
    if isinstance(cfg, EnsembleConfig):
        return EnsembleDetector.from_bytes(cfg, data, bucket_ms)
    return _member_from_bytes(cfg, data, bucket_ms)
