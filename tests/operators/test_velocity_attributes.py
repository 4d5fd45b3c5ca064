"""Platform fields (``Event.attributes``) in the velocity path: the spec's attribute filter
(``where: {attribute, equals}``), the core's three entry points against the brute-force oracle, the
facts and assembly-state bytes, and the policy reading attributes from the facts as from the event."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.features.facts_codec import (
    FACTS_LAYOUT_ATTRIBUTES,
    FACTS_LAYOUT_VERSION,
    decode_facts,
    encode_facts,
)
from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.replay import VelocityPipeline, VelocityStore
from streamwarden.operators.features.spec import EVENT_TYPE_NAMES, FeatureSpec, parse_spec
from streamwarden.operators.features.synth import T0_MS, make_event, small_feature_spec
from streamwarden.operators.features.window import NO_TIME
from streamwarden.operators.pipeline import decode_assembly_state, encode_assembly_state
from streamwarden.operators.policy import Decider
from streamwarden.operators.policy.policy import parse_policy
from streamwarden.schemas import streamwarden_pb2 as pb
from tests.operators.velocity_paths import oracle, per_key

WINDOWS = {"5s": {"length_ms": 5_000, "bucket_ms": 1_000}, "60s": {"length_ms": 60_000, "bucket_ms": 10_000}}
ALL = list(EVENT_TYPE_NAMES)
FREE_GROUPS: list[dict[str, Any]] = [
    {
        "name": "free",
        "event_types": ALL,
        "where": {"attribute": "plan", "equals": "free"},
        "aggregations": [
            {"name": "count_free", "op": "count"},
            {"name": "distinct_free_ip", "op": "distinct", "field": "ip"},
        ],
    },
    {
        "name": "arm_b",
        "event_types": ["COMMENT", "MESSAGE", "LOGIN"],
        "where": {"attribute": "arm", "equals": "b"},
        "aggregations": [{"name": "sum_url_arm_b", "op": "sum", "field": "url_count"}],
    },
]
ATTRIBUTE_SETS: list[dict[str, str]] = [
    {},
    {"plan": "free"},
    {"plan": "paid"},
    {"plan": "free", "arm": "b"},
    {"arm": "b", "region": "eu"},
    {"plan": "FREE"},
]


def _spec(exact_limit: int = 4096) -> FeatureSpec:
    return small_feature_spec(WINDOWS, exact_limit=exact_limit, precision=8, extra_groups=FREE_GROUPS)


def _events(draws: list[tuple[int, int, int, int, int]]) -> list[pb.Event]:
    t, out = T0_MS, []
    for i, (step, ty, acc, ip, attrs) in enumerate(draws):
        t += step
        ev = make_event(f"e{i}", t, ty, account=f"a{acc}", ip=f"ip{ip}", url_count=ip % 3)
        ev.attributes.update(ATTRIBUTE_SETS[attrs])
        out.append(ev)
    return out


draw = st.tuples(
    st.sampled_from([0, 1, 400, 1_000, 7_000]),
    st.integers(1, 11),
    st.integers(0, 2),
    st.integers(0, 5),
    st.integers(0, 5),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draw, min_size=1, max_size=150))
def test_attribute_filters_agree_on_every_path_with_theoracle(
    draws: list[tuple[int, int, int, int, int]],
) -> None:
    spec = _spec()
    events = _events(draws)
    want = oracle(spec, events)
    assert per_key(spec, events) == want  # KeyState.on_event over facts tuples (the engines' path)
    _, rows, _ = VelocityPipeline(spec).process_batch(events)  # Batch.run over facts
    assert [tuple(r) for r in rows.tolist()] == want
    rows, _ = VelocityPipeline(spec).process_events(events)  # Batch.run_events: the Event's own map
    assert [tuple(r) for r in rows.tolist()] == want
    # the same facts after the bytes the engines send between stages
    fan = FanOut(spec)
    for ev in events:
        facts = fan(ev)[0]
        assert decode_facts(encode_facts(facts)) == facts


def test_only_matching_events_are_counted() -> None:
    spec = _spec()
    events = _events(
        [(0, 8, 0, 1, 1), (10, 8, 0, 2, 2), (10, 8, 0, 3, 0), (10, 8, 0, 4, 3), (10, 8, 0, 4, 5)]
    )
    names = spec.feature_names()
    pipe = VelocityPipeline(spec)
    last = [pipe.process(ev) for ev in events][-1].values
    assert last[names.index("account.count_free.60s")] == 2  # plan=free only (not paid, none, FREE)
    assert last[names.index("account.distinct_free_ip.60s")] == 2
    assert last[names.index("account.sum_url_arm_b.60s")] == 1  # ip4 -> url_count 1, the arm=b event
    assert last[names.index("account.count_event.60s")] == 5


def test_attribute_where_validation_and_fingerprint() -> None:
    spec = _spec()
    assert spec.attribute_tests() == [("arm", "b"), ("plan", "free")]
    base = small_feature_spec(WINDOWS, exact_limit=64, precision=8)
    dumped = base.model_dump_json()
    assert '"where":{"field":"play_duration_ms"' in dumped and "attribute" not in dumped  # fingerprint kept

    def group(where: dict[str, Any]) -> dict[str, Any]:
        return {**FREE_GROUPS[0], "where": where}

    for where, needle in [
        ({"attribute": "plan"}, "equals"),
        ({"attribute": "plan", "equals": "free", "min": 1}, "equals"),
        ({"field": "url_count", "attribute": "plan", "equals": "x"}, "either"),
        ({"field": "url_count", "equals": "x"}, "equals goes with attribute"),
        ({}, "either"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            small_feature_spec(WINDOWS, exact_limit=64, precision=8, extra_groups=[group(where)])
    many = [
        {
            **FREE_GROUPS[0],
            "name": f"g{i}",
            "where": {"attribute": "k", "equals": str(i)},
            "aggregations": [{"name": f"count_{i}", "op": "count"}],
        }
        for i in range(17)
    ]
    with pytest.raises(ConfigError, match="more than 16"):
        small_feature_spec(WINDOWS, exact_limit=64, precision=8, extra_groups=many)
    assert isinstance(parse_spec(_spec().model_dump()), FeatureSpec)  # dumps and loads again


def test_facts_bytes_keep_layout_1_without_attributes_and_round_trip_with() -> None:
    fan = FanOut(_spec())
    plain = fan(make_event("e1", T0_MS, pb.Event.COMMENT, account="a"))[0]
    assert plain.attributes == ()
    data = encode_facts(plain)
    assert data[0] == FACTS_LAYOUT_VERSION and decode_facts(data) == plain
    ev = make_event("e2", T0_MS, pb.Event.COMMENT, account="a")
    ev.attributes.update({"plan": "free", "région": "é" * 300, "": ""})
    facts = fan(ev)[0]
    assert facts.attributes == (("", ""), ("plan", "free"), ("région", "é" * 300))  # sorted by key
    data = encode_facts(facts)
    assert data[0] == FACTS_LAYOUT_ATTRIBUTES and decode_facts(data) == facts
    with pytest.raises(ValueError, match="facts layout v9"):
        decode_facts(bytes([9]) + data[1:])
    with pytest.raises(ValueError):
        decode_facts(data[:-3])  # truncated attributes are refused, not half read
    state = (1, 3, 0, 17, ((1.0, 2.0), None), facts)
    assert decode_assembly_state(encode_assembly_state(state)) == state
    state = (1, 3, 0, 17, ((1.0, 2.0), None), plain)
    assert decode_assembly_state(encode_assembly_state(state)) == state


def test_policy_reads_attributes_from_the_facts_as_from_the_event() -> None:
    policy = parse_policy(
        {
            "version": "attrs-1",
            "rules": [
                {
                    "id": "free-burst",
                    "description": "free-plan accounts commenting fast",
                    "condition": 'attributes["plan"] == "free" and account.count_free.5s >= 2',
                    "subject": "account",
                    "verdict": "flag",
                }
            ],
        }
    )
    spec = _spec()
    decider = Decider(policy, spec.feature_names(), clock=lambda: 5)
    pipe = VelocityPipeline(spec)
    events = _events([(0, 8, 0, 1, 1), (10, 8, 0, 2, 2), (10, 8, 0, 3, 1), (10, 8, 0, 3, 0)])
    from_event, from_facts = [], []
    for ev in events:
        vector = pipe.process(ev)
        from_event += decider.decide(ev, vector.values, {}, "m")
        assert vector.facts is not None
        from_facts += decider.decide(vector.facts, vector.values, {}, "m")
    assert [a.event_id for a in from_facts] == ["e2"]
    assert from_facts == from_event


def test_the_core_refuses_malformed_attributes_and_reads_18_field_facts() -> None:
    spec = _spec()
    store = VelocityStore(spec)
    facts, keys = FanOut(spec)(_events([(0, 8, 0, 1, 1)])[0])
    for bad, error in [
        (["plan", "free"], TypeError),  # not a tuple
        ((("plan",),), ValueError),  # not a pair
        (((1, "free"),), TypeError),  # key not a string
    ]:
        with pytest.raises(error):
            store.on_event(keys[0], facts._replace(attributes=bad))
    assert all(s.high_ms == NO_TIME for s in store.states.values())  # nothing was applied
    short = tuple(facts)[:-1]  # facts of a caller that predates attributes: none
    partial = store.on_event(keys[0], short)  # type: ignore[arg-type]
    names = spec.entity_feature_names("account")
    assert partial.values[names.index("account.count_free.60s")] == 0
    assert partial.values[names.index("account.count_event.60s")] == 1
