"""Policy files: every mistake is a ConfigError naming file:line, the rule (index and id) and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.policy import Decider, load_policy
from streamwarden.operators.policy.expr import ConditionSyntaxError, parse_text

FEATURES = ["ip.ratio_login_failed.10m", "ip.count_login.10m", "account.count_comment.1m"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as err:
        load_policy(path, **kwargs)
    return str(err.value)


GOOD = """
version: "v1"
rules:
  - id: cred-stuffing
    description: many failed logins from one IP
    event_types: [LOGIN_FAILED]
    condition: "ip.ratio_login_failed.10m >= 0.8 and ip.count_login.10m >= 20"
    subject: ip
    verdict: rate_limit
    cooldown_ms: 60000
  - id: comment-spam
    description: comment burst with a high model score
    condition:
      all:
        - {feature: account.count_comment.1m, op: ">=", value: 10}
        - {score: gbt, op: ">=", value: threshold.gbt}
    subject: account
    verdict: send_to_review
    mode: shadow
"""


def test_good_policy_loads_with_names_checked(tmp_path):
    policy = load_policy(_write(tmp_path, GOOD), feature_names=FEATURES, model_names={"gbt"})
    assert [r.id for r in policy.rules] == ["cred-stuffing", "comment-spam"]
    assert (
        policy.rules[1].condition.text()
        == "(account.count_comment.1m >= 10.0 and score.gbt >= threshold.gbt)"
    )
    assert policy.source_path.endswith("policy.yaml")


def test_unknown_feature_is_rejected_with_line_rule_and_hint(tmp_path):
    path = _write(tmp_path, GOOD.replace("ip.count_login.10m >= 20", "ip.count_logins.10m >= 20"))
    msg = _error(path, feature_names=FEATURES)
    assert msg == (
        f"{path}:6: rules[0] (id=cred-stuffing).condition: unknown feature 'ip.count_logins.10m'; "
        "did you mean 'ip.count_login.10m'?"
    )


def test_unknown_model_and_threshold(tmp_path):
    path = _write(tmp_path, GOOD)
    assert "unknown model 'score.gbt'" in _error(path, feature_names=FEATURES, model_names={"logreg"})
    assert "unknown model threshold 'threshold.gbt'" in _error(path, thresholds={"logreg": 0.5})


def test_decider_checks_names_too(tmp_path):
    policy = load_policy(_write(tmp_path, GOOD))  # names not checked at load...
    with pytest.raises(ConfigError, match=r"policy.yaml:12: rules\[1\] \(id=comment-spam\)\.condition"):
        Decider(policy, FEATURES, clock=lambda: 0)  # ...but the decider needs threshold.gbt
    Decider(policy, FEATURES, clock=lambda: 0, thresholds={"gbt": 0.9})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "verdict: rate_limit",
            "verdict: ban",
            "rules[0] (id=cred-stuffing).verdict: Input should be 'allow'",
        ),
        ("subject: ip", "subject: user", "rules[0] (id=cred-stuffing).subject: Input should be 'account'"),
        (
            "mode: shadow",
            "mode: dry",
            "rules[1] (id=comment-spam).mode: Input should be 'enforce' or 'shadow'",
        ),
        (
            "cooldown_ms: 60000",
            "cooldown_ms: -1",
            "rules[0] (id=cred-stuffing).cooldown_ms: Input should be greater",
        ),
        ("[LOGIN_FAILED]", "[LOGIN_FAIL]", "rules[0] (id=cred-stuffing).event_types: unknown event types"),
        (
            "id: comment-spam",
            "id: Comment Spam",
            "rules[1] (id=Comment Spam).id: String should match pattern",
        ),
        (
            "    subject: account",
            "    subject: account\n    colour: red",
            "rules[1] (id=comment-spam).colour: Extra",
        ),
        ('op: ">="', 'op: "=>"', "rules[1] (id=comment-spam).condition: all[0].op: expected one of"),
        ("value: 10}", "value: [1]}", "condition: all[0].value: expected a number or a name, got [1]"),
        ('version: "v1"', "", "version: Field required"),
    ],
)
def test_schema_errors_point_at_rule_and_field(tmp_path, old, new, expected):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    msg = _error(path)
    assert msg.startswith(f"{path}:"), msg
    assert expected in msg, msg


def test_error_line_numbers_are_the_offending_lines(tmp_path):
    path = _write(tmp_path, GOOD.replace("verdict: send_to_review", "verdict: nuke"))
    line = next(i + 1 for i, text in enumerate(path.read_text().splitlines()) if "nuke" in text)
    assert _error(path).startswith(f"{path}:{line}: rules[1] (id=comment-spam).verdict:")


def test_duplicate_rule_ids(tmp_path):
    path = _write(tmp_path, GOOD.replace("id: comment-spam", "id: cred-stuffing"))
    assert "rules[1] (id=cred-stuffing).id: duplicate rule id, first used by rules[0]" in _error(path)


def test_empty_and_malformed_files(tmp_path):
    path = _write(tmp_path, 'version: "v1"\nrules: []\n')
    assert "rules: a policy needs at least one rule" in _error(path)
    path.write_text("rules: [\n")
    assert "not valid YAML" in _error(path)
    assert "file not found" in _error(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a >= 1 and", "expected a number or a name at column 11, found end of condition"),
        ("a >= 1 b", "expected 'and', 'or' or end of condition at column 8"),
        ("0 < a < 1", "comparisons do not chain"),
        ("(a > 1", "expected ')' at column 7"),
        ("a = 1", "unexpected character '=' at column 3"),
        ("__import__('os')", 'unexpected character "\'" at column 12'),
        ("a", "expected a comparison operator"),
        ("", "condition is empty"),
    ],
)
def test_expression_syntax_errors_say_where(text, expected):
    with pytest.raises(ConditionSyntaxError) as err:
        parse_text(text)
    assert expected in str(err.value)


def test_expression_precedence_and_forms():
    assert parse_text("a > 1 or b > 2 and not c <= 3").text() == "(a > 1.0 or (b > 2.0 and not c <= 3.0))"
    assert parse_text("(a > 1 or b > 2) and true").text() == "((a > 1.0 or b > 2.0) and true)"
    assert parse_text("a>=-1e-3").text() == "a >= -0.001"
    assert parse_text("score.gbt >= threshold.gbt").text() == "score.gbt >= threshold.gbt"
