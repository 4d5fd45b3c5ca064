"""The anomaly spec: which aggregate series exist, how they are bucketed, detected and alerted on.

One YAML file drives the streaming job and the offline ``anomaly score`` backtest alike. A metric's
``detector`` and ``lifecycle`` are merged over ``defaults`` (same ``kind`` or no ``kind``: field by
field; another ``kind``: replaced), so a metric only states what it changes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamwarden.operators.config_io import format_validation_error, load_yaml_mapping
from streamwarden.operators.errors import ConfigError
from streamwarden.schemas import streamwarden_pb2 as pb

DEFAULT_SPEC_PATH = Path(__file__).resolve().parent / "default_metrics.yaml"

Direction = Literal["up", "down", "both"]
KeyPath = Literal[
    "actor.account_id",
    "actor.ip",
    "actor.device_id",
    "actor.asn",
    "actor.country",
    "target.content_id",
    "target.account_id",
]
GLOBAL_SERIES_KEY = "*"
"""The series key of a metric without ``key`` (one series for the whole stream)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SeriesKind = Literal["count", "gauge"]
"""``count``: events per bucket (a bucket without data is 0, buckets sum); ``gauge``: a measured value
(a bucket without data is missing, never 0; values in one bucket average)."""

_THRESHOLD_DOC = (
    "A bucket breaches when its score >= threshold. score = s / (s + 6) with s = -log10(tail probability "
    "of the bucket under the detector's model): 0.5 = p 1e-6, 0.6 = p 1e-9, 0.7 = p 1e-14."
)


class _DetectorBase(_Strict):
    kind: str
    direction: Direction = Field(
        "both", description="Which deviations count: 'up' (spikes), 'down' (drops), or 'both'."
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description=_THRESHOLD_DOC)
    min_abs_delta: float = Field(
        0.0, ge=0.0, description="A breach also needs |observed - expected| >= this (ignores tiny series)."
    )
    count_floor: bool | None = Field(
        None,
        description="Poisson floor: the scale is never below sqrt(max(expected, 1)). None = from the "
        "metric's kind (on for count, off for gauge).",
    )
    min_scale: float = Field(1e-9, gt=0.0, description="Absolute floor of the scale (sigma) estimate.")
    rel_scale_floor: float = Field(
        0.5,
        ge=0.0,
        description="The scale is never below this times the series' long-run noise (mean absolute "
        "bucket-to-bucket change / 1.128), so a flat stretch (MAD = 0) cannot make every blip infinite.",
    )
    rel_level_floor: float = Field(
        0.005,
        ge=0.0,
        description="... nor below this times the series' long-run mean absolute level (a constant "
        "series moving by 0.5% is one sigma).",
    )
    sustain_buckets: int = Field(
        5,
        ge=0,
        le=1000,
        description="Also score the sum of the last n residuals (catches sustained small drops); 0 = off.",
    )


class RobustZConfig(_DetectorBase):
    """Robust z-score: distance from the rolling median in units of 1.4826 * MAD."""

    kind: Literal["robust_z"] = Field("robust_z", description="Detector kind.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description=_THRESHOLD_DOC)
    window_buckets: int = Field(60, ge=3, le=100_000, description="Rolling baseline length in buckets.")
    warmup_buckets: int = Field(
        30, ge=3, description="No score (and no alert) before this many buckets of history."
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> RobustZConfig:
        if self.warmup_buckets > self.window_buckets:
            raise ValueError("warmup_buckets must not exceed window_buckets")
        return self


class HoltConfig(_DetectorBase):
    """EWMA level + damped trend (Holt) with an exponentially weighted residual variance."""

    kind: Literal["holt"] = Field("holt", description="Detector kind.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description=_THRESHOLD_DOC)
    alpha: float = Field(0.1, gt=0.0, le=1.0, description="Level smoothing per bucket.")
    beta: float = Field(0.02, ge=0.0, le=1.0, description="Trend smoothing per bucket (0 = no trend).")
    trend_damping: float = Field(0.9, ge=0.0, le=1.0, description="Trend multiplier per bucket (phi).")
    variance_alpha: float = Field(0.05, gt=0.0, le=1.0, description="Residual variance smoothing.")
    clip_sigmas: float = Field(
        4.0, gt=0.0, description="Values feed the baseline clipped to expected +- this many sigmas."
    )
    warmup_buckets: int = Field(30, ge=3, description="No score (and no alert) before this many buckets.")


class SeasonalConfig(_DetectorBase):
    """Same time of day over recent periods: per-slot median across days, plus a robust residual scale."""

    kind: Literal["seasonal"] = Field("seasonal", description="Detector kind.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description=_THRESHOLD_DOC)
    period_ms: int = Field(86_400_000, gt=0, description="Season length (a day).")
    slot_ms: int = Field(900_000, gt=0, description="Profile resolution inside the period.")
    periods: int = Field(7, ge=1, le=64, description="How many past periods the profile remembers.")
    min_periods: int = Field(2, ge=1, description="Past periods needed at a slot before alerting.")
    residual_window_buckets: int = Field(
        120, ge=3, le=100_000, description="Rolling window of residuals for the scale and level correction."
    )
    min_residuals: int = Field(30, ge=3, description="Residuals needed before alerting.")
    level_correction: bool = Field(
        True, description="Add the median recent residual to the profile (follows day-to-day level drift)."
    )
    level_buckets: int = Field(
        8,
        ge=1,
        le=100_000,
        description="How many recent residuals the level correction takes the median of: short, so a "
        "weekend or a holiday (a whole day lower) is followed within a few buckets.",
    )

    @model_validator(mode="after")
    def _shape(self) -> SeasonalConfig:
        if self.period_ms % self.slot_ms:
            raise ValueError("slot_ms must divide period_ms")
        if self.period_ms // self.slot_ms > 10_000:
            raise ValueError("period_ms / slot_ms must be <= 10000 slots")
        if self.min_periods > self.periods:
            raise ValueError("min_periods must not exceed periods")
        if self.min_residuals > self.residual_window_buckets:
            raise ValueError("min_residuals must not exceed residual_window_buckets")
        return self


class CusumConfig(_DetectorBase):
    """Two-sided CUSUM of standardized residuals against a slow EW baseline: catches level shifts too
    small for one bucket. The score comes from the per-bucket false-alarm rate of the CUSUM at its
    current height (Siegmund's ARL approximation), so it is on the same scale as the others."""

    kind: Literal["cusum"] = Field("cusum", description="Detector kind.")
    sustain_buckets: int = Field(
        0, ge=0, le=1000, description="Unused: CUSUM is itself a sustained statistic."
    )
    k: float = Field(
        1.0, gt=0.0, le=5.0, description="Allowance per bucket, in sigmas (half the shift to find)."
    )
    alpha: float = Field(0.1, gt=0.0, le=1.0, description="Baseline (EW mean) smoothing per bucket.")
    variance_alpha: float = Field(0.1, gt=0.0, le=1.0, description="EW residual scale smoothing.")
    clip_sigmas: float = Field(3.0, gt=0.0, description="Residuals enter clipped to +- this many sigmas.")
    reset_at: float = Field(
        40.0, gt=0.0, description="When a CUSUM passes this height the baseline jumps to the recent level."
    )
    warmup_buckets: int = Field(30, ge=3, description="No score (and no alert) before this many buckets.")


MemberKind = Literal["robust_z", "holt", "seasonal", "cusum"]


class EnsembleConfig(_DetectorBase):
    """Several detectors on the same series. Each member's score is rescaled so its own threshold maps
    to the ensemble's; ``combine`` says which member decides (see ``EnsembleDetector``)."""

    kind: Literal["ensemble"] = Field("ensemble", description="Detector kind.")
    members: tuple[MemberKind, ...] = Field(
        ("seasonal", "holt"),
        min_length=1,
        description="Member detectors, most informed first (with combine 'fallback' the first warm one decides).",
    )
    combine: Literal["fallback", "max"] = Field(
        "fallback",
        description="fallback: the first warm member decides; max: the member most surprising relative "
        "to its own threshold decides.",
    )
    # Members score single buckets (sustain off): the sustained statistic assumes independent residuals
    # and fires on ordinary autocorrelated gauges; sustained shifts are the cusum member's job.
    robust_z: RobustZConfig = Field(
        default_factory=lambda: RobustZConfig.model_validate({"sustain_buckets": 0}),
        description="robust_z member settings.",
    )
    holt: HoltConfig = Field(
        default_factory=lambda: HoltConfig.model_validate({"sustain_buckets": 0}),
        description="holt member settings.",
    )
    seasonal: SeasonalConfig = Field(
        default_factory=lambda: SeasonalConfig.model_validate({"sustain_buckets": 0}),
        description="seasonal member settings.",
    )
    cusum: CusumConfig = Field(default_factory=CusumConfig, description="cusum member settings.")  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _distinct(self) -> EnsembleConfig:
        if len(set(self.members)) != len(self.members):
            raise ValueError("ensemble members must be distinct")
        return self


DetectorConfig = Annotated[
    RobustZConfig | HoltConfig | SeasonalConfig | CusumConfig | EnsembleConfig, Field(discriminator="kind")
]
DETECTOR_KINDS = ("ensemble", "robust_z", "holt", "seasonal", "cusum")


class LifecycleConfig(_Strict):
    """When a breaching series becomes a FIRING alert and when it is RESOLVED."""

    fire_m: int = Field(2, ge=1, description="FIRING when at least m of the last n buckets breach.")
    fire_n: int = Field(3, ge=1, le=32, description="Length of the m-of-n window, in buckets.")
    resolve_k: int = Field(3, ge=1, description="RESOLVED after k consecutive clean buckets.")
    cooldown_buckets: int = Field(
        10, ge=0, description="After a RESOLVED, no new FIRING for this many buckets."
    )
    resolve_score_ratio: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Hysteresis: a bucket is clean only if its score < detector threshold * this.",
    )
    freeze_baseline_buckets: int = Field(
        20,
        ge=0,
        description="While FIRING, for up to this many buckets (0 = never), buckets that are not clean "
        "stay out of the detector's baseline, so an attack or outage stays FIRING until it ends instead of "
        "becoming the new normal; clean buckets are learned as usual.",
    )
    warning_score: float = Field(0.6, gt=0.0, le=1.0, description="Severity WARNING from this score.")
    critical_score: float = Field(0.8, gt=0.0, le=1.0, description="Severity CRITICAL from this score.")

    @model_validator(mode="after")
    def _consistent(self) -> LifecycleConfig:
        if self.fire_m > self.fire_n:
            raise ValueError("fire_m must not exceed fire_n")
        if self.warning_score > self.critical_score:
            raise ValueError("warning_score must not exceed critical_score")
        return self


class MetricSpec(_Strict):
    """One aggregate rate, e.g. plays per target track per minute. Fully resolved (defaults merged)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="Metric name in alerts.")
    description: str = Field("", description="What the metric counts, for humans.")
    source: Literal["events", "dead_letters"] = Field(
        "events", description="Count decoded events, or dead letters (pipeline health)."
    )
    event_types: tuple[str, ...] = Field(
        (), description="Event.Type names counted (empty = every type). Only for source 'events'."
    )
    key: KeyPath | None = Field(None, description="Event field that keys the series; None = one series.")
    kind: SeriesKind = Field(
        "count",
        description="count: points add up per bucket, a bucket without points is 0; gauge: points "
        "average per bucket, a bucket without points is missing (not scored, never 0).",
    )
    bucket_ms: int = Field(60_000, gt=0, description="Tumbling event-time bucket length.")
    bucket_offset_ms: int = Field(0, ge=0, description="Bucket alignment: starts at offset + k * bucket_ms.")
    allowed_lateness_ms: int = Field(
        60_000, ge=0, description="A bucket closes when the watermark passes its end plus this."
    )
    idle_expiry_ms: int = Field(
        3_600_000, gt=0, description="A series without events for this long emits its last zero and expires."
    )
    detector: DetectorConfig = Field(description="The detector scoring each closed bucket.")
    lifecycle: LifecycleConfig = Field(description="FIRING/RESOLVED rules.")
    labels: dict[str, str] = Field(default_factory=dict, description="Copied into every alert's labels.")

    @model_validator(mode="before")
    @classmethod
    def _floor_from_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("detector"), dict):
            det = data["detector"]
            if det.get("count_floor") is None:
                data = {**data, "detector": {**det, "count_floor": data.get("kind", "count") == "count"}}
        return data

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = set(pb.Event.Type.keys()) - {"TYPE_UNSPECIFIED"}
        unknown = [t for t in value if t not in known]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _source_fields(self) -> MetricSpec:
        if self.source == "dead_letters" and (self.key is not None or self.event_types):
            raise ValueError("a dead_letters metric takes neither key nor event_types")
        if self.bucket_offset_ms >= self.bucket_ms:
            raise ValueError("bucket_offset_ms must be smaller than bucket_ms")
        return self

    @property
    def event_type_values(self) -> frozenset[int]:  # computed per call: hot paths use SeriesRouter
        """The ``Event.Type`` numbers counted (empty = all)."""
        return frozenset(pb.Event.Type.Value(t) for t in self.event_types)


class Defaults(_Strict):
    """Values every metric inherits unless it sets its own."""

    detector: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "robust_z"}, description="Default detector settings."
    )
    lifecycle: dict[str, Any] = Field(default_factory=dict, description="Default lifecycle settings.")
    allowed_lateness_ms: int = Field(60_000, ge=0, description="Default allowed lateness.")
    idle_expiry_ms: int = Field(3_600_000, gt=0, description="Default idle expiry.")
    bucket_ms: int = Field(60_000, gt=0, description="Default bucket length.")
    kind: SeriesKind = Field("count", description="Default series kind.")


class BackfillSeries(_Strict):
    """History of one series (consecutive buckets from ``start_ms``) its detector learns before the
    first live bucket, so alerts are possible from the start."""

    metric: str = Field(description="Metric name.")
    series_key: str = Field(GLOBAL_SERIES_KEY, description="Series key ('*' for a global series).")
    start_ms: int = Field(description="Start of the first history bucket (event time, epoch ms).")
    values: tuple[float | None, ...] = Field(description="One value per bucket; null = missing (gauges).")


class AnomalySpec(_Strict):
    """The whole anomaly spec file."""

    version: Literal[1] = Field(1, description="Spec format version.")
    defaults: Defaults = Field(default_factory=Defaults, description="Inherited settings.")  # type: ignore[arg-type]
    metrics: tuple[MetricSpec, ...] = Field((), description="The metric series to watch.")
    backfill: tuple[BackfillSeries, ...] = Field((), description="Warm-up history per series.")
    out_of_orderness_ms: int | None = Field(
        None,
        ge=0,
        description="The alert stage's own watermark out-of-orderness (watermark = max event time - this); "
        "None = the job's (the feature stage's). Short buckets want a short one: with 5 s buckets and "
        "the job's 60 s a bucket would close a minute late.",
    )

    def alert_out_of_orderness_ms(self, job_out_of_orderness_ms: int) -> int:
        """The out-of-orderness the alert stage's watermark uses: the spec's, else the job's."""
        if self.out_of_orderness_ms is not None:
            return self.out_of_orderness_ms
        return job_out_of_orderness_ms

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("metrics", ()), list | tuple):
            return data
        raw_defaults = data.get("defaults") or {}
        if not isinstance(raw_defaults, dict):
            return data
        default_detector = raw_defaults.get("detector") or {"kind": "robust_z"}
        default_lifecycle = raw_defaults.get("lifecycle") or {}
        merged_metrics = []
        for metric in data.get("metrics", ()):
            if not isinstance(metric, dict):
                merged_metrics.append(metric)
                continue
            m = dict(metric)
            for name in ("allowed_lateness_ms", "idle_expiry_ms", "bucket_ms", "kind"):
                if name not in m and name in raw_defaults:
                    m[name] = raw_defaults[name]
            m["detector"] = merge_detector(default_detector, m.get("detector"))
            own_lifecycle = m.get("lifecycle")
            if own_lifecycle is None or isinstance(own_lifecycle, dict):
                m["lifecycle"] = {**default_lifecycle, **(own_lifecycle or {})}
            merged_metrics.append(m)
        return {**data, "metrics": merged_metrics}

    @model_validator(mode="after")
    def _unique_names(self) -> AnomalySpec:
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate metric names: {dupes}")
        unknown = sorted({b.metric for b in self.backfill} - set(names))
        if unknown:
            raise ValueError(f"backfill for unknown metrics: {unknown}")
        return self

    def backfill_for(self, metric: str, series_key: str) -> BackfillSeries | None:
        """The warm-up history of one series, if the spec has one."""
        for b in self.backfill:
            if b.metric == metric and b.series_key == series_key:
                return b
        return None

    def metric(self, name: str) -> MetricSpec:
        """The metric called ``name``; ``KeyError`` if there is none."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"no metric {name!r} in the anomaly spec (have {[m.name for m in self.metrics]})")

    def default_metric(
        self, name: str = "series", bucket_ms: int | None = None, kind: str | None = None
    ) -> MetricSpec:
        """A metric built from ``defaults`` only (what the CSV backtest uses without ``--metric``)."""
        raw = {
            "name": name,
            "kind": kind or self.defaults.kind,
            "bucket_ms": bucket_ms or self.defaults.bucket_ms,
            "allowed_lateness_ms": self.defaults.allowed_lateness_ms,
            "idle_expiry_ms": self.defaults.idle_expiry_ms,
            "detector": merge_detector(self.defaults.detector, None),
            "lifecycle": dict(self.defaults.lifecycle),
        }
        return MetricSpec.model_validate(raw)


def merge_detector(default: Any, own: Any) -> Any:
    """``own`` over ``default``: field by field when the kind matches (or is omitted), else ``own``."""
    if own is None:
        return copy.deepcopy(default)
    if not isinstance(own, dict) or not isinstance(default, dict):
        return own
    own_kind = own.get("kind", default.get("kind", "robust_z"))
    if own_kind != default.get("kind", "robust_z"):
        return dict(own)
    return {**default, **own, "kind": own_kind}


def with_detector(metric: MetricSpec, kind: str, overrides: dict[str, Any] | None = None) -> MetricSpec:
    """``metric`` with its detector switched to ``kind``; explicitly set shared fields (direction,
    min_abs_delta, ...) carry over, the threshold does not (each kind has its own calibrated default)."""
    if kind not in DETECTOR_KINDS:
        raise ConfigError(f"unknown detector {kind!r}; choose one of {list(DETECTOR_KINDS)}")
    # The threshold stays behind: each kind has its own calibrated default.
    carried = (set(_DetectorBase.model_fields) - {"threshold"}) & metric.detector.model_fields_set
    shared = metric.detector.model_dump(include=carried)
    raw = metric.model_dump()
    current = metric.detector.model_dump() if metric.detector.kind == kind else {}
    raw["detector"] = {**shared, **current, **(overrides or {}), "kind": kind}
    try:
        return MetricSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(f"detector {kind}", exc)) from exc


def parse_anomaly_spec(data: Any, source: str = "(anomaly spec)") -> AnomalySpec:
    """Validate an already-loaded mapping; errors name ``source`` and the field path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return AnomalySpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def load_anomaly_spec(path: Path | None = None) -> AnomalySpec:
    """Load the anomaly spec YAML at ``path`` (default: the shipped ``default_metrics.yaml``)."""
    path = path or DEFAULT_SPEC_PATH
    return parse_anomaly_spec(load_yaml_mapping(path), str(path))
