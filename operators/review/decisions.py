"""Reviewer decisions and what they become: a ``ReviewLabel`` on the ``labels`` topic (what
``streamwarden feedback build`` reads) and the subject's entity label.

- ``uphold``: the automation was right: label ``abuse`` with the reviewer's policy category.
- ``overturn``: a false positive: label ``benign`` (the subject is no longer treated as flagged).
- ``escalate``: no label; the job moves to another queue.

On an appeal job the same two outcomes apply: ``uphold`` keeps the original decision (``abuse``),
``overturn`` grants the appeal (``benign``); the label names the decision appealed against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamwarden.operators.review.routing import DecisionKind, ReviewRouting
from streamwarden.schemas import streamwarden_pb2 as pb

LABEL_OF: dict[DecisionKind, str | None] = {"uphold": "abuse", "overturn": "benign", "escalate": None}


class DecisionError(ValueError):
    """A decision that cannot be taken as given (the message says why, for the reviewer)."""


@dataclass(frozen=True, slots=True)
class DecisionInput:
    decision: DecisionKind
    category: str = ""
    reason: str = ""
    escalate_to: str = ""


def validate_decision(d: DecisionInput, routing: ReviewRouting, current_queue: str) -> DecisionInput:
    """``d`` cleaned (category only on uphold, reason stripped), or ``DecisionError``."""
    reason = d.reason.strip()
    if len(reason) > 2000:
        raise DecisionError("the reason is longer than 2000 characters")
    if routing.reason_required(d.decision) and not reason:
        raise DecisionError(f"a reason is required to {d.decision}")
    if d.decision == "uphold":
        if d.category not in routing.categories:
            raise DecisionError(f"pick a policy category (one of {', '.join(routing.categories)})")
        return DecisionInput("uphold", d.category, reason)
    if d.decision == "overturn":
        return DecisionInput("overturn", "", reason)
    if d.decision == "escalate":
        target = d.escalate_to or routing.escalation_queue
        if target not in routing.queue_names():
            raise DecisionError(f"unknown queue {target!r}")
        if target == current_queue:
            raise DecisionError("escalate to another queue than this one")
        return DecisionInput("escalate", "", reason, target)
    raise DecisionError(f"unknown decision {d.decision!r}")


def subject_kind_number(kind: str) -> int:
    """``target_content`` → ``pb.EntityKind.TARGET_CONTENT``."""
    return int(pb.EntityKind.Value(kind.upper()))


def review_label(
    *,
    decision_id: str,
    decision: DecisionInput,
    subject_kind: str,
    subject_id: str,
    reviewer: str,
    decided_ms: int,
    action_ids: Sequence[str],
    rule_ids: Sequence[str],
    queue: str,
    appealed_decision_id: str = "",
) -> pb.ReviewLabel | None:
    """The ``labels`` message of a decision; ``None`` for an escalation (nothing decided yet)."""
    label = LABEL_OF[decision.decision]
    if label is None:
        return None
    return pb.ReviewLabel(
        decision_id=decision_id,
        subject=pb.Subject(kind=subject_kind_number(subject_kind), id=subject_id),  # type: ignore[arg-type]
        decision=pb.ReviewLabel.UPHOLD if decision.decision == "uphold" else pb.ReviewLabel.OVERTURN,
        label=label,
        category=decision.category,
        reviewer=reviewer,
        decided_ms=decided_ms,
        action_ids=list(action_ids),
        rule_ids=sorted(set(rule_ids)),
        queue=queue,
        reason=decision.reason,
        appealed_decision_id=appealed_decision_id,
    )


def label_key(subject_kind: str, subject_id: str) -> bytes:
    """The Kafka key of a label: ``kind:id`` (one subject's decisions stay in order), as ``feedback`` uses."""
    return f"{subject_kind}:{subject_id}".encode()
