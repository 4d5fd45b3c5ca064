"""The transparency report as one self-contained HTML page: tables plus Plotly charts, with plotly.js
embedded once in the page (no network at view time). Plotly (the ``[report]`` extra) is imported here
only when a page is written."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from streamwarden.operators.transparency.report import Proportion, TransparencyReport


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(p: Proportion | None) -> str:
    if p is None or p.value is None:
        return "—"
    return f"{100 * p.value:.1f}% [{100 * (p.low or 0):.1f} to {100 * (p.high or 0):.1f}] (n={p.n})"


def _num(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:,.1f}{unit}"


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body or '<tr><td>none</td></tr>'}</tbody></table>"


def _short(name: str) -> str:
    for prefix in ("DECISION_VISIBILITY_", "DECISION_MONETARY_", "DECISION_PROVISION_", "DECISION_ACCOUNT_",
                   "STATEMENT_CATEGORY_", "DECISION_GROUND_", "AUTOMATED_DECISION_"):  # fmt: skip
        if name.startswith(prefix):
            return name[len(prefix) :].replace("_", " ").lower()
    return name


def _figures(report: TransparencyReport) -> list[Any]:
    import plotly.graph_objects as go  # type: ignore[import-untyped]  # the [report] extra

    figs = []

    def bar(title: str, data: dict[str, int]) -> None:
        fig = go.Figure(go.Bar(x=[_short(k) for k in data], y=list(data.values()), marker_color="#4063a8"))
        fig.update_layout(title=title, height=320, margin={"t": 50, "b": 90, "l": 50, "r": 20})
        figs.append(fig)

    bar("Restrictions by type", report.by_restriction)
    bar("Statements by category", report.by_category)
    bar("Statements by automated decision", report.automated_decision)
    for name, attr in (
        ("Reviewer overturn rate", "overturn_rate"),
        ("Precision", "precision"),
        ("Recall", "recall"),
    ):
        pts = [(r.rule_id, getattr(r, attr)) for r in report.rules]
        pts = [(rid, p) for rid, p in pts if p is not None and p.value is not None]
        if not pts:
            continue
        fig = go.Figure(
            go.Bar(
                x=[rid for rid, _ in pts],
                y=[p.value for _, p in pts],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [(p.high or 0) - (p.value or 0) for _, p in pts],
                    "arrayminus": [(p.value or 0) - (p.low or 0) for _, p in pts],
                },
                marker_color="#a85a40" if attr == "overturn_rate" else "#40a87a",
            )
        )
        fig.update_layout(
            title=f"{name} per rule (95% Wilson interval)", yaxis={"range": [0, 1]}, height=420,
            margin={"t": 50, "b": 170, "l": 50, "r": 20},
        )  # fmt: skip
        figs.append(fig)
    return figs


def render_html(report: TransparencyReport, *, title: str = "Transparency report") -> str:
    """The whole page; plotly.js is inlined with the first chart."""
    charts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        for i, fig in enumerate(_figures(report))
    ]
    summary = [
        ("Period", f"{_day(report.start_ms)} to {_day(report.end_ms)}"),
        ("Actions (all verdicts and modes)", f"{report.actions:,}"),
        ("Statements of reasons", f"{report.statements:,} ({report.statements_revoked:,} revoked after review)"),
        ("Detected by automated means", _pct(report.automated_detection)),
        ("Median time from first abusive event to action",
         _num(report.time_to_action_s_median, " s") + f" over {report.time_to_action_subjects} labeled subjects"),
        ("Human review decisions", f"{report.reviews:,}"),
        ("Median time to review", _num(report.time_to_review_s_median, " s")),
        ("Appeals opened / decided", f"{report.appeals_opened:,} / {report.appeals_decided:,}"),
    ]  # fmt: skip
    rules = [
        (r.rule_id, r.mode, r.actions, r.statements, r.reviews, _pct(r.overturn_rate), _pct(r.precision), _pct(r.recall))
        for r in report.rules
    ]  # fmt: skip
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<p>Under the EU Digital Services Act, Art. 15 and 24. Figures follow the definitions in "
        "<code>streamwarden.operators.transparency.report</code>; intervals are 95% Wilson score intervals.</p>",
        _table(summary, ("Figure", "Value")),
        "<h2>Restrictions</h2>",
        _table(
            sorted(report.by_restriction.items()), ("Restriction (Transparency Database value)", "Statements")
        ),
        _table(sorted(report.by_ground.items()), ("Ground", "Statements")),
        _table(sorted(report.by_category.items()), ("Category", "Statements")),
        _table(sorted(report.automated_decision.items()), ("Automated decision", "Statements")),
        "<h2>Actions by verdict</h2>",
        _table(sorted(report.actions_by_verdict.items()), ("Verdict", "Actions")),
        "<h2>Reviews and appeals</h2>",
        _table(sorted(report.reviews_by_outcome.items()), ("Review outcome", "Decisions")),
        _table(sorted(report.appeals_by_outcome.items()), ("Appeal outcome", "Decisions")),
        "<h2>Accuracy of the automated means, per rule</h2>",
        "<p>Overturn rate: share of human review decisions that reversed the rule's actions. Precision and "
        "recall: against labeled evaluation data"
        + ("" if report.labeled else " (none given for this report)")
        + ".</p>",
        _table(
            rules,
            ("Rule", "Mode", "Actions", "Statements", "Reviews", "Overturn rate", "Precision", "Recall"),
        ),
        "<h2>Charts</h2>",
        *[f'<div class="chart">{c}</div>' for c in charts],
    ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "th{background:#f0f2f6}.chart{margin:1em 0}"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
