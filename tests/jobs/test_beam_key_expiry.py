"""Bounded memory on the Beam job (#13 item 5): churning keys over days of event time on the
DirectRunner (the job's runner: FnApiRunner, one worker, in memory). Keys whose expiry the watermark
has passed are dropped whether or not they are seen again, so the number of live keys stays at about
one longest window's worth of keys; without expiry it is every key ever seen."""

from __future__ import annotations

import gc
import pickle
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.pipeline import Pipeline
from apache_beam.runners.runner import PipelineResult
from apache_beam.testing.util import assert_that, equal_to

from streamwarden.jobs.beam.cooldown import CooldownFn
from streamwarden.jobs.beam.kafka_source import KafkaRecord
from streamwarden.jobs.beam.pipeline import StreamwardenTransform, job_metrics, pipeline_options
from streamwarden.jobs.beam.shared_store import SharedHandle, live_objects
from streamwarden.operators.features.synth import T0_MS, make_event
from streamwarden.operators.pipeline import Stages, StagesConfig, iter_kafka_like, replay_actions
from streamwarden.operators.policy.cooldown import CooldownTable, subject_key
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine]

CONFIG = StagesConfig()
STAGES = Stages.shared(CONFIG)
HOUR_MS = 3_600_000
TICK_MS = 60_000


def _last(result: PipelineResult) -> dict[str, int]:
    """Distributions updated once per bundle end with a value that only grows or is the last state:
    their max."""
    return {name: d[3] for name, d in job_metrics(result).distributions.items()}


def _run(build: Any) -> PipelineResult:
    pipeline = Pipeline(options=pipeline_options())
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def test_churning_keys_stay_bounded_over_three_days_of_event_time():
    interval_ms, hours = 120_000, 72
    n = hours * HOUR_MS // interval_ms  # 2,160 logins, each from a new account, IP and device
    n_asns = 4
    payloads = [
        make_event(
            f"e{i}",
            T0_MS + i * interval_ms,
            pb.Event.LOGIN,
            account=f"acct-{i}",
            ip=f"10.0.{i >> 8}.{i & 255}",
            device=f"dev-{i}",
            asn=64_500 + i % n_asns,
        ).SerializeToString()
        for i in range(n)
    ]
    records = [KafkaRecord("events", 0, i, None, v, 0) for i, v in enumerate(payloads)]

    def build(p: Pipeline) -> None:
        out = (
            p
            | beam.Impulse()
            | beam.FlatMap(lambda _: records)  # one ordered stream, as a partition is read
            | StreamwardenTransform(CONFIG, check_future=False, alerts=False)
        )
        out.actions | "Ids" >> beam.Map(lambda kv: kv)

    result = _run(build)
    dists, counters = _last(result), job_metrics(result).counters
    total_keys = 3 * n + n_asns
    # a key lives until the watermark passes its last event + longest window (24 h) + lateness, rounded
    # up to the tick; the watermark trails the newest event by the out-of-orderness
    longest_ms = max(p.span_ms for p in STAGES.plans.values()) + STAGES.spec.allowed_lateness_ms
    lag_ms = longest_ms + STAGES.out_of_orderness_ms + TICK_MS
    bound = 3 * (lag_ms // interval_ms + 2) + n_asns
    assert counters["events"] == n
    live = counters["new_keys"] - counters.get("expired_keys", 0)
    assert counters["new_keys"] == total_keys
    assert dists["max_live_keys"] <= bound < total_keys // 2, (dists, bound, total_keys)
    assert live == dists["live_keys"] <= bound
    assert counters.get("expired_keys", 0) >= total_keys // 2
    # exactly one copy of the DoFn served every key on the one-worker DirectRunner
    assert dists["velocity_instances"] == 1


def test_expiry_changes_no_output_of_the_whole_job():
    """Accounts that come back after their windows closed (and are expired meanwhile) get the same
    features and actions as in the offline replay, which expires by the same watermark."""
    interval_ms = 600_000
    payloads = []
    for i in range(400):  # 66 h; account k returns every 25 h (after its 24 h windows) at most
        t = T0_MS + i * interval_ms
        account = f"acct-{i % 150}"
        payloads.append(
            make_event(
                f"e{i}", t, pb.Event.PLAY, account=account, ip=f"ip-{i % 7}", play_duration_ms=10_000
            ).SerializeToString()
        )
    records = [KafkaRecord("events", 0, i, None, v, 0) for i, v in enumerate(payloads)]
    reference = replay_actions(iter_kafka_like(payloads, "events"), Stages.build(CONFIG))
    want_actions = [a.action_id for a in reference.actions]
    want_features = [(r.event_id, r.SerializeToString()) for r in reference.feature_records]
    assert len(want_features) == len(payloads)

    def build(p: Pipeline) -> None:
        out = (
            p
            | beam.Impulse()
            | beam.FlatMap(lambda _: records)
            | StreamwardenTransform(CONFIG, write_features=True, check_future=False, alerts=False)
        )
        ids = out.actions | "Ids" >> beam.Map(lambda kv: pb.Action.FromString(kv[1]).action_id)
        assert_that(ids, equal_to(want_actions), label="actions")
        assert out.features is not None
        got = out.features | "Features" >> beam.Map(lambda kv: (kv[0].decode(), kv[1]))
        assert_that(got, equal_to(want_features), label="features")

    result = _run(build)
    counters = job_metrics(result).counters
    assert counters.get("expired_keys", 0) > 100, counters  # accounts dropped, then seen again


def test_a_partition_far_behind_another_keeps_its_keys():
    """Two partitions read interleaved, partition 0 30 h of event time ahead of partition 1: the max
    event time seen passes the expiry of partition 1's keys at once, but the lateness gate (the minimum
    over partitions) does not, so they must not expire. Partition 1's keys are its own, so its events
    get the features the offline replay gives partition 1 alone."""
    ahead_ms = 30 * HOUR_MS
    behind = [
        make_event(
            f"b{i}", T0_MS + i * 60_000, pb.Event.PLAY, account="slow", ip="ip-slow", play_duration_ms=9_000
        )
        for i in range(120)
    ]
    ahead = [
        make_event(f"a{i}", T0_MS + ahead_ms + i * 60_000, pb.Event.PLAY, account=f"fast-{i}", ip="ip-fast")
        for i in range(120)
    ]
    records = []
    for i, (b, a) in enumerate(zip(behind, ahead, strict=True)):  # partition 1 first: it joins the gate
        records.append(KafkaRecord("events", 1, i, None, b.SerializeToString(), 0))
        records.append(KafkaRecord("events", 0, i, None, a.SerializeToString(), 0))
    payloads = [b.SerializeToString() for b in behind]
    reference = replay_actions(iter_kafka_like(payloads, "events"), Stages.build(CONFIG))
    want = [(r.event_id, r.SerializeToString()) for r in reference.feature_records]

    def build(p: Pipeline) -> None:
        out = (
            p
            | beam.Impulse()
            | beam.FlatMap(lambda _: records)
            | StreamwardenTransform(CONFIG, write_features=True, check_future=False, alerts=False)
        )
        assert out.features is not None
        got = (
            out.features
            | beam.Map(lambda kv: (kv[0].decode(), kv[1]))
            | beam.Filter(lambda kv: kv[0].startswith("b"))
        )
        assert_that(got, equal_to(want))

    result = _run(build)
    counters = job_metrics(result).counters
    assert counters["events"] == len(records)
    assert counters.get("late_partials", 0) == 0


def _action(i: int, subject: str, t_ms: int, rule: str) -> pb.Action:
    action = pb.Action(action_id=f"a{i}", event_time_ms=t_ms, verdict=pb.Action.FLAG)
    action.reasons.append(rule)
    action.subject.kind = pb.ACCOUNT
    action.subject.id = subject
    return action


def test_cooldown_subjects_expire_and_admit_the_same_actions_as_the_replay_table():
    rule = "farm-account-flag"  # 10-minute cooldown
    assert STAGES.cooldown_gate.cooldown_ms[rule] == 600_000
    actions = []
    for i in range(
        3_000
    ):  # 75 h: every 90 s an action, 5 live subjects in turn (each every 7.5 min), new ones every 4 h
        t = T0_MS + i * 90_000
        generation = t // (4 * HOUR_MS)
        actions.append(_action(i, f"s{generation}-{i % 5}", t, rule))
    table = CooldownTable(STAGES.policy, max_delay_ms=STAGES.cooldown_max_delay_ms)
    want = [a.action_id for a in table.filter(actions)]
    assert 0 < len(want) < len(actions)
    subjects = {subject_key(a) for a in actions}
    pairs = [(subject_key(a), a.SerializeToString()) for a in actions]

    def build(p: Pipeline) -> None:
        admitted = p | beam.Impulse() | beam.FlatMap(lambda _: pairs) | beam.ParDo(CooldownFn(CONFIG))
        ids = admitted | beam.Map(lambda kv: pb.Action.FromString(kv[1]).action_id)
        assert_that(ids, equal_to(want))

    result = _run(build)
    dists, counters = _last(result), job_metrics(result).counters
    live = counters["cooldown_new_keys"] - counters.get("cooldown_expired_keys", 0)
    assert live == dists["cooldown_live_keys"] <= 2 * 5 < len(subjects) // 4, (dists, len(subjects))
    assert counters["cooldown_new_keys"] >= len(subjects)


class _Box(list[int]):
    pass


def test_every_copy_of_a_handle_shares_one_object_released_with_the_last_copy():
    gc.collect()
    before = live_objects()
    handle: SharedHandle[_Box] = SharedHandle()
    copies = [pickle.loads(pickle.dumps(handle)) for _ in range(3)]  # as a runner unpickles a DoFn
    first = copies[0].acquire(_Box)
    first.append(1)
    assert all(c.acquire(_Box) is first for c in copies) and handle.acquire(_Box) is first
    del handle, copies[:2]
    gc.collect()
    assert live_objects() == before + 1  # one copy left: a rebuilt DoFn finds the same keys
    assert pickle.loads(pickle.dumps(copies[0])).acquire(_Box) == [1]
    del copies
    gc.collect()
    assert live_objects() == before
