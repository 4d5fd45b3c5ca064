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
- Rules that never fired: given each policy's rules (``rules_a`` / ``rules_b``: rule id -> declared
  mode), every rule of either policy gets a row, actions or not, and ``never_fired_a`` / ``never_fired_b``
  list the rules of that policy no action (of any verdict, ``ALLOW`` included) names as a reason. A new
  rule that never fires is the first thing a reviewer of a candidate policy needs to see.
- ``overall_a`` / ``overall_b`` (*enforced*): ``evaluate`` of each side's ``ENFORCE``-mode actions only,
  what users would actually have felt. ``shadow_a`` / ``shadow_b``: the same over the ``SHADOW_MODE``
  actions alone (recorded, not acted on), reported next to them, never mixed in. Each pair is evaluated
  over the same kinds (the union of both sides' kinds in that mode), so the two sides are comparable.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
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
    declared_mode_a: str | None = None
    """The rule's mode in policy A (``enforce``/``shadow``); ``None``: not in A, or A's rules not given."""
    declared_mode_b: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """Per-rule differences plus both sides' overall reports (enforced, and shadow mode apart)."""

    rules: dict[str, RuleDiff]
    overall_a: OverallReport
    """Policy A's ``ENFORCE``-mode actions only."""
    overall_b: OverallReport
    shadow_a: OverallReport
    """Policy A's ``SHADOW_MODE`` actions only."""
    shadow_b: OverallReport
    never_fired_a: list[str]
    """Rules of policy A that took no action (empty when A's rules were not given)."""
    never_fired_b: list[str]

    @property
    def never_fired_either(self) -> list[str]:
        """Rules defined in A or B that fired on neither side."""
        fired = {r for r, d in self.rules.items() if d.actions_a or d.actions_b}
        return sorted((set(self.never_fired_a) | set(self.never_fired_b)) - fired)

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
                "basis": "ENFORCE-mode actions only",
            },
            "shadow": {
                "a": asdict(self.shadow_a),
                "b": asdict(self.shadow_b),
                "basis": "SHADOW_MODE actions only (recorded, not acted on)",
            },
            "never_fired": {
                "a": self.never_fired_a,
                "b": self.never_fired_b,
                "either": self.never_fired_either,
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
    fired: set[str]


def _by_rule(actions: Iterable[pb.Action]) -> _Side:
    side = _Side(defaultdict(set), defaultdict(set), defaultdict(int), set())
    for a in actions:
        side.fired.update(a.reasons)
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


def _mode_only(actions: Iterable[pb.Action], shadow: bool) -> list[pb.Action]:
    return [a for a in actions if (a.mode == pb.Action.SHADOW_MODE) == shadow]


def _overall(
    actions_a: Sequence[pb.Action],
    actions_b: Sequence[pb.Action],
    labels: Sequence[Label],
    labeled_kinds: Collection[str] | None,
) -> tuple[OverallReport, OverallReport]:
    """Both sides evaluated over the union of the kinds either side's counted actions target."""
    kinds = sorted({subject_of(x)[0] for x in (*actions_a, *actions_b) if counted(x, None, True)})
    a, b = (
        evaluate(side, labels, subject_kinds=kinds, labeled_kinds=labeled_kinds, include_shadow_mode=True)
        for side in (actions_a, actions_b)
    )
    return a.overall, b.overall


def compare_policies(
    actions_a: Sequence[pb.Action],
    actions_b: Sequence[pb.Action],
    labels: Sequence[Label],
    *,
    labeled_kinds: Collection[str] | None = None,
    max_examples: int = 5,
    rules_a: Mapping[str, str] | None = None,
    rules_b: Mapping[str, str] | None = None,
) -> PolicyDiff:
    """Rule-by-rule difference between two policies' actions on the same traffic and labels.

    ``rules_a`` / ``rules_b`` (rule id -> declared mode, in policy order) add a row for every rule of
    that policy, so rules that never fired are listed rather than absent."""
    a, b = _by_rule(actions_a), _by_rule(actions_b)
    labeled = {(x.entity_kind, x.entity_id) for x in labels}
    complete = set(labeled_kinds) if labeled_kinds is not None else {x.entity_kind for x in labels}
    declared_a, declared_b = dict(rules_a or {}), dict(rules_b or {})
    rules: dict[str, RuleDiff] = {}
    for rule in sorted(set(a.keys) | set(b.keys) | set(declared_a) | set(declared_b)):
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
            declared_mode_a=declared_a.get(rule),
            declared_mode_b=declared_b.get(rule),
        )
    enforced = _overall(_mode_only(actions_a, False), _mode_only(actions_b, False), labels, labeled_kinds)
    shadow = _overall(_mode_only(actions_a, True), _mode_only(actions_b, True), labels, labeled_kinds)
    return PolicyDiff(
        rules=rules,
        overall_a=enforced[0],
        overall_b=enforced[1],
        shadow_a=shadow[0],
        shadow_b=shadow[1],
        never_fired_a=[r for r in declared_a if r not in a.fired],
        never_fired_b=[r for r in declared_b if r not in b.fired],
    )
