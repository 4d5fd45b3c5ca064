"""The isolated layout (#17) on a real standalone cluster: one one-slot TaskManager per Python stage
(``FlinkJobOptions.isolate_stages``), so each stage runs in a JVM, and a Python interpreter, of its own.
The job must give exactly the replay's actions, each TaskManager must have run one Python stage, and no
stage may hang at start-up (onnxruntime's module init once deadlocked the decode-only TaskManager)."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

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
from streamwarden.jobs.flink.job import FlinkJobOptions, python_stages, stage_slots, stages_config
from streamwarden.jobs.kafka_io import embedded_kafka_config
from streamwarden.operators.pipeline import Stages, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


def test_layout_slots() -> None:
    opts = FlinkJobOptions(isolate_stages=True, alerts=False)  # type: ignore[call-arg]
    assert python_stages(opts) == ("decode", "velocity", "assemble", "score", "cooldown")
    assert stage_slots(opts, 2) == 10
    inline = opts.model_copy(update={"score_batch": 1, "alerts": True})
    assert python_stages(inline) == ("decode", "velocity", "assemble", "cooldown", "anomaly")
    assert stage_slots(FlinkJobOptions(), 3) == 3  # type: ignore[call-arg]


def test_isolated_stages_on_one_slot_taskmanagers_match_the_replay(
    broker, kafka_topics, tmp_path: Path
) -> None:
    records = list(iter_traffic(small_spec(seed=31, duration_s=30.0)))
    payloads = [r.payload for r in records]
    topics = kafka_topics("events", "actions", "deadletter", "features")
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    job = job_config_for(kafka, topics, f"flink-iso-{uuid.uuid4().hex[:8]}")
    options = FlinkJobOptions(check_future=False, alerts=False, isolate_stages=True)  # type: ignore[call-arg]
    ends = produce(kafka, topics[0], payloads, keys=[r.account_id.encode() for r in records])
    args = job_args(
        write_job_config(tmp_path / "job.yaml", job),
        flink=FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri(), ship_connector_jars=False),  # type: ignore[call-arg]
        options=options,
        stop_at=ends,
    )
    slots = stage_slots(options, 1)
    cluster = LocalFlinkCluster(
        tmp_path / "cluster", task_slots=1, taskmanagers=slots, taskmanager_memory="1024m"
    )
    try:
        cluster.start(timeout_s=180)
        job_id = cluster.submit(JOB_FILE, args, timeout_s=300)
        status = cluster.wait_for_status(job_id, ["FINISHED", "FAILED", "CANCELED"], timeout_s=300)
        assert status == "FINISHED", cluster.job_exceptions(job_id)
        per_tm = cluster.taskmanager_cpu_s()
    finally:
        cluster.stop()

    assert len(per_tm) == slots
    for stage in python_stages(options):  # every Python stage in a TaskManager of its own
        holders = [
            name
            for name in per_tm
            if stage in {t.strip("(), ") for t in name.split(": ", 1)[1].split(" -> ")}
        ]
        assert len(holders) == 1, (stage, list(per_tm))
    want = replay_actions(iter_kafka_like(payloads, job.topics.events), Stages.build(stages_config(job)))
    got = [pb.Action.FromString(r.value) for r in read_topic(kafka, job.topics.actions)]
    assert want.actions, "the traffic must produce actions for the comparison to mean anything"
    assert Counter(a.action_id for a in got) == Counter(a.action_id for a in want.actions)
