"""The transparency report (DSA Art. 15(1)(c)-(e), Art. 24(1)) of one period, from the actions,
statements of reasons, review decisions and appeals, and (optionally) labeled evaluation data.

Definitions (every number follows them; the test checks them against a hand-computed fixture):

- Period: ``[start_ms, end_ms)`` of event time for actions and statements (the time of the decision's
  input: the same for every engine), of ``decided_ms`` for review decisions.
- *Restrictions* (``by_restriction``, ``by_ground``, ``by_category``): counted over the period's
  statements (current revisions, revoked ones included: they were applied). A statement with several
  restriction types (e.g. visibility and monetary) counts once under each.
- *Automated means*: the share of statements with ``automated_detection == "Yes"``, and the statements
  per ``automated_decision`` value (fully automated until a reviewer took part).
- *Time to action* (needs labels with ``first_ms``): per labeled abusive subject with an enforcing
  action, the first such action's event time minus the subject's first abusive event; the median over
  subjects, in seconds.
- *Reviews*: decisions (``ReviewLabel``) decided in the period, by outcome; *time to review*: the
  decision time minus the earliest ``decision_time_ms`` of the actions it covers (the event time for an
  action whose decision time is unset or after the review: a replayed action; actions unknown to the
  report are skipped), median in seconds. *Appeals*: decisions with ``appealed_decision_id``: rejected
  (uphold) or granted (overturn); ``appeals_opened`` counts ``ReviewAppeal`` messages given.
- *Overturn rate* per rule: of the period's review decisions covering a rule's actions
  (``ReviewLabel.rule_ids``), the share that overturned (appeals included), with a Wilson 95% interval.
- *Precision / recall* per rule (needs labels; every rule, shadow-mode ones included, marked by mode):
  an action is *correct* if its subject is labeled abusive or its event belongs to an attack
  (``event_scenarios``: the per-event rules name victims, which labels never name); *wrong* if its
  subject is labeled benign or its event is organic. Precision = correct / (correct + wrong) over
  actions. Recall over subjects: labeled abusive subjects of the rule's subject kind, in the scenarios
  the rule acted on at least once, that the rule actioned / all of them (None if there are none).
  Both with Wilson 95% intervals (z = 1.96).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamwarden.operators.traffic.labels import Label
from streamwarden.schemas import streamwarden_pb2 as pb

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (None for n = 0)."""
    if n <= 0:
        return None
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _median_s(values_ms: Sequence[float]) -> float | None:
    return statistics.median(values_ms) / 1000 if values_ms else None


@dataclass
class Proportion:
    successes: int
    n: int
    value: float | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, successes: int, n: int) -> Proportion:
        ci = wilson(successes, n)
        return cls(successes, n, successes / n if n else None, *(ci if ci else (None, None)))


@dataclass
class RuleAccuracy:
    rule_id: str
    mode: str
    actions: int
    statements: int
    reviews: int = 0
    overturn_rate: Proportion = field(default_factory=lambda: Proportion.of(0, 0))
    precision: Proportion | None = None
    recall: Proportion | None = None


@dataclass
class TransparencyReport:
    start_ms: int
    end_ms: int
    actions: int
    actions_by_verdict: dict[str, int]
    statements: int
    statements_revoked: int
    by_restriction: dict[str, int]
    by_ground: dict[str, int]
    by_category: dict[str, int]
    automated_detection: Proportion
    automated_decision: dict[str, int]
    time_to_action_s_median: float | None
    time_to_action_subjects: int
    reviews: int
    reviews_by_outcome: dict[str, int]
    time_to_review_s_median: float | None
    appeals_opened: int
    appeals_decided: int
    appeals_by_outcome: dict[str, int]
    rules: list[RuleAccuracy]
    labeled: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def restriction_types(s: pb.StatementOfReasons) -> list[str]:
    """The restriction values of one statement (each of the four kinds it sets)."""
    out = list(s.decision_visibility)
    out += [v for v in (s.decision_monetary, s.decision_provision, s.decision_account) if v]
    return out


def _decided_at(a: pb.Action, reviewed_ms: int) -> int:
    """When the job decided ``a``: its wall-clock decision time, or its event time when that is unset or
    later than the review (an action replayed after the fact, whose wall clock says nothing of when the
    decision was first taken)."""
    t = a.decision_time_ms
    return t if 0 < t <= reviewed_ms else a.event_time_ms


def _kind(kind: int) -> str:
    return pb.EntityKind.Name(kind).lower()  # type: ignore[arg-type]


def build_report(
    *,
    start_ms: int,
    end_ms: int,
    actions: Iterable[pb.Action],
    statements: Iterable[pb.StatementOfReasons],
    reviews: Iterable[pb.ReviewLabel] = (),
    appeals: Iterable[pb.ReviewAppeal] = (),
    labels: Sequence[Label] | None = None,
    event_scenarios: Mapping[str, str] | None = None,
) -> TransparencyReport:
    """The period's report (see the module docstring for every definition)."""
    acts = [a for a in actions if start_ms <= a.event_time_ms < end_ms]
    sors = [s for s in statements if start_ms <= s.event_time_ms < end_ms]
    revs = [r for r in reviews if start_ms <= r.decided_ms < end_ms]
    opened = [a for a in appeals if start_ms <= a.appealed_ms < end_ms]
    by_action = {a.action_id: a for a in acts}

    by_restriction: Counter[str] = Counter()
    for s in sors:
        by_restriction.update(restriction_types(s))
    detected = sum(s.automated_detection == "Yes" for s in sors)

    # time to action: labeled abusive subjects, first enforcing action vs own first abusive event
    abusive: dict[tuple[str, str], Label] = {}
    benign: set[tuple[str, str]] = set()
    for lab in labels or ():
        key = (lab.entity_kind, lab.entity_id)
        if lab.benign:
            benign.add(key)
        elif key not in abusive or lab.onset_ms < abusive[key].onset_ms:
            abusive[key] = lab
    benign -= set(abusive)
    first_action: dict[tuple[str, str], int] = {}
    for a in acts:
        if a.mode != pb.Action.ENFORCE or a.verdict == pb.Action.ALLOW:
            continue
        key = (_kind(a.subject.kind), a.subject.id)
        if key in abusive:
            first_action[key] = min(first_action.get(key, a.event_time_ms), a.event_time_ms)
    delays = [t - abusive[k].onset_ms for k, t in first_action.items()]

    # reviews and appeals
    outcome = {pb.ReviewLabel.UPHOLD: "upheld", pb.ReviewLabel.OVERTURN: "overturned"}
    by_outcome: Counter[str] = Counter(outcome.get(r.decision, "other") for r in revs)
    waits = []
    for r in revs:
        times = [_decided_at(by_action[i], r.decided_ms) for i in r.action_ids if i in by_action]
        if times:
            waits.append(r.decided_ms - min(times))
    appeal_outcome = {pb.ReviewLabel.UPHOLD: "rejected", pb.ReviewLabel.OVERTURN: "granted"}
    decided_appeals = [r for r in revs if r.appealed_decision_id]

    # per rule
    rules: dict[str, RuleAccuracy] = {}
    for a in acts:
        rid = a.reasons[0] if a.reasons else "(none)"
        mode = "shadow" if a.mode == pb.Action.SHADOW_MODE else "enforce"
        acc = rules.setdefault(rid, RuleAccuracy(rid, mode, 0, 0))
        acc.actions += 1
    for s in sors:
        rules.setdefault(s.rule_id, RuleAccuracy(s.rule_id, "enforce", 0, 0)).statements += 1
    overturned: Counter[str] = Counter()
    reviewed: Counter[str] = Counter()
    for r in revs:
        for rid in set(r.rule_ids):
            reviewed[rid] += 1
            overturned[rid] += r.decision == pb.ReviewLabel.OVERTURN
    for rid, n in reviewed.items():
        acc = rules.setdefault(rid, RuleAccuracy(rid, "enforce", 0, 0))
        acc.reviews = n
        acc.overturn_rate = Proportion.of(overturned[rid], n)
    if labels is not None:
        scen = event_scenarios or {}
        scenarios_of: dict[tuple[str, str], set[str]] = defaultdict(set)
        for lab in labels:
            if not lab.benign:
                scenarios_of[(lab.entity_kind, lab.entity_id)].add(lab.scenario)
        per_rule: dict[str, list[pb.Action]] = defaultdict(list)
        for a in acts:
            if a.verdict != pb.Action.ALLOW and a.reasons:
                per_rule[a.reasons[0]].append(a)
        for rid, rule_actions in per_rule.items():
            correct = wrong = 0
            caught_scenarios: set[str] = set()
            actioned: set[tuple[str, str]] = set()
            kinds: set[str] = set()
            for a in rule_actions:
                key = (_kind(a.subject.kind), a.subject.id)
                kinds.add(key[0])
                actioned.add(key)
                if key in abusive or a.event_id in scen:
                    correct += 1
                    caught_scenarios |= scenarios_of.get(key, set())
                    if a.event_id in scen:
                        caught_scenarios.add(scen[a.event_id])
                else:
                    wrong += 1
            pool = {k for k in abusive if k[0] in kinds and scenarios_of[k] & caught_scenarios}
            rules[rid].precision = Proportion.of(correct, correct + wrong)
            rules[rid].recall = Proportion.of(len(pool & actioned), len(pool)) if pool else None

    return TransparencyReport(
        start_ms=start_ms,
        end_ms=end_ms,
        actions=len(acts),
        actions_by_verdict=dict(
            sorted(
                Counter(
                    pb.Action.Verdict.Name(a.verdict)
                    + ("" if a.mode == pb.Action.ENFORCE else " (shadow mode)")
                    for a in acts
                ).items()
            )
        ),
        statements=len(sors),
        statements_revoked=sum(s.status == pb.StatementOfReasons.REVOKED for s in sors),
        by_restriction=dict(sorted(by_restriction.items())),
        by_ground=dict(sorted(Counter(s.decision_ground for s in sors).items())),
        by_category=dict(sorted(Counter(s.category for s in sors).items())),
        automated_detection=Proportion.of(detected, len(sors)),
        automated_decision=dict(sorted(Counter(s.automated_decision for s in sors).items())),
        time_to_action_s_median=_median_s(delays),
        time_to_action_subjects=len(delays),
        reviews=len(revs),
        reviews_by_outcome=dict(sorted(by_outcome.items())),
        time_to_review_s_median=_median_s(waits),
        appeals_opened=len(opened),
        appeals_decided=len(decided_appeals),
        appeals_by_outcome=dict(
            sorted(Counter(appeal_outcome.get(r.decision, "other") for r in decided_appeals).items())
        ),
        rules=sorted(rules.values(), key=lambda r: (-r.actions, r.rule_id)),
        labeled=labels is not None,
    )


def report_rows(report: TransparencyReport) -> list[dict[str, Any]]:
    """The report as flat rows ``section, key, value, low, high`` (the CSV form)."""
    rows: list[dict[str, Any]] = []

    def add(section: str, key: str, value: Any, low: Any = None, high: Any = None) -> None:
        rows.append({"section": section, "key": key, "value": value, "low": low, "high": high})

    add("period", "start_ms", report.start_ms)
    add("period", "end_ms", report.end_ms)
    add("actions", "total", report.actions)
    for k, v in report.actions_by_verdict.items():
        add("actions_by_verdict", k, v)
    add("statements", "total", report.statements)
    add("statements", "revoked", report.statements_revoked)
    for section in ("by_restriction", "by_ground", "by_category", "automated_decision"):
        for k, v in getattr(report, section).items():
            add(section, k, v)
    p = report.automated_detection
    add("automated_detection", "share_yes", p.value, p.low, p.high)
    add("time_to_action", "median_s", report.time_to_action_s_median)
    add("time_to_action", "subjects", report.time_to_action_subjects)
    add("reviews", "total", report.reviews)
    for k, v in report.reviews_by_outcome.items():
        add("reviews_by_outcome", k, v)
    add("reviews", "median_time_to_review_s", report.time_to_review_s_median)
    add("appeals", "opened", report.appeals_opened)
    add("appeals", "decided", report.appeals_decided)
    for k, v in report.appeals_by_outcome.items():
        add("appeals_by_outcome", k, v)
    for r in report.rules:
        add(f"rule:{r.rule_id}", "mode", r.mode)
        add(f"rule:{r.rule_id}", "actions", r.actions)
        add(f"rule:{r.rule_id}", "statements", r.statements)
        add(f"rule:{r.rule_id}", "reviews", r.reviews)
        o = r.overturn_rate
        add(f"rule:{r.rule_id}", "overturn_rate", o.value, o.low, o.high)
        for name in ("precision", "recall"):
            q = getattr(r, name)
            if q is not None:
                add(f"rule:{r.rule_id}", name, q.value, q.low, q.high)
    return rows
