"""The Flink job on the real broker against records that used to stop or mislead it: poison records drawn
from strategies of extremes, in the middle of valid traffic spread over two partitions (each in event-time
order, two hours of event time each, read in whatever order the source fetches them).

Invariants: the job runs to its end without a failover; every produced record is decoded (a feature
record) or dead-lettered, never both; each dead letter has a specific kind, a reason, the source topic and
the real partition and offset of a poison record, its Kafka key and its bytes; no valid event is
dead-lettered (so none as late).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.jobs.bench.flink import job_config_for, read_topic, run_bounded, write_job_config
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions
from streamwarden.jobs.kafka_io import embedded_kafka_config, make_producer
from streamwarden.operators.pipeline import dead_letter_reason
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SCHEMA_VERSION
from tests.jobs.poison_records import poison

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]

T0 = 1_735_689_600_000
PARTITIONS = 2
PER_PARTITION = 400
STEP_MS = 2 * 3600_000 // PER_PARTITION  # two hours of event time per partition
Kind = pb.DeadLetter.ErrorKind


def _event(i: int, partition: int, step_ms: int = STEP_MS) -> bytes:
    return pb.Event(
        event_id=f"e{partition}-{i}",
        event_time_ms=T0 + i * step_ms,
        type=pb.Event.PLAY,
        schema_version=SCHEMA_VERSION,
        actor=pb.Actor(account_id=f"a{partition}-{i}", ip=f"10.{partition}.{i % 250}.{i // 250}", asn=64512),
        target=pb.Target(content_id=f"t{i % 97}"),
        play_duration_ms=30_000,
    ).SerializeToString()


def _produce(kafka: Any, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> list[tuple[int, int]]:
    """Write ``(partition, key, value)`` records in order; their ``(partition, offset)``s."""
    producer = make_producer(kafka, **{"linger.ms": 20, "message.max.bytes": 2_000_000})
    where: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def report(i: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                where[i] = (msg.partition(), msg.offset())

        return on_delivery

    for i, (partition, key, value) in enumerate(records):
        producer.produce(topic, value, key=key, partition=partition, on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    return [where[i] for i in range(len(records))]


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(poison(), min_size=40, max_size=40))
def test_poison_records_among_valid_traffic_are_dead_letters_with_their_offsets(
    broker: Any, kafka_topics: Any, tmp_path_factory: pytest.TempPathFactory, bad: list[bytes | None]
) -> None:
    work: Path = tmp_path_factory.mktemp("flink-poison")
    topics = kafka_topics("events", "actions", "deadletter", "features", partitions=PARTITIONS)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    records: list[tuple[int, bytes, bytes | None]] = []
    poisoned: set[int] = set()
    for i in range(PER_PARTITION):
        for p in range(PARTITIONS):
            records.append((p, f"a{p}-{i}".encode(), _event(i, p)))
        if i % 20 == 0:
            n = i // 20
            for p in range(PARTITIONS):
                poisoned.add(len(records))
                records.append((p, f"poison-{p}-{n}".encode(), bad[(n * PARTITIONS + p) % len(bad)]))
    where = _produce(kafka, topics[0], records)
    ends: dict[tuple[str, int], int] = {}
    for p, offset in where:
        ends[(topics[0], p)] = max(ends.get((topics[0], p), 0), offset + 1)

    job = job_config_for(kafka, topics, f"flink-poison-{uuid.uuid4().hex[:8]}", write_features=True)
    run_bounded(
        write_job_config(work / "job.yaml", job),
        work / "logs",
        ends,
        flink=FlinkConfig(checkpoint_dir=(work / "ckpt").as_uri()),  # type: ignore[call-arg]
        options=FlinkJobOptions(alerts=True),  # type: ignore[call-arg]
        timeout_s=600,
    )

    log = "\n".join(p.read_text(errors="replace") for p in (work / "logs").glob("*.log"))
    assert "to RESTARTING" not in log, "a record failed the job (it restarted)"
    dead_out = read_topic(kafka, job.topics.deadletter, partitions=PARTITIONS)
    features = [
        pb.FeatureRecord.FromString(r.value)
        for r in read_topic(kafka, job.topics.features, partitions=PARTITIONS)
    ]
    dead = [pb.DeadLetter.FromString(r.value) for r in dead_out]

    # produced = decoded + dead-lettered: each dead letter names a distinct record, every other record
    # is an event with a feature record, and no feature record comes from anywhere else
    position = {pos: i for i, pos in enumerate(where)}
    dead_at = [position[(d.source_partition, d.source_offset)] for d in dead]
    assert len(set(dead_at)) == len(dead_at)
    decoded_ids = [
        pb.Event.FromString(r[2] or b"").event_id for i, r in enumerate(records) if i not in set(dead_at)
    ]
    assert Counter(f.event_id for f in features) == Counter(decoded_ids)
    assert len(features) + len(dead) == len(records)
    # every dead letter: a specific kind and reason, its record's real place, key and bytes
    assert all(d.error_kind != Kind.ERROR_KIND_UNSPECIFIED and d.message for d in dead)
    assert all(d.source_topic == job.topics.events for d in dead)
    # no valid (in-order) event dead-lettered, as late or otherwise; a drawn event may be LATE_EVENT
    assert set(dead_at) <= poisoned, "a valid event was dead-lettered"
    for d, out, i in zip(dead, dead_out, dead_at, strict=True):
        assert out.key == records[i][1]
        value = records[i][2] or b""
        assert d.original_size == len(value)
        if d.original_sha256:  # kept in part
            assert value.startswith(d.original) and d.original_sha256 == hashlib.sha256(value).hexdigest()
        else:
            assert d.original == value
        assert len(out.value) < 100_000
    kinds = Counter(dead_letter_reason(d) for d in dead)
    print(f"{len(records)} records, {len(dead)} dead letters: {dict(kinds)}")
    # every valid event decoded
    valid_ids = {f"e{p}-{i}" for p in range(PARTITIONS) for i in range(PER_PARTITION)}
    assert valid_ids <= {f.event_id for f in features}


def test_a_backlog_over_three_partitions_is_not_misread_as_late(
    broker: Any, kafka_topics: Any, tmp_path: Path
) -> None:
    """Three partitions written one after the other, each two hours of event time in order: the source
    reads them in whatever order it fetches, the per-partition gate dead-letters none as late."""
    per_partition, partitions = 3_000, 3
    step = 2 * 3600_000 // per_partition
    topics = kafka_topics("events", "actions", "deadletter", "features", partitions=partitions)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    records = [
        (p, f"a{p}-{i}".encode(), _event(i, p, step_ms=step))
        for p in range(partitions)
        for i in range(per_partition)
    ]
    where = _produce(kafka, topics[0], records)
    ends = {(topics[0], p): per_partition for p in range(partitions)}
    assert max(o for _, o in where) == per_partition - 1
    job = job_config_for(kafka, topics, f"flink-backlog-{uuid.uuid4().hex[:8]}", write_features=True)
    run_bounded(
        write_job_config(tmp_path / "job.yaml", job),
        tmp_path / "logs",
        ends,
        flink=FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri()),  # type: ignore[call-arg]
        options=FlinkJobOptions(check_future=False, alerts=False),  # type: ignore[call-arg]
        timeout_s=600,
    )
    features = read_topic(kafka, job.topics.features, partitions=partitions, expected=len(records))
    dead = [
        pb.DeadLetter.FromString(r.value)
        for r in read_topic(kafka, job.topics.deadletter, partitions=partitions)
    ]
    print(f"backlog: {len(features)} feature records, {len(dead)} dead letters")
    assert Counter(dead_letter_reason(d) for d in dead) == Counter()
    assert len(features) == len(records)
