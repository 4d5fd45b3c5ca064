"""The Plotly plots of the evaluation report: the numbers behind each plot on hand-built actions and
labels, and a page that carries the plots and plotly.js inline (nothing fetched at view time)."""

from __future__ import annotations

import re

import pytest

from streamwarden.operators.evaluation import evaluate
from streamwarden.operators.evaluation.harness import first_actions
from streamwarden.operators.evaluation.html import render_html
from streamwarden.operators.evaluation.plots import (
    PLOT_IDS,
    kind_counts,
    pr_curve,
    rule_rows,
    subject_scores,
    time_to_action_s,
)
from streamwarden.operators.traffic import Label
from streamwarden.schemas import streamwarden_pb2 as pb

A = pb.Action
K = pb.EntityKind

LABELS = [
    Label("spam_burst", "account", "S1", 1_000, 9_000, first_ms=2_000),
    Label("spam_burst", "account", "S2", 1_000, 9_000),
    Label("spam_burst", "account", "S3", 1_000, 9_000),  # never acted on: a false negative
    Label("credential_stuffing", "ip", "I5", 1_500, 9_000),
    Label("trap", "account", "B1", 0, 9_000, benign=True),  # a known-benign subject
]


def _act(
    rule: str, kind: int, subject: str, t_ms: int, eid: str, gbt: float, mode: int = A.ENFORCE
) -> pb.Action:
    return pb.Action(
        action_id=f"{rule}/{subject}/{eid}",
        event_id=eid,
        subject=pb.Subject(kind=kind, id=subject),  # type: ignore[arg-type]
        verdict=A.FLAG,
        reasons=[rule],
        scores={"gbt": gbt},
        model_version="gbt@abc",
        policy_version="2026.12-9",
        mode=mode,  # type: ignore[arg-type]
        event_time_ms=t_ms,
        decision_time_ms=t_ms + 5,
    )


ACTIONS = [
    _act("spam-flag", K.ACCOUNT, "S1", 5_000, "e1", 0.9),
    _act("spam-flag", K.ACCOUNT, "S1", 3_500, "e2", 0.7),  # earlier: S1's first action, 1.5 s after onset
    _act("spam-flag", K.ACCOUNT, "S2", 1_500, "e3", 0.8),  # 0.5 s after the label's start
    _act("spam-flag", K.ACCOUNT, "O1", 4_000, "e4", 0.6),  # organic: FP
    _act("stuff-ip", K.IP, "I5", 2_000, "e5", 0.95),
    _act("model-only", K.ACCOUNT, "B1", 6_000, "e6", 0.5, mode=A.SHADOW_MODE),  # shadow mode: no mark
]


def test_time_to_action_per_scenario_from_each_subject_onset() -> None:
    marks = first_actions(ACTIONS, LABELS)
    tta = time_to_action_s(marks, LABELS)
    assert sorted(tta["spam_burst"]) == [0.5, 1.5]
    assert tta["credential_stuffing"] == [0.5]
    assert "trap" not in tta


def test_scores_and_precision_recall_curve() -> None:
    scores = subject_scores(ACTIONS)["gbt"]
    assert scores[("account", "S1")] == 0.9  # the highest of its actions
    # Account subjects by score: S1 .9 (TP), S2 .8 (TP), O1 .6 (FP), B1 .5 (benign: FP); I5 .95 (TP).
    # Labeled (abusive) subjects of the scored kinds: S1 S2 S3 I5 = 4.
    points = pr_curve(scores, LABELS)
    assert [p.threshold for p in points] == [0.95, 0.9, 0.8, 0.6, 0.5]
    assert [p.recall for p in points] == [0.25, 0.5, 0.75, 0.75, 0.75]
    assert [p.precision for p in points] == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.6])


def test_rule_rows_and_kind_counts() -> None:
    marks = first_actions(ACTIONS, LABELS)
    rows = rule_rows(ACTIONS, LABELS, marks)
    spam = rows["spam-flag"]
    assert (spam.enforced_actions, spam.shadow_actions, spam.true_positives, spam.false_positives) == (
        4,
        0,
        2,
        1,
    )
    assert spam.precision == pytest.approx(2 / 3)
    model_only = rows["model-only"]
    assert (model_only.enforced_actions, model_only.shadow_actions, model_only.precision) == (0, 1, 0.0)
    counts = kind_counts(marks, LABELS)
    # Enforced only: B1 (shadow mode) is not acted on; S3 is a false negative.
    assert counts["account"] == {"TP": 2, "FP": 1, "victims": 0, "FN": 1}
    assert counts["ip"] == {"TP": 1, "FP": 0, "victims": 0, "FN": 0}


def test_report_page_embeds_plotly_once_and_fetches_nothing() -> None:
    report = evaluate(ACTIONS, LABELS)
    marks = first_actions(ACTIONS, LABELS)
    page = render_html(
        report,
        marks,
        LABELS,
        [5.0],
        start_ms=0,
        end_ms=10_000,
        meta={"engine": "replay"},
        actions=ACTIONS,
        thresholds={"gbt": 0.42},
    )
    for plot_id in PLOT_IDS:
        assert page.count(f'id="{plot_id}"') == 1, plot_id
    # plotly.js inline, once; no script loaded from anywhere.
    assert len(re.findall(r"<script[^>]*>\s*/\*\*\s*\n?\s*\*\s*plotly\.js v", page)) == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    from plotly.offline import get_plotlyjs

    outside_bundle = page.replace(get_plotlyjs(), "")
    assert len(outside_bundle) < len(page) - 1_000_000  # the bundle is there, verbatim
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", outside_bundle)
    # The run table names the policy and model versions the actions carry, and the thresholds.
    assert "<th>policy version</th><td>2026.12-9</td>" in page
    assert "<th>model version</th><td>gbt@abc</td>" in page
    assert "threshold.gbt = 0.420" in page
    # Without actions the page has no Plotly section (and no bundle).
    bare = render_html(report, marks, LABELS, [5.0], start_ms=0, meta={})
    assert "plot-scores" not in bare and "plotly.js v" not in bare
