"""An unexpected exception in the velocity, assembly, scoring or decision stage for one event makes that
event an ``OPERATOR_ERROR`` dead letter and the job goes on (issue #13, item 1), on Beam (DirectRunner)
and on Flink (MiniCluster), on the real broker.

No valid record reaches those stages and raises there (the poison records of ``poison_records.py`` all
stop at decode), so the failures come from the test hook ``JobConfig.inject_operator_errors``: one
event per stage raises. The reference is the offline replay of the same records with the same hook
(``replay_actions`` applies it as the engines do): the event that fails in the velocity stage updates
no window on any key (the test checks that this changes some later event's features, so a
half-applied update would show), the events that fail later keep their window updates but have no
feature record and no action (so a later action on the same subject is not held back by a cooldown
they would have started). Every other event's actions and feature values must equal it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig, stages_config
from streamwarden.operators.pipeline import (
    OPERATOR_STAGES,
    ReplayResult,
    Stages,
    dead_letter_reason,
    iter_kafka_like,
    replay_actions,
)
from streamwarden.operators.traffic import TrafficRecord, iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.engine]

Topics = Callable[..., list[str]]
SPEC = small_spec(seed=21, duration_s=60.0)


def _replay(records: Sequence[TrafficRecord], stages: Stages) -> ReplayResult:
    return replay_actions(iter_kafka_like([r.payload for r in records]), stages)


@pytest.fixture(scope="module")
def plan() -> dict[str, Any]:
    """The traffic, the failing event per stage and the expected outputs."""
    records = list(iter_traffic(SPEC))
    config = stages_config(JobConfig())  # type: ignore[call-arg]
    stages = Stages.build(config)
    full = _replay(records, stages)
    acted = list(dict.fromkeys(a.event_id for a in full.actions))
    assert len(acted) >= 40, "the traffic should trigger actions on many events"
    before = {f.event_id: tuple(f.values) for f in full.feature_records}
    # the velocity failure: an acted-on event whose window updates change some later event's features
    for candidate in acted[len(acted) // 3 :]:
        failing = {"velocity": candidate}
        others = [e for e in acted[len(acted) // 2 :] if e != candidate]
        failing.update(assemble=others[0], score=others[5], decide=others[10])
        injected = Stages(replace(config, inject_errors=frozenset(failing.items())))
        reference = _replay(records, injected)
        changed = [f.event_id for f in reference.feature_records if tuple(f.values) != before[f.event_id]]
        if changed:
            break
    else:
        raise AssertionError("no acted-on event changes later features")
    assert len(set(failing.values())) == len(OPERATOR_STAGES)
    assert dict(reference.counters.operator_errors) == dict.fromkeys(OPERATOR_STAGES, 1)
    assert not {f.event_id for f in reference.feature_records} & set(failing.values())
    return {
        "records": records,
        "failing": failing,
        "changed": changed,
        "actions": reference.actions,
        "features": {f.event_id: tuple(f.values) for f in reference.feature_records},
        "full_actions": full.actions,
    }


def _strip(a: pb.Action) -> bytes:
    copy = pb.Action.FromString(a.SerializeToString())
    copy.ClearField("decision_time_ms")
    copy.ClearField("scores")
    return copy.SerializeToString(deterministic=True)


def _check(
    plan: dict[str, Any], actions: list[pb.Action], features: list[pb.FeatureRecord], dead: list[Any]
) -> None:
    """The dead letters, actions and feature records of a run with the injected failures."""
    records, failing = plan["records"], plan["failing"]
    letters = [(r.key, pb.DeadLetter.FromString(r.value)) for r in dead]
    errors = {d.stage: (key, d) for key, d in letters if d.error_kind == pb.DeadLetter.OPERATOR_ERROR}
    assert sorted(errors) == sorted(OPERATOR_STAGES)  # one per stage: one per failed event
    assert sum(d.error_kind == pb.DeadLetter.OPERATOR_ERROR for _, d in letters) == len(OPERATOR_STAGES)
    for stage, (key, letter) in errors.items():
        eid = failing[stage]
        assert key == eid.encode()
        assert letter.message == (
            f"{stage}: event {eid}: InjectedOperatorError: injected failure of event {eid} in {stage}"
        )
        assert (letter.source_partition, letter.source_offset, letter.original) == (-1, -1, b"")
    # the malformed records are dead-lettered as before
    rest = Counter(dead_letter_reason(d) for _, d in letters if d.error_kind != pb.DeadLetter.OPERATOR_ERROR)
    assert rest == Counter(r.malformed for r in records if r.malformed)
    # every other event: the replay's actions and feature values (the velocity failure updated no window)
    got = {f.event_id: tuple(f.values) for f in features}
    assert len(got) == len(features)
    assert got == plan["features"]
    assert all(got[e] == plan["features"][e] for e in plan["changed"])
    assert Counter(a.action_id for a in actions) == Counter(a.action_id for a in plan["actions"])
    assert sorted(map(_strip, actions)) == sorted(map(_strip, plan["actions"]))
    assert not {a.event_id for a in actions} & set(failing.values())
    assert len(actions) < len(plan["full_actions"])


def _topics(kafka_topics: Topics) -> TopicsConfig:
    events, actions, dead, features = kafka_topics(
        "events", "actions", "deadletter", "features", partitions=1
    )
    return TopicsConfig(events=events, actions=actions, deadletter=dead, features=features)  # type: ignore[call-arg]


def test_beam_dead_letters_an_event_that_fails_in_a_stage_and_goes_on(
    kafka_config: KafkaConfig, kafka_topics: Topics, plan: dict[str, Any]
) -> None:
    from streamwarden.jobs.beam.kafka_source import ReadOptions
    from streamwarden.jobs.beam.pipeline import job_metrics, run_beam
    from streamwarden.jobs.kafka_io import drain, make_producer

    records = plan["records"]
    job = JobConfig(  # type: ignore[call-arg]
        kafka=kafka_config,
        topics=_topics(kafka_topics),
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        write_features=True,
        inject_operator_errors=tuple(plan["failing"].items()),
    )
    producer = make_producer(kafka_config, **{"linger.ms": 20})
    for rec in records:
        producer.produce(job.topics.events, rec.payload)
    assert producer.flush(30) == 0

    result = run_beam(job, read_options=ReadOptions(max_records=len(records), bundle_max_ms=100))  # type: ignore[call-arg]

    m = job_metrics(result)
    assert m.counter("records_in") == len(records)
    assert m.counter("events") + m.counter("dead_letters") == len(records)
    assert {s: m.counter(f"operator_errors.{s}") for s in OPERATOR_STAGES} == dict.fromkeys(
        OPERATOR_STAGES, 1
    )
    valid = sum(r.malformed is None for r in records)
    features = drain(
        kafka_config, job.topics.features, expected_count=valid - len(OPERATOR_STAGES), idle_timeout_s=3
    )
    dead = drain(kafka_config, job.topics.deadletter, idle_timeout_s=3)
    actions = [pb.Action.FromString(r.value or b"") for r in drain(kafka_config, job.topics.actions)]
    _check(plan, actions, [pb.FeatureRecord.FromString(r.value or b"") for r in features], dead)


def test_flink_dead_letters_an_event_that_fails_in_a_stage_and_goes_on(
    broker: Any, tmp_path: Path, plan: dict[str, Any]
) -> None:
    from streamwarden.jobs.bench.flink import (
        job_config_for,
        produce,
        read_topic,
        run_bounded,
        write_job_config,
    )
    from streamwarden.jobs.flink.env import FlinkConfig
    from streamwarden.jobs.flink.job import FlinkJobOptions
    from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config

    records = plan["records"]
    suffix = uuid.uuid4().hex[:8]
    topics = [f"{name}-{suffix}" for name in ("events", "actions", "deadletter", "features")]
    create_local_topics(broker.bootstrap_servers, topics, 1)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    ends = produce(kafka, topics[0], [r.payload for r in records])
    job = job_config_for(
        kafka,
        topics,
        f"flink-operator-errors-{suffix}",
        write_features=True,
        inject_operator_errors=tuple(plan["failing"].items()),
    )
    report = run_bounded(
        write_job_config(tmp_path / "job.yaml", job),
        tmp_path / "logs",
        ends,
        flink=FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri()),  # type: ignore[call-arg]
        options=FlinkJobOptions(check_future=False, alerts=False),  # type: ignore[call-arg]
    )
    assert report, "the job finished"
    valid = sum(r.malformed is None for r in records)
    features = read_topic(kafka, topics[3], expected=valid - len(OPERATOR_STAGES))
    dead = read_topic(kafka, topics[2])
    actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, topics[1])]
    _check(plan, actions, [pb.FeatureRecord.FromString(r.value) for r in features], dead)
