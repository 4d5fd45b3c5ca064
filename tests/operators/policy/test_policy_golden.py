"""Golden files: the policy on recorded feature vectors gives exactly the saved actions.

Each ``golden/<case>/`` holds ``case.yaml`` (policy, feature names, thresholds), ``inputs.jsonl``
(event + features + scores per line) and ``expected.jsonl`` (the actions after the cooldown gate,
one line per input). Rewrite the expected files with ``pytest --update-golden`` (or
``STREAMWARDEN_UPDATE_GOLDEN=1``) and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict, ParseDict

from streamwarden.operators.policy import DEFAULT_POLICY_PATH, CooldownTable, Decider, load_policy
from streamwarden.schemas import streamwarden_pb2 as pb

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "case.yaml").is_file())
DECISION_TIME_MS = 1_800_000_000_000


def _feature_names(spec: Any) -> list[str]:
    if spec == "default":
        from streamwarden.operators.features import default_spec  # the shipped feature spec

        return list(default_spec().feature_names())
    return list(spec)


def run_case(case_dir: Path) -> list[str]:
    """The expected.jsonl lines this case produces now."""
    case = yaml.safe_load((case_dir / "case.yaml").read_text())
    policy_path = DEFAULT_POLICY_PATH if case["policy"] == "default" else case_dir / case["policy"]
    names = _feature_names(case["feature_names"])
    policy = load_policy(policy_path, feature_names=names)
    decider = Decider(policy, names, clock=lambda: DECISION_TIME_MS, thresholds=case.get("thresholds") or {})
    gate = CooldownTable(policy, max_delay_ms=int(case.get("max_delay_ms", 120_000)))
    lines = []
    for raw in (case_dir / "inputs.jsonl").read_text().splitlines():
        row = json.loads(raw)
        event = ParseDict(row["event"], pb.Event())
        actions = gate.filter(decider.decide(event, row["features"], row["scores"], case["model_version"]))
        out = {
            "event_id": event.event_id,
            "actions": [MessageToDict(a, preserving_proto_field_name=True) for a in actions],
        }
        lines.append(json.dumps(out, sort_keys=True))
    return lines


@pytest.mark.parametrize("case", CASES)
def test_policy_golden(case: str, update_golden: bool) -> None:
    case_dir = GOLDEN / case
    got = run_case(case_dir)
    expected_path = case_dir / "expected.jsonl"
    if update_golden:
        expected_path.write_text("\n".join(got) + "\n")
        return
    assert expected_path.is_file(), f"{expected_path} missing: run pytest --update-golden"
    expected = expected_path.read_text().splitlines()
    assert len(got) == len(expected), f"{case}: {len(got)} inputs now, {len(expected)} in {expected_path}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert json.loads(g) == json.loads(e), (
            f"{case}: line {i + 1} of {expected_path} differs\n got: {g}\n exp: {e}"
        )


def test_golden_cases_exist_and_act() -> None:
    """The cases are not vacuous: each has inputs, and at least one input yields an action."""
    assert {"synthetic", "default"} <= set(CASES)
    for case in CASES:
        lines = (GOLDEN / case / "expected.jsonl").read_text().splitlines()
        assert lines and any(json.loads(line)["actions"] for line in lines), case
