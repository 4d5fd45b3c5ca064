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
from streamwarden.schemas import streamwarden_pb2 as pb

PROMOTED, REMOVED, TIGHTENED = "model-only-shadow-flag", "spam-comment-block", "signup-burst-challenge"
SILENT = "signup-megaburst-shadow"
"""A new rule in the candidate whose condition no generated traffic reaches: it must be listed, not hidden."""


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policy with one rule promoted from shadow to enforce, one removed, one tightened, and
    a new shadow-mode rule that never fires."""
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
    rules.append(
        {
            "id": SILENT,
            "description": "An ASN with a million signups in ten minutes (no traffic here reaches it).",
            "event_types": ["SIGNUP"],
            "condition": "asn.count_signup.10m >= 1000000",
            "subject": "asn",
            "verdict": "send_to_review",
            "mode": "shadow",
        }
    )
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
    # The new rule that never fired has a row and is listed, with its declared mode.
    silent = rules[SILENT]
    assert (silent.actions_a, silent.actions_b, silent.declared_mode_a, silent.declared_mode_b) == (
        0,
        0,
        None,
        "shadow",
    )
    assert SILENT in diff.never_fired_b and SILENT in diff.never_fired_either
    assert SILENT not in diff.never_fired_a and REMOVED not in diff.never_fired_a
    # Nothing else changed.
    for rule, d in rules.items():
        if rule not in (PROMOTED, REMOVED, TIGHTENED, SILENT):
            assert d.only_in_a == d.only_in_b == 0 and d.actions_a == d.actions_b, rule
    assert len(run_b.actions) < len(run_a.actions)
    # Enforced precision counts ENFORCE-mode actions only; shadow-mode ones are reported apart, and the
    # two add up to every non-ALLOW action of the run.
    for run, enforced, shadow in (
        (run_a, diff.overall_a, diff.shadow_a),
        (run_b, diff.overall_b, diff.shadow_b),
    ):
        mode = pb.Action.SHADOW_MODE
        flagged = [x for x in run.actions if x.verdict != pb.Action.ALLOW]
        assert shadow.counted_actions == sum(x.mode == mode for x in flagged)
        assert enforced.counted_actions == sum(x.mode != mode for x in flagged)
    # A's only shadow-mode rule is the model-only one; B enforces it and its new rule never fired.
    assert diff.shadow_a.counted_actions > 0 and diff.shadow_b.counted_actions == 0
    assert diff.overall_b.counted_actions > diff.overall_a.counted_actions
    table = format_diff(diff)
    assert any(line.startswith(REMOVED) for line in table.splitlines())
    assert "SHADOW_MODE -> ENFORCE" in table and "only in A: " in table
    (silent_line,) = [line for line in table.splitlines() if line.startswith(SILENT)]
    assert "new in B, never fired" in silent_line and "- -> SHADOW_MODE" in silent_line
    assert "enforced (ENFORCE-mode actions only)" in table and "shadow mode (recorded, not enforced)" in table
    assert f"in B {SILENT}" in table or f", {SILENT}" in table


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
    assert SILENT in out["never_fired"]["b"] and SILENT in out["rules"]
    assert out["shadow"]["a"]["counted_actions"] > 0 and out["shadow"]["b"]["counted_actions"] == 0
    missing = CliRunner().invoke(
        app, ["shadow", "--policy-a", str(DEFAULT_POLICY_PATH), "--policy-b", "nope.yaml", "--small"]
    )
    assert missing.exit_code == 2 and "nope.yaml" in missing.output
