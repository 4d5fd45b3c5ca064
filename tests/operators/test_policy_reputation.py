"""Unwind rules (``operators/policy/reputation.py``): a flagged target unwinds to the subjects that
touched it, whichever arrives first; the same actions in any arrival order and through the state's
bytes; the policy checks name the file's field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.policy import Decider
from streamwarden.operators.policy.policy import parse_policy
from streamwarden.operators.policy.reputation import (
    ReputationBook,
    TargetState,
    decode_state,
    encode_state,
)
from streamwarden.schemas import streamwarden_pb2 as pb

FEATURES = ["account.plays.1h", "account.spread.1h"]
HOUR = 3_600_000
TARGET_KEY = "target_content:t1"


def _policy(**unwind: object) -> dict[str, object]:
    return {
        "version": "rep-1",
        "rules": [
            {
                "id": "loop-shadow",
                "description": "a looped track",
                "event_types": ["PLAY"],
                "condition": "account.plays.1h >= 100",
                "subject": "target_content",
                "verdict": "shadow",
            },
            {
                "id": "loop-unwind",
                "description": "accounts behind a looped track",
                "event_types": ["PLAY"],
                "condition": "account.plays.1h >= 1",
                "subject": "account",
                "verdict": "flag",
                "unwind": {
                    "target": "target_content",
                    "flagged_by": ["loop-shadow"],
                    "within_ms": HOUR,
                    **unwind,
                },
            },
        ],
    }


def _build(max_delay_ms: int = 0, **unwind: object) -> tuple[Decider, ReputationBook]:
    policy = parse_policy(_policy(**unwind))
    policy.check(FEATURES)
    book = ReputationBook(policy, FEATURES, max_delay_ms=max_delay_ms, clock=lambda: 7)
    return Decider(policy, FEATURES, clock=lambda: 7), book


def _play(i: int, account: str, t: int) -> pb.Event:
    return pb.Event(
        event_id=f"e{i}",
        event_time_ms=t,
        type=pb.Event.PLAY,
        actor=pb.Actor(account_id=account),
        target=pb.Target(content_id="t1"),
    )


Payload = bytes | pb.Action


def _payloads(decider: Decider, book: ReputationBook, plays: list[tuple[str, int, float]]) -> list[Payload]:
    """Each play ``(account, time, plays in the hour)``: a flag (the looped-track action) when the
    account plays 100+, else a touch."""
    out: list[Payload] = []
    for i, (account, t, in_hour) in enumerate(plays):
        values = [in_hour, 1.0]
        touches: list[pb.Action] = []
        for action in decider.decide(_play(i, account, t), values, {}, "m", touches):
            assert action.reasons[0] == "loop-shadow"
            out.append(action)
        for action in touches:
            touch = book.touch(action, _play(i, account, t), values)
            assert touch is not None and touch[0] == TARGET_KEY
            out.append(touch[1])
    return out


def _run(book: ReputationBook, payloads: list[Payload], *, through_bytes: bool = False) -> list[pb.Action]:
    state: TargetState | None = None
    emitted: list[pb.Action] = []
    for payload in payloads:
        if through_bytes and state is not None:
            state = decode_state(encode_state(state))
        result = book.step(TARGET_KEY, payload, state)
        state = result.state
        emitted += result.actions
    return emitted


def test_a_flag_unwinds_earlier_touches_and_a_later_touch_acts_at_once() -> None:
    decider, book = _build()
    plays = [
        ("a1", 1_000, 5.0),
        ("a2", 2_000, 5.0),
        ("farm", 3_000, 150.0),
        ("a3", 4_000, 5.0),
        ("a1", 5_000, 6.0),
    ]
    actions = _run(book, _payloads(decider, book, plays))
    # the flagging play's own account touched the track too; a1 acts once, though it touched twice
    assert [a.subject.id for a in actions] == ["a1", "a2", "farm", "a3"]
    assert all(a.reasons == ["loop-unwind"] and a.verdict == pb.Action.FLAG for a in actions)
    first = {a.subject.id: a for a in actions}
    assert first["a1"].event_id == "e0" and first["a1"].event_time_ms == 3_000  # acted at the flag
    assert first["a3"].event_id == "e3" and first["a3"].event_time_ms == 4_000  # at its own touch
    assert len({a.action_id for a in actions}) == 4 and all(a.action_id for a in actions)


def test_touches_too_far_from_the_flagged_window_do_not_act() -> None:
    decider, book = _build()
    # flag in window 5 (5 h .. 6 h): touches from 4 h to before 7 h act, earlier or later ones do not
    plays = [("early", 3 * HOUR + 5, 5.0), ("near", 4 * HOUR + 5, 5.0), ("farm", 5 * HOUR + 10, 150.0)]
    plays += [("late-ok", 7 * HOUR - 1, 5.0), ("late", 7 * HOUR + 1, 5.0)]
    actions = _run(book, _payloads(decider, book, plays))
    assert sorted(a.subject.id for a in actions) == ["farm", "late-ok", "near"]


def test_min_touches_and_min_share() -> None:
    decider, book = _build(min_touches=2, share_of="account.plays.1h", min_share=0.5)
    plays = [("once", 1_000, 2.0), ("twice", 1_100, 2.0), ("twice", 1_200, 2.0)]
    plays += [("diluted", 1_300, 10.0), ("diluted", 1_400, 10.0), ("farm", 2_000, 150.0)]
    actions = _run(book, _payloads(decider, book, plays))
    # "once" touched once; "diluted" touched twice out of 10 plays in the hour (20 % < 50 %)
    assert [a.subject.id for a in actions] == ["twice"]


def test_one_stray_flag_does_not_unwind_a_popular_target() -> None:
    decider, book = _build(min_flags=3)
    listeners = [(f"fan{i}", 1_000 + i, 5.0) for i in range(20)]
    assert _run(book, _payloads(decider, book, [*listeners, ("farm", 2_000, 150.0)])) == []
    flags = [("farm", 2_000 + i, 150.0) for i in range(3)]
    actions = _run(book, _payloads(decider, book, [*listeners, *flags]))
    assert sorted(a.subject.id for a in actions) == sorted([*(f"fan{i}" for i in range(20)), "farm"])


def test_subjects_beyond_the_limit_are_forgotten_and_counted() -> None:
    decider, book = _build(max_subjects=8)
    plays = [(f"a{i}", 1_000 + i, 5.0) for i in range(10)]
    forgotten = 0
    state: TargetState | None = None
    for payload in _payloads(decider, book, plays):
        r = book.step(TARGET_KEY, payload, state)
        state, forgotten = r.state, forgotten + r.forgotten
    assert state is not None
    assert forgotten == 0 and len(state.touched) == 10  # within 5/4 of the limit
    r = book.step(TARGET_KEY, _payloads(decider, book, [("a10", 2_000, 5.0)])[0], state)
    assert r.forgotten == 3 and r.state is not None  # down to the limit, the least recent first
    assert sorted(s for _, s in r.state.touched) == sorted(f"a{i}" for i in range(3, 11))


def test_state_expires_after_the_longest_window() -> None:
    decider, book = _build()
    r = book.step(TARGET_KEY, _payloads(decider, book, [("a1", 1_000, 5.0)])[0], None)
    assert book.expires_at_ms(r.state) == 1_000 + 3 * HOUR
    assert book.expires_at_ms(None) is None


_PLAYS = st.lists(
    st.tuples(
        st.sampled_from(["a1", "a2", "a3", "a4"]),
        st.integers(min_value=0, max_value=4 * HOUR),
        st.sampled_from([2.0, 5.0, 150.0]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=80, deadline=None)
@given(plays=_PLAYS, order=st.randoms(use_true_random=False), min_flags=st.sampled_from([1, 2]))
def test_which_pairs_act_does_not_depend_on_arrival_order_or_on_the_state_bytes(
    plays: list[tuple[str, int, float]], order: object, min_flags: int
) -> None:
    # every arrival order within the allowed delay (the lateness gate holds later events back)
    decider, book = _build(max_delay_ms=4 * HOUR, min_flags=min_flags)
    payloads = _payloads(decider, book, plays)
    in_order = _run(book, payloads)
    assert [a.SerializeToString() for a in _run(book, payloads, through_bytes=True)] == [
        a.SerializeToString() for a in in_order
    ]
    shuffled = list(payloads)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    assert sorted(a.action_id for a in _run(book, shuffled)) == sorted(a.action_id for a in in_order)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flagged_by": ["no-such-rule"]}, "unknown rule 'no-such-rule'"),
        ({"target": "account"}, "the target must differ from the subject"),
        ({"target": "ip"}, "acts on 'target_content', not on the target 'ip'"),
        ({"share_of": "account.plays.24h"}, "unknown feature 'account.plays.24h'"),
    ],
)
def test_bad_unwind_rules_fail_at_load_naming_the_field(change: dict[str, object], message: str) -> None:
    data = _policy()
    rule = data["rules"][1]  # type: ignore[index]
    rule["unwind"] = {**rule["unwind"], **change}
    with pytest.raises(ConfigError, match="unwind") as err:
        parse_policy(data).check(FEATURES)
    assert message in str(err.value)


def test_an_unwind_rule_takes_no_cooldown() -> None:
    data = _policy()
    data["rules"][1]["cooldown_ms"] = 60_000  # type: ignore[index]
    with pytest.raises(ConfigError, match="cooldown_ms"):
        parse_policy(data).check(FEATURES)


def test_the_decider_never_returns_an_unwind_rules_action_as_an_action() -> None:
    decider, _ = _build()
    touches: list[pb.Action] = []
    assert decider.decide(_play(0, "a1", 1_000), [5.0, 1.0], {}, "m", touches) == []
    assert [t.reasons[0] for t in touches] == ["loop-unwind"] and touches[0].action_id == ""
    assert decider.decide(_play(0, "a1", 1_000), [5.0, 1.0], {}, "m") == []
