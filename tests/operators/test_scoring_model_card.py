"""Model card validation: every problem is a ModelError naming the file (and line and field)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from streamwarden.models.export import write_model
from streamwarden.operators.errors import ModelError
from streamwarden.operators.scoring.model_card import (
    EvalMetrics,
    Metrics,
    TrainingInfo,
    iso_utc,
    load_model_card,
)

FEATURES = ["a.count.1m", "b.ratio.10m", "c.distinct.1h"]
_M = Metrics(precision=0.99, recall=0.5, pr_auc=0.9, positives=10, negatives=90)


@pytest.fixture(scope="module")
def estimator() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


@pytest.fixture()
def card_path(tmp_path: Path, estimator: LogisticRegression) -> Path:
    training = TrainingInfo(
        seed=1, eval_seed=2, metrics=EvalMetrics(overall=_M, per_scenario={"spam_burst": _M})
    )
    return write_model(
        tmp_path / "m",
        name="m",
        estimator=estimator,
        feature_names=FEATURES,
        threshold=0.8,
        training=training,
        created_ms=1_700_000_000_123,
    )


def _edit(path: Path, **changes: object) -> None:
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_valid_card_round_trips(card_path):
    loaded = load_model_card(card_path, FEATURES)
    card = loaded.card
    assert card.feature_names == tuple(FEATURES)
    assert card.created == "2023-11-14T22:13:20.123Z" == iso_utc(card.created_ms)
    assert card.version == card.sha256[:12]
    assert card.training.metrics.per_scenario["spam_burst"].precision == 0.99
    assert loaded.onnx_path == card_path.parent / "model.onnx"


def test_missing_field_names_file_line_and_field(card_path):
    _edit(card_path, threshold=None)
    with pytest.raises(ModelError) as err:
        load_model_card(card_path)
    msg = str(err.value)
    assert msg.startswith(f"{card_path}:") and "threshold: Field required" in msg


def test_wrong_values_name_each_field(card_path):
    _edit(card_path, threshold=1.5, sha256="XYZ", extra_field=1)
    with pytest.raises(ModelError) as err:
        load_model_card(card_path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    text = str(err.value)
    assert "threshold: Input should be less than or equal to 1" in text
    assert "sha256: String should match pattern" in text
    assert "extra_field: Extra inputs are not permitted" in text
    line_of_threshold = next(
        i + 1 for i, line in enumerate(card_path.read_text().splitlines()) if line.startswith("threshold:")
    )
    assert f"{card_path}:{line_of_threshold}: threshold:" in text


def test_nested_metric_error_has_path(card_path):
    data = yaml.safe_load(card_path.read_text())
    data["training"]["metrics"]["per_scenario"]["spam_burst"]["recall"] = -1
    card_path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ModelError, match=r"training\.metrics\.per_scenario\.spam_burst\.recall"):
        load_model_card(card_path)


def test_missing_onnx_file(card_path):
    (card_path.parent / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"onnx_file: .*model\.onnx does not exist") as err:
        load_model_card(card_path)
    assert str(card_path) in str(err.value)


def test_onnx_path_must_stay_in_the_folder(card_path):
    _edit(card_path, onnx_file="../other/model.onnx")
    with pytest.raises(ModelError, match="onnx_file: must be a path inside"):
        load_model_card(card_path)


def test_sha256_mismatch(card_path):
    onnx = card_path.parent / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"sha256: .* the card says") as err:
        load_model_card(card_path)
    assert str(card_path) in str(err.value)


def test_feature_names_must_match_spec(card_path):
    with pytest.raises(ModelError, match=r"missing \['d'\], unexpected \[\]"):
        load_model_card(card_path, [*FEATURES, "d"])
    with pytest.raises(ModelError, match="position 0"):
        load_model_card(card_path, [FEATURES[1], FEATURES[0], FEATURES[2]])


def test_duplicate_feature_names(card_path):
    _edit(card_path, feature_names=["a", "a", "b"])
    with pytest.raises(ModelError, match=r"feature_names: duplicate feature names \['a'\]"):
        load_model_card(card_path)


def test_created_must_be_utc_and_agree(card_path):
    _edit(card_path, created="2023-11-14T23:13:20.123+01:00")
    with pytest.raises(ModelError, match="created: must be in UTC"):
        load_model_card(card_path)
    _edit(card_path, created="2024-01-01T00:00:00Z")
    with pytest.raises(ModelError, match="does not match created_ms"):
        load_model_card(card_path)


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ModelError, match=f"{bad}: not valid YAML"):
        load_model_card(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ModelError, match="top level must be a mapping"):
        load_model_card(bad)
    with pytest.raises(ModelError, match="file not found"):
        load_model_card(tmp_path / "nope.yaml")
