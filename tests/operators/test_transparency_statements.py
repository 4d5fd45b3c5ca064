"""Statements of reasons: one valid statement per enforcing restrictive action (replay of generated
traffic with the shipped policy), none for shadow mode, flags or exempt rules; deterministic ids; the
policy's mapping validated at load (file, line, rule, field); review revisions; the batch export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.pipeline import (
    ReplayResult,
    Stages,
    StagesConfig,
    iter_kafka_like,
    replay_actions,
)
from streamwarden.operators.policy.policy import DEFAULT_POLICY_PATH, load_policy
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.operators.transparency import schema
from streamwarden.operators.transparency.export import export_period, to_api, write_bodies
from streamwarden.operators.transparency.statements import (
    StatementBuilder,
    StatementLedger,
    apply_review,
    restricts,
    statement_id,
)
from streamwarden.schemas import streamwarden_pb2 as pb

POLICY_TEXT = DEFAULT_POLICY_PATH.read_text()


@pytest.fixture(scope="module")
def replayed() -> ReplayResult:
    records = [r.payload for r in iter_traffic(small_spec(seed=11))]
    return replay_actions(iter_kafka_like(records), Stages.build(StagesConfig()))


def test_every_enforcing_restriction_gets_exactly_one_valid_statement(replayed: ReplayResult) -> None:
    policy = load_policy()
    by_id = {r.id: r for r in policy.rules}
    mapped = policy.statements
    assert mapped is not None
    needs = [
        a
        for a in replayed.actions
        if a.mode == pb.Action.ENFORCE
        and restricts(by_id[a.reasons[0]])
        and mapped.rules[a.reasons[0]].exempt is None
    ]
    assert len(needs) > 100
    by_action = Counter(s.action_id for s in replayed.statements)
    assert by_action == Counter(a.action_id for a in needs)  # exactly one each, none for anything else
    kinds = {pb.Action.Verdict.Name(a.verdict) for a in needs}
    assert {"BLOCK", "SHADOW", "CHALLENGE", "RATE_LIMIT"} <= kinds
    actions = {a.action_id: a for a in replayed.actions}
    for s in replayed.statements:
        assert schema.validate_statement(to_api(s)) == [], s.statement_id
        a = actions[s.action_id]
        assert s.statement_id == statement_id(a.action_id) == s.puid
        assert s.rule_id == a.reasons[0] and s.subject == a.subject
        assert s.automated_decision == "AUTOMATED_DECISION_FULLY" and s.automated_detection == "Yes"
        assert s.status == pb.StatementOfReasons.ACTIVE and s.revision == 0
        # plain words: no scores, no thresholds, no subject ids
        for value in a.scores.values():
            assert f"{value:.3f}"[:5] not in s.decision_facts
        assert s.subject.id not in s.decision_facts
        assert "threshold" not in s.decision_facts.lower()
    # shadow-mode actions (the model-only dry run), flags and reviews produce none
    without = {a.action_id for a in replayed.actions} - set(by_action)
    reasons = Counter(actions[i].reasons[0] for i in without)
    assert reasons["model-only-shadow-flag"] > 0 and reasons["stuffing-login-challenge"] > 0
    assert all(actions[i].mode == pb.Action.SHADOW_MODE or not restricts(by_id[actions[i].reasons[0]]) or
               mapped.rules[actions[i].reasons[0]].exempt for i in without)  # fmt: skip


def test_statements_are_deterministic_across_runs(replayed: ReplayResult) -> None:
    records = [r.payload for r in iter_traffic(small_spec(seed=11))]
    again = replay_actions(iter_kafka_like(records), Stages.build(StagesConfig()))

    def strip(s: pb.StatementOfReasons) -> bytes:
        s = pb.StatementOfReasons.FromString(s.SerializeToString())
        s.ClearField("decision_time_ms")
        return s.SerializeToString(deterministic=True)

    assert sorted(map(strip, again.statements)) == sorted(map(strip, replayed.statements))


def test_a_shadow_mode_restriction_gets_no_statement(tmp_path: Path) -> None:
    text = POLICY_TEXT.replace(
        "    subject: target_content\n    verdict: block\n", "    subject: target_content\n    verdict: block\n    mode: shadow\n", 1
    )  # fmt: skip
    # the mapping of a rule that no longer restricts is itself an error: remove it too
    start = text.index("    spam-comment-block:\n      decision_visibility")
    end = text.index("    spam-message-block:\n      decision_visibility")
    path = tmp_path / "p.yaml"
    path.write_text(text[:start] + text[end:])
    policy = load_policy(path)
    builder = StatementBuilder(policy)
    action = pb.Action(
        action_id="a1", reasons=["spam-comment-block"], mode=pb.Action.SHADOW_MODE, verdict=pb.Action.BLOCK,
        policy_version=policy.version, event_time_ms=1_700_000_000_000,
    )  # fmt: skip
    assert builder.build(action) is None
    action.mode = pb.Action.ENFORCE  # even if an enforce action of it showed up: the rule is not mapped
    assert builder.build(action) is None
    msg = pb.Action(action_id="a2", reasons=["spam-message-block"], mode=pb.Action.ENFORCE,
                    verdict=pb.Action.BLOCK, policy_version=policy.version, event_time_ms=1_700_000_000_000)  # fmt: skip
    s = builder.build(msg)
    assert s is not None and s.application_date == "2023-11-14"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("    spam-message-block:\n      decision", "    spam-message-blok:\n      decision"),
            ["(id=spam-message-block).verdict: enforcing rule 'spam-message-block' restricts (block) but "
             "has no statement of reasons mapping", "statements.rules.spam-message-blok: no rule"],
        ),
        (
            ("category: STATEMENT_CATEGORY_OTHER_VIOLATION_TC", "category: STATEMENT_CATEGORY_SPAM"),
            ["statements.rules.spam-comment-block.category: Input should be"],
        ),
        (
            ("      decision_visibility_other: The follow is not counted in the account's follower numbers.\n", ""),
            ["statements.rules.follow-farm-follow-shadow.decision_visibility_other: required when "
             "decision_visibility holds DECISION_VISIBILITY_OTHER"],
        ),
        (
            ('incompatible_content_ground: "Terms of Service: spam and unsolicited bulk posting"',
             "incompatible_content_ground: " + "x" * 501),
            ["statements.rules.spam-comment-block.incompatible_content_ground: longer than 500 characters"],
        ),
        (
            ("      facts: A comment was not published.\n", ""),
            ["statements.rules.spam-comment-block.facts: required"],
        ),
    ],
)  # fmt: skip
def test_an_invalid_mapping_fails_the_load_naming_file_rule_and_field(
    tmp_path: Path, edit: tuple[str, str], expected: list[str]
) -> None:
    assert edit[0] in POLICY_TEXT
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_TEXT.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    text = str(info.value)
    for part in expected:
        assert part in text
    for line in text.splitlines():
        assert line.startswith(f"{path}:")  # file and line on every problem
        assert int(line.split(":")[1]) > 0


def _label(
    decision: int, *, decision_id: str, action_ids: list[str], at: int, appeal: str = ""
) -> pb.ReviewLabel:
    return pb.ReviewLabel(
        decision_id=decision_id, decision=decision, action_ids=action_ids, decided_ms=at,  # type: ignore[arg-type]
        appealed_decision_id=appeal, subject=pb.Subject(kind=pb.ACCOUNT, id="someone-else"),
    )  # fmt: skip


def test_review_revises_or_revokes_the_statement(replayed: ReplayResult) -> None:
    s = replayed.statements[0]
    t = s.event_time_ms + 3_600_000
    upheld = apply_review(s, _label(pb.ReviewLabel.UPHOLD, decision_id="d1", action_ids=[s.action_id], at=t))
    assert (upheld.revision, upheld.status, upheld.automated_decision) == (
        1, pb.StatementOfReasons.ACTIVE, "AUTOMATED_DECISION_PARTIALLY"
    )  # fmt: skip
    assert (
        upheld.puid == f"{s.statement_id}-d1" and upheld.updated_ms == t and upheld.review_decision_id == "d1"
    )
    assert "decision was upheld" in upheld.decision_facts and schema.validate_statement(to_api(upheld)) == []
    assert (
        apply_review(upheld, _label(pb.ReviewLabel.UPHOLD, decision_id="d1", action_ids=[s.action_id], at=t))
        is upheld
    )
    granted = apply_review(
        upheld,
        _label(pb.ReviewLabel.OVERTURN, decision_id="d2", action_ids=[s.action_id], at=t + 1, appeal="d1"),
    )
    assert (granted.revision, granted.status, granted.appeal) == (2, pb.StatementOfReasons.REVOKED, True)
    assert (
        "appeal was granted" in granted.decision_facts and granted.decision_facts.count("Human review") == 1
    )
    # an older decision arriving late changes nothing
    assert (
        apply_review(
            granted, _label(pb.ReviewLabel.UPHOLD, decision_id="d0", action_ids=[s.action_id], at=t - 5)
        )
        is granted
    )

    # the ledger gives the same result whichever arrives first, and ignores a repeated decision id
    labels = [_label(pb.ReviewLabel.UPHOLD, decision_id="d1", action_ids=[s.action_id], at=t),
              _label(pb.ReviewLabel.OVERTURN, decision_id="d2", action_ids=[s.action_id], at=t + 1, appeal="d1")]  # fmt: skip
    a, b = StatementLedger(), StatementLedger()
    a.add_statement(s)
    for lab in labels:
        a.add_label(lab)
    assert a.add_label(labels[0]) == []
    for lab in labels:
        b.add_label(lab)
    b.add_statement(s)
    assert a.statements() == b.statements() == [granted]


def test_the_batch_export_validates_against_the_field_rules(replayed: ReplayResult, tmp_path: Path) -> None:
    statements = list(replayed.statements)
    revoked = apply_review(statements[0], _label(pb.ReviewLabel.OVERTURN, decision_id="x", action_ids=[statements[0].action_id], at=statements[0].event_time_ms + 1))  # fmt: skip
    statements[0] = revoked
    start, end = min(s.event_time_ms for s in statements), max(s.event_time_ms for s in statements) + 1
    res = export_period(statements, start, end, batch_size=100)
    assert res.statements == len(statements) - 1 and [r.statement_id for r in res.revoked] == [
        revoked.statement_id
    ]
    assert res.invalid == []
    assert [len(b["statements"]) for b in res.bodies][:-1] == [100] * (len(res.bodies) - 1)
    out = tmp_path / "sor.jsonl"
    assert write_bodies(res.bodies, out) == len(res.bodies)
    for line in out.read_text().splitlines():
        assert schema.validate_batch(json.loads(line)) == []
    # a period boundary is half-open on the revision time
    assert export_period(statements, start, start).statements == 0


def test_the_field_rules_catch_what_the_api_refuses(replayed: ReplayResult) -> None:
    good = to_api(replayed.statements[0])
    assert schema.validate_statement(good) == []
    cases = {
        "application_date": ("2024-1-01", "does not match the format YYYY-MM-DD"),
        "content_date": ("1999-12-31", "on or after 2000-01-01"),
        "category": ("STATEMENT_CATEGORY_SPAM", "not one of the allowed values"),
        "automated_decision": ("Yes", "not one of the allowed values"),
        "territorial_scope": (["DE", "US"], "not among the allowed values"),
        "decision_facts": ("x" * 5001, "longer than 5000"),
        "puid": ("sor 1", "only letters, digits"),
        "content_type": ([], "required"),
        "end_date_visibility_restriction": ("2023-12-31", "on or after application_date"),
    }
    for field, (value, message) in cases.items():
        bad = dict(good, **{field: value})
        problems = schema.validate_statement(bad)
        assert any(p.startswith(f"{field}:") and message in p for p in problems), (field, problems)
    no_decision = {k: v for k, v in good.items() if k != "decision_visibility"}
    assert any("at least one of" in p for p in schema.validate_statement(no_decision))
    illegal = dict(good, decision_ground=schema.ILLEGAL)
    assert {p.split(":")[0] for p in schema.validate_statement(illegal)} >= {
        "illegal_content_legal_ground", "illegal_content_explanation", "incompatible_content_ground",
    }  # fmt: skip
    assert schema.validate_batch({"statements": [good] * 101}) != []
    assert any("repeated" in p for p in schema.validate_batch({"statements": [good, good]}))
