"""Scorer: numerical parity with sklearn, micro-batches, multi-model engine, safe hot reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streamwarden.models.export import write_model
from streamwarden.operators.errors import ModelError
from streamwarden.operators.scoring import Scorer, ScoringEngine
from streamwarden.operators.scoring.model_card import EvalMetrics, Metrics, TrainingInfo, sha256_hex

FEATURES = [f"f{i}" for i in range(6)]
_M = Metrics(precision=1.0, recall=1.0, pr_auc=1.0, positives=1, negatives=1)
TRAINING = TrainingInfo(seed=1, eval_seed=2, metrics=EvalMetrics(overall=_M))


def _data(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # float32-representable inputs: the ONNX model computes in float32, sklearn in float64.
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32).astype(np.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2] * x[:, 3] > 0.7).astype(int)
    return x, y


@pytest.fixture(scope="module")
def fitted() -> dict[str, object]:
    x, y = _data(0)
    gbt = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(x, y)
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    return {"gbt": gbt, "logreg": logreg}


def _write(folder: Path, name: str, estimator: object, threshold: float = 0.5) -> Path:
    return write_model(
        folder,
        name=name,
        estimator=estimator,
        feature_names=FEATURES,
        threshold=threshold,
        training=TRAINING,
        created_ms=1_700_000_000_000,
    )


@pytest.fixture()
def cards(tmp_path: Path, fitted: dict[str, object]) -> dict[str, Path]:
    return {name: _write(tmp_path / name, name, est) for name, est in fitted.items()}


@pytest.mark.parametrize("name", ["gbt", "logreg"])
@pytest.mark.parametrize("batch", [1, 7, 256, 1000])
def test_scores_match_sklearn_probabilities(cards, fitted, name, batch):
    scorer = Scorer(cards[name], feature_names=FEATURES)
    x, _ = _data(1, n=batch)
    expected = fitted[name].predict_proba(x)[:, 1]  # type: ignore[attr-defined]
    got = scorer.score_batch(x)
    assert got.dtype == np.float32 and got.shape == (batch,)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # A list of lists gives the same numbers as the array.
    np.testing.assert_array_equal(scorer.score_batch(x.tolist()), got)


def test_score_one_and_empty_batch(cards, fitted):
    scorer = Scorer(cards["gbt"], feature_names=FEATURES)
    x, _ = _data(2, n=3)
    assert scorer.score_one(x[1]) == pytest.approx(fitted["gbt"].predict_proba(x[1:2])[0, 1], abs=1e-5)  # type: ignore[attr-defined]
    assert scorer.score_batch([]).shape == (0,)
    with pytest.raises(ValueError, match="expected rows of 6 features"):
        scorer.score_batch([[1.0, 2.0]])


def test_engine_scores_every_model(cards, fitted):
    engine = ScoringEngine.from_cards([cards["gbt"], cards["logreg"]], feature_names=FEATURES)
    x, _ = _data(3, n=50)
    rows = engine.score_rows(x)
    assert len(rows) == 50 and set(rows[0]) == {"gbt", "logreg"}
    for name in ("gbt", "logreg"):
        expected = fitted[name].predict_proba(x)[:, 1]  # type: ignore[attr-defined]
        np.testing.assert_allclose([r[name] for r in rows], expected, atol=1e-5)
    versions = {s.name: s.version for s in engine.scorers}
    assert engine.model_version == f"gbt@{versions['gbt']}+logreg@{versions['logreg']}"
    assert engine.thresholds == {"gbt": 0.5, "logreg": 0.5}


def test_engine_rejects_duplicate_model_names(cards):
    one = Scorer(cards["gbt"])
    with pytest.raises(ModelError, match="unique"):
        ScoringEngine([one, one])


def test_feature_names_must_equal_spec(cards):
    with pytest.raises(ModelError) as err:
        Scorer(cards["gbt"], feature_names=list(reversed(FEATURES)))
    assert str(cards["gbt"]) in str(err.value) and "another order" in str(err.value)
    with pytest.raises(ModelError, match=r"missing \['f6'\]"):
        Scorer(cards["gbt"], feature_names=[*FEATURES, "f6"])


def _touch_later(*paths: Path) -> None:
    for p in paths:
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_reload_with_corrupt_model_keeps_previous(cards):
    card_path = cards["gbt"]
    scorer = Scorer(card_path, feature_names=FEATURES)
    x, _ = _data(4, n=20)
    before = scorer.score_batch(x)
    version = scorer.version
    assert scorer.maybe_reload() is None  # nothing changed on disk

    # Garbage ONNX with a card whose sha256 matches it: passes the hash check, fails in onnxruntime.
    garbage = b"this is not an onnx model" * 10
    onnx_path = card_path.parent / "model.onnx"
    onnx_path.write_bytes(garbage)
    card = yaml.safe_load(card_path.read_text())
    card["sha256"] = sha256_hex(garbage)
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    _touch_later(card_path, onnx_path)

    result = scorer.maybe_reload()
    assert result is not None and not result.reloaded
    assert result.error is not None and str(onnx_path) in result.error and "onnxruntime" in result.error
    assert scorer.last_error == result.error
    assert scorer.version == version
    np.testing.assert_array_equal(scorer.score_batch(x), before)
    # The broken files are not retried until they change again.
    assert scorer.maybe_reload() is None


def test_reload_with_stale_card_keeps_previous(cards, tmp_path):
    card_path = cards["gbt"]
    scorer = Scorer(card_path, feature_names=FEATURES)
    # Swap in another model's ONNX without updating the card: sha256 mismatch.
    shutil.copyfile(cards["logreg"].parent / "model.onnx", card_path.parent / "model.onnx")
    result = scorer.reload()
    assert not result.reloaded and result.error is not None
    assert "sha256" in result.error and str(card_path) in result.error
    assert scorer.name == "gbt"


def test_reload_swaps_to_a_valid_new_model(cards, fitted, tmp_path):
    card_path = cards["gbt"]
    scorer = Scorer(card_path, feature_names=FEATURES)
    x, _ = _data(5, n=30)
    old_version = scorer.version
    # Retrain with other settings into the same folder: a valid new model.
    xs, ys = _data(6)
    new = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=1).fit(xs, ys)
    _write(card_path.parent, "gbt", new, threshold=0.7)
    _touch_later(card_path, card_path.parent / "model.onnx")
    result = scorer.maybe_reload()
    assert result is not None and result.reloaded and result.error is None
    assert scorer.version != old_version and scorer.threshold == 0.7
    np.testing.assert_allclose(scorer.score_batch(x), new.predict_proba(x)[:, 1], atol=1e-5)


def test_engine_maybe_reload_reports_only_changed_models(cards, fitted):
    engine = ScoringEngine.from_cards([cards["gbt"], cards["logreg"]], feature_names=FEATURES)
    assert engine.maybe_reload() == {}
    (cards["logreg"].parent / "model.onnx").write_bytes(b"broken")
    _touch_later(cards["logreg"].parent / "model.onnx")
    results = engine.maybe_reload()
    assert list(results) == ["logreg"] and results["logreg"].error is not None
    assert set(engine.score_rows([[0.0] * 6])[0]) == {"gbt", "logreg"}
