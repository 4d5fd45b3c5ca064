"""The Beam job on the real broker against what used to stop it or misread it: a backlog spread over
partitions (each in event-time order) is never dead-lettered as late, whatever order the partitions are
read in; poison records drawn from strategies of extremes are dead letters with a specific kind and their
source offset, among valid traffic, and the job keeps going."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.jobs.beam.kafka_source import ReadOptions
from streamwarden.jobs.beam.pipeline import job_metrics, run_beam
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.kafka_io import drain, make_producer
from streamwarden.operators.pipeline import LATE_EVENT, dead_letter_reason
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SCHEMA_VERSION
from tests.jobs.poison_records import poison

pytestmark = [pytest.mark.integration, pytest.mark.engine]

Topics = Callable[..., list[str]]
T0 = 1_735_689_600_000
Kind = pb.DeadLetter.ErrorKind


def _job(kafka: KafkaConfig, kafka_topics: Topics, partitions: int) -> JobConfig:
    events, actions, dead, features = kafka_topics(
        "events", "actions", "deadletter", "features", partitions=partitions
    )
    topics = TopicsConfig(events=events, actions=actions, deadletter=dead, features=features)  # type: ignore[call-arg]
    return JobConfig(kafka=kafka, topics=topics, group_id=f"g-{uuid.uuid4().hex[:8]}")  # type: ignore[call-arg]


def _event(i: int, t: int, partition: int) -> bytes:
    return pb.Event(
        event_id=f"e{partition}-{i}",
        event_time_ms=t,
        type=pb.Event.PLAY,
        schema_version=SCHEMA_VERSION,
        actor=pb.Actor(
            account_id=f"a{partition}-{i}", ip=f"10.{partition}.{i % 250}.{i // 250 % 250}", asn=64512
        ),
        target=pb.Target(content_id=f"t{i % 97}"),
        play_duration_ms=30_000,
    ).SerializeToString()


def _produce(kafka: KafkaConfig, topic: str, records: list[tuple[int, bytes | None]]) -> None:
    producer = make_producer(kafka, **{"linger.ms": 20})
    for i, (partition, payload) in enumerate(records):
        producer.produce(topic, payload, partition=partition)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def _dead_letters(kafka: KafkaConfig, job: JobConfig, expected: int) -> list[pb.DeadLetter]:
    records = drain(kafka, job.topics.deadletter, expected_count=expected, idle_timeout_s=3)
    return [pb.DeadLetter.FromString(r.value or b"") for r in records]


def test_a_backlog_over_three_partitions_is_not_misread_as_late(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    per_partition, span_ms = 4_000, 2 * 3600_000  # two hours of event time in each partition
    step = span_ms // per_partition
    job = _job(kafka_config, kafka_topics, partitions=3)
    # produced one partition after the other: the reader meets partition 0's end long before the others'
    records = [(p, _event(i, T0 + i * step, p)) for p in range(3) for i in range(per_partition)]
    _produce(kafka_config, job.topics.events, records)

    result = run_beam(job, read_options=ReadOptions(max_records=len(records), bundle_max_ms=200))  # type: ignore[call-arg]

    m = job_metrics(result)
    assert m.counter("records_in") == len(records)
    late = m.counter(f"dead_letters.{pb.DeadLetter.ErrorKind.Name(Kind.LATE_EVENT)}")
    assert late == 0
    assert m.counter("events") == len(records)


@pytest.mark.slow
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(poison(), min_size=40, max_size=40))
def test_poison_records_among_valid_traffic_never_stop_the_job(
    kafka_config: KafkaConfig, kafka_topics: Topics, bad: list[bytes | None]
) -> None:
    job = _job(kafka_config, kafka_topics, partitions=1)
    good = [_event(i, T0 + i * 100, 0) for i in range(400)]
    records: list[tuple[int, bytes | None]] = []
    for i, payload in enumerate(good):
        records.append((0, payload))
        if i % 10 == 0:
            records.append((0, bad[i // 10]))
    _produce(kafka_config, job.topics.events, records)

    result = run_beam(job, read_options=ReadOptions(max_records=len(records), bundle_max_ms=200))  # type: ignore[call-arg]

    m = job_metrics(result)
    assert m.counter("records_in") == len(records)
    assert m.counter("events") + m.counter("dead_letters") == len(records)  # produced = decoded + dead
    dead = _dead_letters(kafka_config, job, m.counter("dead_letters"))
    assert len(dead) == m.counter("dead_letters")
    assert all(d.error_kind != Kind.ERROR_KIND_UNSPECIFIED and d.message for d in dead)
    assert all(d.source_topic == job.topics.events and d.source_offset >= 0 for d in dead)
    assert all(len(d.SerializeToString()) < 100_000 for d in dead)
    # no valid, in-order event is dead-lettered (as late or otherwise)
    valid = set(good)
    good_offsets = {i for i, (_, payload) in enumerate(records) if payload in valid}
    assert not good_offsets & {d.source_offset for d in dead}
    assert LATE_EVENT not in Counter(dead_letter_reason(d) for d in dead)
