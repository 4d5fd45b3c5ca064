"""Evaluation report and shadow diff on hand-built actions and labels; every expected number is worked
out by hand in the comments (not copied from the code's output)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamwarden.operators.evaluation import compare_policies, count_subjects, evaluate, percentile
from streamwarden.operators.traffic import ENTITY_KINDS, Label
from streamwarden.schemas import streamwarden_pb2 as pb

A = pb.Action
FARM, SPAM, STUFF, SIGNUP = "streaming_farm", "spam_burst", "credential_stuffing", "signup_burst"
KIND = {
    "account": pb.ACCOUNT,
    "ip": pb.IP,
    "device": pb.DEVICE,
    "target_content": pb.TARGET_CONTENT,
    "target_account": pb.TARGET_ACCOUNT,
    "asn": pb.ASN,
}


def _labels() -> list[Label]:
    farm = [("account", f"A{i}") for i in range(1, 5)] + [("target_content", "T1"), ("target_content", "T2")]
    farm.append(("ip", "I1"))
    spam = [("account", "S1"), ("account", "S2"), ("device", "D1")]
    return (
        [Label(FARM, k, i, 1_000_000, 2_000_000) for k, i in farm]
        + [Label(SPAM, k, i, 1_500_000, 1_800_000) for k, i in spam]
        + [Label(STUFF, "ip", ip, 1_700_000, 1_900_000) for ip in ("I5", "I6")]
        + [Label(SIGNUP, "asn", "64512", 1_900_000, 1_950_000)]
    )


def _act(
    rule: str,
    kind: str,
    subject: str,
    t_ms: int,
    event_id: str,
    verdict: int = A.FLAG,
    mode: int = A.ENFORCE,
    decision_ms: int = 0,
) -> pb.Action:
    return pb.Action(
        action_id=f"{rule}/{subject}/{event_id}",
        event_id=event_id,
        subject=pb.Subject(kind=KIND[kind], id=subject),  # type: ignore[arg-type]
        verdict=verdict,  # type: ignore[arg-type]
        reasons=[rule],
        mode=mode,  # type: ignore[arg-type]
        event_time_ms=t_ms,
        decision_time_ms=decision_ms,
    )


def _actions() -> list[pb.Action]:
    return [
        _act("farm-play-shadow", "target_content", "T1", 1_010_000, "e1", A.SHADOW, decision_ms=10),
        _act("farm-play-shadow", "target_content", "T1", 1_020_000, "e2", A.SHADOW, decision_ms=20),
        _act(
            "farm-play-shadow", "target_content", "T9", 1_030_000, "e3", A.SHADOW, decision_ms=30
        ),  # organic
        _act("farm-account-flag", "account", "A1", 1_040_000, "e4", decision_ms=40),
        _act("farm-account-flag", "account", "A2", 1_100_000, "e5", decision_ms=1_000),
        _act("farm-account-flag", "account", "A3", 1_050_000, "e6", A.ALLOW),  # ALLOW: not an action on A3
        _act("spam-account-review", "account", "S1", 1_560_000, "e7", A.SEND_TO_REVIEW),
        _act("spam-account-review", "account", "O1", 1_570_000, "e8", A.SEND_TO_REVIEW),  # organic
        _act("model-only-shadow-flag", "account", "A4", 1_200_000, "e9", mode=A.SHADOW_MODE),
        _act("spam-message-block", "target_account", "O2", 1_580_000, "e10", A.BLOCK),  # unlabeled kind
        _act("stuffing-ip-rate-limit", "ip", "I9", 1_600_000, "e11", A.RATE_LIMIT),  # organic
    ]


ORGANIC_SEEN = {"account": 100, "target_content": 50, "ip": 40, "target_account": 10, "device": 999}


def test_overall_numbers() -> None:
    r = evaluate(_actions(), _labels(), organic_subjects=ORGANIC_SEEN).overall
    # Counted: every action but the ALLOW (e6) and the shadow-mode one (e9) -> 9.
    assert r.counted_actions == 9
    # Evaluated kinds = kinds those 9 act on; labels name no target_account, so O2 is unattributed.
    assert r.evaluated_kinds == ["account", "ip", "target_account", "target_content"]  # sorted
    assert r.unattributed_by_kind == {"target_account": 1}
    # Actioned: T1 T9 A1 A2 S1 O1 O2 I9 = 8; TP: T1 A1 A2 S1 = 4; FP: T9 O1 I9 = 3.
    assert (r.actioned_subjects, r.true_positives, r.false_positives) == (8, 4, 3)
    assert r.false_positives_by_kind == {"account": 1, "ip": 1, "target_content": 1}
    assert r.precision == pytest.approx(4 / 7)
    # Labeled subjects of evaluated kinds: farm A1-A4 T1 T2 I1 (7) + spam S1 S2 (2) + stuffing I5 I6 (2).
    assert r.labeled_subjects == 11
    assert r.recall == pytest.approx(4 / 11)
    # Organic subjects of the evaluated kinds: 100 + 40 + 50 + 10 (devices are not evaluated).
    assert r.organic_subjects == 200
    assert r.false_positive_rate == pytest.approx(3 / 200)
    # Delays pooled over scenarios: farm 10, 40, 100 s; spam 60 s -> sorted 10 40 60 100.
    # p50 at position 1.5 -> 50; p95 at 2.85 -> 60 + 0.85 * 40 = 94.
    assert r.time_to_action_s_p50 == pytest.approx(50.0)
    assert r.time_to_action_s_p95 == pytest.approx(94.0)
    # First actions per scenario: farm 10 s, spam 60 s -> p50 35, p95 = 10 + 0.95 * 50 = 57.5.
    assert r.time_to_first_action_s_p50 == pytest.approx(35.0)
    assert r.time_to_first_action_s_p95 == pytest.approx(57.5)
    assert r.latency is None


def test_scenario_numbers() -> None:
    s = evaluate(_actions(), _labels(), organic_subjects=ORGANIC_SEEN).scenarios
    assert set(s) == {FARM, SPAM, STUFF, SIGNUP}
    farm = s[FARM]
    # TP: T1 A1 A2; its rules are farm-play-shadow and farm-account-flag, which also hit T9 (organic).
    assert farm.rules == ["farm-account-flag", "farm-play-shadow"]
    assert (farm.true_positives, farm.false_positives, farm.labeled_subjects) == (3, 1, 7)
    assert farm.precision == pytest.approx(3 / 4)
    assert farm.recall == pytest.approx(3 / 7)
    assert farm.recall_by_kind == {"account": 0.5, "ip": 0.0, "target_content": 0.5}
    # From the attack start (1 000 000 ms): T1 10 s, A1 40 s, A2 100 s.
    assert farm.time_to_first_action_s == 10.0
    assert farm.time_to_action_s_p50 == 40.0
    assert farm.time_to_action_s_p95 == pytest.approx(40 + 0.9 * 60)
    spam = s[SPAM]
    # S1 by spam-account-review, which also reviewed O1; D1 is a device: not evaluated.
    assert (spam.precision, spam.recall, spam.labeled_subjects) == (0.5, 0.5, 2)
    assert spam.time_to_action_s_p50 == spam.time_to_action_s_p95 == spam.time_to_first_action_s == 60.0
    # Stuffing IPs were never actioned (the rate limit hit an organic IP): no TP, so no rules and no
    # precision; recall 0. The signup ASN is not an evaluated kind: nothing to score.
    stuff = s[STUFF]
    assert (stuff.precision, stuff.recall, stuff.rules, stuff.time_to_first_action_s) == (None, 0.0, [], None)
    assert (s[SIGNUP].precision, s[SIGNUP].recall, s[SIGNUP].labeled_subjects) == (None, None, 0)


def test_options_shadow_mode_complete_kinds_and_explicit_kinds() -> None:
    labels = _labels()
    # Shadow-mode actions counted: A4 joins the farm's TPs (and model-only-shadow-flag its rules).
    r = evaluate(_actions(), labels, include_shadow_mode=True)
    assert r.overall.true_positives == 5 and r.overall.precision == pytest.approx(5 / 8)
    assert r.scenarios[FARM].recall == pytest.approx(4 / 7)
    assert "model-only-shadow-flag" in r.scenarios[FARM].rules
    # Complete labels for every kind (the generator's): the unlabeled target_account O2 is a FP.
    r = evaluate(_actions(), labels, labeled_kinds=ENTITY_KINDS)
    assert r.overall.false_positives == 4 and r.overall.unattributed_by_kind == {}
    assert r.overall.precision == pytest.approx(4 / 8)
    # Only accounts evaluated: actioned A1 A2 S1 O1 -> precision 3/4; labeled accounts A1-A4 S1 S2.
    r = evaluate(_actions(), labels, subject_kinds=["account"])
    assert r.overall.counted_actions == 4
    assert (r.overall.precision, r.overall.recall) == (pytest.approx(3 / 4), pytest.approx(3 / 6))


def test_event_scenarios_turn_victims_into_collateral() -> None:
    # Which events the attacks produced (e3 and e8 are organic events).
    events = {"e1": FARM, "e2": FARM, "e4": FARM, "e5": FARM, "e7": SPAM, "e10": SPAM, "e11": STUFF}
    r = evaluate(_actions(), _labels(), labeled_kinds=ENTITY_KINDS, event_scenarios=events)
    # O2 (spam message recipient, e10) and I9 (rate limited on a stuffing event, e11) are collateral;
    # T9 (e3) and O1 (e8) were acted on for organic events: still false positives.
    assert r.overall.collateral_by_kind == {"ip": 1, "target_account": 1}
    assert r.overall.false_positives == 2 and r.overall.precision == pytest.approx(4 / 6)
    # spam-message-block acted on a spam event, so it is one of spam's rules; its only subject is
    # collateral, so spam's precision is still S1 against O1.
    assert r.scenarios[SPAM].rules == ["spam-account-review", "spam-message-block"]
    assert r.scenarios[SPAM].precision == 0.5
    assert r.scenarios[STUFF].rules == ["stuffing-ip-rate-limit"]
    assert (r.scenarios[STUFF].precision, r.scenarios[STUFF].false_positives) == (None, 0)
    assert r.scenarios[FARM].precision == pytest.approx(3 / 4)


def test_latency_from_ingest_times() -> None:
    ingest = {f"e{i}": 0 for i in range(1, 6)}
    lat = evaluate(_actions(), _labels(), ingest_ms=ingest).overall.latency
    assert lat is not None
    # All 11 actions (ALLOW and shadow too); e1..e5 known: 10 20 30 40 1000 ms; 6 missing.
    assert (lat.count, lat.missing) == (5, 6)
    assert lat.p50_ms == 30.0
    assert lat.p95_ms == pytest.approx(40 + 0.8 * 960)  # position 3.8
    assert lat.p99_ms == pytest.approx(40 + 0.96 * 960)  # position 3.96
    assert lat.max_ms == 1000.0


def test_to_json_shape() -> None:
    out = json.loads(evaluate(_actions(), _labels(), organic_subjects=ORGANIC_SEEN).to_json())
    assert set(out) == {"overall", "scenarios", "traps"}
    assert out["traps"] == {}
    assert set(out["scenarios"]) == {FARM, SPAM, STUFF, SIGNUP}
    for entry in out["scenarios"].values():
        assert {"precision", "recall", "time_to_action_s_p50"} <= set(entry)
    assert out["scenarios"][STUFF]["precision"] is None
    assert out["overall"]["false_positive_rate"] == pytest.approx(0.015)


def test_no_actions() -> None:
    r = evaluate([], _labels(), organic_subjects=ORGANIC_SEEN)
    assert r.overall.precision is None and r.overall.recall is None
    assert r.overall.false_positive_rate is None  # no evaluated kinds, so no organic subjects to divide by
    assert set(r.scenarios) == {FARM, SPAM, STUFF, SIGNUP}


@pytest.mark.parametrize("p", [0, 5, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear(p: float) -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert percentile([], p) is None


def test_count_subjects() -> None:
    def ev(account: str, ip: str, track: str = "") -> pb.Event:
        return pb.Event(actor=pb.Actor(account_id=account, ip=ip), target=pb.Target(content_id=track))

    events = [ev("A1", "I1", "T1"), ev("A1", "I1"), ev("O1", "I7", "T1"), ev("O2", "I7", "T8")]
    c = count_subjects(events, _labels(), kinds=("account", "ip", "target_content", "device"))
    # Accounts A1 O1 O2 (A1 labeled); IPs I1 I7 (I1 labeled); tracks T1 T8 (T1 labeled); no devices.
    assert c.seen == {"account": 3, "ip": 2, "target_content": 2, "device": 0}
    assert c.organic == {"account": 2, "ip": 1, "target_content": 1, "device": 0}


def test_shadow_diff_per_rule() -> None:
    a = [
        _act("r1", "target_content", "T1", 1, "e1", A.SHADOW),
        _act("r1", "target_content", "T9", 1, "e3", A.SHADOW),
        _act("r2", "account", "A1", 1, "e4", mode=A.SHADOW_MODE),
        _act("r2", "account", "O1", 1, "e8", mode=A.SHADOW_MODE),
    ]
    b = [
        _act("r1", "target_content", "T1", 1, "e1", A.SHADOW),
        _act("r1", "target_content", "T2", 1, "e2", A.SHADOW),
        _act("r2", "account", "A1", 1, "e4"),
        _act("r2", "account", "O1", 1, "e8"),
        _act("r2", "account", "A2", 1, "e5"),
        _act("r3", "account", "S1", 1, "e7"),
        _act("r6", "account", "O3", 1, "e9", A.ALLOW),  # fired, but an ALLOW is no counted action
    ]
    rules_a = {"r1": "enforce", "r2": "shadow", "r4": "shadow"}
    rules_b = {"r1": "enforce", "r2": "enforce", "r3": "enforce", "r5": "enforce", "r6": "enforce"}
    d = compare_policies(a, b, _labels(), rules_a=rules_a, rules_b=rules_b)
    # Every declared rule has a row, the silent ones (r4 only in A, r5 new in B) included.
    assert set(d.rules) == {"r1", "r2", "r3", "r4", "r5", "r6"}
    assert (d.never_fired_a, d.never_fired_b, d.never_fired_either) == (["r4"], ["r5"], ["r4", "r5"])
    r5 = d.rules["r5"]
    assert (r5.actions_a, r5.actions_b, r5.declared_mode_a, r5.declared_mode_b) == (0, 0, None, "enforce")
    assert d.rules["r2"].declared_mode_a == "shadow" and d.rules["r3"].declared_mode_a is None
    r1 = d.rules["r1"]
    # A: T1 (TP) + T9 (FP); B: T1 + T2 (both TP). Labeled tracks: T1 T2.
    assert (r1.only_in_a, r1.only_in_b, r1.in_both) == (1, 1, 1)
    assert (r1.subjects_only_in_a, r1.subjects_only_in_b) == (1, 1)
    assert (r1.precision_a, r1.precision_b, r1.recall_a, r1.recall_b) == (0.5, 1.0, 0.5, 1.0)
    assert (r1.precision_change, r1.recall_change) == (0.5, 0.5)
    assert r1.examples_only_in_a == ["target_content:T9 event=e3 verdict=SHADOW"]
    r2 = d.rules["r2"]
    # Promoted from shadow to enforce and catching A2 as well; labeled accounts: A1-A4 S1 S2 (6).
    assert (r2.only_in_a, r2.only_in_b, r2.in_both) == (0, 1, 2)
    assert (r2.modes_a, r2.modes_b) == (["SHADOW_MODE"], ["ENFORCE"])
    assert r2.precision_change == pytest.approx(2 / 3 - 1 / 2)
    assert r2.recall_change == pytest.approx(2 / 6 - 1 / 6)
    r3 = d.rules["r3"]
    assert (r3.actions_a, r3.actions_b, r3.precision_a, r3.recall_a) == (0, 1, None, 0.0)
    assert r3.precision_change is None and r3.recall_change == pytest.approx(1 / 6)
    # Enforced, over tracks + accounts (8 labeled): A enforces T1 T9 only (its r2 is shadow mode),
    # B enforces T1 T2 A1 O1 A2 S1. A's shadow-mode A1 (TP) and O1 (FP) do not enter A's precision.
    assert (d.overall_a.precision, d.overall_a.recall, d.overall_a.counted_actions) == (0.5, 1 / 8, 2)
    assert d.overall_b.precision == pytest.approx(5 / 6) and d.overall_b.recall == pytest.approx(5 / 8)
    assert d.precision_change == pytest.approx(1 / 3) and d.recall_change == pytest.approx(4 / 8)
    # Shadow mode apart, over accounts (6 labeled): A's A1 + O1; B has no shadow-mode action.
    assert (d.shadow_a.precision, d.shadow_a.recall, d.shadow_a.false_positives) == (0.5, 1 / 6, 1)
    assert (d.shadow_b.counted_actions, d.shadow_b.precision) == (0, None)
    out = json.loads(d.to_json())
    assert (
        set(out) == {"rules", "overall", "shadow", "never_fired"}
        and out["rules"]["r3"]["precision_a"] is None
    )
    assert out["never_fired"] == {"a": ["r4"], "b": ["r5"], "either": ["r4", "r5"]}
    # Without the policies' rule lists nothing is declared, so nothing is reported as never fired.
    bare = compare_policies(a, b, _labels())
    assert set(bare.rules) == {"r1", "r2", "r3"} and bare.never_fired_either == []


def test_benign_trap_subjects_are_false_positives_per_trap() -> None:
    labels = [
        *_labels(),
        Label("cgnat", "ip", "I9", 1_000_000, 2_000_000, benign=True),  # I9 is actioned (e11)
        Label("cgnat", "account", "C1", 1_000_000, 2_000_000, benign=True),  # never actioned
        Label("viral_release", "target_content", "T9", 1_000_000, 2_000_000, benign=True),  # e3
        Label("power_user", "account", "A1", 1_000_000, 2_000_000, benign=True),  # also abusive: abusive wins
    ]
    r = evaluate(_actions(), labels, organic_subjects=ORGANIC_SEEN)
    assert set(r.traps) == {"cgnat", "viral_release", "power_user"}
    assert (r.traps["cgnat"].subjects, r.traps["cgnat"].false_positives) == (2, 1)
    assert r.traps["cgnat"].rules == ["stuffing-ip-rate-limit"]
    assert r.traps["viral_release"].false_positives_by_kind == {"target_content": 1}
    assert r.traps["power_user"].subjects == 0  # A1 is a farm account: not a benign subject
    assert r.overall.trap_false_positives == 2
    # T9, O1, I9 are false positives as before (now two of them are also trap hits); O2 is unattributed.
    assert r.overall.false_positives == 3
    assert r.overall.benign_subjects == 3


def test_recall_over_every_labeled_kind_reports_kinds_never_acted_on() -> None:
    r = evaluate(_actions(), _labels())
    # Evaluated kinds = kinds acted on: account, ip, target_content, target_account. The spam device D1
    # and the signup ASN are labeled but never targeted: in recall_all_kinds' denominator.
    assert r.overall.never_actioned_kinds == ["asn", "device"]
    # Labeled abusive subjects: A1-A4, T1, T2, I1 (farm), S1, S2, D1 (spam), I5, I6, 64512 = 13; actioned:
    # A1, A2, T1, S1 = 4 (A3 only ALLOW, A4 only shadow mode).
    assert r.overall.recall_all_kinds == pytest.approx(4 / 13)
    assert r.overall.recall_by_kind == {
        "account": pytest.approx(3 / 6),
        "asn": 0.0,
        "device": 0.0,
        "ip": 0.0,
        "target_content": 0.5,
    }
    assert r.scenarios[SPAM].recall_by_kind_all == {"account": 0.5, "device": 0.0}
    assert r.scenarios[SPAM].recall_all_kinds == pytest.approx(1 / 3)


def test_time_to_action_is_measured_from_each_subjects_own_onset() -> None:
    labels = [
        Label(FARM, "account", "A1", 1_000_000, 2_000_000, first_ms=1_030_000),  # acted on at 1_040_000
        Label(FARM, "account", "A2", 1_000_000, 2_000_000, first_ms=1_090_000),  # acted on at 1_100_000
    ]
    r = evaluate(_actions(), labels).scenarios[FARM]
    assert r.time_to_action_s_p50 == pytest.approx(10.0)
    assert r.time_to_action_s_max == pytest.approx(10.0)
    # The first action of the scenario is still measured from the attack start (1_000_000).
    assert r.time_to_first_action_s == pytest.approx(40.0)


def test_benign_subjects_acted_on_only_through_attack_events_are_victims() -> None:
    labels = [
        *_labels(),
        Label(
            "viral_release", "target_account", "O2", 1_000_000, 2_000_000, benign=True
        ),  # e10: spam's victim
        Label("cgnat", "ip", "I9", 1_000_000, 2_000_000, benign=True),  # e11: organic trigger
    ]
    scen = {f"e{i}": FARM for i in (1, 2, 4, 5, 6, 9)} | {"e7": SPAM, "e10": SPAM}
    r = evaluate(_actions(), labels, event_scenarios=scen)
    assert (r.traps["viral_release"].false_positives, r.traps["viral_release"].collateral) == (0, 1)
    assert (r.traps["cgnat"].false_positives, r.traps["cgnat"].collateral) == (1, 0)
    assert r.overall.trap_false_positives == 1
