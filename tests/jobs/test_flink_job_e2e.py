"""The Flink job end to end on a local MiniCluster and the real embedded broker: generated traffic in,
actions and alerts out; every record decoded or dead-lettered; actions and feature vectors equal the
offline replay's, alerts the anomaly replay's; and the Beam job gives the same actions for the same input.
The events carry platform fields (``Event.attributes``) and the job runs the shipped spec and policy
plus a feature filtered by an attribute and rules on an attribute and on that feature
(``tests/jobs/attribute_traffic.py``): they decide the same on replay, Flink and Beam. So do the
shipped unwind rules: the accounts behind a flagged track, from its reputation state (entity labels)
in the cooldown stage.

One bounded run per Flink layout (staged: a Python operator per stage; fused: the whole pipeline in one,
``jobs/flink/fused.py``) over one events topic (single partition, so per-key order is the arrival order)
serves every test here.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

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
from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config
from streamwarden.operators.anomaly import load_anomaly_spec
from streamwarden.operators.anomaly.replay import alert_sort_key, replay
from streamwarden.operators.pipeline import Stages, dead_letter_reason, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from tests.jobs.attribute_traffic import ATTRIBUTE_RULES, with_plans, write_attribute_files

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]

SPEC = small_spec(seed=21, duration_s=60.0)
UNWIND_RULE = "farm-account-unwind"
"""A shipped unwind rule (``operators/policy/reputation.py``) that this traffic triggers."""
OUT_OF_ORDERNESS_MS = 2_000


def _strip(a: pb.Action) -> bytes:
    """An action without its wall-clock decision time and its scores (compared with a tolerance: ONNX
    Runtime's float32 results differ in the last bits between batch sizes)."""
    copy = pb.Action.FromString(a.SerializeToString())
    copy.ClearField("decision_time_ms")
    copy.ClearField("scores")
    return copy.SerializeToString(deterministic=True)


def _assert_same_actions(got: list[pb.Action], want: list[pb.Action]) -> None:
    assert Counter(a.action_id for a in got) == Counter(a.action_id for a in want)
    got_by_id, want_by_id = {a.action_id: a for a in got}, {a.action_id: a for a in want}
    for action_id, expected in want_by_id.items():
        actual = got_by_id[action_id]
        assert _strip(actual) == _strip(expected)
        assert dict(actual.scores) == pytest.approx(dict(expected.scores), abs=1e-6)


LAYOUTS = ("staged", "fused")


def _run_layout(
    broker: Any,
    work: Path,
    layout: str,
    events: str,
    ends: Any,
    records: list[Any],
    files: tuple[Path, Path, Path],
    anomaly_spec: Path,
) -> dict[str, Any]:
    """One bounded run of the job in ``layout`` over the events topic, into topics of its own."""
    spec_path, policy_path, card_path = files
    suffix = uuid.uuid4().hex[:8]
    topics = [
        f"{name}-{layout}-{suffix}" for name in ("actions", "deadletter", "features", "alerts", "statements")
    ]
    create_local_topics(broker.bootstrap_servers, topics, 1)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    job = job_config_for(
        kafka,
        [events, *topics[:3]],
        f"flink-e2e-{layout}-{suffix}",
        write_features=True,
        feature_spec=spec_path,
        policy=policy_path,
        model_card=card_path,
    )
    job = job.model_copy(
        update={"topics": job.topics.model_copy(update={"alerts": topics[3], "statements": topics[4]})}
    )
    options = FlinkJobOptions(  # type: ignore[call-arg]
        check_future=False,  # recorded traffic
        out_of_orderness_ms=OUT_OF_ORDERNESS_MS,
        anomaly_spec=anomaly_spec,
        layout=layout,
    )
    report = run_bounded(
        write_job_config(work / f"job-{layout}.yaml", job),
        work / f"logs-{layout}",
        ends,
        flink=FlinkConfig(checkpoint_dir=(work / f"ckpt-{layout}").as_uri()),  # type: ignore[call-arg]
        options=options,
    )
    valid = sum(r.malformed is None for r in records)
    return {
        "layout": layout,
        "job": job,
        "options": options,
        "alerts": [pb.AnomalyAlert.FromString(r.value) for r in read_topic(kafka, topics[3])],
        "report": report,
        "actions": [pb.Action.FromString(r.value) for r in read_topic(kafka, topics[0])],
        "statements": [pb.StatementOfReasons.FromString(r.value) for r in read_topic(kafka, topics[4])],
        "dead": [pb.DeadLetter.FromString(r.value) for r in read_topic(kafka, topics[1])],
        "features": [
            pb.FeatureRecord.FromString(r.value) for r in read_topic(kafka, topics[2], expected=valid)
        ],
    }


@pytest.fixture(scope="module")
def flink_runs(
    broker: Any, tmp_path_factory: pytest.TempPathFactory, fast_anomaly_spec: Path
) -> dict[str, Any]:
    """The same events topic through the staged and the fused layout (``runs[layout]``)."""
    work: Path = tmp_path_factory.mktemp("flink-e2e")
    records = with_plans(list(iter_traffic(SPEC)))
    files = write_attribute_files(work)
    events = f"events-{uuid.uuid4().hex[:8]}"
    create_local_topics(broker.bootstrap_servers, [events], 1)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    ends = produce(kafka, events, [r.payload for r in records], keys=[r.account_id.encode() for r in records])
    runs = {
        layout: _run_layout(broker, work, layout, events, ends, records, files, fast_anomaly_spec)
        for layout in LAYOUTS
    }
    return {"records": records, "anomaly_spec": fast_anomaly_spec, "runs": runs}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_record_is_decoded_or_dead_lettered(flink_runs: dict[str, Any], layout: str) -> None:
    flink_run = flink_runs["runs"][layout]
    records, features, dead = flink_runs["records"], flink_run["features"], flink_run["dead"]
    valid_ids = [pb.Event.FromString(r.payload).event_id for r in records if r.malformed is None]
    assert sorted(f.event_id for f in features) == sorted(valid_ids)  # each decoded event exactly once
    assert len(features) + len(dead) == len(records)
    assert Counter(dead_letter_reason(d) for d in dead) == Counter(
        r.malformed for r in records if r.malformed
    )
    assert {d.source_topic for d in dead} == {flink_run["job"].topics.events}
    originals = Counter(r.payload for r in records if r.malformed)
    assert Counter(d.original for d in dead) == originals  # dead letters keep the record byte for byte


@pytest.mark.parametrize("layout", LAYOUTS)
def test_actions_and_features_equal_the_offline_replay(flink_runs: dict[str, Any], layout: str) -> None:
    flink_run = flink_runs["runs"][layout]
    job, records, actions = flink_run["job"], flink_runs["records"], flink_run["actions"]
    reference = replay_actions(
        iter_kafka_like([r.payload for r in records], job.topics.events),
        Stages.build(stages_config(job, flink_run["options"])),
    )
    assert reference.actions, "the traffic should trigger some actions"
    fired = Counter(a.reasons[0] for a in reference.actions)
    assert all(fired[rule] for rule in ATTRIBUTE_RULES), f"the attribute rules should fire: {fired}"
    assert fired[UNWIND_RULE], f"a flagged track should unwind to its accounts: {fired}"
    _assert_same_actions(actions, reference.actions)
    got = {f.event_id: tuple(f.values) for f in flink_run["features"]}
    assert got == {f.event_id: tuple(f.values) for f in reference.feature_records}
    # DSA statements of reasons: the replay's, but for the decision wall-clock time (Beam: same check)
    assert reference.statements, "the traffic should trigger some enforcing restrictions"

    def strip(s: pb.StatementOfReasons) -> bytes:
        s = pb.StatementOfReasons.FromString(s.SerializeToString())
        s.ClearField("decision_time_ms")
        return s.SerializeToString(deterministic=True)

    assert sorted(map(strip, flink_run["statements"])) == sorted(map(strip, reference.statements))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_alerts_equal_the_anomaly_replay(flink_runs: dict[str, Any], layout: str) -> None:
    flink_run = flink_runs["runs"][layout]
    reference = replay(
        [r.payload for r in flink_runs["records"]],
        load_anomaly_spec(flink_runs["anomaly_spec"]),
        out_of_orderness_ms=OUT_OF_ORDERNESS_MS,
    )
    assert any(a.status == pb.AnomalyAlert.FIRING for a in reference.alerts), "the stream must make alerts"
    assert any(e.at_end_of_input for e in reference.emitted), "and one closed by the end-of-input flush"
    assert reference.late_points > 0, "and some points must be late"
    got = sorted(flink_run["alerts"], key=alert_sort_key)
    want = sorted(reference.alerts, key=alert_sort_key)
    assert [a.SerializeToString(deterministic=True) for a in got] == [
        a.SerializeToString(deterministic=True) for a in want
    ]


def test_flink_and_beam_give_the_same_actions(broker: Any, flink_runs: dict[str, Any]) -> None:
    from streamwarden.jobs.beam.kafka_source import ReadOptions
    from streamwarden.jobs.beam.pipeline import run_beam

    flink_job = flink_runs["runs"]["staged"]["job"]
    suffix = uuid.uuid4().hex[:8]
    outputs = [f"{name}-beam-{suffix}" for name in ("actions", "deadletter", "features", "alerts")]
    create_local_topics(broker.bootstrap_servers, outputs, 1)
    topics = flink_job.topics.model_copy(
        update={"actions": outputs[0], "deadletter": outputs[1], "features": outputs[2], "alerts": outputs[3]}
    )
    beam_job = flink_job.model_copy(update={"topics": topics, "group_id": f"beam-parity-{suffix}"})
    n = len(flink_runs["records"])
    run_beam(beam_job, read_options=ReadOptions(max_records=n, bundle_max_ms=100))  # type: ignore[call-arg]

    beam = [
        pb.Action.FromString(r.value)
        for r in read_topic(embedded_kafka_config(broker.bootstrap_servers), outputs[0])
    ]
    for layout, run in flink_runs["runs"].items():
        got = Counter(a.action_id for a in run["actions"])
        assert Counter(a.action_id for a in beam) == got, f"Beam and the {layout} layout differ"
    assert {a.reasons[0] for a in beam} >= {*ATTRIBUTE_RULES, UNWIND_RULE}
