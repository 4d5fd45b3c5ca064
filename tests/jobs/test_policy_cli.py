"""``policy validate|test|diff`` through the registered command line."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from streamwarden.jobs.cli.app import app
from streamwarden.operators.policy import DEFAULT_POLICY_PATH

RUNNER = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, list(args))
    return result.exit_code, result.output


def _policy_copy(tmp_path: Path, edit: str = "", version: str | None = None) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    if edit == "tighten":
        rule = next(r for r in data["rules"] if r["id"] == "stuffing-login-challenge")
        rule["condition"] = rule["condition"].replace(">= 0.8", ">= 0.99")
    if edit == "add":
        data["rules"].insert(
            0,
            {
                "id": "free-plan-login-flag",
                "description": "free-plan logins",
                "event_types": ["LOGIN"],
                "condition": 'attributes["plan"] == "free"',
                "subject": "account",
                "verdict": "flag",
                "mode": "shadow",
            },
        )
    if version is not None:
        data["version"] = version
    out = tmp_path / f"policy-{edit or 'same'}-{version or 'v'}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def test_shipped_golden_cases_pass() -> None:
    code, out = _invoke("policy", "test", str(DEFAULT_POLICY_PATH))
    assert code == 0, out
    assert "FAIL" not in out
    assert "18/18 cases pass" in out


def test_a_changed_rule_fails_its_golden_case(tmp_path: Path) -> None:
    code, out = _invoke("policy", "test", str(_policy_copy(tmp_path, "tighten", "x-2")))
    assert code == 1
    assert "FAIL default.yaml: credential stuffing - a successful login" in out
    assert "stuffing-login-challenge" in out and "did not fire" in out


def test_analyst_cases_with_attributes(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "plan.yaml").write_text(
        yaml.safe_dump(
            {
                "cases": [
                    {
                        "name": "free plan flagged in shadow",
                        "event": {
                            "type": "LOGIN",
                            "actor": {"account_id": "a1"},
                            "attributes": {"plan": "free"},
                        },
                        "expect": [
                            {"rule": "free-plan-login-flag", "mode": "shadow", "subject": "account:a1"}
                        ],
                    },
                    {
                        "name": "paid plan not flagged",
                        "event": {
                            "type": "LOGIN",
                            "actor": {"account_id": "a2"},
                            "attributes": {"plan": "paid"},
                        },
                        "expect": [],
                    },
                ]
            }
        )
    )
    policy = _policy_copy(tmp_path, "add", "x-3")
    code, out = _invoke("policy", "test", str(policy), "--cases", str(cases), "--json")
    assert code == 0, out
    assert out.count('"passed": true') == 2


def test_bad_case_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"cases": [{"name": "typo", "features": {"ip.nope": 1}, "expect": []}]}))
    code, out = _invoke("policy", "test", str(DEFAULT_POLICY_PATH), "--cases", str(bad))
    assert code == 2
    assert "typo" in out and "unknown features ['ip.nope']" in out


def test_validate_names_the_rule_and_line(tmp_path: Path) -> None:
    code, out = _invoke("policy", "validate", str(DEFAULT_POLICY_PATH))
    assert code == 0 and out.startswith("ok: default_policy.yaml version")
    broken = tmp_path / "broken.yaml"
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace(
        "asn.count_signup.10m >= 50", "asn.count_signups.10m >= 50"
    )
    broken.write_text(text, encoding="utf-8")
    code, out = _invoke("policy", "validate", str(broken))
    assert code == 2
    assert "signup-burst-asn-review" in out and "asn.count_signups.10m" in out and "did you mean" in out


def test_diff_lists_changes_and_wants_a_version_bump(tmp_path: Path) -> None:
    same = _policy_copy(tmp_path)
    code, out = _invoke("policy", "diff", str(DEFAULT_POLICY_PATH), str(same))
    assert code == 0 and "no rule changed" in out
    code, out = _invoke("policy", "diff", str(DEFAULT_POLICY_PATH), str(_policy_copy(tmp_path, "tighten")))
    assert code == 1
    assert "~ stuffing-login-challenge: condition:" in out and "did not" in out
    code, out = _invoke("policy", "diff", str(DEFAULT_POLICY_PATH), str(_policy_copy(tmp_path, "add", "x-9")))
    assert code == 0, out
    assert "+ free-plan-login-flag: added (flag account, shadow)" in out
    assert "-> x-9" in out
