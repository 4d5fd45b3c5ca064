"""``streamwarden eval shadow``: the shipped policy against a candidate on the same labeled traffic
(offline replay), rule by rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from streamwarden.jobs.cli.eval import format_diff, run_shadow, shadow_cmd
from streamwarden.operators.evaluation.harness import traffic_from_spec
from streamwarden.operators.pipeline import StagesConfig
from streamwarden.operators.policy import DEFAULT_POLICY_PATH
from streamwarden.operators.traffic import small_spec

PROMOTED, REMOVED, TIGHTENED = "model-only-shadow-flag", "spam-comment-block", "signup-burst-challenge"


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policy with one rule promoted from shadow to enforce, one removed, one tightened."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["version"] = "candidate-1"
    rules = []
    for rule in data["rules"]:
        if rule["id"] == REMOVED:
            continue
        if rule["id"] == PROMOTED:
            rule["mode"] = "enforce"
        if rule["id"] == TIGHTENED:
            assert "asn.count_signup.10m >= 30" in rule["condition"]
            rule["condition"] = rule["condition"].replace(
                "asn.count_signup.10m >= 30", "asn.count_signup.10m >= 60"
            )
        rules.append(rule)
    data["rules"] = rules
    data.get("statements", {}).get("rules", {}).pop(REMOVED, None)  # its DSA mapping goes with it
    path = tmp_path_factory.mktemp("policy") / "candidate.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_shadow_diff_per_rule(candidate: Path) -> None:
    traffic = traffic_from_spec(small_spec(3).scaled_to(80.0))
    diff, run_a, run_b = run_shadow(
        traffic, StagesConfig(policy=DEFAULT_POLICY_PATH), StagesConfig(policy=candidate)
    )
    rules = diff.rules
    assert {PROMOTED, REMOVED, TIGHTENED} <= set(rules)
    promoted = rules[PROMOTED]
    # Same actions, only the mode changed (action keys ignore the mode and the policy version).
    assert (promoted.modes_a, promoted.modes_b) == (["SHADOW_MODE"], ["ENFORCE"])
    assert promoted.in_both > 0 and promoted.only_in_a == promoted.only_in_b == 0
    assert promoted.precision_a == promoted.precision_b and promoted.recall_a == promoted.recall_b
    removed = rules[REMOVED]
    assert removed.actions_a > 0 and removed.actions_b == 0 and removed.in_both == 0
    assert removed.only_in_a > 0 and removed.examples_only_in_a and not removed.examples_only_in_b
    assert removed.recall_b == 0.0 and removed.recall_change == pytest.approx(-(removed.recall_a or 0.0))
    tightened = rules[TIGHTENED]
    assert 0 < tightened.actions_b < tightened.actions_a and tightened.only_in_b == 0
    assert tightened.recall_change is not None and tightened.recall_change < 0
    # Nothing else changed.
    for rule, d in rules.items():
        if rule not in (PROMOTED, REMOVED, TIGHTENED):
            assert d.only_in_a == d.only_in_b == 0 and d.actions_a == d.actions_b, rule
    # B's actions are a subset of A's: the whole policy cannot gain recall (other rules, the model-only
    # one included, may still cover the subjects the tightened rule lets go).
    assert len(run_b.actions) < len(run_a.actions)
    assert diff.overall_b.counted_actions < diff.overall_a.counted_actions
    assert diff.recall_change is not None and diff.recall_change <= 0
    table = format_diff(diff)
    assert any(line.startswith(REMOVED) for line in table.splitlines())
    assert "SHADOW_MODE -> ENFORCE" in table and "only in A: " in table


def test_shadow_command_json(candidate: Path) -> None:
    app = typer.Typer()
    app.command("shadow")(shadow_cmd)
    app.command("other")(lambda: None)
    args = ["shadow", "--policy-a", str(DEFAULT_POLICY_PATH), "--policy-b", str(candidate)]
    result = CliRunner().invoke(app, [*args, "--small", "--duration-s", "30", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert set(out) >= {"rules", "overall", "policy_a", "policy_b", "actions_a", "actions_b", "source"}
    assert out["rules"][REMOVED]["actions_b"] == 0 and out["rules"][REMOVED]["actions_a"] > 0
    assert out["overall"]["a"]["true_positives"] >= out["overall"]["b"]["true_positives"]
    missing = CliRunner().invoke(
        app, ["shadow", "--policy-a", str(DEFAULT_POLICY_PATH), "--policy-b", "nope.yaml", "--small"]
    )
    assert missing.exit_code == 2 and "nope.yaml" in missing.output
