"""Interactive plots of one evaluation, drawn with Plotly (the ``[report]`` extra) for the HTML report.

Every figure is computed here from the run's actions and labels, by the definitions of ``report.py``
(counted actions, actioned subjects, collateral); plotly is imported only when a page is rendered, so
``operators`` keeps its base dependencies. The page embeds plotly.js once, inline: nothing is fetched
when the report is viewed.

- *Time to action per scenario*: for each labeled actioned subject, its first counted (enforced) action
  minus its own onset (the label's ``first_ms``, else ``start_ms``), in event-time seconds.
- *Scores per model*: each model's score carried by the actions (``Action.scores``), the highest per
  subject, split into labeled (abusive) and other subjects, with the model's threshold as the policy
  resolves ``threshold.<model>``. Actions are the only place scores leave the job, so only subjects some
  rule fired on (any verdict or mode) are in it, not every subject of the traffic.
- *Precision-recall curve*: thresholding each model's per-subject score over those subjects; recall is
  over every labeled subject of the kinds the actions target (the subjects no action ever scored count
  as missed), so it is what the policy's rules could reach, not the model alone on all traffic.
- *Actions per rule*: counted actions by mode, and the rule's precision over the subjects it acted on
  (labeled = TP; unlabeled non-victims of a complete kind = FP).
- *Subjects per kind*: TP, FP (organic, benign traps included), victims (collateral) and FN (labeled,
  never acted on) per subject kind, enforced actions only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamwarden.operators.evaluation.harness import SubjectMark
from streamwarden.operators.evaluation.report import Subject, counted, subject_of
from streamwarden.operators.traffic.labels import Label
from streamwarden.schemas import streamwarden_pb2 as pb

PLOT_IDS = (
    "plot-time-to-action",
    "plot-scores",
    "plot-pr-curve",
    "plot-rules",
    "plot-kinds",
)


def _abusive(labs: Iterable[Label]) -> set[Subject]:
    return {(x.entity_kind, x.entity_id) for x in labs if not x.benign}


def time_to_action_s(marks: Sequence[SubjectMark], labs: Sequence[Label]) -> dict[str, list[float]]:
    """Scenario → each labeled actioned subject's first action minus its own onset, in seconds."""
    onset: dict[tuple[str, str, str], int] = {}
    for x in labs:
        if not x.benign:
            onset[(x.scenario, x.entity_kind, x.entity_id)] = (
                x.first_ms if x.first_ms is not None else x.start_ms
            )
    out: dict[str, list[float]] = defaultdict(list)
    for m in marks:
        if m.scenario is None:
            continue
        start = onset.get((m.scenario, m.kind, m.subject_id))
        if start is not None:
            out[m.scenario].append((m.time_ms - start) / 1000)
    return dict(out)


def subject_scores(actions: Iterable[pb.Action]) -> dict[str, dict[Subject, float]]:
    """Model → subject → the highest score any action on the subject carried."""
    out: dict[str, dict[Subject, float]] = defaultdict(dict)
    for a in actions:
        s = subject_of(a)
        for model, score in a.scores.items():
            by = out[model]
            if score > by.get(s, float("-inf")):
                by[s] = score
    return dict(out)


@dataclass(frozen=True, slots=True)
class PrPoint:
    threshold: float
    precision: float
    recall: float


def pr_curve(scores: Mapping[Subject, float], labs: Sequence[Label]) -> list[PrPoint]:
    """Precision and recall of "score >= t" for every distinct score t, highest first; recall over every
    labeled subject of the scored kinds."""
    labeled = _abusive(labs)
    kinds = {s[0] for s in scores}
    relevant = sum(1 for s in labeled if s[0] in kinds)
    if not relevant:
        return []
    ordered = sorted(scores.items(), key=lambda kv: -kv[1])
    points: list[PrPoint] = []
    tp = fp = 0
    for i, (subject, score) in enumerate(ordered):
        if subject in labeled:
            tp += 1
        else:
            fp += 1
        if i + 1 == len(ordered) or ordered[i + 1][1] != score:
            points.append(PrPoint(score, tp / (tp + fp), tp / relevant))
    return points


@dataclass(frozen=True, slots=True)
class RuleRow:
    enforced_actions: int
    shadow_actions: int
    true_positives: int
    false_positives: int

    @property
    def precision(self) -> float | None:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else None


def rule_rows(
    actions: Iterable[pb.Action], labs: Sequence[Label], marks: Sequence[SubjectMark]
) -> dict[str, RuleRow]:
    """Rule → counted actions by mode and precision over the subjects it acted on (either mode)."""
    labeled = _abusive(labs)
    complete = {x.entity_kind for x in labs}
    victims = {(m.kind, m.subject_id) for m in marks if m.collateral}
    enforced: dict[str, int] = defaultdict(int)
    shadow: dict[str, int] = defaultdict(int)
    subjects: dict[str, set[Subject]] = defaultdict(set)
    for a in actions:
        if not counted(a, None, include_shadow_mode=True):
            continue
        s = subject_of(a)
        for rule in a.reasons:
            (shadow if a.mode == pb.Action.SHADOW_MODE else enforced)[rule] += 1
            subjects[rule].add(s)
    return {
        rule: RuleRow(
            enforced[rule],
            shadow[rule],
            sum(1 for s in subs if s in labeled),
            sum(1 for s in subs if s not in labeled and s[0] in complete and s not in victims),
        )
        for rule, subs in sorted(subjects.items())
    }


def kind_counts(marks: Sequence[SubjectMark], labs: Sequence[Label]) -> dict[str, dict[str, int]]:
    """Subject kind → {TP, FP, victims, FN} over the enforced actions' subjects (``marks``)."""
    labeled = _abusive(labs)
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"TP": 0, "FP": 0, "victims": 0, "FN": 0})
    acted = set()
    for m in marks:
        s = (m.kind, m.subject_id)
        acted.add(s)
        key = "TP" if s in labeled else ("victims" if m.collateral else "FP")
        out[m.kind][key] += 1
    for s in labeled - acted:
        out[s[0]]["FN"] += 1
    return dict(sorted(out.items()))


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "height": 380,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
        "template": "plotly_white",
        **extra,
    }


def figures(
    actions: Sequence[pb.Action],
    marks: Sequence[SubjectMark],
    labs: Sequence[Label],
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    """Plot id → plotly Figure for the five plots (module docstring)."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped]

    figs: dict[str, Any] = {}
    tta = time_to_action_s(marks, labs)
    fig = go.Figure(
        [go.Box(x=v, name=k, boxpoints="all", jitter=0.4, orientation="h") for k, v in tta.items()]
    )
    fig.update_layout(
        **_layout(
            "Time to action per scenario (each labeled subject: first enforced action - its onset)",
            "seconds of event time",
            "scenario",
            showlegend=False,
        )
    )
    figs["plot-time-to-action"] = fig

    scores = subject_scores(actions)
    labeled = _abusive(labs)
    models = sorted(scores)
    fig = make_subplots(rows=max(1, len(models)), cols=1, subplot_titles=models, vertical_spacing=0.12)
    for row, model in enumerate(models, start=1):
        by = scores[model]
        for name, keep, color in (("labeled", True, "#c44e52"), ("other", False, "#4c72b0")):
            xs = [v for s, v in by.items() if (s in labeled) == keep]
            fig.add_trace(
                go.Histogram(
                    x=xs,
                    name=f"{name} subjects",
                    legendgroup=name,
                    showlegend=row == 1,
                    marker_color=color,
                    opacity=0.6,
                    xbins={"start": 0.0, "end": 1.0, "size": 0.025},
                ),
                row=row,
                col=1,
            )
        if model in thresholds:
            t = thresholds[model]
            fig.add_vline(
                x=t, line_dash="dash", row=row, col=1, annotation_text=f"threshold.{model} = {t:.3f}"
            )
        fig.update_xaxes(title_text=f"{model} score", range=[0, 1], row=row, col=1)
        fig.update_yaxes(title_text="subjects (log)", type="log", row=row, col=1)
    fig.update_layout(
        title={"text": "Scores per model (highest per acted-on subject), with the policy thresholds"},
        barmode="overlay",
        template="plotly_white",
        height=300 * max(1, len(models)) + 80,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    figs["plot-scores"] = fig

    fig = go.Figure()
    for model, by in sorted(scores.items()):
        pts = pr_curve(by, labs)
        fig.add_trace(
            go.Scatter(
                x=[p.recall for p in pts],
                y=[p.precision for p in pts],
                mode="lines+markers",
                name=model,
                text=[f"score >= {p.threshold:.3f}" for p in pts],
            )
        )
    fig.update_layout(
        **_layout(
            "Precision-recall of each model's score over the acted-on subjects",
            "recall (labeled subjects of the scored kinds)",
            "precision",
        )
    )
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.02])
    figs["plot-pr-curve"] = fig

    rows = rule_rows(actions, labs, marks)
    names = list(rows)
    fig = go.Figure(
        [
            go.Bar(x=names, y=[rows[r].enforced_actions for r in names], name="enforced actions"),
            go.Bar(x=names, y=[rows[r].shadow_actions for r in names], name="shadow-mode actions"),
            go.Scatter(
                x=names,
                y=[rows[r].precision for r in names],
                name="precision (subjects)",
                mode="markers",
                marker={"size": 11, "symbol": "diamond"},
                yaxis="y2",
            ),
        ]
    )
    fig.update_layout(
        **_layout(
            "Actions per rule, with the rule's precision",
            "rule",
            "actions",
            barmode="stack",
            yaxis2={"title": {"text": "precision"}, "overlaying": "y", "side": "right", "range": [0, 1.05]},
            height=460,
        )
    )
    figs["plot-rules"] = fig

    counts = kind_counts(marks, labs)
    kinds = list(counts)
    fig = go.Figure(
        [
            go.Bar(x=kinds, y=[counts[k][key] for k in kinds], name=key)
            for key in ("TP", "FP", "victims", "FN")
        ]
    )
    fig.update_layout(
        **_layout(
            "Subjects per kind: TP, FP, victims and FN (enforced actions)",
            "subject kind",
            "subjects",
            barmode="group",
        )
    )
    figs["plot-kinds"] = fig
    return figs


def plots_html(
    actions: Sequence[pb.Action],
    marks: Sequence[SubjectMark],
    labs: Sequence[Label],
    thresholds: Mapping[str, float],
) -> tuple[str, str]:
    """(the inline plotly.js ``<script>``, the plots' ``<div>``s), to be placed once each in a page."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    divs = [
        fig.to_html(full_html=False, include_plotlyjs=False, div_id=plot_id, config={"displaylogo": False})
        for plot_id, fig in figures(actions, marks, labs, thresholds).items()
    ]
    return f'<script type="text/javascript">{get_plotlyjs()}</script>', "\n".join(divs)
