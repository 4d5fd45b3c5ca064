"""A reviewer's decision revises the statement of reasons: the review service's outbox publisher writes,
next to the label, the revision of every statement the decision covers (SQLite store, real broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import drain
from streamwarden.jobs.review.kafka_loops import OutboxPublisher
from streamwarden.jobs.review.store import ReviewStore
from streamwarden.operators.policy.policy import load_policy
from streamwarden.operators.review.decisions import DecisionInput
from streamwarden.operators.transparency.statements import StatementBuilder, apply_review, statement_id
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.integration]


def test_an_overturn_revokes_the_statement_on_the_statements_topic(
    tmp_path: Path, kafka_config: KafkaConfig, kafka_topics: Callable[..., list[str]]
) -> None:
    labels_topic, statements_topic = kafka_topics("labels", "statements")
    policy = load_policy()
    builder = StatementBuilder(policy)
    subject = pb.Subject(kind=pb.ACCOUNT, id="acc-x")
    challenge = pb.Action(
        action_id="act-challenge", event_id="ev1", subject=subject, verdict=pb.Action.CHALLENGE,
        reasons=["signup-burst-challenge"], mode=pb.Action.ENFORCE, policy_version=policy.version,
        model_version="m", event_time_ms=1_704_067_200_000, decision_time_ms=1_704_067_200_050,
    )  # fmt: skip
    review = pb.Action(
        action_id="act-review", event_id="ev2", subject=subject, verdict=pb.Action.SEND_TO_REVIEW,
        reasons=["spam-account-review"], mode=pb.Action.ENFORCE, policy_version=policy.version,
        model_version="m", event_time_ms=1_704_067_201_000, decision_time_ms=1_704_067_201_050,
    )  # fmt: skip
    original = builder.build(challenge)
    assert original is not None and builder.build(review) is None  # only the restriction has one
    store = ReviewStore.open(f"sqlite:///{tmp_path / 'review.db'}", labels_topic=labels_topic)
    try:
        store.ingest_actions([(challenge, "spam"), (review, "spam")])
        job = store.claim_next("spam", "alice", lease_s=60)
        assert job is not None
        store.decide(job, "alice", DecisionInput("overturn", reason="a real user behind a campus network"))
        publisher = OutboxPublisher(
            store, kafka_config, labels_topic, statements_topic=statements_topic, statements=builder
        )
        assert publisher.publish_once() == 1
        assert store.outbox_backlog() == 0
        (label_rec,) = drain(kafka_config, labels_topic, expected_count=1)
        label = pb.ReviewLabel.FromString(label_rec.value or b"")
        got = [
            pb.StatementOfReasons.FromString(r.value or b"") for r in drain(kafka_config, statements_topic)
        ]
    finally:
        store.close()
    assert len(got) == 1
    (revised,) = got
    assert revised == apply_review(original, label)
    assert revised.statement_id == statement_id("act-challenge") and revised.revision == 1
    assert revised.status == pb.StatementOfReasons.REVOKED
    assert revised.automated_decision == "AUTOMATED_DECISION_PARTIALLY"
    assert revised.review_decision_id == label.decision_id and revised.puid != original.puid


def test_the_export_reads_the_statements_and_labels_topics(
    tmp_path: Path, kafka_config: KafkaConfig, kafka_topics: Callable[..., list[str]]
) -> None:
    """``transparency statements`` with no files: statements from the statements topic, review decisions
    from the labels topic (JSON labels there are skipped), the revision applied."""
    import json

    import yaml
    from typer.testing import CliRunner

    from streamwarden.jobs.cli.app import app
    from streamwarden.jobs.kafka_io import make_producer
    from streamwarden.operators.transparency import schema

    statements_topic, labels_topic = kafka_topics("statements", "labels")
    policy = load_policy()
    builder = StatementBuilder(policy)
    t0 = 1_704_067_200_000
    sors = []
    for i in range(3):
        a = pb.Action(
            action_id=f"act-{i}", event_id=f"ev{i}", subject=pb.Subject(kind=pb.ACCOUNT, id=f"acc-{i}"),
            verdict=pb.Action.CHALLENGE, reasons=["signup-burst-challenge"], mode=pb.Action.ENFORCE,
            policy_version=policy.version, event_time_ms=t0 + i * 1000,
        )  # fmt: skip
        s = builder.build(a)
        assert s is not None
        sors.append(s)
    overturn = pb.ReviewLabel(
        decision_id="d-1", decision=pb.ReviewLabel.OVERTURN, subject=sors[1].subject,
        action_ids=[sors[1].action_id], decided_ms=t0 + 60_000,
    )  # fmt: skip
    producer = make_producer(kafka_config)
    for s in sors:
        producer.produce(statements_topic, s.SerializeToString(), b"k")
    producer.produce(labels_topic, json.dumps({"label": "abuse"}).encode(), b"k")  # the JSON label form
    producer.produce(labels_topic, overturn.SerializeToString(), b"k")
    assert producer.flush(10) == 0
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"topics": {"statements": statements_topic, "labels": labels_topic}}))
    out = tmp_path / "sor.jsonl"
    r = CliRunner().invoke(app, [
        "transparency", "statements", "--from", "2024-01-01", "--to", "2024-01-02", "--out", str(out),
        "--reviews-topic", "--config", str(config), "--bootstrap", kafka_config.bootstrap_servers,
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    (body,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert schema.validate_batch(body) == []
    assert sorted(x["puid"] for x in body["statements"]) == sorted([sors[0].puid, sors[2].puid])
    assert "1 revoked" in r.output
