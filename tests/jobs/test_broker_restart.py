"""A broker restart in the middle of a stream, on a dedicated real Apache Kafka broker (the session broker
is shared): the Beam and the Flink job reconnect by themselves and lose nothing. The first half of the traffic is in the
topic when the job starts; once the job has written output, the broker is restarted (controlled stop,
start on the same ports and data dir) and the second half is produced; the job reads to the end.

Every record is counted once (decoded or dead-lettered), every valid event has its feature record once
(Flink: seen by a read_committed reader), and the action ids equal those of an uninterrupted replay of the
same records. (Both jobs' stage configs come from the same JobConfig, so the Beam helper serves both.)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamwarden.deploy.kraft import KRaftBroker, ensure_kafka_lib
from streamwarden.jobs.beam.kafka_source import ReadOptions
from streamwarden.jobs.beam.pipeline import job_metrics, run_beam, stages_config
from streamwarden.jobs.bench.flink import JobProcess, job_args, job_config_for, read_topic, write_job_config
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions
from streamwarden.jobs.kafka_io import create_local_topics, drain, embedded_kafka_config, make_producer
from streamwarden.operators.pipeline import Stages, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import TrafficRecord, iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.engine, pytest.mark.slow]


def _produce(kafka: KafkaConfig, topic: str, records: list[TrafficRecord]) -> None:
    producer = make_producer(kafka, **{"linger.ms": 20})
    for i, rec in enumerate(records):
        producer.produce(topic, rec.payload, rec.account_id.encode() or None)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def _wait_for_output(
    kafka: KafkaConfig, topic: str, failed: list[BaseException], timeout_s: float = 120
) -> int:
    """Block until ``topic`` has a record (the job is reading and writing); the records seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not failed:
        seen = drain(kafka, topic, idle_timeout_s=0.5)
        if seen:
            return len(seen)
    raise AssertionError(f"the job wrote nothing to {topic} in {timeout_s:.0f} s ({failed})")


def test_beam_job_reconnects_after_a_broker_restart_and_loses_nothing(tmp_path: Path) -> None:
    records = list(iter_traffic(small_spec(seed=31, duration_s=90.0)))
    half = len(records) // 2
    with KRaftBroker(ensure_kafka_lib(), tmp_path / "kafka") as broker:
        kafka = embedded_kafka_config(broker.bootstrap_servers)
        names = [f"{t}-{uuid.uuid4().hex[:8]}" for t in ("events", "actions", "deadletter", "features")]
        create_local_topics(broker.bootstrap_servers, names, 1)
        topics = TopicsConfig(events=names[0], actions=names[1], deadletter=names[2], features=names[3])  # type: ignore[call-arg]
        job = JobConfig(kafka=kafka, topics=topics, group_id=f"g-{uuid.uuid4().hex[:8]}", write_features=True)  # type: ignore[call-arg]
        _produce(kafka, job.topics.events, records[:half])

        result: list[Any] = []
        failed: list[BaseException] = []

        def run() -> None:
            try:
                opts = ReadOptions(max_records=len(records), bundle_max_ms=100)  # type: ignore[call-arg]
                result.append(run_beam(job, read_options=opts))
            except BaseException as exc:  # reported by the main thread
                failed.append(exc)

        worker = threading.Thread(target=run, name="beam-job", daemon=True)
        worker.start()
        before = _wait_for_output(kafka, job.topics.features, failed)
        started = time.monotonic()
        broker.restart()
        down_s = time.monotonic() - started
        _produce(kafka, job.topics.events, records[half:])
        worker.join(timeout=600)
        assert not worker.is_alive(), "the job did not finish after the broker restart"
        assert not failed, f"the job failed: {failed[0]!r}"

        m = job_metrics(result[0])
        assert m.counter("records_in") == len(records)
        assert m.counter("events") + m.counter("dead_letters") == len(records)
        features = drain(kafka, job.topics.features, expected_count=m.counter("events"), idle_timeout_s=3)
        actions = [pb.Action.FromString(r.value or b"") for r in drain(kafka, job.topics.actions)]
        dead = drain(kafka, job.topics.deadletter, idle_timeout_s=2)

    print(f"broker restart: {down_s:.1f} s down+up, {before} feature records written before it")
    valid = [pb.Event.FromString(r.payload).event_id for r in records if r.malformed is None]
    got = Counter((r.key or b"").decode() for r in features)
    assert set(got) == set(valid)  # every valid event decided...
    assert max(got.values()) == 1  # ...once (the idempotent producer retried through the restart)
    assert len(dead) == len(records) - len(valid)
    reference = replay_actions(
        iter_kafka_like([r.payload for r in records], job.topics.events), Stages.build(stages_config(job))
    )
    assert Counter(a.action_id for a in actions) == Counter(a.action_id for a in reference.actions)


def test_flink_job_rides_out_a_broker_restart_exactly_once(tmp_path: Path) -> None:
    records = list(iter_traffic(small_spec(seed=32, duration_s=60.0)))
    half = len(records) // 2
    with KRaftBroker(ensure_kafka_lib(), tmp_path / "kafka") as broker:
        kafka = embedded_kafka_config(broker.bootstrap_servers)
        names = [f"{t}-{uuid.uuid4().hex[:8]}" for t in ("events", "actions", "deadletter", "features")]
        create_local_topics(broker.bootstrap_servers, names, 1)
        job = job_config_for(kafka, names, f"flink-restart-{uuid.uuid4().hex[:8]}", write_features=True)
        _produce(kafka, job.topics.events, records[:half])
        args = job_args(
            write_job_config(tmp_path / "job.yaml", job),
            flink=FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri(), checkpoint_interval_ms=500),  # type: ignore[call-arg]
            options=FlinkJobOptions(check_future=False, alerts=False),  # type: ignore[call-arg]
            stop_at={(job.topics.events, 0): len(records)},  # the idempotent producer: offsets 0..n-1
        )
        with JobProcess(args, tmp_path / "logs") as proc:
            before = len(read_topic(kafka, job.topics.features, committed=False, expected=1, timeout_s=180))
            assert before, f"the job wrote nothing:\n{proc.tail()}"
            started = time.monotonic()
            broker.restart()
            down_s = time.monotonic() - started
            _produce(kafka, job.topics.events, records[half:])
            proc.wait(timeout_s=600)
        features = [pb.FeatureRecord.FromString(r.value) for r in read_topic(kafka, job.topics.features)]
        actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, job.topics.actions)]
        dead = read_topic(kafka, job.topics.deadletter)

    log = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    restarts = log.count("switched from state RUNNING to RESTARTING")
    print(f"broker restart: {down_s:.1f} s down+up after {before}+ feature records, job restarts: {restarts}")
    valid = [pb.Event.FromString(r.payload).event_id for r in records if r.malformed is None]
    # read_committed: every valid event's feature record exactly once, every other record dead once
    assert Counter(f.event_id for f in features) == Counter(valid)
    assert len(dead) == len(records) - len(valid)
    reference = replay_actions(
        iter_kafka_like([r.payload for r in records], job.topics.events),
        Stages.build(stages_config(job)),
    )
    assert Counter(a.action_id for a in actions) == Counter(a.action_id for a in reference.actions)
