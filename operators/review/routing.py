"""Review routing: which actions need a human, and which queue each goes to (``default_routing.yaml``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamwarden.operators.config_io import format_validation_error, load_yaml_mapping
from streamwarden.operators.errors import ConfigError
from streamwarden.schemas import streamwarden_pb2 as pb

DEFAULT_ROUTING_PATH = Path(__file__).with_name("default_routing.yaml")
DecisionKind = Literal["uphold", "overturn", "escalate"]
DECISION_KINDS: tuple[DecisionKind, ...] = ("uphold", "overturn", "escalate")
_QUEUE_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSpec(_Strict):
    name: str = Field(pattern=_QUEUE_NAME)
    description: str = ""
    rules: tuple[str, ...] = Field((), description="Shell-style patterns of rule ids routed here.")


class ReviewRouting(_Strict):
    """What goes to review and where; also the console's decision rules, lease and SLA."""

    review_verdicts: tuple[str, ...] = ("SEND_TO_REVIEW",)
    review_rules: tuple[str, ...] = Field((), description="Rule id patterns reviewed whatever the verdict.")
    queues: tuple[QueueSpec, ...] = ()
    default_queue: str = Field("general", pattern=_QUEUE_NAME)
    appeals_queue: str = Field("appeals", pattern=_QUEUE_NAME)
    escalation_queue: str = Field("escalations", pattern=_QUEUE_NAME)
    categories: tuple[str, ...] = Field(("other_abuse",), min_length=1)
    require_reason: tuple[DecisionKind, ...] = ()
    lease_s: float = Field(300.0, gt=0)
    sla_s: float = Field(3600.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ReviewRouting:
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise ValueError(f"queue names must be unique, got {names}")
        known = list(pb.Action.Verdict.keys())
        bad = [v for v in self.review_verdicts if v not in known]
        if bad:
            raise ValueError(f"unknown verdicts {bad}; known: {known}")
        return self

    def queue_names(self) -> list[str]:
        """Every queue, in display order: the configured ones, then default, escalation and appeals."""
        out = [q.name for q in self.queues]
        for extra in (self.default_queue, self.escalation_queue, self.appeals_queue):
            if extra not in out:
                out.append(extra)
        return out

    def needs_review(self, action: pb.Action) -> bool:
        if pb.Action.Verdict.Name(action.verdict) in self.review_verdicts:
            return True
        return any(_matches(r, self.review_rules) for r in action.reasons)

    def queue_for(self, rule_ids: Sequence[str]) -> str:
        """The first queue one of whose patterns matches one of ``rule_ids``; else the default queue."""
        for q in self.queues:
            if any(_matches(r, q.rules) for r in rule_ids):
                return q.name
        return self.default_queue

    def route(self, action: pb.Action) -> str | None:
        """The queue of ``action``, or ``None`` if it does not go to review."""
        return self.queue_for(list(action.reasons)) if self.needs_review(action) else None

    def reason_required(self, decision: DecisionKind) -> bool:
        return decision in self.require_reason


def _matches(rule_id: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rule_id, p) for p in patterns)


def load_routing(path: Path | None = None) -> ReviewRouting:
    """The routing file at ``path`` (None = the shipped default); ``ConfigError`` names file and field."""
    path = path or DEFAULT_ROUTING_PATH
    data = load_yaml_mapping(path)
    try:
        return ReviewRouting.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from exc
