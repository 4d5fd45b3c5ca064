"""``operators/pipeline.py``: each stage method against the operator it wraps, and the replay reference."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.features.assemble import Assembler, event_partial
from streamwarden.operators.features.replay import replay
from streamwarden.operators.features.synth import T0_MS, make_event, random_stream
from streamwarden.operators.features.window import KeyState
from streamwarden.operators.pipeline import (
    EVENT_KIND,
    LATE_EVENT,
    EventClock,
    Stages,
    StagesConfig,
    dead_letter_reason,
    decode_assembly_state,
    encode_assembly_state,
    entity_key,
    iter_kafka_like,
    key_kind,
    replay_actions,
)
from streamwarden.operators.traffic import iter_traffic, labels, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef

CONFIG = StagesConfig()
NO_MODELS = Stages(CONFIG)  # fan-out, windows and assembly only: models load on first use
TRAFFIC_SPEC = small_spec(seed=3)


@pytest.fixture(scope="module")
def stages() -> Stages:
    return Stages.build(CONFIG, clock=lambda: 1_234)


@pytest.fixture(scope="module")
def records() -> list:
    return list(iter_traffic(TRAFFIC_SPEC))


@pytest.fixture(scope="module")
def traffic(records) -> list[bytes]:
    return [r.payload for r in records]


def test_entity_keys_round_trip_their_kind():
    assert key_kind(entity_key(2, "10.0.0.1|x")) == 2  # ids may contain the separator
    assert key_kind(entity_key(EVENT_KIND, "e1")) == EVENT_KIND


def test_fan_out_routes_every_key_and_the_event_level_partial(stages):
    event = make_event("e1", T0_MS, pb.Event.PLAY, account="a1", ip="10.0.0.1", target_content="t1")
    out = stages.fan_out(event)
    assert out.keys == [entity_key(k, i) for k, i in stages.fanout(event)[1]]
    assert [key_kind(k) for k in out.keys] == [1, 2, 4]  # account, ip, target content
    assert out.event_key == "0|e1"
    assert out.event_partial == event_partial(out.facts)
    partial, state, expiry = stages.velocity(None, out.event_key, out.facts)
    assert partial == out.event_partial and state is None and expiry is None


def test_velocity_bytes_and_object_forms_agree_with_key_state(stages):
    events = random_stream(7, 300, n_accounts=3, disorder_ms=90_000, disorder_fraction=0.2)
    live: dict[str, KeyState] = {}
    as_bytes: dict[str, bytes] = {}
    for event in events:
        fanned = stages.fan_out(event)
        for key in fanned.keys:
            ref = live.setdefault(key, KeyState(stages.plans[key_kind(key)])).on_event(fanned.facts)
            got = stages.velocity(as_bytes.get(key), key, fanned.facts)
            assert got.partial == ref
            assert got.state is not None and got.expiry_ms == live[key].expiry_ms()
            as_bytes[key] = got.state
    assert any(p for p in as_bytes)  # non-trivial: states were written
    late = [k for k, s in live.items() if s.late_events]
    assert late, "the disorder must make some events late for their key"


def test_velocity_drops_state_past_its_expiry(stages):
    key = entity_key(1, "a1")
    first = stages.fan_out(make_event("e1", T0_MS, pb.Event.PLAY, account="a1")).facts
    state = stages.velocity(None, key, first)
    later = stages.fan_out(make_event("e2", T0_MS + 1, pb.Event.PLAY, account="a1")).facts
    kept = stages.velocity(state.state, key, later, watermark_ms=state.expiry_ms - 1)
    assert kept.partial.values[0] == 2  # account.count_event.1m sees both
    _, new, expired = stages.velocity_object(
        stages.decode_key_state(state.state), key, later, watermark_ms=state.expiry_ms
    )
    assert expired and new is not None and new.values()[0] == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), drop=st.booleans())
def test_keyed_assembly_equals_the_assembler(seed, drop):
    stages = NO_MODELS
    rng = random.Random(seed)
    events = random_stream(seed, 12)
    partials = []
    for event in events:
        fanned = stages.fan_out(event)
        partials.append(fanned.event_partial)
        partials.extend(KeyState(stages.plans[key_kind(k)]).on_event(fanned.facts) for k in fanned.keys)
    rng.shuffle(partials)
    if drop:  # one partial never arrives: both must impute the same blocks
        partials.pop(rng.randrange(len(partials)))
    ref = Assembler(stages.spec, timeout_ms=100)
    want = {v.event_id: v for v in (ref.add(p, 0) for p in partials) if v is not None}
    states: dict[str, object] = {}
    got = {}
    for p in partials:
        vector, new = stages.assemble(states.get(p.event_id), p, now_ms=0)  # type: ignore[arg-type]
        if vector is not None:
            got[vector.event_id] = vector
            states.pop(p.event_id, None)
        else:
            assert new is not None
            states[p.event_id] = decode_assembly_state(encode_assembly_state(new))  # as an engine stores it
    assert got == want
    want.update({v.event_id: v for v in ref.expire(100)})
    for eid, state in states.items():
        assert stages.assembly_timeout(eid, state, now_ms=CONFIG.assembly_timeout_ms - 1) is None  # type: ignore[arg-type]
        got[eid] = stages.assembly_timeout(eid, state, now_ms=CONFIG.assembly_timeout_ms)  # type: ignore[arg-type]
    assert got == want
    assert bool(states) == drop


def test_event_clock_gates_events_behind_the_watermark_by_more_than_the_lateness():
    clock = EventClock(out_of_orderness_ms=1_000, allowed_lateness_ms=500)
    assert clock.admit(10_000)
    assert clock.watermark_ms == 9_000
    assert clock.admit(8_500)  # exactly at watermark - lateness: admitted
    assert not clock.admit(8_499)
    assert clock.max_seen_ms == 10_000  # a late event does not move the clock
    assert clock.observe(12_000) == 11_000


def test_replay_accounts_for_every_record_and_catches_the_scenarios(stages, records, traffic):
    result = replay_actions(iter_kafka_like(traffic, "events"), stages)
    c = result.counters
    assert c.records == len(traffic) == c.accounted
    assert c.events == c.vectors == len(result.feature_records)
    malformed = Counter(r.malformed for r in records if r.malformed)
    assert {k: v for k, v in c.dead_letters.items() if k != LATE_EVENT} == malformed
    assert all(dl.source_topic == "events" and dl.source_offset >= 0 for dl in result.dead_letters)
    subjects = {(pb.EntityKind.Name(a.subject.kind).lower(), a.subject.id) for a in result.actions}
    truth = labels(TRAFFIC_SPEC)
    for scenario in ("streaming_farm", "credential_stuffing"):
        entities = {(lab.entity_kind, lab.entity_id) for lab in truth if lab.scenario == scenario}
        assert entities & subjects, f"{scenario} was not actioned"
    assert sum(c.actions.values()) == len(result.actions) and c.suppressed_actions > 0
    assert {a.decision_time_ms for a in result.actions} == {1_234}
    assert len({a.action_id for a in result.actions}) == len(result.actions)  # cooldown dedups repeats


def test_replay_features_equal_the_velocity_reference(stages, traffic):
    result = replay_actions(traffic, stages)
    vectors, _ = replay(list(traffic), stages.spec)
    assert [(r.event_id, tuple(r.values)) for r in result.feature_records] == [
        (v.event_id, v.values) for v in vectors
    ]


def test_replay_is_deterministic_and_batching_does_not_change_actions(stages, traffic, monkeypatch):
    first = replay_actions(traffic, stages, feature_records=False)
    monkeypatch.setattr("streamwarden.operators.pipeline.SCORE_BATCH", 7)
    second = replay_actions(traffic, stages, feature_records=False)
    assert [a.SerializeToString() for a in first.actions] == [a.SerializeToString() for a in second.actions]


def test_late_events_go_to_the_dead_letters_with_their_offset(stages):
    lateness = CONFIG.allowed_lateness_ms + stages.out_of_orderness_ms
    events = [
        make_event("e1", T0_MS, pb.Event.LOGIN, account="a1", ip="10.0.0.1"),
        make_event("e2", T0_MS + lateness + 10_000, pb.Event.LOGIN, account="a1", ip="10.0.0.1"),
        make_event("e3", T0_MS + 9_999, pb.Event.LOGIN, account="a2", ip="10.0.0.2"),  # too late
        make_event("e4", T0_MS + 10_000, pb.Event.LOGIN, account="a2", ip="10.0.0.2"),  # just in time
    ]
    records = [(e.SerializeToString(), SourceRef("ev", 2, 40 + i)) for i, e in enumerate(events)]
    result = replay_actions(records, stages)
    assert result.counters.late_events == 1 and result.counters.events == 3
    (late,) = result.dead_letters
    assert dead_letter_reason(late) == LATE_EVENT and late.source_offset == 42
    assert late.original == events[2].SerializeToString()
    assert [r.event_id for r in result.feature_records] == ["e1", "e2", "e4"]
