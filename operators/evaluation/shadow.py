"""Shadow-mode comparison: two policies' actions on the same labeled traffic, rule by rule.

How a team decides whether to promote a rule from shadow to enforce (or to ship a new policy version):
per rule id, which actions only one side took, and how that rule's precision and recall move.

Definitions (the subject rules are those of ``report.py``):

- Both sides count every non-``ALLOW`` action in *either* mode (a shadow rule is exactly what is being
  judged). An action belongs to every rule in its ``reasons``.
- Two actions are the same action if they have the same rule, subject, triggering event and verdict
  (``action_id`` cannot be compared: it contains the policy version). ``only_in_a`` / ``only_in_b`` /
  ``in_both`` count distinct such keys; ``subjects_only_in_*`` count distinct subjects.
- Per rule and side: TP = labeled subjects it actioned, FP = unlabeled ones of a complete kind;
  precision = TP / (TP + FP); recall = TP / labeled subjects of the kinds the rule acts on (on either
  side). ``*_change`` = B minus A (``None`` if either is undefined).
- ``overall_a`` / ``overall_b``: ``evaluate`` of each side with shadow-mode actions included, over the
  same evaluated kinds (the union of both sides'), so the two are comparable.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streamwarden.operators.evaluation.report import OverallReport, Subject, counted, evaluate, subject_of
from streamwarden.operators.traffic.labels import Label
from streamwarden.schemas import streamwarden_pb2 as pb

ActionKey = tuple[str, str, str, int]
"""(subject kind, subject id, event id, verdict) of one rule's action."""


@dataclass(frozen=True, slots=True)
class RuleDiff:
    """How one rule's actions differ between policy A and policy B."""

    actions_a: int
    actions_b: int
    only_in_a: int
    only_in_b: int
    in_both: int
    subjects_only_in_a: int
    subjects_only_in_b: int
    modes_a: list[str]
    modes_b: list[str]
    precision_a: float | None
    precision_b: float | None
    precision_change: float | None
    recall_a: float | None
    recall_b: float | None
    recall_change: float | None
    examples_only_in_a: list[str]
    examples_only_in_b: list[str]


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """Per-rule differences plus both sides' overall reports."""

    rules: dict[str, RuleDiff]
    overall_a: OverallReport
    overall_b: OverallReport

    @property
    def precision_change(self) -> float | None:
        return _change(self.overall_a.precision, self.overall_b.precision)

    @property
    def recall_change(self) -> float | None:
        return _change(self.overall_a.recall, self.overall_b.recall)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": {k: asdict(v) for k, v in self.rules.items()},
            "overall": {
                "a": asdict(self.overall_a),
                "b": asdict(self.overall_b),
                "precision_change": self.precision_change,
                "recall_change": self.recall_change,
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, allow_nan=False)


def _change(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


@dataclass(slots=True)
class _Side:
    keys: dict[str, set[ActionKey]]
    modes: dict[str, set[str]]
    count: dict[str, int]


def _by_rule(actions: Iterable[pb.Action]) -> _Side:
    side = _Side(defaultdict(set), defaultdict(set), defaultdict(int))
    for a in actions:
        if not counted(a, None, include_shadow_mode=True):
            continue
        kind, sid = subject_of(a)
        key = (kind, sid, a.event_id, int(a.verdict))
        mode = pb.Action.Mode.Name(a.mode)
        for rule in a.reasons:
            side.keys[rule].add(key)
            side.modes[rule].add(mode)
            side.count[rule] += 1
    return side


def _subjects(keys: Collection[ActionKey]) -> set[Subject]:
    return {(k[0], k[1]) for k in keys}


def _quality(
    subjects: set[Subject], labeled: set[Subject], complete: Collection[str], kinds: Collection[str]
) -> tuple[float | None, float | None]:
    tp = len(subjects & labeled)
    fp = sum(1 for s in subjects - labeled if s[0] in complete)
    relevant = sum(1 for s in labeled if s[0] in kinds)
    return (tp / (tp + fp) if tp + fp else None), (tp / relevant if relevant else None)


def _example(key: ActionKey) -> str:
    return f"{key[0]}:{key[1]} event={key[2]} verdict={pb.Action.Verdict.Name(key[3])}"  # type: ignore[arg-type]


def compare_policies(
    actions_a: Sequence[pb.Action],
    actions_b: Sequence[pb.Action],
    labels: Sequence[Label],
    *,
    labeled_kinds: Collection[str] | None = None,
    max_examples: int = 5,
) -> PolicyDiff:
    """Rule-by-rule difference between two policies' actions on the same traffic and labels."""
    a, b = _by_rule(actions_a), _by_rule(actions_b)
    labeled = {(x.entity_kind, x.entity_id) for x in labels}
    complete = set(labeled_kinds) if labeled_kinds is not None else {x.entity_kind for x in labels}
    rules: dict[str, RuleDiff] = {}
    for rule in sorted(set(a.keys) | set(b.keys)):
        ka, kb = a.keys.get(rule, set()), b.keys.get(rule, set())
        sa, sb = _subjects(ka), _subjects(kb)
        kinds = {s[0] for s in sa | sb}
        pa, ra = _quality(sa, labeled, complete, kinds)
        pb_, rb = _quality(sb, labeled, complete, kinds)
        rules[rule] = RuleDiff(
            actions_a=a.count.get(rule, 0),
            actions_b=b.count.get(rule, 0),
            only_in_a=len(ka - kb),
            only_in_b=len(kb - ka),
            in_both=len(ka & kb),
            subjects_only_in_a=len(sa - sb),
            subjects_only_in_b=len(sb - sa),
            modes_a=sorted(a.modes.get(rule, set())),
            modes_b=sorted(b.modes.get(rule, set())),
            precision_a=pa,
            precision_b=pb_,
            precision_change=_change(pa, pb_),
            recall_a=ra,
            recall_b=rb,
            recall_change=_change(ra, rb),
            examples_only_in_a=[_example(k) for k in sorted(ka - kb)[:max_examples]],
            examples_only_in_b=[_example(k) for k in sorted(kb - ka)[:max_examples]],
        )
    kinds_all = sorted({subject_of(x)[0] for x in (*actions_a, *actions_b) if counted(x, None, True)})
    overall_a, overall_b = (
        evaluate(
            side, labels, subject_kinds=kinds_all, labeled_kinds=labeled_kinds, include_shadow_mode=True
        ).overall
        for side in (actions_a, actions_b)
    )
    return PolicyDiff(rules=rules, overall_a=overall_a, overall_b=overall_b)
