"""The Beam job end to end on the real embedded broker: generated traffic in, actions out, parity with the
offline replay (same action ids), and a crash + restart with the same consumer group."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import apache_beam as beam
import pytest
from confluent_kafka import TopicPartition

from streamwarden.jobs.beam.kafka_source import KafkaRecord, ReadFromKafka, ReadOptions, event_time_from_event
from streamwarden.jobs.beam.pipeline import build_job, job_metrics, pipeline_options, run_beam, stages_config
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.kafka_io import drain, make_consumer, make_producer
from streamwarden.operators.pipeline import (
    LATE_EVENT,
    Stages,
    dead_letter_reason,
    iter_kafka_like,
    replay_actions,
)
from streamwarden.operators.traffic import TrafficRecord, iter_traffic, labels, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.engine]

Topics = Callable[..., list[str]]


def _job(kafka: KafkaConfig, kafka_topics: Topics, *, write_features: bool = True) -> JobConfig:
    events, actions, dead, features, statements = kafka_topics(
        "events", "actions", "deadletter", "features", "statements", partitions=1
    )
    topics = TopicsConfig(  # type: ignore[call-arg]
        events=events, actions=actions, deadletter=dead, features=features, statements=statements
    )
    return JobConfig(  # type: ignore[call-arg]
        kafka=kafka, topics=topics, group_id=f"g-{uuid.uuid4().hex[:8]}", write_features=write_features
    )


def _produce(kafka: KafkaConfig, topic: str, records: list[TrafficRecord]) -> None:
    """In arrival order to one partition, so offset i holds record i."""
    producer = make_producer(kafka, **{"linger.ms": 20})
    for i, rec in enumerate(records):
        producer.produce(topic, rec.payload, rec.account_id.encode() or None)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def _committed(kafka: KafkaConfig, job: JobConfig) -> int:
    consumer = make_consumer(kafka, job.group_id)
    try:
        (tp,) = consumer.committed([TopicPartition(job.topics.events, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def _valid_ids(records: list[TrafficRecord]) -> list[str]:
    out = []
    for rec in records:
        if rec.malformed is None:
            out.append(pb.Event.FromString(rec.payload).event_id)
    return out


@pytest.fixture(scope="module")
def traffic() -> list[TrafficRecord]:
    return list(iter_traffic(small_spec(seed=11)))


def test_generated_traffic_is_decided_like_the_offline_replay(
    kafka_config: KafkaConfig, kafka_topics: Topics, traffic: list[TrafficRecord]
) -> None:
    job = _job(kafka_config, kafka_topics)
    _produce(kafka_config, job.topics.events, traffic)
    n = len(traffic)

    result = run_beam(job, read_options=ReadOptions(max_records=n, bundle_max_ms=100))  # type: ignore[call-arg]

    m = job_metrics(result)
    assert m.counter("records_in") == n
    assert m.counter("events") + m.counter("dead_letters") == n  # every record accounted for
    assert _committed(kafka_config, job) == n
    features = drain(kafka_config, job.topics.features, expected_count=m.counter("events"), idle_timeout_s=3)
    dead = [pb.DeadLetter.FromString(r.value or b"") for r in drain(kafka_config, job.topics.deadletter)]
    actions = [pb.Action.FromString(r.value or b"") for r in drain(kafka_config, job.topics.actions)]
    # decoded events: each exactly once in the feature log; the rest dead-lettered with offset and reason
    assert sorted(r.key.decode() for r in features if r.key) == sorted(_valid_ids(traffic))
    malformed = {i: rec.malformed for i, rec in enumerate(traffic) if rec.malformed}
    assert {d.source_offset: dead_letter_reason(d) for d in dead} == malformed
    assert all(d.source_topic == job.topics.events for d in dead)
    assert LATE_EVENT not in Counter(dead_letter_reason(d) for d in dead)
    # the scenarios the issue names are actioned
    subjects = {(pb.EntityKind.Name(a.subject.kind).lower(), a.subject.id) for a in actions}
    truth = labels(small_spec(seed=11))
    for scenario in ("streaming_farm", "credential_stuffing"):
        entities = {(lab.entity_kind, lab.entity_id) for lab in truth if lab.scenario == scenario}
        assert entities & subjects, f"{scenario}: no action on any of its {len(entities)} entities"
    # parity with the offline replay of the same records: the same action ids (and content)
    reference = replay_actions(
        iter_kafka_like([r.payload for r in traffic], job.topics.events), Stages.build(stages_config(job))
    )
    assert Counter(a.action_id for a in actions) == Counter(a.action_id for a in reference.actions)

    def strip(a: pb.Action) -> bytes:
        a = pb.Action.FromString(a.SerializeToString())
        a.ClearField("decision_time_ms")
        return a.SerializeToString(deterministic=True)

    assert sorted(map(strip, actions)) == sorted(map(strip, reference.actions))
    assert sum(v for k, v in m.counters.items() if k.startswith("actions.")) == len(actions)
    # DSA statements of reasons: the replay's, byte for byte but for the decision wall-clock time
    statements = [
        pb.StatementOfReasons.FromString(r.value or b"") for r in drain(kafka_config, job.topics.statements)
    ]
    assert len(reference.statements) > 0 and m.counter("statements") == len(statements)

    def strip_sor(s: pb.StatementOfReasons) -> bytes:
        s = pb.StatementOfReasons.FromString(s.SerializeToString())
        s.ClearField("decision_time_ms")
        return s.SerializeToString(deterministic=True)

    assert sorted(map(strip_sor, statements)) == sorted(map(strip_sor, reference.statements))
    assert m.distributions["score_batch_size"][0] > 0


class _CrashAt(beam.DoFn):  # type: ignore[misc]
    """Passes records through and raises at the ``at``-th: a crash in the middle of a bundle."""

    def __init__(self, at: int) -> None:
        self._at = at

    def setup(self) -> None:
        self._seen = 0

    def process(self, rec: KafkaRecord) -> Iterator[KafkaRecord]:
        self._seen += 1
        if self._seen == self._at:
            raise RuntimeError(f"simulated crash at record {self._seen}")
        yield rec


def test_a_crash_and_restart_with_the_same_group_processes_every_event(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    records = list(iter_traffic(small_spec(seed=12, duration_s=60.0)))
    job = _job(kafka_config, kafka_topics)
    _produce(kafka_config, job.topics.events, records)
    options = ReadOptions(bundle_max_records=500, idle_timeout_s=2)  # type: ignore[call-arg]
    crash_at = 1_900  # 400 records into the fourth bundle: one scoring micro-batch (256) went out

    pipeline = beam.Pipeline(options=pipeline_options())
    read = pipeline | ReadFromKafka(
        job.kafka, job.topics.events, job.group_id, options=options, event_time_fn=event_time_from_event
    )
    build_job(pipeline, job, records=read | beam.ParDo(_CrashAt(crash_at)))
    with pytest.raises(Exception, match="simulated crash"):
        pipeline.run().wait_until_finish()
    committed = _committed(kafka_config, job)
    assert 0 < committed < crash_at  # completed bundles were committed, the crashed one was not

    second = run_beam(job, read_options=options)
    assert job_metrics(second).counter("records_in") == len(records) - committed

    features = drain(kafka_config, job.topics.features, idle_timeout_s=3)
    seen = Counter(r.key.decode() for r in features if r.key)
    assert set(seen) == set(_valid_ids(records))  # no event unprocessed
    replayed = [eid for eid, n in seen.items() if n > 1]
    assert replayed, "the crashed bundle's events were processed by both runs"
    actions = [pb.Action.FromString(r.value or b"") for r in drain(kafka_config, job.topics.actions)]
    ids: dict[tuple[str, str, int, str], set[str]] = defaultdict(set)
    for a in actions:
        ids[(a.event_id, a.reasons[0], a.subject.kind, a.subject.id)].add(a.action_id)
    assert all(len(v) == 1 for v in ids.values())  # a duplicate action has the same id
    twice = Counter(a.action_id for a in actions)
    assert any(n > 1 for n in twice.values()), "some action was emitted by both runs"
