"""Savepoint upgrade on a real standalone cluster (``LocalFlinkCluster``): the job runs on the first half
of the traffic (in either layout), is stopped with a savepoint, and a new submission restored from it processes the second
half. Window state carries over: every event's feature vector, counts included, equals the offline
replay of the whole stream, which differs from a replay of the second half alone."""

from __future__ import annotations

import time
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
from streamwarden.jobs.flink.job import FlinkJobOptions, stages_config
from streamwarden.jobs.kafka_io import embedded_kafka_config
from streamwarden.operators.pipeline import Stages, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


def _wait_for_features(kafka: Any, topic: str, n: int, cluster: LocalFlinkCluster, job_id: str) -> list[Any]:
    deadline = time.monotonic() + 120
    got: list[Any] = []
    while time.monotonic() < deadline:
        got = read_topic(kafka, topic, expected=n, timeout_s=5, settle_s=0.5)
        if len(got) >= n:
            return got
        status = cluster.job_status(job_id)
        assert status == "RUNNING", f"job {status}: {cluster.job_exceptions(job_id)}"
    pytest.fail(f"{len(got)}/{n} feature records after 120 s")


@pytest.mark.parametrize("layout", ["staged", "fused"])
def test_stop_with_savepoint_and_restore_carries_window_state_over(
    broker, kafka_topics, tmp_path: Path, layout: str
) -> None:
    records = list(iter_traffic(small_spec(seed=23, duration_s=40.0)))
    half = len(records) // 2
    first, second = records[:half], records[half:]
    topics = kafka_topics("events", "actions", "deadletter", "features")
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    job = job_config_for(kafka, topics, f"flink-sp-{uuid.uuid4().hex[:8]}", write_features=True)
    args = job_args(
        write_job_config(tmp_path / "job.yaml", job),
        flink=FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri(), ship_connector_jars=False),  # type: ignore[call-arg]
        options=FlinkJobOptions(check_future=False, layout=layout),  # type: ignore[call-arg]
    )

    def valid(rs: list[Any]) -> int:
        return sum(r.malformed is None for r in rs)

    cluster = LocalFlinkCluster(tmp_path / "cluster")
    try:
        cluster.start()
        produce(kafka, topics[0], [r.payload for r in first], keys=[r.account_id.encode() for r in first])
        job1 = cluster.submit(JOB_FILE, args)
        _wait_for_features(kafka, job.topics.features, valid(first), cluster, job1)
        savepoint = cluster.stop_with_savepoint(job1, tmp_path / "savepoints")
        assert cluster.job_status(job1) == "FINISHED"

        produce(kafka, topics[0], [r.payload for r in second], keys=[r.account_id.encode() for r in second])
        job2 = cluster.submit(JOB_FILE, args, savepoint=savepoint)
        features = _wait_for_features(kafka, job.topics.features, valid(records), cluster, job2)
        assert cluster.cancel(job2) == "CANCELED"
    finally:
        cluster.stop()

    stages = Stages.build(stages_config(job))
    whole = replay_actions(iter_kafka_like([r.payload for r in records], job.topics.events), stages)
    alone = replay_actions(iter_kafka_like([r.payload for r in second], job.topics.events), stages)
    got = {}
    for r in features:
        f = pb.FeatureRecord.FromString(r.value)
        got[f.event_id] = tuple(f.values)
    assert len(features) == valid(records)  # no event processed twice across the upgrade
    want = {f.event_id: tuple(f.values) for f in whole.feature_records}
    assert got == want
    restarted = {f.event_id: tuple(f.values) for f in alone.feature_records}
    assert any(restarted[eid] != want[eid] for eid in restarted), (
        "the second half does not depend on the first"
    )
    actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, job.topics.actions)]
    assert Counter(a.action_id for a in actions) == Counter(a.action_id for a in whole.actions)
