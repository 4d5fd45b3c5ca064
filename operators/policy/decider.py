"""Features + scores → zero or more ``Action``s, by the policy's ordered rules. Stateless and pure.

Determinism: an action's id is a hash of what it is about, never of when it was computed::

    cooldown_ms == 0:  sha256(policy_version | rule_id | subject kind | subject id | "e:" event_id)
    cooldown_ms  > 0:  sha256(policy_version | rule_id | subject kind | subject id | "w:" window index)

where ``window index = event_time_ms // cooldown_ms`` (aligned event-time windows). Re-processing an
event (at-least-once delivery, a restart, a second engine) yields the same id, so downstream can
deduplicate. For rules with a cooldown all matching events of one subject in one window share one id:
the ``CooldownGate`` (operators/policy/cooldown.py, keyed by subject) drops the repeats early, and a
consumer deduplicating by id gets exactly one action per subject and window even without it. Only
``decision_time_ms`` comes from the injected clock; every other field is a function of the input.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamwarden.operators.policy.expr import Predicate, Values, compile_condition
from streamwarden.operators.policy.policy import Policy, Rule
from streamwarden.schemas import streamwarden_pb2 as pb

Clock = Callable[[], int]
FeatureInput = Mapping[str, float] | Sequence[float] | npt.NDArray[np.floating[Any]]

ACTION_ID_HEX_CHARS = 32

SUBJECT_KINDS: dict[str, pb.EntityKind.ValueType] = {
    "account": pb.ACCOUNT,
    "ip": pb.IP,
    "device": pb.DEVICE,
    "target_content": pb.TARGET_CONTENT,
    "target_account": pb.TARGET_ACCOUNT,
    "asn": pb.ASN,
}
VERDICTS: dict[str, pb.Action.Verdict.ValueType] = {
    "allow": pb.Action.ALLOW,
    "flag": pb.Action.FLAG,
    "challenge": pb.Action.CHALLENGE,
    "rate_limit": pb.Action.RATE_LIMIT,
    "shadow": pb.Action.SHADOW,
    "block": pb.Action.BLOCK,
    "send_to_review": pb.Action.SEND_TO_REVIEW,
}
MODES: dict[str, pb.Action.Mode.ValueType] = {"enforce": pb.Action.ENFORCE, "shadow": pb.Action.SHADOW_MODE}


class EventFacts(Protocol):
    """What the decider reads of an event when it has no ``pb.Event`` at hand: the velocity engine's
    ``operators.features.EventFacts`` (carried by every assembled ``FeatureVector``) fits."""

    @property
    def event_id(self) -> str: ...
    @property
    def time_ms(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def account(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def asn(self) -> str: ...
    @property
    def target_content(self) -> str: ...
    @property
    def target_account(self) -> str: ...


EventInput = pb.Event | EventFacts

_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})

_FACT_FIELDS = {
    "account": "account",
    "ip": "ip",
    "device": "device",
    "asn": "asn",
    "target_content": "target_content",
    "target_account": "target_account",
}


def subject_id(event: EventInput, kind: str) -> str:
    """The id of the ``kind`` entity named by ``event`` ("" when the event does not name one)."""
    if not isinstance(event, pb.Event):
        value = getattr(event, _FACT_FIELDS[kind])
        return "" if kind == "asn" and value == "0" else str(value)
    if kind == "account":
        return event.actor.account_id
    if kind == "ip":
        return event.actor.ip
    if kind == "device":
        return event.actor.device_id
    if kind == "asn":
        return str(event.actor.asn) if event.actor.asn else ""
    if kind == "target_content":
        return event.target.content_id
    if kind == "target_account":
        return event.target.account_id
    raise ValueError(f"unknown subject kind {kind!r}")


def action_id(policy_version: str, rule_id: str, kind: str, subject: str, anchor: str) -> str:
    """Deterministic action id (hex prefix of a sha256); see the module docstring for ``anchor``."""
    raw = "\x1f".join((policy_version, rule_id, kind, subject, anchor)).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:ACTION_ID_HEX_CHARS]


def anchor_for(event_id: str, event_time_ms: int, cooldown_ms: int) -> str:
    """What makes two actions of one rule and subject the same action: the event, or the window."""
    if cooldown_ms > 0:
        return f"w:{event_time_ms // cooldown_ms}"
    return f"e:{event_id}"


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    predicate: Predicate
    kind: pb.EntityKind.ValueType
    verdict: pb.Action.Verdict.ValueType
    mode: pb.Action.Mode.ValueType


class Decider:
    """Evaluates a policy on one event's features and scores.

    ``feature_names`` is the feature spec's ordered names: a vector passed to ``decide`` is in that
    order. ``thresholds`` (model name → card threshold) resolves ``threshold.<model>`` in conditions;
    ``model_names``, if given, rejects ``score.<model>`` for models that are not loaded. Unknown names
    raise ``ConfigError`` naming the policy file, line and rule.
    """

    def __init__(
        self,
        policy: Policy,
        feature_names: Sequence[str],
        *,
        clock: Clock,
        thresholds: Mapping[str, float] | None = None,
        model_names: Collection[str] | None = None,
    ) -> None:
        thresholds = dict(thresholds or {})
        policy.check(feature_names, model_names, thresholds)
        self.policy = policy
        self.feature_names = tuple(feature_names)
        self._clock = clock
        index = {name: i for i, name in enumerate(self.feature_names)}
        compiled = [
            _Compiled(
                rule=rule,
                predicate=compile_condition(rule.condition.node, index, thresholds),
                kind=SUBJECT_KINDS[rule.subject],
                verdict=VERDICTS[rule.verdict],
                mode=MODES[rule.mode],
            )
            for rule in policy.rules
        ]
        self._by_type: dict[int, tuple[_Compiled, ...]] = {
            number: tuple(c for c in compiled if c.rule.event_types is None or name in c.rule.event_types)
            for name, number in pb.Event.Type.items()
        }

    @property
    def policy_version(self) -> str:
        return self.policy.version

    def vector(self, features: FeatureInput) -> Values:
        """The features in spec order (a mapping's missing names become NaN)."""
        if isinstance(features, Mapping):
            return [float(features.get(name, math.nan)) for name in self.feature_names]
        if len(features) != len(self.feature_names):
            raise ValueError(
                f"feature vector has {len(features)} values, the spec has {len(self.feature_names)}"
            )
        return features

    def decide(
        self,
        event: EventInput,
        features: FeatureInput,
        scores: Mapping[str, float],
        model_version: str,
        touches: list[pb.Action] | None = None,
    ) -> list[pb.Action]:
        """All actions the policy takes for this event, in rule order (before any cooldown gate).

        ``event`` is the ``pb.Event`` or its ``EventFacts`` (same result); ``features`` a mapping by
        name or a vector in spec order; ``scores`` model name → score for this event.
        The actions of unwind rules (``Rule.unwind``) are not among them: they are appended to
        ``touches`` if given (without an id: the reputation stage gives it), else dropped.
        """
        if isinstance(event, pb.Event):
            event_id, event_time_ms = event.event_id, event.event_time_ms
        else:
            event_id, event_time_ms = event.event_id, event.time_ms
        rules = self._by_type.get(event.type, ())
        if not rules:
            return []
        values = self.vector(features)
        attributes = event.attributes if isinstance(event, pb.Event) else getattr(event, "attributes", None)
        attrs: Mapping[str, str]
        if isinstance(attributes, Mapping):
            attrs = attributes
        elif attributes:  # EventFacts.attributes: sorted (key, value) pairs
            attrs = dict(attributes)
        else:
            attrs = _NO_ATTRIBUTES
        actions: list[pb.Action] = []
        decision_time_ms: int | None = None
        for c in rules:
            if not c.predicate(values, scores, attrs):
                continue
            subject = subject_id(event, c.rule.subject)
            if not subject:
                continue
            if decision_time_ms is None:
                decision_time_ms = self._clock()
            action = pb.Action(
                # an unwind rule's action gets its id when it is emitted (operators/policy/reputation.py)
                action_id=""
                if c.rule.unwind is not None
                else action_id(
                    self.policy.version,
                    c.rule.id,
                    c.rule.subject,
                    subject,
                    anchor_for(event_id, event_time_ms, c.rule.cooldown_ms),
                ),
                event_id=event_id,
                subject=pb.Subject(kind=c.kind, id=subject),
                verdict=c.verdict,
                reasons=[c.rule.id],
                model_version=model_version,
                policy_version=self.policy.version,
                mode=c.mode,
                event_time_ms=event_time_ms,
                decision_time_ms=decision_time_ms,
            )
            for name, score in scores.items():
                action.scores[name] = float(score)
            if c.rule.unwind is None:
                actions.append(action)
            elif touches is not None:
                touches.append(action)
            if c.rule.stop:
                break
        return actions
