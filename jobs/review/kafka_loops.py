"""The review service's Kafka side: the ingest loop (actions, feature log and appeals topics → the store,
offsets committed after the store's transaction: at least once, and ingestion is idempotent) and the
outbox publisher (stored labels → the ``labels`` topic, marked produced only after delivery)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import BatchConsumer, make_producer
from streamwarden.jobs.review.store import ReviewStore, StoreError, now_ms
from streamwarden.operators.evaluation.report import kind_name
from streamwarden.operators.review.routing import ReviewRouting
from streamwarden.operators.transparency.statements import StatementBuilder, revisions_for_review
from streamwarden.schemas import streamwarden_pb2 as pb

LOG = logging.getLogger("streamwarden.review")

FEATURE_CACHE = 200_000
"""Feature-log records kept in memory for actions that arrive after their event's features."""


@dataclass(frozen=True)
class ReviewTopics:
    actions: str = "actions"
    labels: str = "labels"
    features: str | None = "features"
    appeals: str | None = "appeals"
    statements: str | None = None
    """Where the outbox publisher writes the statement-of-reasons revisions a decision makes (None: off)."""


@dataclass
class IngestCounters:
    actions: int = 0
    new_jobs: int = 0
    attached: int = 0
    duplicates: int = 0
    features_attached: int = 0
    appeals: int = 0
    bad_records: dict[str, int] = field(default_factory=dict)

    def bad(self, reason: str) -> None:
        self.bad_records[reason] = self.bad_records.get(reason, 0) + 1


class Ingestor:
    """Reads the topics with one consumer group and writes what it reads into the store."""

    def __init__(
        self,
        store: ReviewStore,
        routing: ReviewRouting,
        kafka: KafkaConfig,
        topics: ReviewTopics,
        *,
        group_id: str = "streamwarden-review",
        history_retention_s: float = 7 * 86_400,
    ) -> None:
        self.store = store
        self.routing = routing
        self.topics = topics
        self.counters = IngestCounters()
        self.history_retention_s = history_retention_s
        names = [t for t in (topics.actions, topics.features, topics.appeals) if t]
        self.consumer = BatchConsumer.subscribe(kafka, group_id, names, max_batch=1000, timeout_s=0.2)
        self._features: OrderedDict[str, pb.FeatureRecord] = OrderedDict()
        self._last_prune = 0.0

    def run(self, stop: threading.Event) -> None:
        try:
            for batch in self.consumer.batches(stop, yield_empty=True):
                if batch:
                    self.handle(
                        [(m.topic() or "", m.value() or b"") for m in batch],
                    )
                    self.consumer.commit(batch)
                if time.monotonic() - self._last_prune > 600:
                    self._last_prune = time.monotonic()
                    self.store.prune_history(now_ms() - round(self.history_retention_s * 1000))
        finally:
            self.consumer.close()

    def handle(self, records: list[tuple[str, bytes]]) -> None:
        """One batch: actions first (so features of the same batch find them), then features, then appeals."""
        actions: list[tuple[pb.Action, str | None]] = []
        features: list[pb.FeatureRecord] = []
        appeals: list[pb.ReviewAppeal] = []
        for topic, value in records:
            try:
                if topic == self.topics.actions:
                    a = pb.Action.FromString(value)
                    if not a.action_id or not a.subject.id:
                        self.counters.bad("action without id or subject")
                        continue
                    actions.append((a, self.routing.route(a)))
                elif topic == self.topics.features:
                    features.append(pb.FeatureRecord.FromString(value))
                elif topic == self.topics.appeals:
                    appeals.append(pb.ReviewAppeal.FromString(value))
            except DecodeError:
                self.counters.bad(f"{topic}: undecodable")
        if actions:
            res = self.store.ingest_actions(actions)
            c = self.counters
            c.actions += len(actions)
            c.new_jobs += res.new_jobs
            c.attached += res.attached
            c.duplicates += res.duplicates
            cached = [self._features[a.event_id] for a, q in actions if q and a.event_id in self._features]
            if cached:
                self.counters.features_attached += len(self.store.attach_features(cached))
        if features:
            matched = self.store.attach_features(features)
            self.counters.features_attached += len(matched)
            for rec in features:
                if rec.event_id not in matched:
                    self._features[rec.event_id] = rec
            while len(self._features) > FEATURE_CACHE:
                self._features.popitem(last=False)
        for ap in appeals:
            self._appeal(ap)

    def _appeal(self, ap: pb.ReviewAppeal) -> None:
        if not ap.subject.id or ap.subject.kind not in pb.EntityKind.values():
            self.counters.bad("appeal without subject")
            return
        try:
            self.store.open_appeal(
                kind_name(ap.subject.kind), ap.subject.id, reason=ap.reason, queue=self.routing.appeals_queue,
                actor="appeals-topic", appeal_id=ap.appeal_id or None, at_ms=ap.appealed_ms or None,
            )  # fmt: skip
            self.counters.appeals += 1
        except StoreError as exc:  # nothing to appeal against: counted, the record is not lost in silence
            LOG.warning("appeal %s refused: %s", ap.appeal_id, exc)
            self.counters.bad("appeal: no decision to appeal against")


class OutboxPublisher:
    """Produces the store's pending labels to the ``labels`` topic, oldest first; a label is marked
    produced only after the broker acknowledged it. A crash in between produces it again, with the same
    decision id, which readers drop (``feedback build`` does)."""

    def __init__(
        self,
        store: ReviewStore,
        kafka: KafkaConfig,
        topic: str,
        *,
        interval_s: float = 0.2,
        statements_topic: str | None = None,
        statements: StatementBuilder | None = None,
    ) -> None:
        self.store = store
        self.topic = topic
        self.statements_topic = statements_topic if statements is not None else None
        self.statements = statements
        self.interval_s = interval_s
        self.producer = make_producer(kafka)
        self.produced = 0

    def publish_once(self, timeout_s: float = 10.0) -> int:
        """Produce every pending label; returns how many were delivered and marked."""
        pending = self.store.pending_labels()
        if not pending:
            return 0
        delivered: list[str] = []
        errors: list[str] = []

        def callback(decision_id: str) -> Callable[[object, object], None]:
            def on_delivery(err: object, _msg: object) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    delivered.append(decision_id)

            return on_delivery

        expected: dict[str, int] = {}
        for decision_id, key, payload in pending:
            self.producer.produce(
                self.topic, payload, key,
                headers=[("decision_id", decision_id.encode())],
                on_delivery=callback(decision_id),
            )  # fmt: skip
            expected[decision_id] = 1
            # DSA statements of reasons the decision revises or revokes, marked produced with the label
            if self.statements is not None and self.statements_topic:
                label = pb.ReviewLabel.FromString(payload)
                actions = self.store.actions_for_review(label)
                for sor in revisions_for_review(self.statements, label, actions):
                    self.producer.produce(
                        self.statements_topic, sor.SerializeToString(), key, on_delivery=callback(decision_id)
                    )
                    expected[decision_id] += 1
        self.producer.flush(timeout_s)
        counts = Counter(delivered)
        delivered = [d for d in expected if counts[d] == expected[d]]
        if delivered:
            self.store.mark_produced(delivered)
            self.produced += len(delivered)
        if errors:
            LOG.warning("%d labels not delivered (retried on the next round): %s", len(errors), errors[0])
        return len(delivered)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.publish_once()
            except Exception:  # a store or broker hiccup: the labels stay pending and are retried
                LOG.exception("outbox round failed")
            stop.wait(self.interval_s)
        self.publish_once()
