"""The human-in-the-loop path end to end on the real embedded broker: generated traffic, its feature
log and generated reviewer decisions in Kafka -> ``streamwarden feedback build`` -> a dataset file ->
``streamwarden train --dataset``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from streamwarden.jobs.cli.feedback import feedback_build_cmd
from streamwarden.jobs.cli.models import train_cmd
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import CheckedProducer
from streamwarden.models.train import load_dataset, train
from streamwarden.operators.evaluation.feedback import (
    ReviewDecision,
    join_training_rows,
    read_dataset,
    sample_organic_reviews,
    simulate_reviews,
    write_dataset,
)
from streamwarden.operators.evaluation.harness import traffic_from_spec
from streamwarden.operators.pipeline import Stages, StagesConfig, replay_actions
from streamwarden.operators.scoring import Scorer, load_model_card
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = pytest.mark.integration


def _app(name: str, fn: Callable[..., None]) -> typer.Typer:
    app = typer.Typer()
    app.command(name)(fn)
    app.command("other")(lambda: None)
    return app


def test_reviewer_decisions_become_a_training_set(
    tmp_path: Path,
    kafka_config: KafkaConfig,
    kafka_topics: Callable[..., list[str]],
) -> None:
    spec = small_spec(6)
    traffic = traffic_from_spec(spec)
    replayed = replay_actions(traffic.payloads, Stages.build(StagesConfig()))
    decisions = simulate_reviews(replayed.actions, traffic.labels) + sample_organic_reviews(
        traffic.events, traffic.labels, every=10
    )
    # A reviewer reverses an earlier decision: the later one must count.
    reversed_first = next(d for d in decisions if d.label == "abuse")
    decisions.insert(0, ReviewDecision(reversed_first.subject_kind, reversed_first.subject_id, "benign", 1))
    assert (
        sum(d.label == "abuse" for d in decisions) > 20 and sum(d.label == "benign" for d in decisions) > 20
    )

    events_topic, features_topic, labels_topic = kafka_topics("events", "features", "labels", partitions=2)
    producer = CheckedProducer.create(kafka_config)
    for payload, key in zip(traffic.payloads, traffic.keys, strict=True):
        producer.produce(events_topic, payload, key)
    for rec in replayed.feature_records:
        producer.produce(features_topic, rec.SerializeToString(), rec.event_id.encode())
        if rec.event_id.endswith("0"):  # at-least-once: some records twice
            producer.produce(features_topic, rec.SerializeToString(), rec.event_id.encode())
    for d in decisions:
        producer.produce(labels_topic, d.to_json().encode(), d.key())
    producer.produce(labels_topic, b"{not json", b"x")
    producer.flush(30)

    out = tmp_path / "train.csv"
    # Kafka settings and topic names from a job config file, as in production.
    config = tmp_path / "job.yaml"
    topics = {"events": events_topic, "features": features_topic, "labels": labels_topic}
    config.write_text(yaml.safe_dump({"kafka": kafka_config.model_dump(mode="json"), "topics": topics}))
    args = ["build", "--config", str(config), "--out", str(out), "--idle-timeout-s", "1"]
    result = CliRunner().invoke(_app("build", feedback_build_cmd), args)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output.strip().splitlines()[-1])
    assert stats["decisions"] == len(decisions) and stats["bad_decisions"] == {"not JSON": 1}
    assert stats["events"] == len(traffic.events) and stats["feature_records"] > len(replayed.feature_records)
    assert stats["duplicate_feature_records"] == stats["feature_records"] - len(replayed.feature_records)

    # Nothing lost or reordered on the way through Kafka: the same file as the join in memory.
    expected = tmp_path / "expected.csv"
    write_dataset(expected, join_training_rows(decisions, traffic.events, replayed.feature_records))
    assert out.read_bytes() == expected.read_bytes()

    # Against the generator's own tags (not the labels the decisions came from): positives are attack
    # events, negatives almost all organic.
    tags = {}
    for r in iter_traffic(spec):
        if r.malformed is None:
            tags[pb.Event.FromString(r.payload).event_id] = r.scenario
    data = read_dataset(out)
    pos = [tags[e] for e, y in zip(data.event_ids, data.y, strict=True) if y == 1]
    neg = [tags[e] for e, y in zip(data.event_ids, data.y, strict=True) if y == 0]
    assert len(pos) > 100 and len(neg) > 100
    assert sum(t is not None for t in pos) / len(pos) > 0.99
    assert sum(t is None for t in neg) / len(neg) > 0.95
    reversed_rows = [
        s for s, y in zip(data.subjects, data.y, strict=True) if s.endswith(reversed_first.subject_id)
    ]
    assert reversed_rows  # the reversed (benign at t=1) decision lost to the later abuse decision

    # streamwarden train accepts it (one model here, to keep the test short; the command trains both).
    models = tmp_path / "models"
    train(models, dataset=out, duration_s=20.0, names=("logreg",), log=lambda *_: None)
    card = load_model_card(models / "logreg" / "model.yaml").card
    assert card.training.labeling.startswith("reviewer decisions joined with the feature log: train.csv")
    assert card.feature_names == data.feature_names
    assert card.training.train_rows == int(np.sum(~load_dataset(out).calibration))
    scorer = Scorer(models / "logreg" / "model.yaml", feature_names=data.feature_names)
    scores = scorer.score_batch(data.x)
    assert float(np.mean(scores[data.y == 1])) > float(np.mean(scores[data.y == 0])) + 0.5
    # The command's --dataset option reaches the same code (a broken file is reported, exit code 2).
    bad = tmp_path / "bad.csv"
    bad.write_text("nope\n")
    failed = CliRunner().invoke(
        _app("train", train_cmd), ["train", "--dataset", str(bad), "--out", str(models)]
    )
    assert failed.exit_code == 2 and "bad.csv:1: header must start with" in failed.output
