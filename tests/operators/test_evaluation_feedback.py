"""Reviewer decisions joined with the feature log (hand-built, every expected row worked out in the
comments), the ``labels`` message format, generated decisions and the dataset file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.evaluation.feedback import (
    ReviewDecision,
    join_training_rows,
    parse_decisions,
    read_dataset,
    sample_organic_reviews,
    simulate_reviews,
    write_dataset,
)
from streamwarden.operators.traffic import Label
from streamwarden.schemas import streamwarden_pb2 as pb

NAMES = ("f.a", "f.b")


def _event(eid: str, t_ms: int, account: str, ip: str = "", device: str = "") -> pb.Event:
    return pb.Event(
        event_id=eid,
        event_time_ms=t_ms,
        type=pb.Event.LOGIN,
        actor=pb.Actor(account_id=account, ip=ip, device_id=device),
        schema_version=1,
    )


def _features(eid: str, *values: float, names: tuple[str, ...] = NAMES) -> pb.FeatureRecord:
    return pb.FeatureRecord(event_id=eid, names=names, values=values)


def test_decision_message_round_trip_and_rejections() -> None:
    d = ReviewDecision("account", "A1", "abuse", 1_700_000_000_000, "spam_burst")
    assert ReviewDecision.from_json(d.to_json()) == d
    assert ReviewDecision.from_json(d.to_json().encode()) == d
    assert d.key() == b"account:A1"
    plain = ReviewDecision("ip", "1.2.3.4", "benign", 5)
    assert "scenario" not in json.loads(plain.to_json())
    assert (
        ReviewDecision.from_json(
            '{"subject_kind":"ip","subject_id":"x","label":"benign","decided_ms":5,"scenario":null}'
        ).scenario
        is None
    )
    bad = {
        "not JSON": b"{nope",
        "not a JSON object": b"[1]",
        "unknown keys": b'{"subject_kind":"ip","subject_id":"x","label":"abuse","decided_ms":5,"extra":1}',
        "missing keys": b'{"subject_kind":"ip","label":"abuse","decided_ms":5}',
        "subject_kind": b'{"subject_kind":"user","subject_id":"x","label":"abuse","decided_ms":5}',
        "label": b'{"subject_kind":"ip","subject_id":"x","label":"spam","decided_ms":5}',
        "decided_ms": b'{"subject_kind":"ip","subject_id":"x","label":"abuse","decided_ms":true}',
        "subject_id": b'{"subject_kind":"ip","subject_id":"","label":"abuse","decided_ms":5}',
    }
    for reason, raw in bad.items():
        with pytest.raises(ValueError, match=reason):
            ReviewDecision.from_json(raw)
    decisions, errors = parse_decisions([d.to_json().encode(), None, *bad.values()])
    assert decisions == [d]
    assert sum(errors.values()) == 1 + len(bad) and errors["empty message"] == 1


D = ReviewDecision


def test_join_rules() -> None:
    decisions = [
        D("account", "A1", "abuse", 3_000, "spam_burst"),
        D("ip", "I1", "abuse", 3_000, "credential_stuffing"),
        D("account", "V1", "benign", 3_000),  # a victim of I1: abuse on the IP wins on its events
        D("account", "R1", "abuse", 1_000, "follow_farm"),
        D("account", "R1", "benign", 4_000),  # reversed later: the latest decision counts
        D("account", "O1", "benign", 2_500),
        D("account", "OLD", "abuse", 100_000),  # its event is older than the lookback
        D("target_content", "T1", "abuse", 3_000),  # not an actor kind: labels no event
    ]
    events = [
        _event("e1", 1_000, "A1"),  # A1 abuse, before its decision -> 1
        _event("e2", 5_000, "A1"),  # after the decision: not seen by the reviewer -> no row
        _event("e3", 1_500, "V1", ip="I1"),  # benign account, abusive IP -> 1 (abuse wins)
        _event("e4", 2_000, "V1"),  # only the benign account -> 0
        _event("e5", 2_000, "R1"),  # reversed to benign -> 0
        _event("e6", 2_000, "O1"),  # -> 0
        _event("e7", 2_600, "O1"),  # after O1's decision -> no row
        _event("e8", 1_000, "OLD"),  # 99 s before the decision, lookback 50 s -> no row
        _event("e9", 1_000, "N1"),  # nobody decided -> no row
    ]
    features = [
        _features("e1", 1.0, 2.0),
        _features("e1", 9.0, 9.0),  # a repeated record (at-least-once sink): the first counts
        _features("e3", 3.0, 4.0),
        _features("e4", 5.0, 6.0),
        _features("e5", 7.0, 8.0),
        _features("e6", 0.5, 0.25),
        _features("e7", 0.0, 0.0),
        _features("e8", 0.0, 0.0),
        _features("e9", 0.0, 0.0),
        _features("e10", 0.0, 0.0),  # no such event
        _features("e2", 0.0, 0.0, 0.0, names=("f.a", "f.b", "f.c")),  # another feature spec: skipped
    ]
    data = join_training_rows(decisions, events, features, lookback_ms=50_000)
    assert data.feature_names == NAMES
    got = [(r.event_id, r.label, r.subject, r.scenario, r.values) for r in data.rows]
    assert got == [
        ("e1", 1, "account:A1", "spam_burst", (1.0, 2.0)),
        ("e3", 1, "ip:I1", "credential_stuffing", (3.0, 4.0)),
        ("e4", 0, "account:V1", "", (5.0, 6.0)),
        ("e5", 0, "account:R1", "", (7.0, 8.0)),
        ("e6", 0, "account:O1", "", (0.5, 0.25)),
    ]
    s = data.stats
    assert (s.decisions, s.subjects, s.events, s.feature_records) == (8, 7, 9, 11)
    assert (s.duplicate_feature_records, s.mismatched_feature_records, s.features_without_event) == (1, 1, 1)
    assert (s.rows, s.positives, s.negatives) == (5, 2, 3)
    # Subjects none of whose events fell in their window: OLD and T1 (A1, I1, V1, R1, O1 all did).
    assert s.subjects_without_rows == 2


LABELS = [
    Label("spam_burst", "account", "S1", 0, 10_000),
    Label("spam_burst", "target_account", "V1", 0, 10_000),
]


def _action(
    kind: int, subject: str, t_ms: int, verdict: int = pb.Action.FLAG, mode: int = pb.Action.ENFORCE
) -> pb.Action:
    return pb.Action(
        event_id=f"e{t_ms}",
        subject=pb.Subject(kind=kind, id=subject),  # type: ignore[arg-type]
        verdict=verdict,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        reasons=["r"],
        event_time_ms=t_ms,
    )


def test_simulated_reviews_decide_actioned_actor_subjects() -> None:
    actions = [
        _action(pb.ACCOUNT, "S1", 2_000),
        _action(pb.ACCOUNT, "S1", 1_000),  # its first action: decided 1_000 + delay
        _action(pb.ACCOUNT, "O1", 1_500),  # organic account actioned -> benign
        _action(pb.TARGET_ACCOUNT, "V1", 1_000),  # not an actor kind -> not reviewed
        _action(pb.ACCOUNT, "O2", 1_000, verdict=pb.Action.ALLOW),  # not an action on O2
        _action(pb.ACCOUNT, "O3", 1_000, mode=pb.Action.SHADOW_MODE),  # shadow: nobody saw it
    ]
    got = simulate_reviews(actions, LABELS, review_delay_ms=100)
    assert got == [D("account", "S1", "abuse", 1_100, "spam_burst"), D("account", "O1", "benign", 1_600)]
    events = [
        _event(f"e{i}", 1_000 + i, acc) for i, acc in enumerate(["S1", "O1", "O2", "O1", "O3", "O4", "O5"])
    ]
    # Unlabeled accounts in order of appearance: O1 O2 O3 O4 O5; every 2nd: O1 O3 O5, after their last event.
    assert sample_organic_reviews(events, LABELS, every=2) == [
        D("account", "O1", "benign", 1_004),
        D("account", "O3", "benign", 1_005),
        D("account", "O5", "benign", 1_007),
    ]
    assert len(sample_organic_reviews(events, LABELS, every=1, limit=2)) == 2


def test_dataset_file_round_trip_is_exact(tmp_path: Path) -> None:
    values = [(0.1, 1e-300), (123456789.123, -0.0)]
    events = [_event("a", 1, "S1"), _event("b", 2, "O1")]
    decisions = [D("account", "S1", "abuse", 10, "spam_burst"), D("account", "O1", "benign", 10)]
    data = join_training_rows(decisions, events, [_features("a", *values[0]), _features("b", *values[1])])
    path = tmp_path / "train.csv"
    assert write_dataset(path, data) == 2
    assert (
        path.read_text().splitlines()[0] == "event_id,event_time_ms,account_id,subject,label,scenario,f.a,f.b"
    )
    back = read_dataset(path)
    assert back.feature_names == NAMES and back.event_ids == ["a", "b"] and back.account_ids == ["S1", "O1"]
    assert back.y.tolist() == [1, 0] and back.scenario.tolist() == ["spam_burst", ""]
    assert back.event_time_ms.tolist() == [1, 2]
    assert np.array_equal(back.x, np.asarray(values, dtype=np.float32))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("id,x\n", ":1: header must start with"),
        ("event_id,event_time_ms,account_id,subject,label,scenario\n", ":1: no feature columns"),
        ("event_id,event_time_ms,account_id,subject,label,scenario,f\na,1,A,s,1,x\n", ":2: 6 columns"),
        (
            "event_id,event_time_ms,account_id,subject,label,scenario,f\na,1,A,s,2,x,0.5\n",
            ":2: label must be 0 or 1",
        ),
        (
            "event_id,event_time_ms,account_id,subject,label,scenario,f\na,1,A,s,1,x,nan\n",
            ":2: feature values must be finite",
        ),
        (
            "event_id,event_time_ms,account_id,subject,label,scenario,f\na,1,A,s,1,x,abc\n",
            ":2: could not convert",
        ),
    ],
)
def test_dataset_file_errors_name_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_dataset(path)
    assert str(info.value).startswith(f"{path}") and problem in str(info.value)
