"""The policy reads the event's platform fields: ``attributes["key"]`` in the text and YAML forms."""

from __future__ import annotations

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.policy import Decider
from streamwarden.operators.policy.expr import ConditionSyntaxError, compile_condition, parse_text
from streamwarden.operators.policy.policy import parse_policy
from streamwarden.schemas import streamwarden_pb2 as pb

FEATURES = ["account.comments.1m"]


def _policy(condition: object) -> dict[str, object]:
    return {
        "version": "attrs-1",
        "rules": [
            {
                "id": "free-burst",
                "description": "free-plan accounts commenting fast",
                "condition": condition,
                "subject": "account",
                "verdict": "flag",
            }
        ],
    }


def _event(**attributes: str) -> pb.Event:
    return pb.Event(
        event_id="e1",
        event_time_ms=1_000,
        type=pb.Event.COMMENT,
        actor=pb.Actor(account_id="a1"),
        attributes=attributes,
    )


@pytest.mark.parametrize(
    "condition",
    [
        'attributes["plan"] == "free" and account.comments.1m >= 5',
        {
            "all": [
                {"attribute": "plan", "op": "==", "value": "free"},
                {"feature": "account.comments.1m", "op": ">=", "value": 5},
            ]
        },
    ],
)
def test_rule_fires_on_the_attribute_value_only(condition: object) -> None:
    d = Decider(parse_policy(_policy(condition)), FEATURES, clock=lambda: 5)
    hot = {"account.comments.1m": 9.0}
    assert [a.reasons[0] for a in d.decide(_event(plan="free"), hot, {}, "m")] == ["free-burst"]
    assert d.decide(_event(plan="paid"), hot, {}, "m") == []
    assert d.decide(_event(), hot, {}, "m") == []  # missing attribute: false
    assert d.decide(_event(plan="free"), {"account.comments.1m": 1.0}, {}, "m") == []


def test_numeric_attribute_and_missing_semantics() -> None:
    pred = compile_condition(parse_text('attributes["app_build"] >= 420'), {}, {})
    assert pred([], {}, {"app_build": "421"})
    assert not pred([], {}, {"app_build": "419"})
    assert not pred([], {}, {"app_build": "beta"})  # not a number: false
    assert not pred([], {}, {})
    ne = compile_condition(parse_text('attributes["plan"] != "free"'), {}, {})
    assert ne([], {}, {"plan": "paid"}) and not ne([], {}, {"plan": "free"}) and not ne([], {}, {})
    assert not ne([], {})  # no attributes passed at all


def test_text_form_round_trips() -> None:
    tree = parse_text('attributes["a b\\"c"] == "x\\"y" or not attributes["n"] < 3')
    assert parse_text(tree.text()) == tree


@pytest.mark.parametrize(
    ("src", "needle"),
    [
        ('attributes["plan"] < "free"', "== or != only"),
        ('account.comments.1m == "free"', "with an attribute"),
        ('attributes[plan] == "free"', "unexpected character"),
    ],
)
def test_bad_attribute_conditions_are_refused(src: str, needle: str) -> None:
    with pytest.raises(ConditionSyntaxError, match=needle.replace("(", r"\(")):
        parse_text(src)


def test_policy_file_errors_name_the_rule() -> None:
    with pytest.raises(ConfigError, match="free-burst"):
        parse_policy(_policy({"attribute": "plan", "op": ">", "value": "free"}))
