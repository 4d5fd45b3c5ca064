"""Score emitted actions against ground-truth labels: precision, recall, false-positive rate, time to
action and event→action latency, per scenario and overall. Engine-free: actions and labels in, a report out.

Definitions (every number in the report follows them):

- A *subject* is ``(kind, id)``, the kind spelled as in labels (``account``, ``ip``, ``device``,
  ``target_content``, ``target_account``, ``asn``: ``pb.EntityKind`` names in lower case).
- *Counted actions*: verdict other than ``ALLOW``, subject kind in the evaluated kinds, and mode
  ``ENFORCE`` (or unspecified) unless ``include_shadow_mode``. A subject is *actioned* if a counted
  action targets it. ``ALLOW`` actions only enter the latency figures.
- *Evaluated kinds* (``subject_kinds``): the kinds scored; by default the kinds the counted actions
  target (a policy that never acts on devices is not blamed for the labeled devices it missed).
- *Complete kinds* (``labeled_kinds``): kinds whose labels are complete, so an unlabeled subject of that
  kind is organic. By default the kinds that appear in the labels (a label file without IPs says nothing
  about IPs); the traffic generator labels every entity it uses, so pass ``ENTITY_KINDS`` for its labels.
- A labeled actioned subject is a *true positive* for every scenario that labels it. An unlabeled
  actioned subject of a complete kind is a *false positive*, attributed to organic traffic (the
  ``false_positive*`` fields of ``overall``). An unlabeled actioned subject of another kind is
  *unattributed*: counted, reported, kept out of precision.
- *Collateral* (only with ``event_scenarios``, event id → scenario of the events an attack produced):
  rules that act per event name the entity the event acted on, often a victim (the recipient of a
  spam message, the track a spam comment was posted under, the account a stuffing IP logged into).
  Labels never name victims, so such a subject would be a false positive, yet every action on it was
  about an attack's event. An unlabeled subject all of whose counted actions were triggered by scenario
  events is collateral (``collateral_by_kind``), not a false positive; one organic trigger makes it one.
- Overall: precision = TP / (TP + FP) over distinct subjects; recall = labeled subjects (of evaluated
  kinds) actioned / labeled subjects; false-positive rate = FP / organic subjects seen (of evaluated
  kinds), which the caller counts from the events (``count_subjects``).
- Per scenario ``s``: recall over the subjects ``s`` labels. Precision needs false positives that belong
  to ``s``: they are the organic subjects actioned by a *rule of s*, a rule (``Action.reasons``) that
  actioned at least one subject labeled ``s`` (or, with ``event_scenarios``, acted on an event of
  ``s``). precision_s = TP_s / (TP_s + FP_s), ``None`` when both are 0. Subjects of another scenario
  actioned by those rules are neither (right action, other attack).
- *Benign labels* (``Label.benign``, the traffic generator's false-positive traps): the subject is known
  benign. It is never a labeled (abusive) subject: an action on it is a false positive, counted overall
  and per trap (``traps``: subjects and false positives per trap scenario), unless (with
  ``event_scenarios``) every counted action on it was triggered by an attack's event: then it is a
  victim (``collateral`` of the trap), as for unlabeled subjects. A subject labeled both abusive and
  benign is abusive.
- Recall per kind: ``recall`` counts the evaluated kinds; ``recall_all_kinds`` and ``recall_by_kind``
  count every labeled kind, and ``never_actioned_kinds`` lists the labeled kinds no counted action ever
  targeted (they are in the denominator of ``recall_all_kinds``, not dropped).
- Time to action, in event time (the same for every engine; latency is reported on its own): attack
  start = min ``start_ms`` of the scenario's labels; a subject's action time = the smallest
  ``event_time_ms`` of its counted actions; a subject's onset = its label's ``first_ms`` (its own first
  abusive event; ``start_ms`` when the label has none). ``time_to_first_action_s``: first action on any
  subject of the scenario minus attack start; ``time_to_action_s_p50/_p95``: over the scenario's actioned
  subjects, each one's action time minus its own onset (negative if it was acted on before). Overall: the
  same percentiles over all scenarios' subjects pooled, and over the scenarios' first-action times.
- Event→action latency: ``decision_time_ms - ingest_ms[event_id]`` per action (all verdicts), when the
  caller knows when each event was ingested (wall ms); actions of unknown events are counted as missing.
- Percentiles interpolate linearly between closest ranks (``numpy.percentile``'s default): the p-th of
  sorted ``x[0..n-1]`` sits at position ``(n - 1) * p / 100``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamwarden.operators.traffic.labels import Label
from streamwarden.schemas import streamwarden_pb2 as pb

Subject = tuple[str, str]
"""(kind, id), e.g. ("account", "acc_1f...")."""

_EXTRACT: dict[str, Callable[[pb.Event], str]] = {
    "account": lambda e: e.actor.account_id,
    "ip": lambda e: e.actor.ip,
    "device": lambda e: e.actor.device_id,
    "asn": lambda e: str(e.actor.asn) if e.actor.asn else "",
    "target_content": lambda e: e.target.content_id,
    "target_account": lambda e: e.target.account_id,
}
SUBJECT_KINDS: tuple[str, ...] = tuple(_EXTRACT)


def kind_name(kind: int) -> str:
    """``pb.EntityKind`` number → the label spelling (``TARGET_CONTENT`` → ``target_content``)."""
    return pb.EntityKind.Name(kind).lower()  # type: ignore[arg-type]


def subject_of(action: pb.Action) -> Subject:
    return kind_name(action.subject.kind), action.subject.id


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks; ``None`` for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True, slots=True)
class SubjectCounts:
    """Distinct subjects seen in the events, per kind: all of them, and the unlabeled (organic) ones."""

    seen: dict[str, int]
    organic: dict[str, int]


def count_subjects(
    events: Iterable[pb.Event], labels: Iterable[Label], kinds: Collection[str] = SUBJECT_KINDS
) -> SubjectCounts:
    """Count distinct subjects per kind in ``events`` and how many of them no abusive label names
    (benign-labeled subjects are organic)."""
    labeled = {(x.entity_kind, x.entity_id) for x in labels if not x.benign}
    ids: dict[str, set[str]] = {k: set() for k in kinds}
    extract = [(k, _EXTRACT[k], ids[k]) for k in kinds]
    for event in events:
        for _, get, bucket in extract:
            value = get(event)
            if value:
                bucket.add(value)
    return SubjectCounts(
        seen={k: len(v) for k, v in ids.items()},
        organic={k: sum((k, i) not in labeled for i in v) for k, v in ids.items()},
    )


@dataclass(frozen=True, slots=True)
class LatencyReport:
    """Event→action latency over the actions whose event's ingest time is known, in ms."""

    count: int
    missing: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    """Detection quality for one scenario."""

    precision: float | None
    recall: float | None
    true_positives: int
    false_positives: int
    labeled_subjects: int
    recall_by_kind: dict[str, float]
    attack_start_ms: int
    time_to_first_action_s: float | None
    time_to_action_s_p50: float | None
    time_to_action_s_p95: float | None
    rules: list[str]
    """The rules of this scenario: those that actioned at least one of its subjects."""
    recall_all_kinds: float | None = None
    """Recall over every labeled kind (``recall`` counts the evaluated kinds only)."""
    recall_by_kind_all: dict[str, float] = field(default_factory=dict)
    """Recall per labeled kind, every kind (0.0 for a kind never acted on)."""
    time_to_action_s_max: float | None = None


@dataclass(frozen=True, slots=True)
class TrapReport:
    """A false-positive trap: its known-benign subjects and the counted actions that hit them."""

    subjects: int
    false_positives: int
    false_positives_by_kind: dict[str, int]
    rules: list[str]
    """The rules that acted on its false-positive subjects."""
    collateral: int = 0
    """Benign subjects acted on only through attack events (a spam message's recipient, a stuffed
    account's challenge): victims, as for unlabeled subjects, not false positives."""


@dataclass(frozen=True, slots=True)
class OverallReport:
    """Detection quality over all scenarios, organic false positives and latency."""

    precision: float | None
    recall: float | None
    true_positives: int
    false_positives: int
    labeled_subjects: int
    actioned_subjects: int
    organic_subjects: int | None
    false_positive_rate: float | None
    false_positives_by_kind: dict[str, int]
    unattributed_by_kind: dict[str, int]
    collateral_by_kind: dict[str, int]
    evaluated_kinds: list[str]
    time_to_action_s_p50: float | None
    time_to_action_s_p95: float | None
    time_to_first_action_s_p50: float | None
    time_to_first_action_s_p95: float | None
    counted_actions: int
    latency: LatencyReport | None
    recall_all_kinds: float | None = None
    recall_by_kind: dict[str, float] = field(default_factory=dict)
    """Every labeled kind, pooled over scenarios."""
    never_actioned_kinds: list[str] = field(default_factory=list)
    """Labeled kinds no counted action targeted: reported, and kept in ``recall_all_kinds``."""
    trap_false_positives: int = 0
    benign_subjects: int = 0


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """The whole report: ``overall``, one entry per labeled scenario and one per trap."""

    overall: OverallReport
    scenarios: dict[str, ScenarioReport] = field(default_factory=dict)
    traps: dict[str, TrapReport] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """``{"overall": {...}, "scenarios": {name: {...}}, "traps": {name: {...}}}``, JSON-ready."""
        return {
            "overall": asdict(self.overall),
            "scenarios": {k: asdict(v) for k, v in self.scenarios.items()},
            "traps": {k: asdict(v) for k, v in self.traps.items()},
        }

    def to_json(self) -> str:
        """``as_dict`` as one JSON object (keys sorted, no NaN)."""
        return json.dumps(self.as_dict(), sort_keys=True, allow_nan=False)


@dataclass(slots=True)
class _Index:
    """Counted actions grouped by subject: first action time and the rules that acted."""

    first_ms: dict[Subject, int] = field(default_factory=dict)
    rules: dict[Subject, set[str]] = field(default_factory=lambda: defaultdict(set))
    organic_trigger: set[Subject] = field(default_factory=set)
    rule_scenarios: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    count: int = 0


def counted(action: pb.Action, kinds: Collection[str] | None, include_shadow_mode: bool) -> bool:
    """Is ``action`` a counted action (see the module docstring)?"""
    if action.verdict == pb.Action.ALLOW:
        return False
    if action.mode == pb.Action.SHADOW_MODE and not include_shadow_mode:
        return False
    return kinds is None or kind_name(action.subject.kind) in kinds


def _index(
    actions: Iterable[pb.Action],
    kinds: Collection[str] | None,
    include_shadow_mode: bool,
    event_scenarios: Mapping[str, str] | None,
) -> _Index:
    idx = _Index()
    for a in actions:
        if not counted(a, kinds, include_shadow_mode):
            continue
        idx.count += 1
        s = subject_of(a)
        t = a.event_time_ms
        if s not in idx.first_ms or t < idx.first_ms[s]:
            idx.first_ms[s] = t
        idx.rules[s].update(a.reasons)
        if event_scenarios is not None:
            scenario = event_scenarios.get(a.event_id)
            if scenario is None:
                idx.organic_trigger.add(s)
            else:
                for rule in a.reasons:
                    idx.rule_scenarios[rule].add(scenario)
    return idx


def _latency(actions: Sequence[pb.Action], ingest_ms: Mapping[str, int]) -> LatencyReport:
    values: list[float] = []
    missing = 0
    for a in actions:
        t = ingest_ms.get(a.event_id)
        if t is None:
            missing += 1
        else:
            values.append(float(a.decision_time_ms - t))
    return LatencyReport(
        count=len(values),
        missing=missing,
        p50_ms=percentile(values, 50),
        p95_ms=percentile(values, 95),
        p99_ms=percentile(values, 99),
        max_ms=max(values) if values else None,
    )


def evaluate(
    actions: Sequence[pb.Action],
    labels: Sequence[Label],
    *,
    organic_subjects: Mapping[str, int] | None = None,
    subject_kinds: Collection[str] | None = None,
    labeled_kinds: Collection[str] | None = None,
    include_shadow_mode: bool = False,
    ingest_ms: Mapping[str, int] | None = None,
    event_scenarios: Mapping[str, str] | None = None,
) -> EvaluationReport:
    """Score ``actions`` against ``labels`` (see the module docstring for every definition).

    ``organic_subjects``: distinct unlabeled subjects seen per kind (``count_subjects(...).organic``),
    for the false-positive rate. ``ingest_ms``: event id → wall ms it was ingested, for latency.
    ``event_scenarios``: event id → scenario of the events attacks produced (absent = organic), to tell
    collateral from false positives.
    """
    idx = _index(actions, subject_kinds, include_shadow_mode, event_scenarios)
    kinds = sorted(subject_kinds if subject_kinds is not None else {s[0] for s in idx.first_ms})
    complete = set(labeled_kinds) if labeled_kinds is not None else {x.entity_kind for x in labels}
    # Every action on any kind (for recall over all labeled kinds), same counting rules otherwise.
    all_idx = idx if subject_kinds is None else _index(actions, None, include_shadow_mode, event_scenarios)

    abusive = [x for x in labels if not x.benign]
    by_scenario: dict[str, set[Subject]] = defaultdict(set)
    by_scenario_all: dict[str, set[Subject]] = defaultdict(set)
    onset: dict[tuple[str, Subject], int] = {}
    start_ms: dict[str, int] = {}
    for x in abusive:
        start_ms[x.scenario] = min(start_ms.get(x.scenario, x.start_ms), x.start_ms)
        subj = (x.entity_kind, x.entity_id)
        by_scenario_all[x.scenario].add(subj)
        key = (x.scenario, subj)
        onset[key] = min(onset.get(key, x.onset_ms), x.onset_ms)
        if x.entity_kind in kinds:
            by_scenario[x.scenario].add(subj)
    labeled: set[Subject] = set()
    labeled_all: set[Subject] = set()
    for name in start_ms:
        labeled |= by_scenario.setdefault(name, set())
        labeled_all |= by_scenario_all[name]
    benign: dict[str, set[Subject]] = defaultdict(set)
    for x in labels:
        if x.benign:
            subjects_of_trap = benign[x.scenario]
            if (x.entity_kind, x.entity_id) not in labeled_all:
                subjects_of_trap.add((x.entity_kind, x.entity_id))

    false_pos: set[Subject] = set()
    unattributed: dict[str, int] = defaultdict(int)
    collateral: dict[str, int] = defaultdict(int)
    for s in idx.first_ms:
        if s in labeled:
            continue
        if s[0] not in complete:
            unattributed[s[0]] += 1
        elif event_scenarios is not None and s not in idx.organic_trigger:
            collateral[s[0]] += 1
        else:
            false_pos.add(s)
    fp_by_kind: dict[str, int] = defaultdict(int)
    for s in false_pos:
        fp_by_kind[s[0]] += 1

    scenarios: dict[str, ScenarioReport] = {}
    pooled: list[float] = []
    firsts: list[float] = []
    for name in sorted(by_scenario):
        subjects = by_scenario[name]
        hits = [s for s in subjects if s in idx.first_ms]
        rule_set = {r for r, names in idx.rule_scenarios.items() if name in names}
        for s in hits:
            rule_set |= idx.rules[s]
        rules = sorted(rule_set)
        fps = sum(1 for s in false_pos if idx.rules[s] & rule_set)
        delays = [(idx.first_ms[s] - onset[(name, s)]) / 1000.0 for s in hits]
        pooled.extend(delays)
        first = (min(idx.first_ms[s] for s in hits) - start_ms[name]) / 1000.0 if hits else None
        if first is not None:
            firsts.append(first)
        per_kind_total: dict[str, int] = defaultdict(int)
        per_kind_hit: dict[str, int] = defaultdict(int)
        for s in subjects:
            per_kind_total[s[0]] += 1
            per_kind_hit[s[0]] += s in idx.first_ms
        all_subjects = by_scenario_all[name]
        all_total: dict[str, int] = defaultdict(int)
        all_hit: dict[str, int] = defaultdict(int)
        for s in all_subjects:
            all_total[s[0]] += 1
            all_hit[s[0]] += s in all_idx.first_ms
        scenarios[name] = ScenarioReport(
            precision=_ratio(len(hits), len(hits) + fps),
            recall=_ratio(len(hits), len(subjects)),
            true_positives=len(hits),
            false_positives=fps,
            labeled_subjects=len(subjects),
            recall_by_kind={k: per_kind_hit[k] / n for k, n in sorted(per_kind_total.items())},
            attack_start_ms=start_ms[name],
            time_to_first_action_s=first,
            time_to_action_s_p50=percentile(delays, 50),
            time_to_action_s_p95=percentile(delays, 95),
            rules=rules,
            recall_all_kinds=_ratio(sum(all_hit.values()), len(all_subjects)),
            recall_by_kind_all={k: all_hit[k] / n for k, n in sorted(all_total.items())},
            time_to_action_s_max=max(delays) if delays else None,
        )

    traps: dict[str, TrapReport] = {}
    trap_fp: set[Subject] = set()
    for name in sorted(benign):
        acted = [s for s in benign[name] if s in all_idx.first_ms]
        # As for unlabeled subjects: a benign subject only attack events acted on is a victim.
        victims = [s for s in acted if event_scenarios is not None and s not in all_idx.organic_trigger]
        hit = [s for s in acted if s not in victims]
        trap_fp.update(hit)
        by_kind: dict[str, int] = defaultdict(int)
        rules_hit: set[str] = set()
        for s in hit:
            by_kind[s[0]] += 1
            rules_hit |= all_idx.rules[s]
        traps[name] = TrapReport(
            subjects=len(benign[name]),
            false_positives=len(hit),
            false_positives_by_kind=dict(sorted(by_kind.items())),
            rules=sorted(rules_hit),
            collateral=len(victims),
        )
    kind_total: dict[str, int] = defaultdict(int)
    kind_hit: dict[str, int] = defaultdict(int)
    for s in labeled_all:
        kind_total[s[0]] += 1
        kind_hit[s[0]] += s in all_idx.first_ms
    actioned_kinds = {s[0] for s in all_idx.first_ms}

    tp = sum(1 for s in idx.first_ms if s in labeled)
    organic_total = sum(organic_subjects.get(k, 0) for k in kinds) if organic_subjects is not None else None
    overall = OverallReport(
        precision=_ratio(tp, tp + len(false_pos)),
        recall=_ratio(tp, len(labeled)),
        true_positives=tp,
        false_positives=len(false_pos),
        labeled_subjects=len(labeled),
        actioned_subjects=len(idx.first_ms),
        organic_subjects=organic_total,
        false_positive_rate=_ratio(len(false_pos), organic_total) if organic_total is not None else None,
        false_positives_by_kind=dict(sorted(fp_by_kind.items())),
        unattributed_by_kind=dict(sorted(unattributed.items())),
        collateral_by_kind=dict(sorted(collateral.items())),
        evaluated_kinds=kinds,
        time_to_action_s_p50=percentile(pooled, 50),
        time_to_action_s_p95=percentile(pooled, 95),
        time_to_first_action_s_p50=percentile(firsts, 50),
        time_to_first_action_s_p95=percentile(firsts, 95),
        counted_actions=idx.count,
        latency=_latency(actions, ingest_ms) if ingest_ms is not None else None,
        recall_all_kinds=_ratio(sum(kind_hit.values()), len(labeled_all)),
        recall_by_kind={k: kind_hit[k] / n for k, n in sorted(kind_total.items())},
        never_actioned_kinds=sorted(k for k in kind_total if k not in actioned_kinds),
        trap_false_positives=len(trap_fp),
        benign_subjects=sum(len(v) for v in benign.values()),
    )
    return EvaluationReport(overall=overall, scenarios=scenarios, traps=traps)
