"""Scoring several runs as one split (``streamwarden eval generalize``): unseen seeds, outside-range
variants, each family held out in turn.

Runs are pooled at the subject level: every subject, event id and label of run ``i`` is prefixed with
``"<i>/"`` so subjects of different runs never merge (an ASN or an IP can recur across seeds), then one
``evaluate`` scores the union with the definitions of ``report.py``. Precision, recall and time to
action of a split are therefore over all of its runs' subjects, not an average of per-run figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from streamwarden.operators.evaluation.harness import LabeledTraffic
from streamwarden.operators.evaluation.report import EvaluationReport, count_subjects, evaluate
from streamwarden.operators.traffic.labels import Label
from streamwarden.schemas import streamwarden_pb2 as pb


@dataclass(frozen=True, slots=True)
class ScoredRun:
    """What scoring one run needs (the events themselves are not kept)."""

    labels: list[Label]
    event_scenarios: dict[str, str]
    organic: dict[str, int]
    actions: list[pb.Action]
    records: int
    wall_s: float


def scored_run(traffic: LabeledTraffic, actions: Sequence[pb.Action], wall_s: float) -> ScoredRun:
    counts = count_subjects(traffic.events, traffic.labels)
    return ScoredRun(
        list(traffic.labels),
        dict(traffic.event_scenarios),
        dict(counts.organic),
        list(actions),
        len(traffic.payloads),
        wall_s,
    )


def _prefixed(i: int, action: pb.Action) -> pb.Action:
    out = pb.Action()
    out.CopyFrom(action)
    out.event_id = f"{i}/{action.event_id}"
    out.subject.id = f"{i}/{action.subject.id}"
    out.action_id = f"{i}/{action.action_id}"
    return out


def score_runs(runs: Sequence[ScoredRun]) -> EvaluationReport:
    """One report over every run's subjects (see the module docstring)."""
    actions: list[pb.Action] = []
    labels: list[Label] = []
    scen: dict[str, str] = {}
    organic: Counter[str] = Counter()
    for i, run in enumerate(runs):
        actions.extend(_prefixed(i, a) for a in run.actions)
        labels.extend(replace(x, entity_id=f"{i}/{x.entity_id}") for x in run.labels)
        scen.update({f"{i}/{k}": v for k, v in run.event_scenarios.items()})
        organic.update(run.organic)
    return evaluate(actions, labels, organic_subjects=dict(organic), event_scenarios=scen)


def family_row(report: EvaluationReport, family: str) -> dict[str, Any]:
    """The per-family figures of the generalization tables (``None`` where undefined)."""
    s = report.scenarios.get(family)
    if s is None:
        return {"labeled": 0}
    return {
        "labeled": s.labeled_subjects,
        "true_positives": s.true_positives,
        "false_positives": s.false_positives,
        "precision": s.precision,
        "recall": s.recall,
        "recall_all_kinds": s.recall_all_kinds,
        "recall_by_kind": s.recall_by_kind_all,
        "time_to_action_s_p50": s.time_to_action_s_p50,
        "time_to_action_s_p95": s.time_to_action_s_p95,
    }


def split_summary(report: EvaluationReport, runs: Sequence[ScoredRun], **meta: Any) -> dict[str, Any]:
    """The JSON object of one split: overall, per family, per trap, throughput."""
    o = report.overall
    records = sum(r.records for r in runs)
    wall = sum(r.wall_s for r in runs)
    return {
        **meta,
        "runs": len(runs),
        "records": records,
        "records_per_s": round(records / wall, 1) if wall > 0 else None,
        "overall": {
            "precision": o.precision,
            "recall": o.recall,
            "recall_all_kinds": o.recall_all_kinds,
            "false_positives": o.false_positives,
            "trap_false_positives": o.trap_false_positives,
            "never_actioned_kinds": o.never_actioned_kinds,
            "time_to_action_s_p50": o.time_to_action_s_p50,
        },
        "families": {name: family_row(report, name) for name in report.scenarios},
        "traps": {
            name: {
                "subjects": t.subjects,
                "false_positives": t.false_positives,
                "collateral": t.collateral,
                "rules": t.rules,
            }
            for name, t in report.traps.items()
        },
    }
