"""Exactly-once under failure, in both layouts: the Flink job fails mid-stream (test-only hook in the
decode stage, or the fused operator), restarts from its latest checkpoint on the MiniCluster and
finishes.

Keyed state is restored exactly: every event's feature vector (window counts included) equals the
offline replay's, so no event was applied twice or lost, and the alerts equal the anomaly replay's. Output, on the real Apache Kafka broker: a
``read_committed`` reader sees every expected action id and feature record exactly once and no other,
while a ``read_uncommitted`` reader also sees what the failed attempt wrote in its aborted transactions
(so the failure did happen after output was written, and the transactions are what hides it).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from streamwarden.jobs.bench.flink import (
    job_config_for,
    produce,
    read_topic,
    run_bounded,
    write_job_config,
)
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions, stages_config
from streamwarden.jobs.kafka_io import embedded_kafka_config
from streamwarden.operators.anomaly import load_anomaly_spec
from streamwarden.operators.anomaly.replay import alert_sort_key, replay_alerts
from streamwarden.operators.pipeline import Stages, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("layout", ["staged", "fused"])
def test_failure_mid_stream_restores_from_a_checkpoint_and_emits_each_action_once(
    broker, kafka_topics, tmp_path: Path, layout: str, fast_anomaly_spec: Path
) -> None:
    records = list(iter_traffic(small_spec(seed=22, duration_s=60.0)))
    topics = kafka_topics("events", "actions", "deadletter", "features", "alerts")
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    ends = produce(
        kafka, topics[0], [r.payload for r in records], keys=[r.account_id.encode() for r in records]
    )
    job = job_config_for(kafka, topics[:4], f"flink-eo-{uuid.uuid4().hex[:8]}", write_features=True)
    job = job.model_copy(update={"topics": job.topics.model_copy(update={"alerts": topics[4]})})
    marker = tmp_path / "failed-once"
    run_bounded(
        write_job_config(tmp_path / "job.yaml", job),
        tmp_path / "logs",
        ends,
        flink=FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri(), checkpoint_interval_ms=500),  # type: ignore[call-arg]
        options=FlinkJobOptions(  # type: ignore[call-arg]
            check_future=False,
            fail_once_after=(len(records) * 2 // 3, str(marker)),
            layout=layout,
            anomaly_spec=fast_anomaly_spec,
        ),
    )

    assert marker.exists(), "the injected failure did not happen"
    log = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "InjectedFailure" in log
    assert "from Checkpoint" in log, "the job did not restore from a checkpoint after the failure"

    stages = Stages.build(stages_config(job))
    reference = replay_actions(iter_kafka_like([r.payload for r in records], job.topics.events), stages)
    # state: every event's vector, from whichever attempt wrote it, equals the replay's
    want_vectors = {f.event_id: tuple(f.values) for f in reference.feature_records}
    features = [pb.FeatureRecord.FromString(r.value) for r in read_topic(kafka, job.topics.features)]
    assert Counter(f.event_id for f in features) == Counter(set(want_vectors))  # each exactly once
    uncommitted = read_topic(kafka, job.topics.features, committed=False)
    print(f"feature records: {len(features)} read_committed, {len(uncommitted)} read_uncommitted")
    assert len(uncommitted) > len(features), "the failed attempt left no aborted output to hide"
    vectors: dict[str, set[tuple[float, ...]]] = defaultdict(set)
    for f in features:
        vectors[f.event_id].add(tuple(f.values))
    assert set(vectors) == set(want_vectors)
    assert all(got == {want_vectors[eid]} for eid, got in vectors.items())
    # output: no action lost, none invented, every copy of an action the same action
    actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, job.topics.actions)]
    want = Counter(a.action_id for a in reference.actions)
    got = Counter(a.action_id for a in actions)
    assert set(got) == set(want)
    copies: dict[str, set[tuple[str, str, int]]] = defaultdict(set)
    for a in actions:
        copies[a.action_id].add((a.event_id, a.subject.id, a.verdict))
    assert all(len(v) == 1 for v in copies.values())
    assert got == want  # read_committed: each expected action exactly once, no other
    # alerts: the anomaly state came back from the checkpoint too (in the fused layout it is the fused
    # operator's own), so the committed alerts are the anomaly replay's
    want_alerts = replay_alerts(
        [r.payload for r in records],
        load_anomaly_spec(fast_anomaly_spec),
        out_of_orderness_ms=stages.out_of_orderness_ms,
    )
    assert any(a.status == pb.AnomalyAlert.FIRING for a in want_alerts), "the stream must make alerts"
    got_alerts = [pb.AnomalyAlert.FromString(r.value) for r in read_topic(kafka, topics[4])]
    assert [a.SerializeToString(deterministic=True) for a in sorted(got_alerts, key=alert_sort_key)] == [
        a.SerializeToString(deterministic=True) for a in sorted(want_alerts, key=alert_sort_key)
    ]
