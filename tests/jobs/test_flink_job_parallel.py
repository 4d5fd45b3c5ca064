"""The Flink job at parallelism 2 on a local MiniCluster and the real embedded broker (two partitions):
an event's routes spread over both velocity subtasks, each subtask passes its share of the event's
partials on as one group (the route counts come from ``jobs.flink.keygroups``), and the keyed assembly
joins the groups. Every decoded event must come out exactly once, joined, with nothing imputed."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from streamwarden.jobs.bench.flink import job_config_for, produce, read_topic, run_bounded, write_job_config
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions
from streamwarden.jobs.flink.keygroups import subtask_of
from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


def test_parallelism_two_joins_every_event_once(broker: object, tmp_path: Path) -> None:
    records = list(iter_traffic(small_spec(seed=23, duration_s=40.0)))
    valid = [pb.Event.FromString(r.payload) for r in records if r.malformed is None]
    stages = Stages.build(StagesConfig())
    split = sum(len({subtask_of(k, 2, 128) for k in stages.fan_out(e).keys}) > 1 for e in valid)
    assert split > len(valid) // 4, "the traffic must spread events over both subtasks"
    suffix = uuid.uuid4().hex[:8]
    topics = [f"{name}-{suffix}" for name in ("events", "actions", "deadletter", "features")]
    create_local_topics(broker.bootstrap_servers, topics, 2)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    ends = produce(
        kafka,
        topics[0],
        [r.payload for r in records],
        keys=[r.account_id.encode() for r in records],
        partitions=2,
    )
    job = job_config_for(kafka, topics, f"flink-p2-{suffix}", write_features=True)
    run_bounded(
        write_job_config(tmp_path / "job.yaml", job),
        tmp_path / "logs",
        ends,
        flink=FlinkConfig(parallelism=2, max_parallelism=128, checkpoint_dir=(tmp_path / "ckpt").as_uri()),  # type: ignore[call-arg]
        options=FlinkJobOptions(check_future=False),  # type: ignore[call-arg]
    )
    features = [
        pb.FeatureRecord.FromString(r.value)
        for r in read_topic(kafka, topics[3], expected=len(valid), partitions=2)
    ]
    dead = read_topic(kafka, topics[2], partitions=2)
    got = Counter(f.event_id for f in features)
    assert len(features) + len(dead) == len(records)  # each record decoded or dead-lettered (late ones too)
    accepted = {e.event_id for e in valid}
    assert set(got) <= accepted and all(n == 1 for n in got.values())  # none twice
    assert not [f.event_id for f in features if f.imputed]  # joined, not timed out
