"""The transparency report against a small fixture whose every figure was computed by hand, and the
``streamwarden transparency`` commands end to end on files (export validated, HTML self-contained)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamwarden.jobs.cli.app import app
from streamwarden.operators.evaluation.actions_io import write_actions
from streamwarden.operators.pipeline import Stages, StagesConfig, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.operators.traffic.labels import Label
from streamwarden.operators.transparency import schema
from streamwarden.operators.transparency.report import build_report, wilson
from streamwarden.operators.transparency.statements import StatementLedger
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import write_delimited

E, S = pb.Action.ENFORCE, pb.Action.SHADOW_MODE


def _action(
    aid: str, rule: str, verdict: int, kind: int, sid: str, eid: str, t: int, mode: int = E
) -> pb.Action:
    return pb.Action(
        action_id=aid, reasons=[rule], verdict=verdict, subject=pb.Subject(kind=kind, id=sid), event_id=eid,  # type: ignore[arg-type]
        event_time_ms=t, decision_time_ms=t + 100, mode=mode, policy_version="v1",  # type: ignore[arg-type]
    )  # fmt: skip


def _sor(a: pb.Action, visibility: list[str], category: str, monetary: str = "") -> pb.StatementOfReasons:
    return pb.StatementOfReasons(
        statement_id="sor-" + a.action_id, action_id=a.action_id, subject=a.subject, rule_id=a.reasons[0],
        event_time_ms=a.event_time_ms, status=pb.StatementOfReasons.ACTIVE, decision_visibility=visibility,
        decision_monetary=monetary, decision_ground=schema.INCOMPATIBLE, category=category,
        automated_detection="Yes", automated_decision="AUTOMATED_DECISION_FULLY", decision_facts="x",
    )  # fmt: skip


def _review(did: str, decision: int, action: pb.Action, at: int, appealed: str = "") -> pb.ReviewLabel:
    return pb.ReviewLabel(
        decision_id=did, decision=decision, action_ids=[action.action_id], rule_ids=list(action.reasons),  # type: ignore[arg-type]
        subject=action.subject, decided_ms=at, appealed_decision_id=appealed,
    )  # fmt: skip


def test_report_figures_match_the_hand_computed_fixture() -> None:
    a1 = _action("a1", "r-block", pb.Action.BLOCK, pb.ACCOUNT, "u1", "e1", 10_000)
    a2 = _action("a2", "r-block", pb.Action.BLOCK, pb.ACCOUNT, "u2", "e2", 20_000)
    a3 = _action("a3", "r-shadow", pb.Action.SHADOW, pb.TARGET_CONTENT, "c1", "e3", 30_000)
    a4 = _action("a4", "r-flag", pb.Action.FLAG, pb.ACCOUNT, "u3", "e4", 40_000, mode=S)
    a5 = _action("a5", "r-block", pb.Action.BLOCK, pb.ACCOUNT, "u4", "e5", 150_000)  # after the period
    removed, demoted = "DECISION_VISIBILITY_CONTENT_REMOVED", "DECISION_VISIBILITY_CONTENT_DEMOTED"
    scams, other_tc = "STATEMENT_CATEGORY_SCAMS_AND_FRAUD", "STATEMENT_CATEGORY_OTHER_VIOLATION_TC"
    sors = [_sor(a1, [removed], scams), _sor(a2, [removed], scams),
            _sor(a3, [demoted], other_tc, "DECISION_MONETARY_OTHER"), _sor(a5, [removed], scams)]  # fmt: skip
    reviews = [
        _review("L1", pb.ReviewLabel.UPHOLD, a1, 70_000),
        _review("L2", pb.ReviewLabel.OVERTURN, a2, 80_000),
        _review("L3", pb.ReviewLabel.OVERTURN, a1, 90_000, appealed="L1"),  # appeal granted
        _review("L4", pb.ReviewLabel.UPHOLD, a5, 200_000),  # after the period
    ]
    ledger = StatementLedger()
    for s in sors:
        ledger.add_statement(s)
    for r in reviews:
        ledger.add_label(r)
    appeals = [pb.ReviewAppeal(appeal_id="p1", subject=a1.subject, appealed_ms=85_000)]
    labels = [
        Label("spam_burst", "account", "u1", 0, 100_000, 5_000),
        Label("spam_burst", "account", "u5", 0, 100_000, 1_000),
        Label("cgnat", "account", "u2", 0, 100_000, None, True),
    ]
    rep = build_report(
        start_ms=0, end_ms=100_000, actions=[a1, a2, a3, a4, a5], statements=ledger.statements(),
        reviews=reviews, appeals=appeals, labels=labels, event_scenarios={"e3": "streaming_farm"},
    )  # fmt: skip

    assert rep.actions == 4
    assert rep.actions_by_verdict == {"BLOCK": 2, "FLAG (shadow mode)": 1, "SHADOW": 1}
    assert (rep.statements, rep.statements_revoked) == (3, 2)  # s1 (appeal granted) and s2 (overturned)
    assert rep.by_restriction == {removed: 2, demoted: 1, "DECISION_MONETARY_OTHER": 1}
    assert rep.by_ground == {schema.INCOMPATIBLE: 3}
    assert rep.by_category == {scams: 2, other_tc: 1}
    assert (rep.automated_detection.successes, rep.automated_detection.n) == (3, 3)
    assert rep.automated_decision == {"AUTOMATED_DECISION_FULLY": 1, "AUTOMATED_DECISION_PARTIALLY": 2}
    # u1: first enforcing action at 10 s, first abusive event at 5 s; u2 is benign, u5 never actioned
    assert (rep.time_to_action_s_median, rep.time_to_action_subjects) == (5.0, 1)
    # reviews in the period: 70 000-10 100, 80 000-20 100, 90 000-10 100 ms -> median 59.9 s
    assert rep.reviews == 3 and rep.reviews_by_outcome == {"overturned": 2, "upheld": 1}
    assert rep.time_to_review_s_median == pytest.approx(59.9)
    assert (rep.appeals_opened, rep.appeals_decided, rep.appeals_by_outcome) == (1, 1, {"granted": 1})
    rules = {r.rule_id: r for r in rep.rules}
    block, shadow, flag = rules["r-block"], rules["r-shadow"], rules["r-flag"]
    assert (block.actions, block.statements, block.reviews, block.mode) == (2, 2, 3, "enforce")
    assert (block.overturn_rate.successes, block.overturn_rate.n) == (2, 3)
    # Wilson 95% for 2/3, from the published formula by hand: (0.2077, 0.9385)
    assert (block.overturn_rate.low, block.overturn_rate.high) == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert block.precision is not None and (block.precision.successes, block.precision.n) == (1, 2)
    assert block.recall is not None and (block.recall.successes, block.recall.n) == (1, 2)  # u1 of {u1, u5}
    assert shadow.precision is not None and (shadow.precision.successes, shadow.precision.n) == (1, 1)
    assert shadow.recall is None  # no labeled targets in the farm scenario
    assert flag.mode == "shadow" and flag.precision is not None and flag.precision.successes == 0
    assert flag.overturn_rate.n == 0 and flag.overturn_rate.value is None


def test_wilson_interval_known_values() -> None:
    assert wilson(0, 0) is None
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_the_transparency_commands_on_files(tmp_path: Path) -> None:
    records = [r.payload for r in iter_traffic(small_spec(seed=11))]
    res = replay_actions(iter_kafka_like(records), Stages.build(StagesConfig()))
    actions = tmp_path / "actions.pb"
    write_actions(actions, res.actions)
    sors = tmp_path / "statements.pb"
    with sors.open("wb") as f:
        write_delimited(f, (s.SerializeToString() for s in res.statements))
    first = res.statements[0]
    reviews = tmp_path / "reviews.pb"
    label = pb.ReviewLabel(decision_id="d1", decision=pb.ReviewLabel.OVERTURN, action_ids=[first.action_id],
                           rule_ids=[first.rule_id], subject=first.subject, decided_ms=first.event_time_ms + 1)  # fmt: skip
    with reviews.open("wb") as f:
        write_delimited(f, [label.SerializeToString()])
    start, end = (
        str(min(a.event_time_ms for a in res.actions)),
        str(max(a.event_time_ms for a in res.actions) + 1),
    )
    runner = CliRunner()

    out = tmp_path / "sor.jsonl"
    r = runner.invoke(app, ["transparency", "statements", "--from", start, "--to", end, "--out", str(out),
                            "--statements-file", str(sors), "--reviews-file", str(reviews)])  # fmt: skip
    assert r.exit_code == 0, r.output
    bodies = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(len(b["statements"]) for b in bodies) == len(res.statements) - 1  # the revoked one left out
    assert all(schema.validate_batch(b) == [] for b in bodies)
    assert "1 revoked" in r.output
    # rebuilt from the actions file with the policy: the same statements
    out2 = tmp_path / "sor2.jsonl"
    r = runner.invoke(app, ["transparency", "statements", "--from", start, "--to", end, "--out", str(out2),
                            "--actions-file", str(actions)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sum(len(json.loads(x)["statements"]) for x in out2.read_text().splitlines()) == len(res.statements)

    page, table, data = tmp_path / "r.html", tmp_path / "r.csv", tmp_path / "r.json"
    r = runner.invoke(app, ["transparency", "report", "--from", start, "--to", end, "--actions-file", str(actions),
                            "--statements-file", str(sors), "--reviews-file", str(reviews),
                            "--out-html", str(page), "--out-csv", str(table), "--out-json", str(data)])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(data.read_text())
    assert report["statements"] == len(res.statements) and report["statements_revoked"] == 1
    assert report["reviews"] == 1 and report["reviews_by_outcome"] == {"overturned": 1}
    rows = list(csv.DictReader(table.open()))
    assert {
        "section": "statements",
        "key": "total",
        "value": str(len(res.statements)),
        "low": "",
        "high": "",
    } in rows
    text = page.read_text()
    assert "Plotly.newPlot" in text and "<script src=" not in text  # plotly.js inlined: no network needed
    assert "Restrictions by type" in text
    bad = runner.invoke(
        app, ["transparency", "report", "--from", "2024-13-01", "--to", end, "--actions-file", str(actions)]
    )
    assert bad.exit_code != 0 and "expected YYYY-MM-DD" in bad.output
