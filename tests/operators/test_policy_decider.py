"""Decider and cooldown gate: deterministic actions, rule semantics, order-independent dedup."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.policy import CooldownGate, CooldownTable, Decider, parse_policy, subject_key
from streamwarden.operators.policy.cooldown import decode_state, encode_state, rule_hash
from streamwarden.operators.policy.expr import (
    All,
    AnyOf,
    Compare,
    Const,
    Not,
    Num,
    Ref,
    compile_condition,
    parse_text,
)
from streamwarden.schemas import streamwarden_pb2 as pb

FEATURES = ["ip.fail_ratio.10m", "ip.logins.10m", "account.comments.1m", "account.age_s"]
POLICY = {
    "version": "test-1",
    "rules": [
        {
            "id": "cred",
            "description": "failed-login ratio on an IP",
            "event_types": ["LOGIN_FAILED", "LOGIN"],
            "condition": "ip.fail_ratio.10m >= 0.8 and ip.logins.10m >= 20",
            "subject": "ip",
            "verdict": "rate_limit",
            "cooldown_ms": 60_000,
        },
        {
            "id": "spam-block",
            "description": "comment burst",
            "event_types": ["COMMENT"],
            "condition": {"all": [{"feature": "account.comments.1m", "op": ">=", "value": 5}]},
            "subject": "target_content",
            "verdict": "block",
            "stop": True,
        },
        {
            "id": "spam-review",
            "description": "never reached for comments (stop above)",
            "condition": "account.comments.1m >= 5",
            "subject": "account",
            "verdict": "send_to_review",
        },
        {
            "id": "model",
            "description": "model says abusive, young account",
            "condition": "score.gbt >= threshold.gbt and account.age_s < 86400",
            "subject": "asn",
            "verdict": "flag",
            "mode": "shadow",
        },
    ],
}


class Clock:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return 1_000_000 + self.calls


def _decider(clock: Clock | None = None) -> Decider:
    return Decider(parse_policy(POLICY), FEATURES, clock=clock or Clock(), thresholds={"gbt": 0.9})


def _event(event_id: str, t_ms: int, etype: int, **actor: object) -> pb.Event:
    return pb.Event(
        event_id=event_id,
        event_time_ms=t_ms,
        type=etype,  # type: ignore[arg-type]
        actor=pb.Actor(**actor),  # type: ignore[arg-type]
        target=pb.Target(account_id="t1", content_id="c1"),
    )


HOT = {"ip.fail_ratio.10m": 0.9, "ip.logins.10m": 25.0, "account.comments.1m": 7.0, "account.age_s": 100.0}


def test_action_fields_and_clock():
    clock = Clock()
    d = _decider(clock)
    ev = _event("e1", 120_500, pb.Event.LOGIN_FAILED, account_id="a1", ip="10.0.0.1", asn=64500)
    actions = d.decide(ev, HOT, {"gbt": 0.95}, "gbt@abc")
    assert [a.reasons[0] for a in actions] == ["cred", "spam-review", "model"]
    cred = actions[0]
    assert cred.subject == pb.Subject(kind=pb.IP, id="10.0.0.1")
    assert cred.verdict == pb.Action.RATE_LIMIT and cred.mode == pb.Action.ENFORCE
    assert (cred.event_id, cred.event_time_ms, cred.policy_version, cred.model_version) == (
        "e1",
        120_500,
        "test-1",
        "gbt@abc",
    )
    assert dict(cred.scores) == {"gbt": pytest.approx(0.95)}
    assert (
        actions[2].subject == pb.Subject(kind=pb.ASN, id="64500") and actions[2].mode == pb.Action.SHADOW_MODE
    )
    assert clock.calls == 1 and {a.decision_time_ms for a in actions} == {1_000_001}
    assert d.decide(ev, dict.fromkeys(FEATURES, 0.0), {"gbt": 0.0}, "m") == []
    assert clock.calls == 1  # no action, no clock read


def test_ids_are_deterministic_and_anchored():
    ev1 = _event("e1", 120_500, pb.Event.LOGIN_FAILED, ip="10.0.0.1")
    ev2 = _event("e2", 179_999, pb.Event.LOGIN_FAILED, ip="10.0.0.1")
    ev3 = _event("e3", 180_000, pb.Event.LOGIN_FAILED, ip="10.0.0.1")
    a1, a2, a3 = (_decider().decide(e, HOT, {}, "m")[0] for e in (ev1, ev2, ev3))
    again = _decider().decide(ev1, HOT, {}, "m")[0]
    assert again.action_id == a1.action_id and len(a1.action_id) == 32
    assert a1.action_id == a2.action_id  # same 60 s window, same subject, same rule
    assert a3.action_id != a1.action_id  # next window
    # Without a cooldown the anchor is the event.
    c1 = _decider().decide(_event("e1", 1, pb.Event.COMMENT, account_id="a"), HOT, {}, "m")[0]
    c2 = _decider().decide(_event("e2", 1, pb.Event.COMMENT, account_id="a"), HOT, {}, "m")[0]
    assert c1.reasons == ["spam-block"] and c1.action_id != c2.action_id
    # The policy version is part of the id.
    other = Decider(
        parse_policy({**POLICY, "version": "test-2"}), FEATURES, clock=Clock(), thresholds={"gbt": 0.9}
    )
    assert other.decide(ev1, HOT, {}, "m")[0].action_id != a1.action_id


def test_event_types_stop_missing_subject_and_missing_score():
    d = _decider()
    comment = _event("e", 5, pb.Event.COMMENT, account_id="a1")
    assert [a.reasons[0] for a in d.decide(comment, HOT, {}, "m")] == ["spam-block"]  # stop; asn 0 = none
    play = _event("e", 5, pb.Event.PLAY, account_id="a1", asn=7)
    assert [a.reasons[0] for a in d.decide(play, HOT, {}, "m")] == ["spam-review"]  # no gbt score: no 'model'
    assert [a.reasons[0] for a in d.decide(play, HOT, {"gbt": math.nan}, "m")] == ["spam-review"]
    no_ip = _event("e", 5, pb.Event.LOGIN, account_id="a1")
    assert "cred" not in [a.reasons[0] for a in d.decide(no_ip, HOT, {}, "m")]


def test_vector_and_mapping_inputs_agree():
    d = Decider(parse_policy(POLICY), FEATURES, clock=lambda: 7, thresholds={"gbt": 0.9})
    ev = _event("e9", 77, pb.Event.LOGIN_FAILED, account_id="a", ip="1.1.1.1", asn=3)
    vector = [HOT[n] for n in FEATURES]
    by_map = d.decide(ev, HOT, {"gbt": 0.96875}, "m")
    assert len(by_map) == 3
    assert d.decide(ev, vector, {"gbt": 0.96875}, "m") == by_map
    assert d.decide(ev, np.asarray(vector, dtype=np.float32), {"gbt": np.float32(0.96875)}, "m") == by_map
    with pytest.raises(ValueError, match="3 values, the spec has 4"):
        d.decide(ev, vector[:3], {}, "m")


def _action(rule: str, t_ms: int, subject: str = "10.0.0.1") -> pb.Action:
    return pb.Action(
        action_id=f"{rule}:{t_ms}",
        reasons=[rule],
        event_time_ms=t_ms,
        subject=pb.Subject(kind=pb.IP, id=subject),
    )


def test_gate_admits_once_per_window_and_state_round_trips():
    gate = CooldownGate(parse_policy(POLICY), max_delay_ms=120_000)
    assert not gate.gated(_action("spam-block", 1)) and gate.gated(_action("cred", 1))
    ok, state = gate.admit(_action("cred", 60_000), None)
    cred = rule_hash("cred")
    assert ok and decode_state(state) == [(cred, 1)] and len(state) == 1 + 12
    assert gate.admit(_action("cred", 119_999), state) == (False, state)
    ok, state = gate.admit(_action("cred", 59_999), state)  # earlier window, within the delay
    assert ok and decode_state(state) == [(cred, 0), (cred, 1)]
    assert encode_state(decode_state(state)) == state
    assert gate.expires_at_ms(state) == 120_000 + 120_000
    ok, state2 = gate.admit(_action("cred", 400_000), state)  # window 6: windows < 4 are forgotten
    assert ok and decode_state(state2) == [(cred, 6)]
    assert gate.admit(_action("cred", 200_000), state2)[0] is False  # window 3: too late
    assert subject_key(_action("cred", 1)) == "ip:10.0.0.1"
    with pytest.raises(ValueError, match="layout v2"):
        decode_state(b"\x02")
    with pytest.raises(ValueError, match="not 1 \\+ n"):
        decode_state(state[:-1])


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(min_value=0, max_value=120_000), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_admitted_windows_do_not_depend_on_arrival_order(times, seed):
    """Within max_delay_ms, any arrival order admits the same (rule, subject, window) set."""
    policy = parse_policy(POLICY)
    actions = [_action("cred", t, subject=f"s{t % 3}") for t in times]
    shuffled = actions[:]
    random.Random(seed).shuffle(shuffled)

    def admitted(seq: list[pb.Action]) -> set[tuple[str, int]]:
        table = CooldownTable(policy, max_delay_ms=120_000)
        return {(subject_key(a), a.event_time_ms // 60_000) for a in table.filter(seq)}

    expected = {(subject_key(a), a.event_time_ms // 60_000) for a in actions}
    assert admitted(actions) == expected == admitted(shuffled)


def test_table_expires_states():
    table = CooldownTable(parse_policy(POLICY), max_delay_ms=10_000)
    assert len(table.filter([_action("cred", 0), _action("cred", 5), _action("cred", 60_000, "x")])) == 2
    assert table.expire(60_000 + 9_999) == 0
    assert table.expire(70_000) == 1 and list(table.states) == ["ip:x"]


# ---- the expression language as a property: text form round-trips, evaluation is exact ----------

_NAMES = ["a", "b.c", "score.m"]
_leaf = st.builds(
    Compare,
    st.one_of(st.sampled_from(_NAMES).map(Ref), st.integers(-3, 3).map(lambda i: Num(float(i)))),
    st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    st.one_of(st.sampled_from(_NAMES).map(Ref), st.integers(-3, 3).map(lambda i: Num(float(i)))),
)
_tree = st.recursive(
    st.one_of(_leaf, st.booleans().map(Const)),
    lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=4).map(lambda xs: All(tuple(xs))),
        st.lists(kids, min_size=2, max_size=4).map(lambda xs: AnyOf(tuple(xs))),
        kids.map(Not),
    ),
    max_leaves=8,
)


def _reference(node, env: dict[str, float]) -> bool:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        return not _reference(node.item, env)
    if isinstance(node, All):
        return all(_reference(i, env) for i in node.items)
    if isinstance(node, AnyOf):
        return any(_reference(i, env) for i in node.items)
    value = {o: env[o.name] if isinstance(o, Ref) else o.value for o in (node.left, node.right)}
    left, right = value[node.left], value[node.right]
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right,
            "==": left == right, "!=": left != right}[node.op]  # fmt: skip


_value = st.one_of(st.integers(-3, 3).map(float), st.just(math.nan))


@settings(max_examples=300, deadline=None)
@given(tree=_tree, values=st.lists(_value, min_size=3, max_size=3))
def test_compiled_conditions_match_a_reference_evaluator(tree, values):
    """Every closure shape (feature or score against a constant on either side, 2-4 terms) against
    Python's own comparisons, NaN features and a missing score (NaN) included."""
    env = dict(zip(_NAMES, values, strict=True))
    index = {"a": 0, "b.c": 1}
    predicate = compile_condition(tree, index, {})
    reparsed = compile_condition(parse_text(tree.text()), index, {})
    vector = [env["a"], env["b.c"]]
    scores = {} if math.isnan(env["score.m"]) else {"m": env["score.m"]}
    assert predicate(vector, scores) == _reference(tree, env) == reparsed(vector, scores)


def test_event_facts_give_the_same_actions_as_the_event():
    """Engines hold the velocity engine's EventFacts after assembly; the decider accepts them as is."""
    from streamwarden.operators.features import FanOut, default_spec

    fanout = FanOut(default_spec())
    d = Decider(parse_policy(POLICY), FEATURES, clock=lambda: 7, thresholds={"gbt": 0.9})
    for ev in (
        _event("e1", 120_500, pb.Event.LOGIN_FAILED, account_id="a1", ip="10.0.0.1", asn=64500),
        _event("e2", 5, pb.Event.COMMENT, account_id="a1"),
        _event("e3", 9, pb.Event.PLAY, account_id="a2", device_id="d", asn=7),
    ):
        by_event = d.decide(ev, HOT, {"gbt": 0.95}, "m")
        assert by_event, ev.event_id
        assert d.decide(fanout.facts(ev), HOT, {"gbt": 0.95}, "m") == by_event
