"""Anomaly alerts on aggregate rates: metric series, streaming detectors, alert lifecycle.

Engine-free. Keyed engines call ``points_for_event`` (fan-out to series ids), then per key
``AnomalyOperator.add`` / ``advance_to`` / ``next_timer_ms`` / ``to_bytes``; see ``operator.py``.
"""

from streamwarden.operators.anomaly.detectors import (
    HoltDetector,
    RobustZDetector,
    Score,
    SeasonalDetector,
    build_detector,
    detector_from_bytes,
)
from streamwarden.operators.anomaly.lifecycle import AlertLifecycle, fingerprint
from streamwarden.operators.anomaly.operator import AnomalyOperator, BucketOutcome
from streamwarden.operators.anomaly.series import (
    ClosedBucket,
    SeriesAggregator,
    SeriesPoint,
    SeriesRouter,
    points_for_dead_letter,
    points_for_event,
    series_id,
    split_series_id,
)
from streamwarden.operators.anomaly.spec import (
    DEFAULT_SPEC_PATH,
    AnomalySpec,
    HoltConfig,
    LifecycleConfig,
    MetricSpec,
    RobustZConfig,
    SeasonalConfig,
    load_anomaly_spec,
    parse_anomaly_spec,
)

__all__ = [
    "DEFAULT_SPEC_PATH",
    "AlertLifecycle",
    "AnomalyOperator",
    "AnomalySpec",
    "BucketOutcome",
    "ClosedBucket",
    "HoltConfig",
    "HoltDetector",
    "LifecycleConfig",
    "MetricSpec",
    "RobustZConfig",
    "RobustZDetector",
    "Score",
    "SeasonalConfig",
    "SeasonalDetector",
    "SeriesAggregator",
    "SeriesPoint",
    "SeriesRouter",
    "build_detector",
    "detector_from_bytes",
    "fingerprint",
    "load_anomaly_spec",
    "parse_anomaly_spec",
    "points_for_dead_letter",
    "points_for_event",
    "series_id",
    "split_series_id",
]
