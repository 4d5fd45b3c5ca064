"""Labeled traffic in, a scored report out: the engine-free part of ``streamwarden eval``.

``LabeledTraffic`` holds one stream as an engine would read it (payloads in arrival order, Kafka keys)
plus what scoring needs (the decoded events, the labels). ``score_run`` joins one engine's actions with
the labels through ``evaluate``; ``summary`` is the JSON object the command prints and
``format_table`` the readable table. The engines themselves live in ``jobs/eval.py``.

Which events belong to an attack (``event_scenarios``, to tell victims hit by per-event rules from
false positives) is derived from the labels, the same way for generated traffic and for files:
an event belongs to scenario S if a label of S names one of its *actor* entities (account, ip,
device, asn) and ``start_ms <= event_time_ms < end_ms``; the first scenario in ``SCENARIO_NAMES``
order wins (the labeling rule of ``models/train.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.evaluation.report import (
    EvaluationReport,
    count_subjects,
    counted,
    evaluate,
    percentile,
    subject_of,
)
from streamwarden.operators.traffic import (
    SCENARIO_NAMES,
    Label,
    TrafficSpec,
    iter_traffic,
    labels,
    read_labels,
)
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event, read_delimited

ACTOR_KINDS: tuple[str, ...] = ("account", "ip", "device", "asn")
"""Label kinds that make an event part of an attack (target kinds name the object of abuse)."""


@dataclass(frozen=True, slots=True)
class LabeledTraffic:
    """One stream, in arrival order, with its ground truth."""

    payloads: list[bytes]
    """Every record as produced (malformed ones included)."""
    keys: list[bytes | None]
    """Kafka key per record: the actor account id (None for records that do not decode)."""
    event_ids: list[str | None]
    """Event id per record (None if it does not decode)."""
    events: list[pb.Event]
    """The records that decode, in order (late ones included: the engine decides lateness)."""
    labels: list[Label]
    source: str
    """Where it came from, e.g. ``seed 2, default spec`` or the file names."""
    start_ms: int
    """Event time of the start of the traffic (min label/event time for files)."""
    end_ms: int
    """Event time just past the traffic (max label end/event time for files)."""
    event_scenarios: dict[str, str] = field(default_factory=dict)
    """Event id → scenario, derived from the labels (see the module docstring)."""

    @property
    def scenarios(self) -> list[str]:
        """Every scenario the labels name, sorted."""
        return sorted({x.scenario for x in self.labels})


def _scenario_order(name: str) -> tuple[int, str]:
    return (SCENARIO_NAMES.index(name), "") if name in SCENARIO_NAMES else (len(SCENARIO_NAMES), name)


def event_scenarios(events: Iterable[pb.Event], labs: Sequence[Label]) -> dict[str, str]:
    """Event id → scenario for the events an attack produced (the actor rule of the module docstring)."""
    index: dict[tuple[str, str], list[tuple[tuple[int, str], int, int, str]]] = {}
    for x in labs:
        if x.entity_kind in ACTOR_KINDS and not x.benign:
            index.setdefault((x.entity_kind, x.entity_id), []).append(
                (_scenario_order(x.scenario), x.start_ms, x.end_ms, x.scenario)
            )
    out: dict[str, str] = {}
    if not index:
        return out
    for e in events:
        a = e.actor
        t = e.event_time_ms
        best: tuple[tuple[int, str], str] | None = None
        for key in (("account", a.account_id), ("ip", a.ip), ("device", a.device_id), ("asn", str(a.asn))):
            for order, start, end, name in index.get(key, ()):
                if start <= t < end and (best is None or order < best[0]):
                    best = (order, name)
        if best is not None:
            out[e.event_id] = best[1]
    return out


def _labeled(
    payloads: list[bytes], labs: list[Label], source: str, span_ms: tuple[int, int] | None
) -> LabeledTraffic:
    keys: list[bytes | None] = []
    ids: list[str | None] = []
    events: list[pb.Event] = []
    for raw in payloads:
        out = decode_event(raw)
        if isinstance(out, pb.Event):
            events.append(out)
            ids.append(out.event_id)
            keys.append(out.actor.account_id.encode() or None)
        else:
            ids.append(None)
            keys.append(None)
    if span_ms is None:
        times = [x.start_ms for x in labs] + [e.event_time_ms for e in events]
        ends = [x.end_ms for x in labs] + [e.event_time_ms + 1 for e in events]
        span_ms = (min(times), max(ends)) if times else (0, 1)
    start_ms, end_ms = span_ms
    return LabeledTraffic(
        payloads, keys, ids, events, labs, source, start_ms, end_ms, event_scenarios(events, labs)
    )


def traffic_from_spec(spec: TrafficSpec, source: str | None = None) -> LabeledTraffic:
    """The generator's records and labels for ``spec``."""
    payloads = [r.payload for r in iter_traffic(spec)]
    return _labeled(payloads, labels(spec), source or f"seed {spec.seed}", (spec.start_ms, spec.end_ms))


def traffic_from_files(events_path: Path, labels_path: Path) -> LabeledTraffic:
    """Records from a length-delimited ``Event`` file and labels from a JSON-lines file (the formats of
    ``streamwarden generate --to file --out FILE --labels FILE``); errors name the file."""
    try:
        with events_path.open("rb") as src:
            payloads = list(read_delimited(src))
    except FileNotFoundError as exc:
        raise ConfigError(f"{events_path}: file not found") from exc
    except ValueError as exc:
        raise ConfigError(f"{events_path}: not a length-delimited protobuf file: {exc}") from exc
    try:
        labs = read_labels(labels_path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{labels_path}: file not found") from exc
    if not labs:
        raise ConfigError(f"{labels_path}: no labels (nothing to evaluate against)")
    return _labeled(payloads, labs, f"{events_path} + {labels_path}", None)


def score_run(
    traffic: LabeledTraffic,
    actions: Sequence[pb.Action],
    ingest_ms: Mapping[str, int] | None = None,
) -> EvaluationReport:
    """``evaluate`` of one engine's actions on ``traffic``: organic subjects counted from its events,
    complete kinds = the kinds its labels use, victims of attack events told apart (collateral)."""
    counts = count_subjects(traffic.events, traffic.labels)
    return evaluate(
        actions,
        traffic.labels,
        organic_subjects=counts.organic,
        ingest_ms=ingest_ms,
        event_scenarios=traffic.event_scenarios,
    )


def latencies_ms(actions: Iterable[pb.Action], ingest_ms: Mapping[str, int]) -> list[float]:
    """Event→action latency of every action whose event's ingest time is known (as ``evaluate``)."""
    out: list[float] = []
    for a in actions:
        t = ingest_ms.get(a.event_id)
        if t is not None:
            out.append(float(a.decision_time_ms - t))
    return out


@dataclass(frozen=True, slots=True)
class SubjectMark:
    """One actioned subject on the timeline: when it was first acted on and what it was."""

    time_ms: int
    kind: str
    subject_id: str
    scenario: str | None
    """A scenario that labels it, or None (an unlabeled subject)."""
    rules: tuple[str, ...]
    collateral: bool = False
    """Unlabeled, and every counted action on it was triggered by an attack's event (a victim)."""


def first_actions(
    actions: Iterable[pb.Action], labs: Sequence[Label], event_scenarios: Mapping[str, str] | None = None
) -> list[SubjectMark]:
    """Per actioned subject (counted actions, as in the report), its first action time in event time,
    sorted by time; labeled subjects carry their first scenario in ``SCENARIO_NAMES`` order; with
    ``event_scenarios``, unlabeled subjects only attack events acted on are marked ``collateral``."""
    scen: dict[tuple[str, str], str] = {}
    for x in sorted(labs, key=lambda x: _scenario_order(x.scenario)):
        if x.benign:
            continue
        scen.setdefault((x.entity_kind, x.entity_id), x.scenario)
    first: dict[tuple[str, str], int] = {}
    rules: dict[tuple[str, str], set[str]] = {}
    organic: set[tuple[str, str]] = set()
    for a in actions:
        if not counted(a, None, include_shadow_mode=False):
            continue
        s = subject_of(a)
        if s not in first or a.event_time_ms < first[s]:
            first[s] = a.event_time_ms
        rules.setdefault(s, set()).update(a.reasons)
        if event_scenarios is None or a.event_id not in event_scenarios:
            organic.add(s)
    marks = [
        SubjectMark(t, s[0], s[1], scen.get(s), tuple(sorted(rules[s])), s not in scen and s not in organic)
        for s, t in first.items()
    ]
    return sorted(marks, key=lambda m: (m.time_ms, m.kind, m.subject_id))


def summary(report: EvaluationReport, **meta: Any) -> dict[str, Any]:
    """The JSON object of ``streamwarden eval --json``: ``meta`` (engine, source, counts) first, then
    ``overall`` and ``scenarios`` (each with ``precision``, ``recall``, ``time_to_action_s_p50`` ...)."""
    return {**meta, **report.as_dict()}


def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: EvaluationReport, latency_basis: str | None = None) -> str:
    """A fixed-width table per scenario plus the overall lines, for people."""
    head = (
        f"{'scenario':<22} {'labeled':>7} {'TP':>5} {'FP':>4} {'precision':>9} {'recall':>7} "
        f"{'first action s':>14} {'TTA p50 s':>9} {'TTA p95 s':>9}  rules"
    )
    lines = [head, "-" * len(head)]
    for name, s in report.scenarios.items():
        lines.append(
            f"{name:<22} {s.labeled_subjects:>7} {s.true_positives:>5} {s.false_positives:>4} "
            f"{_f(s.precision):>9} {_f(s.recall):>7} {_f(s.time_to_first_action_s, '.1f'):>14} "
            f"{_f(s.time_to_action_s_p50, '.1f'):>9} {_f(s.time_to_action_s_p95, '.1f'):>9}  "
            f"{', '.join(s.rules) or '-'}"
        )
    o = report.overall
    lines.append("-" * len(head))
    lines.append(
        f"{'overall':<22} {o.labeled_subjects:>7} {o.true_positives:>5} {o.false_positives:>4} "
        f"{_f(o.precision):>9} {_f(o.recall):>7} {_f(o.time_to_first_action_s_p50, '.1f'):>14} "
        f"{_f(o.time_to_action_s_p50, '.1f'):>9} {_f(o.time_to_action_s_p95, '.1f'):>9}"
    )
    fpr = _f(o.false_positive_rate, ".5f")
    lines.append(
        f"organic: false-positive rate {fpr} ({o.false_positives} of {o.organic_subjects} organic subjects "
        f"of kinds {', '.join(o.evaluated_kinds) or '-'}); false positives by kind {o.false_positives_by_kind}"
    )
    lines.append(
        f"victims acted on by attack events (collateral, not counted as false positives): "
        f"{o.collateral_by_kind}; unattributed {o.unattributed_by_kind}"
    )
    lines.append(
        f"time to first action per scenario: p50 {_f(o.time_to_first_action_s_p50, '.1f')} s, "
        f"p95 {_f(o.time_to_first_action_s_p95, '.1f')} s (event time, from attack start); TTA columns: "
        f"per subject, from its own first abusive event"
    )
    lines.append(
        f"recall over every labeled kind {_f(o.recall_all_kinds)}; by kind "
        + ", ".join(f"{k} {v:.3f}" for k, v in o.recall_by_kind.items())
        + f"; kinds never acted on: {', '.join(o.never_actioned_kinds) or 'none'}"
    )
    for name, t in report.traps.items():
        lines.append(
            f"trap {name:<16} {t.false_positives} of {t.subjects} benign subjects acted on"
            + (f" ({t.collateral} more as victims of attack events)" if t.collateral else "")
            + (f" by {', '.join(t.rules)} {t.false_positives_by_kind}" if t.false_positives else "")
        )
    lat = o.latency
    if lat is not None:
        lines.append(
            f"event->action latency: p50 {_f(lat.p50_ms, '.1f')} ms, p95 {_f(lat.p95_ms, '.1f')} ms, "
            f"p99 {_f(lat.p99_ms, '.1f')} ms, max {_f(lat.max_ms, '.1f')} ms over {lat.count} actions"
            + (f" ({latency_basis})" if latency_basis else "")
        )
    return "\n".join(lines)


__all__ = [
    "ACTOR_KINDS",
    "LabeledTraffic",
    "SubjectMark",
    "event_scenarios",
    "first_actions",
    "format_table",
    "latencies_ms",
    "percentile",
    "score_run",
    "summary",
    "traffic_from_files",
    "traffic_from_spec",
]
