"""Actions files round-trip in both encodings; runs pooled into one split keep their subjects apart."""

from __future__ import annotations

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.evaluation.actions_io import read_actions, write_actions
from streamwarden.operators.evaluation.generalize import ScoredRun, score_runs, split_summary
from streamwarden.operators.traffic import Label
from streamwarden.schemas import streamwarden_pb2 as pb


def _act(kind: int, subject: str, t_ms: int, event_id: str, rule: str = "r") -> pb.Action:
    return pb.Action(
        action_id=f"{rule}/{subject}/{event_id}",
        event_id=event_id,
        subject=pb.Subject(kind=kind, id=subject),  # type: ignore[arg-type]
        verdict=pb.Action.FLAG,
        reasons=[rule],
        event_time_ms=t_ms,
        decision_time_ms=t_ms + 5,
    )


@pytest.mark.parametrize("name", ["actions.jsonl", "actions.pb"])
def test_actions_file_round_trip(tmp_path, name):
    actions = [_act(pb.ACCOUNT, "a1", 1_000, "e1"), _act(pb.IP, "1.2.3.4", 2**40, "e2", "x")]
    path = tmp_path / name
    assert write_actions(path, actions) == 2
    assert read_actions(path) == actions


def test_actions_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"action_id": "a"}\n{"nope": 1}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2"):
        read_actions(bad)
    with pytest.raises(ConfigError, match="file not found"):
        read_actions(tmp_path / "missing.pb")


def test_runs_are_pooled_without_merging_subjects_across_runs():
    # The same ASN id is abusive in run 0 and organic in run 1; an action on it in run 1 is a false
    # positive, not a second hit of run 0's subject.
    run0 = ScoredRun(
        [Label("signup_burst", "asn", "9009", 0, 100, first_ms=10)],
        {"e1": "signup_burst"},
        {"asn": 5},
        [_act(pb.ASN, "9009", 40, "e1")],
        10,
        1.0,
    )
    run1 = ScoredRun(
        [
            Label("signup_burst", "account", "n1", 0, 100, first_ms=50),
            Label("cgnat", "ip", "10.0.0.1", 0, 100, benign=True),
        ],
        {},
        {"asn": 5, "ip": 3},
        [_act(pb.ASN, "9009", 60, "e9"), _act(pb.IP, "10.0.0.1", 70, "e8")],
        30,
        1.0,
    )
    report = score_runs([run0, run1])
    s = report.scenarios["signup_burst"]
    assert (s.labeled_subjects, s.true_positives) == (1, 1)  # evaluated kinds: asn, ip (acted on)
    assert s.recall_all_kinds == 0.5  # n1 (account) never actioned
    assert s.time_to_action_s_p50 == pytest.approx(0.03)  # 40 - 10 ms
    assert report.overall.false_positives == 2  # run 1's ASN 9009 and the CGNAT IP
    assert report.traps["cgnat"].false_positives == 1
    out = split_summary(report, [run0, run1])
    assert out["records"] == 40 and out["records_per_s"] == 20.0
    assert out["traps"]["cgnat"] == {"subjects": 1, "false_positives": 1, "collateral": 0, "rules": ["r"]}
