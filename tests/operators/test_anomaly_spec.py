"""The anomaly spec: defaults merging and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamwarden.operators.anomaly.spec import (
    HoltConfig,
    RobustZConfig,
    SeasonalConfig,
    load_anomaly_spec,
    parse_anomaly_spec,
    with_detector,
)
from streamwarden.operators.errors import ConfigError


def test_metric_detector_is_merged_over_defaults_when_the_kind_matches() -> None:
    spec = parse_anomaly_spec(
        {
            "defaults": {"detector": {"kind": "robust_z", "window_buckets": 90}, "lifecycle": {"fire_m": 3}},
            "metrics": [
                {"name": "a", "detector": {"direction": "up"}, "lifecycle": {"fire_n": 5}},
                {"name": "b", "detector": {"kind": "holt", "alpha": 0.2}},
            ],
        }
    )
    a, b = spec.metric("a"), spec.metric("b")
    assert isinstance(a.detector, RobustZConfig)
    assert (a.detector.window_buckets, a.detector.direction) == (90, "up")
    assert (a.lifecycle.fire_m, a.lifecycle.fire_n) == (3, 5)
    assert isinstance(b.detector, HoltConfig) and b.detector.alpha == 0.2


def test_unknown_field_is_rejected_with_file_and_path(tmp_path: Path) -> None:
    path = tmp_path / "anomaly.yaml"
    path.write_text("metrics:\n  - name: plays\n    detector: {windw_buckets: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_anomaly_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "metrics.0.detector.robust_z.windw_buckets" in msg


@pytest.mark.parametrize(
    "metric,needle",
    [
        ({"name": "x", "event_types": ["PLAYS"]}, "unknown event types"),
        ({"name": "x", "key": "actor.email"}, "key"),
        ({"name": "x", "source": "dead_letters", "key": "actor.ip"}, "neither key nor event_types"),
        ({"name": "Bad-Name"}, "name"),
        ({"name": "x", "lifecycle": {"fire_m": 4, "fire_n": 3}}, "fire_m must not exceed fire_n"),
        ({"name": "x", "detector": {"kind": "seasonal", "slot_ms": 7_000_000}}, "slot_ms must divide"),
    ],
)
def test_invalid_metrics(metric: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_anomaly_spec({"metrics": [metric]}, "spec.yaml")


def test_duplicate_names_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate metric names"):
        parse_anomaly_spec({"metrics": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="file not found"):
        load_anomaly_spec(tmp_path / "nope.yaml")


def test_with_detector_keeps_explicit_shared_fields_but_not_the_threshold() -> None:
    metric = parse_anomaly_spec(
        {"metrics": [{"name": "a", "detector": {"direction": "up", "threshold": 0.9, "min_abs_delta": 7}}]}
    ).metric("a")
    seasonal = with_detector(metric, "seasonal")
    assert isinstance(seasonal.detector, SeasonalConfig)
    assert seasonal.detector.direction == "up" and seasonal.detector.min_abs_delta == 7
    assert seasonal.detector.threshold == SeasonalConfig().threshold
    with pytest.raises(ConfigError, match="unknown detector"):
        with_detector(metric, "prophet")
