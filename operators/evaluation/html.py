"""A self-contained HTML report of one evaluation (nothing fetched at view time): inline SVG plots
(precision and recall per scenario, the event→action latency histogram, the action timeline) and, given
the run's actions, the interactive Plotly plots of ``plots.py`` (time to action per scenario, score
histograms per model with the thresholds, a precision-recall curve, actions per rule with precision,
TP/FP/FN per subject kind) with plotly.js embedded once, inline."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from streamwarden.operators.evaluation.harness import SubjectMark
from streamwarden.operators.evaluation.report import EvaluationReport
from streamwarden.operators.traffic import Label
from streamwarden.schemas import streamwarden_pb2 as pb

PRECISION_COLOR = "#4c72b0"
RECALL_COLOR = "#55a868"
UNLABELED_COLOR = "#c44e52"
VICTIM_COLOR = "#999999"
VICTIMS = "victims (collateral)"
FALSE_POSITIVES = "false positives"
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
FONT = "font-family:system-ui,sans-serif;font-size:12px"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" style="{FONT}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def precision_recall_svg(report: EvaluationReport) -> str:
    """Horizontal bars: precision and recall of each scenario (0..1)."""
    names = list(report.scenarios)
    left, right, row_h, top = 170, 60, 34, 28
    width = 720
    plot_w = width - left - right
    height = top + row_h * max(1, len(names)) + 30
    body = [
        f'<rect x="{left}" y="6" width="10" height="10" fill="{PRECISION_COLOR}"/>',
        _text(left + 14, 15, "precision"),
        f'<rect x="{left + 90}" y="6" width="10" height="10" fill="{RECALL_COLOR}"/>',
        _text(left + 104, 15, "recall"),
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * plot_w
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 26}" stroke="#ddd"/>')
        body.append(_text(x, height - 12, f"{tick:g}", "middle"))
    for i, name in enumerate(names):
        s = report.scenarios[name]
        y = top + i * row_h
        body.append(_text(left - 8, y + 19, name, "end"))
        for j, (value, color) in enumerate(((s.precision, PRECISION_COLOR), (s.recall, RECALL_COLOR))):
            by = y + 3 + j * 14
            if value is None:
                body.append(_text(left + 4, by + 10, "undefined (no action)", extra='fill="#888"'))
                continue
            w = max(0.0, min(1.0, value)) * plot_w
            body.append(f'<rect x="{left}" y="{by}" width="{w:.1f}" height="12" fill="{color}"/>')
            body.append(_text(left + w + 4, by + 10, f"{value:.3f}"))
    return _svg(width, height, body, "Precision and recall per scenario")


def latency_histogram_svg(latencies_ms: Sequence[float], bins: int = 24) -> str:
    """Histogram of event→action latency; values past the 99th percentile share the last bin."""
    width, height, left, bottom, top = 720, 240, 50, 40, 16
    if not latencies_ms:
        return _svg(width, 40, [_text(10, 24, "no latency figures (no ingest times known)")], "Latency")
    xs = sorted(latencies_ms)
    lo = min(0.0, xs[0])
    hi = xs[min(len(xs) - 1, math.ceil(0.99 * (len(xs) - 1)))]
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in xs:
        counts[min(bins - 1, max(0, int((v - lo) / step)))] += 1
    peak = max(counts)
    plot_w, plot_h = width - left - 20, height - top - bottom
    bw = plot_w / bins
    body = []
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        x = left + i * bw
        body.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
            f'fill="{PRECISION_COLOR}"><title>{lo + i * step:.0f}-{lo + (i + 1) * step:.0f} ms: {c}</title></rect>'
        )
    for i in range(0, bins + 1, max(1, bins // 6)):
        x = left + i * bw
        body.append(_text(x, top + plot_h + 14, f"{lo + i * step:.0f}", "middle"))
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>'
    )
    body.append(_text(left + plot_w / 2, height - 8, "event→action latency, ms (last bin: ≥ p99)", "middle"))
    body.append(_text(left - 6, top + 10, str(peak), "end"))
    body.append(_text(left - 6, top + plot_h, "0", "end"))
    return _svg(width, height, body, "Event to action latency histogram")


def timeline_svg(
    marks: Sequence[SubjectMark], labs: Sequence[Label], start_ms: int, end_ms: int | None = None
) -> str:
    """One lane per scenario (its attack window shaded, a tick per labeled subject at its first action),
    a lane of victims (unlabeled subjects acted on only for attack events) and one of false positives;
    x = event time from ``start_ms`` to ``end_ms`` (default: the last window or action)."""
    windows: dict[str, tuple[int, int]] = {}
    for lab in labs:
        a, b = windows.get(lab.scenario, (lab.start_ms, lab.end_ms))
        windows[lab.scenario] = (min(a, lab.start_ms), max(b, lab.end_ms))
    lanes = sorted(windows)
    extra = [
        (VICTIMS, any(m.scenario is None and m.collateral for m in marks)),
        (FALSE_POSITIVES, any(m.scenario is None and not m.collateral for m in marks)),
    ]
    all_lanes = lanes + [name for name, present in extra if present]
    last_ms = max([b for _, b in windows.values()] + [m.time_ms for m in marks] + [start_ms + 1000])
    span_s = max(1.0, ((end_ms if end_ms is not None else last_ms) - start_ms) / 1000)
    width, left, right, lane_h, top = 720, 170, 20, 30, 10
    plot_w = width - left - right
    height = top + lane_h * max(1, len(all_lanes)) + 34

    def x_of(t_ms: int) -> float:
        return left + plot_w * min(1.0, max(0.0, (t_ms - start_ms) / 1000 / span_s))

    body: list[str] = []
    step: float = 10 ** math.floor(math.log10(span_s / 4)) if span_s >= 4 else 1
    while span_s / step > 8:
        step *= 2
    t = 0.0
    while t <= span_s + 1e-9:
        x = left + plot_w * t / span_s
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - 30}" stroke="#eee"/>')
        body.append(_text(x, height - 18, f"{t:g}", "middle"))
        t += step
    body.append(_text(left + plot_w / 2, height - 4, "event time since start of traffic, s", "middle"))
    color = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(lanes)}
    color[VICTIMS] = VICTIM_COLOR
    color[FALSE_POSITIVES] = UNLABELED_COLOR
    for i, name in enumerate(all_lanes):
        y = top + i * lane_h
        body.append(_text(left - 8, y + lane_h / 2 + 4, name, "end"))
        if name in windows:
            a, b = windows[name]
            body.append(
                f'<rect x="{x_of(a):.1f}" y="{y + 4}" width="{max(1.0, x_of(b) - x_of(a)):.1f}" '
                f'height="{lane_h - 8}" fill="{color[name]}" fill-opacity="0.15"/>'
            )
    lane_of = {name: i for i, name in enumerate(all_lanes)}
    for m in marks:
        name = m.scenario if m.scenario is not None else (VICTIMS if m.collateral else FALSE_POSITIVES)
        lane = lane_of.get(name)
        if lane is None:
            continue
        y = top + lane * lane_h
        x = x_of(m.time_ms)
        tip = f"{m.kind}:{m.subject_id} at {(m.time_ms - start_ms) / 1000:.1f} s by {', '.join(m.rules)}"
        body.append(
            f'<line x1="{x:.1f}" y1="{y + 7}" x2="{x:.1f}" y2="{y + lane_h - 7}" stroke="{color[name]}" '
            f'stroke-width="1.5"><title>{escape(tip)}</title></line>'
        )
    return _svg(width, height, body, "Action timeline")


def _scenario_rows(report: EvaluationReport) -> str:
    rows = []
    for name, s in report.scenarios.items():
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(v))}</td>"
                for v in (
                    name,
                    s.labeled_subjects,
                    s.true_positives,
                    s.false_positives,
                    _num(s.precision),
                    _num(s.recall),
                    _num(s.time_to_first_action_s, ".1f"),
                    _num(s.time_to_action_s_p50, ".1f"),
                    _num(s.time_to_action_s_p95, ".1f"),
                    ", ".join(s.rules) or "-",
                )
            )
            + "</tr>"
        )
    return "".join(rows)


def render_html(
    report: EvaluationReport,
    marks: Sequence[SubjectMark],
    labs: Sequence[Label],
    latencies_ms: Sequence[float],
    *,
    start_ms: int,
    end_ms: int | None = None,
    meta: Mapping[str, Any],
    title: str = "streamwarden evaluation",
    actions: Sequence[pb.Action] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> str:
    """The whole page: a headline, the plots, the per-scenario table and the run's metadata (with the
    policy and model versions the actions carry). ``actions`` adds the Plotly plots (``plots.py``)."""
    o = report.overall
    script, plots = "", ""
    meta = dict(meta)
    if actions is not None:
        from streamwarden.operators.evaluation.plots import plots_html

        script, plots = plots_html(actions, marks, labs, thresholds or {})
        plots = f"<h2>Plots</h2>\n{plots}"
        meta["policy version"] = ", ".join(sorted({a.policy_version for a in actions})) or "-"
        meta["model version"] = ", ".join(sorted({a.model_version for a in actions})) or "-"
        if thresholds:
            meta["model thresholds"] = ", ".join(f"{k} {v:.4f}" for k, v in sorted(thresholds.items()))
    lat = o.latency
    headline = (
        f"precision {_num(o.precision)} · recall {_num(o.recall)} · organic false-positive rate "
        f"{_num(o.false_positive_rate, '.5f')} · time to first action p50 "
        f"{_num(o.time_to_first_action_s_p50, '.1f')} s"
        + (f" · latency p50 {_num(lat.p50_ms, '.0f')} ms, p95 {_num(lat.p95_ms, '.0f')} ms" if lat else "")
    )
    meta_rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in meta.items()
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "scenario", "labeled", "TP", "FP", "precision", "recall", "first action s",
            "TTA p50 s", "TTA p95 s", "rules",
        )
    )  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; font-size: 12px; }} td, th {{ padding: 2px 8px; text-align: left; }}
tr:nth-child(even) {{ background: #f4f4f4; }} .headline {{ font-size: 1.05em; }}
</style>{script}</head><body>
<h1>{escape(title)}</h1>
<p class="headline">{escape(headline)}</p>
<h2>Precision and recall per scenario</h2>
{precision_recall_svg(report)}
<h2>Event→action latency</h2>
{latency_histogram_svg(latencies_ms)}
<h2>Action timeline</h2>
<p>Shaded: each attack's window. Ticks: the first action on each actioned subject. Victims: subjects no
label names that were acted on only because of an attack's events (the recipient of a spam message, a
track under a spam comment); false positives: unlabeled subjects acted on for organic events.</p>
{timeline_svg(marks, labs, start_ms, end_ms)}
{plots}
<h2>Per scenario</h2>
<table><tr>{head}</tr>{_scenario_rows(report)}</table>
<h2>Run</h2>
<table>{meta_rows}</table>
</body></html>
"""
