"""``streamwarden policy validate|test|diff``: check a policy file before it reaches a job.

``test`` runs golden cases an analyst writes in YAML (one or more files in a folder)::

    policy_version: "2026.12-1"          # optional: the version the cases were written for
    cases:
      - name: an IP failing logins across accounts is rate limited
        event: {type: LOGIN_FAILED, actor: {ip: 203.0.113.9, account_id: acc_1}}   # proto JSON of an Event
        features: {ip.ratio_login_failed.10m: 0.95, ip.distinct_failed_account.10m: 12}
        scores: {gbt: 0.99}
        expect:                          # exactly these rules fire (order free); [] = none
          - {rule: stuffing-ip-rate-limit, verdict: rate_limit, subject: "ip:203.0.113.9"}

A feature or score not given is missing (NaN): a comparison on it is false, as in the job when a model did
not run. The decision is the decider's for one event, before the cooldown gate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from google.protobuf.json_format import ParseDict, ParseError

from streamwarden.operators.config_io import load_yaml_mapping
from streamwarden.operators.errors import ConfigError, StreamwardenError
from streamwarden.operators.policy import DEFAULT_POLICY_PATH, Decider, Policy, load_policy
from streamwarden.schemas import streamwarden_pb2 as pb

CASES_DIR = DEFAULT_POLICY_PATH.parent / "cases"
"""The golden cases shipped with the default policy."""

FeatureSpecOpt = Annotated[
    Path | None, typer.Option("--feature-spec", help="Feature spec YAML (default: the shipped spec).")
]
ModelCardOpt = Annotated[
    list[Path] | None,
    typer.Option("--model-card", help="Model card YAML, repeatable (default: the shipped models)."),
]


def _feature_names(spec: Path | None) -> list[str]:
    from streamwarden.operators.features.spec import load_spec

    return list(load_spec(spec).feature_names())


def _thresholds(cards: list[Path] | None) -> dict[str, float]:
    """Model name -> threshold, read from the cards (the ONNX files are not needed to check a policy)."""
    from streamwarden.operators.scoring.model_card import ModelCard, default_card_paths

    out: dict[str, float] = {}
    for path in cards or default_card_paths():
        card = ModelCard.model_validate(load_yaml_mapping(path))
        out[card.name] = card.threshold
    return out


def _load(
    path: Path, spec: Path | None, cards: list[Path] | None
) -> tuple[Policy, list[str], dict[str, float]]:
    names = _feature_names(spec)
    thresholds = _thresholds(cards)
    policy = load_policy(path, feature_names=names, model_names=set(thresholds), thresholds=thresholds)
    return policy, names, thresholds


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def validate_cmd(
    path: Annotated[Path, typer.Argument(help="Policy YAML.", exists=True, dir_okay=False)],
    feature_spec: FeatureSpecOpt = None,
    model_card: ModelCardOpt = None,
) -> None:
    """Check a policy file: syntax, rule fields, and every name against the feature spec and the models."""
    try:
        policy, _names, thresholds = _load(path, feature_spec, model_card)
    except (StreamwardenError, ValueError) as exc:
        raise _fail(exc) from exc
    shadow = sum(1 for r in policy.rules if r.mode == "shadow")
    typer.echo(
        f"ok: {path.name} version {policy.version}: {len(policy.rules)} rules ({shadow} in shadow mode), "
        f"names checked against {len(_names)} features and models {sorted(thresholds)}"
    )


# ---------------------------------------------------------------- golden cases


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    name: str
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def _fired(action: pb.Action) -> dict[str, str]:
    return {
        "rule": action.reasons[0] if action.reasons else "",
        "verdict": pb.Action.Verdict.Name(action.verdict).lower(),
        "subject": f"{pb.EntityKind.Name(action.subject.kind).lower()}:{action.subject.id}",
        "mode": "shadow" if action.mode == pb.Action.SHADOW_MODE else "enforce",
    }


def _matches(expected: dict[str, Any], fired: dict[str, str]) -> bool:
    return all(str(v) == fired.get(k) for k, v in expected.items())


def run_case(decider: Decider, case: dict[str, Any], where: str) -> tuple[str, ...]:
    """The problems of one case (empty = passed)."""
    unknown = sorted(set(case) - {"name", "event", "features", "scores", "expect"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    if "expect" not in case:
        raise ConfigError(f"{where}: 'expect' is required (a list; [] when no rule may fire)")
    event = pb.Event(event_id="case", event_time_ms=1_800_000_000_000)
    try:
        ParseDict(case.get("event") or {}, event)
    except ParseError as exc:
        raise ConfigError(f"{where}: event: {exc}") from None
    features = {str(k): float(v) for k, v in (case.get("features") or {}).items()}
    known = set(decider.feature_names)
    bad = sorted(set(features) - known)
    if bad:
        raise ConfigError(f"{where}: unknown features {bad}")
    scores = {str(k): float(v) for k, v in (case.get("scores") or {}).items()}
    vector = [features.get(n, math.nan) for n in decider.feature_names]
    fired = [_fired(a) for a in decider.decide(event, vector, scores, "case")]
    expected = list(case["expect"] or [])
    problems: list[str] = []
    left = list(fired)
    for exp in expected:
        if not isinstance(exp, dict) or "rule" not in exp:
            raise ConfigError(f"{where}: each expect entry needs at least 'rule'")
        hit = next((f for f in left if _matches(exp, f)), None)
        if hit is None:
            same_rule = [f for f in left if f["rule"] == exp["rule"]]
            detail = f" (fired as {same_rule[0]})" if same_rule else " (did not fire)"
            problems.append(f"expected {exp}{detail}")
        else:
            left.remove(hit)
    problems.extend(f"unexpected {f}" for f in left)
    return tuple(problems)


def run_cases(
    policy: Policy, names: list[str], thresholds: dict[str, float], folder: Path
) -> list[CaseResult]:
    decider = Decider(policy, names, clock=lambda: 1_800_000_000_000, thresholds=thresholds)
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else [folder]
    if not files:
        raise ConfigError(f"{folder}: no *.yaml case files")
    results: list[CaseResult] = []
    for file in files:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise ConfigError(f"{file}: expected a mapping with a 'cases' list")
        for i, case in enumerate(data["cases"]):
            if not isinstance(case, dict):
                raise ConfigError(f"{file}: cases[{i}] is not a mapping")
            name = str(case.get("name", f"cases[{i}]"))
            results.append(CaseResult(file.name, name, run_case(decider, case, f"{file}: {name}")))
    return results


def policy_test_cmd(
    path: Annotated[Path, typer.Argument(help="Policy YAML.", exists=True, dir_okay=False)],
    cases: Annotated[
        Path | None,
        typer.Option("--cases", help="Folder (or file) of YAML golden cases (default: the shipped cases)."),
    ] = None,
    feature_spec: FeatureSpecOpt = None,
    model_card: ModelCardOpt = None,
    json_lines: Annotated[bool, typer.Option("--json/--no-json", help="One JSON object per case.")] = False,
) -> None:
    """Run golden cases (YAML: event, features, scores, the rules expected to fire) against a policy."""
    try:
        policy, names, thresholds = _load(path, feature_spec, model_card)
        results = run_cases(policy, names, thresholds, cases or CASES_DIR)
    except (StreamwardenError, ValueError) as exc:
        raise _fail(exc) from exc
    for r in results:
        if json_lines:
            typer.echo(
                json.dumps({"file": r.file, "case": r.name, "passed": r.passed, "problems": r.problems})
            )
        else:
            typer.echo(f"{'PASS' if r.passed else 'FAIL'} {r.file}: {r.name}")
            for p in r.problems:
                typer.echo(f"     {p}")
    failed = sum(1 for r in results if not r.passed)
    typer.echo(f"{len(results) - failed}/{len(results)} cases pass (policy {policy.version})", err=json_lines)
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------- diff


def _rule_fields(policy: Policy) -> dict[str, dict[str, Any]]:
    return {
        r.id: {
            "condition": r.condition.text(),
            "event_types": list(r.event_types) if r.event_types is not None else None,
            "subject": r.subject,
            "verdict": r.verdict,
            "mode": r.mode,
            "cooldown_ms": r.cooldown_ms,
            "stop": r.stop,
        }
        for r in policy.rules
    }


def diff_policies(old: Policy, new: Policy) -> tuple[list[str], bool]:
    """Lines describing what changed between two policies, and whether the rules changed at all."""
    a, b = _rule_fields(old), _rule_fields(new)
    lines = [
        f"+ {rid}: added ({b[rid]['verdict']} {b[rid]['subject']}, {b[rid]['mode']})"
        for rid in b
        if rid not in a
    ]
    lines += [f"- {rid}: removed" for rid in a if rid not in b]
    for rid in a:
        if rid in b and a[rid] != b[rid]:
            for field, before in a[rid].items():
                after = b[rid][field]
                if before != after:
                    lines.append(f"~ {rid}: {field}: {before} -> {after}")
    common = [r for r in a if r in b]
    if [r for r in b if r in a] != common:
        lines.append("~ rule order changed (first match and stop depend on it)")
    return lines, bool(lines)


def diff_cmd(
    old: Annotated[Path, typer.Argument(help="The policy running now.", exists=True, dir_okay=False)],
    new: Annotated[Path, typer.Argument(help="The candidate.", exists=True, dir_okay=False)],
) -> None:
    """Which rules a new policy adds, removes or changes, and whether its version was bumped."""
    try:
        before, after = load_policy(old), load_policy(new)
    except (StreamwardenError, ValueError) as exc:
        raise _fail(exc) from exc
    lines, changed = diff_policies(before, after)
    for line in lines:
        typer.echo(line)
    bumped = before.version != after.version
    typer.echo(
        f"version: {before.version} -> {after.version}" if bumped else f"version: {after.version} (unchanged)"
    )
    if changed and not bumped:
        typer.echo("error: rules changed but the version did not (it is part of every action id)", err=True)
        raise typer.Exit(1)
    if not changed:
        typer.echo("no rule changed")
