"""Dashboard statistics of decided review jobs: time to review against the SLA, decisions per reviewer,
and the overturn rate per rule (1 - overturn rate is the measured precision of an automated rule)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streamwarden.operators.evaluation.report import percentile


@dataclass(frozen=True, slots=True)
class DecidedJob:
    """One final decision (uphold or overturn) with what the dashboard needs of its job."""

    queue: str
    reviewer: str
    decision: str
    created_ms: int
    decided_ms: int
    rule_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule_id: str
    upheld: int
    overturned: int

    @property
    def reviewed(self) -> int:
        return self.upheld + self.overturned

    @property
    def overturn_rate(self) -> float:
        return self.overturned / self.reviewed if self.reviewed else 0.0


@dataclass
class Dashboard:
    decided: int = 0
    review_p50_s: float | None = None
    review_p95_s: float | None = None
    within_sla: float | None = None
    """Share of decisions made within the SLA."""
    sla_s: float = 0.0
    per_reviewer: Counter[str] = field(default_factory=Counter)
    per_decision: Counter[str] = field(default_factory=Counter)
    rules: list[RuleOutcome] = field(default_factory=list)


def dashboard(jobs: Iterable[DecidedJob], sla_s: float) -> Dashboard:
    """Statistics over final decisions. A job counts once per distinct rule among its actions."""
    out = Dashboard(sla_s=sla_s)
    waits: list[float] = []
    upheld: Counter[str] = Counter()
    overturned: Counter[str] = Counter()
    for j in jobs:
        out.decided += 1
        waits.append(max(0.0, (j.decided_ms - j.created_ms) / 1000.0))
        out.per_reviewer[j.reviewer] += 1
        out.per_decision[j.decision] += 1
        target = upheld if j.decision == "uphold" else overturned
        for rule in set(j.rule_ids):
            target[rule] += 1
    out.review_p50_s = percentile(waits, 50)
    out.review_p95_s = percentile(waits, 95)
    out.within_sla = sum(w <= sla_s for w in waits) / len(waits) if waits else None
    out.rules = sorted(
        (RuleOutcome(r, upheld[r], overturned[r]) for r in upheld.keys() | overturned.keys()),
        key=lambda o: (-o.overturn_rate, -o.reviewed, o.rule_id),
    )
    return out


def age_s(oldest_ms: int | None, now_ms: int) -> float | None:
    return None if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000.0)


def human_duration(seconds: float | None) -> str:
    """``95`` → ``1m35s``; ``None`` → ``-``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def rule_ids_of(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
