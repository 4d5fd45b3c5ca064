"""Training pieces: labelling rule, threshold choice, metrics, shipped cards, and a small real run."""

from __future__ import annotations

import numpy as np
import pytest

from streamwarden.models.train import (
    _label_index,
    choose_threshold,
    compare_cards,
    evaluate,
    label_event,
    metrics_at,
    train,
)
from streamwarden.operators.features import default_spec
from streamwarden.operators.policy import load_policy
from streamwarden.operators.scoring import Scorer, ScoringEngine, default_card_paths
from streamwarden.operators.traffic import Label
from streamwarden.schemas import streamwarden_pb2 as pb

LABELS = [
    Label("streaming_farm", "ip", "10.0.0.1", 1_000, 2_000),
    Label("spam_burst", "account", "spammer", 0, 10_000),
    Label("credential_stuffing", "device", "dev-x", 1_500, 3_000),
    Label("follow_farm", "target_account", "star", 0, 10_000),
]


def _event(t_ms: int, **actor: object) -> pb.Event:
    return pb.Event(
        event_id="e", event_time_ms=t_ms, actor=pb.Actor(**actor), target=pb.Target(account_id="star")
    )


def test_label_rule_actor_entities_within_span():
    index = _label_index(LABELS)
    assert label_event(_event(1_000, ip="10.0.0.1"), index) == "streaming_farm"
    assert label_event(_event(2_000, ip="10.0.0.1"), index) == ""  # end is exclusive
    assert label_event(_event(999, ip="10.0.0.1"), index) == ""
    assert label_event(_event(50, account_id="victim"), index) == ""  # target labels do not count
    # Several scenarios: the first in SCENARIO_NAMES order wins.
    assert label_event(_event(1_600, ip="10.0.0.1", device_id="dev-x"), index) == "streaming_farm"
    assert label_event(_event(2_500, ip="10.0.0.1", device_id="dev-x"), index) == "credential_stuffing"
    assert label_event(_event(5, account_id="spammer"), index) == "spam_burst"


def test_choose_threshold_reaches_target_on_its_data():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.2).astype(int)
    scores = np.clip(y * 0.6 + rng.normal(0.2, 0.15, size=5000), 0, 1)
    t = choose_threshold(y, scores, 0.99)
    m = metrics_at(y, scores, t)
    assert m.precision >= 0.99
    # Lowest such threshold: one step lower (next distinct score) falls below the target.
    lower = np.max(scores[scores < t])
    assert metrics_at(y, scores, lower).precision < 0.99
    assert choose_threshold(np.zeros(10, int), np.linspace(0, 1, 10), 0.99) == 1.0


def test_metrics_and_per_scenario_split():
    y = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.1])
    m = metrics_at(y, scores, 0.5)
    assert (m.precision, m.recall, m.positives, m.negatives) == (
        pytest.approx(2 / 3),
        pytest.approx(2 / 3),
        3,
        3,
    )

    class D:
        pass

    d = D()
    d.y = y  # type: ignore[attr-defined]
    d.scenario = np.array(["spam_burst", "spam_burst", "follow_farm", "", "", ""])  # type: ignore[attr-defined]
    ev = evaluate(d, scores, 0.5)  # type: ignore[arg-type]
    assert ev.per_scenario["spam_burst"].recall == 1.0
    assert ev.per_scenario["spam_burst"].precision == pytest.approx(2 / 3)  # all negatives count
    assert ev.per_scenario["follow_farm"].recall == 0.0


def test_shipped_cards_match_the_feature_spec_and_policy():
    """The committed models load against the current feature spec (names, order) and policy."""
    names = default_spec().feature_names()
    engine = ScoringEngine.from_cards(default_card_paths(), feature_names=names)
    assert engine.names == ("gbt", "logreg")
    for s in engine.scorers:
        m = s.card.training.metrics
        assert 0 < s.threshold < 1 and m.overall.positives > 0
        assert set(m.per_scenario) == {
            "streaming_farm",
            "spam_burst",
            "follow_farm",
            "credential_stuffing",
            "signup_burst",
        }
    load_policy(feature_names=names, model_names=engine.names)
    scores = engine.score_batch(np.zeros((3, len(names)), np.float32))
    assert all(v.shape == (3,) for v in scores.values())


@pytest.mark.slow
def test_short_training_run_is_reproducible(tmp_path):
    """A real run on 40 s of traffic per seed: both models exported, loadable, same bytes twice."""
    a = train(tmp_path / "a", duration_s=40.0, log=lambda *_: None)
    b = train(tmp_path / "b", duration_s=40.0, log=lambda *_: None)
    assert set(a.card_paths) == {"gbt", "logreg"}
    assert compare_cards(a.card_paths, tmp_path / "b") == []
    for name, path in a.card_paths.items():
        scorer = Scorer(path, feature_names=default_spec().feature_names())
        metrics = scorer.card.training.metrics
        assert metrics.overall.positives > 0 and metrics.overall.pr_auc > 0.9, name
        assert (path.parent / "model.onnx").read_bytes() == (
            b.card_paths[name].parent / "model.onnx"
        ).read_bytes()
