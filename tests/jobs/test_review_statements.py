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
