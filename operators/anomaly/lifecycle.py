"""Alert lifecycle of one series: breaches in, at most one FIRING at a time, each closed by a RESOLVED.

FIRING when at least ``fire_m`` of the last ``fire_n`` buckets breach (and no cooldown is running);
RESOLVED after ``resolve_k`` consecutive clean buckets (score below ``resolve_score_ratio`` times the
detector threshold: hysteresis against flapping), or when the series expires while firing; then
``cooldown_buckets`` buckets without a new FIRING. While FIRING, for up to ``freeze_baseline_buckets``
(``learns`` false), the detector holds every bucket scoring >= the clean level out of its baseline, so
a long anomaly does not silently become normal while clean buckets still keep the baseline current
(a daily cycle goes on during an alert). Times in alerts are event time, so a replay produces the
same alerts byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from streamwarden.operators.anomaly._wire import Reader, Writer
from streamwarden.operators.anomaly.detectors import Score
from streamwarden.operators.anomaly.spec import LifecycleConfig
from streamwarden.schemas import streamwarden_pb2 as pb

Status = pb.AnomalyAlert.Status
Severity = pb.AnomalyAlert.Severity

_LIFECYCLE_VERSION = 1


def fingerprint(metric: str, series_key: str) -> str:
    """Stable alert identity per (metric, series key): 16 hex chars of sha256."""
    return hashlib.sha256(f"{metric}\n{series_key}".encode()).hexdigest()[:16]


def severity_for(cfg: LifecycleConfig, score: float) -> int:
    """INFO below ``warning_score``, WARNING below ``critical_score``, else CRITICAL."""
    if score >= cfg.critical_score:
        return Severity.CRITICAL
    if score >= cfg.warning_score:
        return Severity.WARNING
    return Severity.INFO


class AlertLifecycle:
    """The FIRING/RESOLVED state machine of one (metric, series key)."""

    def __init__(
        self,
        cfg: LifecycleConfig,
        metric: str,
        series_key: str,
        detector: str,
        labels: Mapping[str, str] | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.cfg = cfg
        self.metric = metric
        self.series_key = series_key
        self.detector = detector
        self.labels = dict(labels or {})
        self.clean_below = threshold * cfg.resolve_score_ratio
        self.fingerprint = fingerprint(metric, series_key)
        self._mask = (1 << cfg.fire_n) - 1
        self.breaches = 0
        """Bit i set: the bucket i steps ago breached (bit 0 = the latest)."""
        self.firing = False
        self.firing_buckets = 0
        self.clean_streak = 0
        self.cooldown_left = 0
        self.episode_start_ms = 0
        self.severity = 0
        self.peak_score = 0.0
        self.direction_up = True
        self.suppressed = 0
        """Buckets where m-of-n held but a cooldown kept the alert from firing."""

    def step(self, start_ms: int, end_ms: int, score: Score) -> pb.AnomalyAlert | None:
        """Apply one closed bucket's score; return the FIRING or RESOLVED transition, if any."""
        cfg = self.cfg
        self.breaches = ((self.breaches << 1) | int(score.breach)) & self._mask
        if self.firing:
            self.firing_buckets += 1
            self.peak_score = max(self.peak_score, score.score)
            if score.breach or score.score >= self.clean_below:
                self.clean_streak = 0
                return None
            self.clean_streak += 1
            if self.clean_streak >= cfg.resolve_k:
                return self._resolve(end_ms, score, "recovered")
            return None
        cooling = self.cooldown_left > 0
        if cooling:
            self.cooldown_left -= 1
        if score.breach and self.breaches.bit_count() >= cfg.fire_m:
            if cooling:
                self.suppressed += 1
                return None
            oldest = self.breaches.bit_length() - 1
            self.episode_start_ms = start_ms - oldest * (end_ms - start_ms)
            self.firing = True
            self.firing_buckets = 0
            self.clean_streak = 0
            self.peak_score = score.score
            self.severity = severity_for(cfg, score.score)
            self.direction_up = score.statistic >= 0
            return self._alert(Status.FIRING, end_ms, score, {})
        return None

    @property
    def learns(self) -> bool:
        """Should the detector learn every bucket? Not while a young FIRING is open: then it learns
        only buckets scoring below ``clean_below``."""
        return not self.firing or self.firing_buckets >= self.cfg.freeze_baseline_buckets

    def expire(self, end_ms: int, score: Score) -> pb.AnomalyAlert | None:
        """The series is being forgotten: close an open FIRING with a RESOLVED (reason 'expired')."""
        if not self.firing:
            return None
        return self._resolve(end_ms, score, "expired")

    def _resolve(self, end_ms: int, score: Score, reason: str) -> pb.AnomalyAlert:
        extra = {"reason": reason, "peak_score": f"{self.peak_score:.4f}"}
        alert = self._alert(Status.RESOLVED, end_ms, score, extra)
        self.firing = False
        self.clean_streak = 0
        self.breaches = 0
        self.cooldown_left = self.cfg.cooldown_buckets
        return alert

    def _alert(self, status: int, end_ms: int, score: Score, extra: dict[str, str]) -> pb.AnomalyAlert:
        labels = {**self.labels, "direction": "up" if self.direction_up else "down", **extra}
        return pb.AnomalyAlert(
            fingerprint=self.fingerprint,
            metric=self.metric,
            series_key=self.series_key,
            status=status,  # type: ignore[arg-type]
            severity=self.severity,  # type: ignore[arg-type]
            window_start_ms=self.episode_start_ms,
            window_end_ms=end_ms,
            observed=score.observed,
            expected=score.expected,
            score=score.score,
            detector=score.detector or self.detector,
            labels=labels,
            started_ms=self.episode_start_ms,
            updated_ms=end_ms,
        )

    def to_bytes(self) -> bytes:
        w = Writer().u8(_LIFECYCLE_VERSION).u32(self.breaches).u8(int(self.firing)).u8(int(self.direction_up))
        w.i64(self.clean_streak).i64(self.cooldown_left).i64(self.episode_start_ms).i64(self.firing_buckets)
        w.u8(self.severity).f64(self.peak_score).i64(self.suppressed)
        return w.getvalue()

    def restore(self, data: bytes) -> None:
        """Load ``to_bytes`` output into this (identically configured) lifecycle."""
        r = Reader(data, "alert lifecycle")
        r.version(_LIFECYCLE_VERSION)
        self.breaches = r.u32() & self._mask
        self.firing, self.direction_up = bool(r.u8()), bool(r.u8())
        self.clean_streak, self.cooldown_left, self.episode_start_ms = r.i64(), r.i64(), r.i64()
        self.firing_buckets = r.i64()
        self.severity, self.peak_score, self.suppressed = r.u8(), r.f64(), r.i64()
        r.done()
