"""The deployment layout of ``deploy/flink/`` (#17) on a real standalone cluster: one slot per
TaskManager, parallelism 2 = two TaskManager JVMs, so two Python interpreters that never wait for each
other's GIL. Both TaskManagers must have worked, and every record must be decoded exactly once or
dead-lettered, each event joined (not timed out), as the MiniCluster's parallelism-2 test asserts."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamwarden.jobs.bench.flink import (
    JOB_FILE,
    job_args,
    job_config_for,
    produce,
    read_topic,
    write_job_config,
)
from streamwarden.jobs.flink.cluster import LocalFlinkCluster
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions
from streamwarden.jobs.kafka_io import embedded_kafka_config
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


def test_two_one_slot_taskmanagers_at_parallelism_2_match_the_replay(
    broker: Any, kafka_topics: Any, tmp_path: Path
) -> None:
    records = list(iter_traffic(small_spec(seed=31, duration_s=30.0)))
    payloads = [r.payload for r in records]
    topics = kafka_topics("events", "actions", "deadletter", "features", partitions=2)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    job = job_config_for(kafka, topics, f"flink-2tm-{uuid.uuid4().hex[:8]}", write_features=True)
    ends = produce(kafka, topics[0], payloads, keys=[r.account_id.encode() for r in records], partitions=2)
    args = job_args(
        write_job_config(tmp_path / "job.yaml", job),
        flink=FlinkConfig(  # type: ignore[call-arg]
            parallelism=2, checkpoint_dir=(tmp_path / "ckpt").as_uri(), ship_connector_jars=False
        ),
        options=FlinkJobOptions(check_future=False, alerts=False),  # type: ignore[call-arg]
        stop_at=ends,
    )
    cluster = LocalFlinkCluster(
        tmp_path / "cluster", task_slots=1, taskmanagers=2, taskmanager_memory="1024m"
    )
    try:
        cluster.start(timeout_s=180)
        assert len(cluster.taskmanagers()) == 2
        job_id = cluster.submit(JOB_FILE, args, timeout_s=300)
        status = cluster.wait_for_status(job_id, ["FINISHED", "FAILED", "CANCELED"], timeout_s=300)
        assert status == "FINISHED", cluster.job_exceptions(job_id)
        per_tm = cluster.taskmanager_cpu_s()
    finally:
        cluster.stop()

    assert len(per_tm) == 2
    assert all("velocity" in name for name in per_tm), list(per_tm)  # each ran a subtask of the pipeline
    valid = {pb.Event.FromString(r.payload).event_id for r in records if r.malformed is None}
    features = [
        pb.FeatureRecord.FromString(r.value)
        for r in read_topic(kafka, topics[3], expected=len(valid), partitions=2)
    ]
    dead = read_topic(kafka, topics[2], partitions=2)
    got = Counter(f.event_id for f in features)
    assert len(features) + len(dead) == len(records)
    assert set(got) <= valid and all(n == 1 for n in got.values())
    assert not [f.event_id for f in features if f.imputed]
    actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, topics[1], partitions=2)]
    assert actions and len({a.action_id for a in actions}) == len(actions)
