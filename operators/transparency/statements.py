"""Actions → statements of reasons, and their revision after human review.

Which actions get one: an action in ``ENFORCE`` mode whose rule restricts (verdict ``block``,
``shadow``, ``rate_limit`` or ``challenge``) and whose rule's mapping is not ``exempt``. Shadow-mode
actions (dry runs) and non-restrictive verdicts (``flag``, ``send_to_review``, ``allow``) get none.
The ``shadow`` *verdict* in enforce mode does get one: silently demoting content or discounting
engagement is a visibility restriction under DSA Art. 17(1)(a) ("demotion").

Determinism: a statement is a function of the action and the policy only (its id is a hash of the
action id; dates come from the event time), so replay, Beam and Flink write the same statements and a
re-processed event yields the same statement id. Only ``decision_time_ms`` (copied from the action)
and ``updated_ms`` (set by a review) come from clocks.

Facts and circumstances (``decision_facts``) are plain words built from the rule's mapping and the
signals its condition reads, named in words ("number of distinct accounts seen on the IP address over
10 minutes"), never with their values, the model scores or the thresholds: the statement goes to the
user and to a public database, and the levels that trigger a rule would tell an abuser exactly how
far to go. Subject ids are not written into the text either (the API forbids personal data); the
statement carries the subject in its own field for the platform's use, outside the API payload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from streamwarden.operators.policy.expr import refs
from streamwarden.operators.policy.policy import Policy, Rule
from streamwarden.operators.transparency.mapping import (
    RESTRICTING_VERDICTS,
    StatementDefaults,
    StatementMapping,
)
from streamwarden.schemas import streamwarden_pb2 as pb

STATEMENT_ID_HEX_CHARS = 32


def restricts(rule: Rule) -> bool:
    """Whether the rule's actions restrict a user or content (and so need a statement of reasons)."""
    return rule.mode == "enforce" and rule.verdict in RESTRICTING_VERDICTS


def statement_id(action_id: str) -> str:
    """``sor-`` + a hex prefix of sha256 of the action id: stable, and a valid Database PUID."""
    digest = hashlib.sha256(b"sor\x1f" + action_id.encode("utf-8")).hexdigest()
    return "sor-" + digest[:STATEMENT_ID_HEX_CHARS]


def utc_date(ms: int) -> str:
    """``YYYY-MM-DD`` of a millisecond timestamp, in UTC (the Database's date format)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


# ---------------------------------------------------------------- facts in plain words

_ENTITY_WORDS = {
    "account": "the account",
    "ip": "the IP address",
    "device": "the device",
    "asn": "the network (autonomous system)",
    "target_content": "the targeted track or post",
    "target_account": "the targeted account",
}
_EVENT_WORDS = {
    "url_count": "number of links in the posted text",
    "mention_count": "number of mentions in the posted text",
    "text_length": "length of the posted text",
    "play_duration_ms": "length of the play",
}
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def _window_words(window: str) -> str:
    number, unit = window[:-1], window[-1:]
    if not number.isdigit() or unit not in _UNITS:
        return window
    n = int(number)
    return f"{n} {_UNITS[unit]}{'s' if n != 1 else ''}"


def _aggregation_words(agg: str) -> str:
    for prefix, words in (("ratio_", "share of {} activity"), ("distinct_", "number of distinct {}s")):
        if agg.startswith(prefix):
            return words.format(agg[len(prefix) :].replace("_", " "))
    for prefix, words in (("count_", "number of {} events"), ("sum_", "total {}")):
        if agg.startswith(prefix):
            return words.format(agg[len(prefix) :].replace("_", " "))
    return agg.replace("_", " ")


def signal_words(name: str) -> str:
    """A feature name in words, without any value: ``ip.distinct_account.10m`` → "number of distinct
    accounts seen on the IP address over 10 minutes"."""
    parts = name.split(".")
    if parts[0] == "event" and len(parts) == 2:
        return "the " + _EVENT_WORDS.get(parts[1], parts[1].replace("_", " ") + " of the event")
    if len(parts) == 3 and parts[0] in _ENTITY_WORDS:
        entity, agg, window = parts
        return f"the {_aggregation_words(agg)} of {_ENTITY_WORDS[entity]} over {_window_words(window)}"
    return name.replace("_", " ").replace(".", " ")


def rule_signals(rule: Rule) -> list[str]:
    """The signals a rule's condition reads, in words, in order of first use (no thresholds)."""
    out: list[str] = []
    for ref in refs(rule.condition.node):
        if ref.kind == "threshold":
            continue
        words = (
            f"the assessment of an automated classifier ('{ref.target}') trained on past abuse"
            if ref.kind == "score"
            else signal_words(ref.name)
        )
        if words not in out:
            out.append(words)
    return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def decision_facts(rule: Rule, mapping: StatementMapping, policy_version: str, event_time_ms: int) -> str:
    """``decision_facts``: what was done, when, on what kind of activity, and which signals were relied
    on, in words. No scores, thresholds or personal data (see the module docstring)."""
    kinds = ", ".join(t.lower().replace("_", " ") for t in rule.event_types) if rule.event_types else "any"
    text = [mapping.facts.strip()] if mapping.facts else []
    text.append(
        f"Detected by automated means on {utc_date(event_time_ms)} (UTC) in {kinds} activity "
        f"concerning {_ENTITY_WORDS[rule.subject]}."
    )
    signals = rule_signals(rule)
    if signals:
        text.append("Signals relied on: " + _join(signals) + ".")
    text.append(
        f"Decided under rule '{rule.id}' of content policy version {policy_version}. The levels at which "
        "these signals lead to a decision are not disclosed, so that they cannot be used to evade detection."
    )
    return " ".join(text)


# ---------------------------------------------------------------- the builder


@dataclass(frozen=True, slots=True)
class _Plan:
    rule: Rule
    mapping: StatementMapping


class StatementBuilder:
    """Builds the statement of an action from the policy's ``statements:`` section (None = none)."""

    def __init__(self, policy: Policy) -> None:
        section = policy.statements
        self.policy_version = policy.version
        self.defaults: StatementDefaults = (
            section.defaults if section is not None else StatementDefaults.model_validate({})
        )
        self._plans: dict[str, _Plan] = {}
        if section is None:
            return
        for rule in policy.rules:
            m = section.rules.get(rule.id)
            if m is not None and m.exempt is None and restricts(rule):
                self._plans[rule.id] = _Plan(rule, m)

    @property
    def enabled(self) -> bool:
        return bool(self._plans)

    def rule_ids(self) -> list[str]:
        """The rules whose actions get a statement."""
        return list(self._plans)

    def build(self, action: pb.Action) -> pb.StatementOfReasons | None:
        """The statement of ``action``, or None if it needs none (shadow mode, no restriction, exempt)."""
        if action.mode != pb.Action.ENFORCE or not action.reasons:
            return None
        plan = self._plans.get(action.reasons[0])
        if plan is None or action.policy_version != self.policy_version:
            return None
        m, d = plan.mapping, self.defaults
        sid = statement_id(action.action_id)
        day = utc_date(action.event_time_ms)
        s = pb.StatementOfReasons(
            statement_id=sid,
            action_id=action.action_id,
            revision=0,
            status=pb.StatementOfReasons.ACTIVE,
            event_id=action.event_id,
            subject=action.subject,
            rule_id=plan.rule.id,
            policy_version=action.policy_version,
            model_version=action.model_version,
            event_time_ms=action.event_time_ms,
            decision_time_ms=action.decision_time_ms,
            puid=sid,
            decision_visibility=list(m.decision_visibility),
            decision_visibility_other=m.decision_visibility_other or "",
            decision_monetary=m.decision_monetary or "",
            decision_monetary_other=m.decision_monetary_other or "",
            decision_provision=m.decision_provision or "",
            decision_account=m.decision_account or "",
            account_type=d.account_type or "",
            decision_ground=m.decision_ground or "",
            decision_ground_reference_url=d.decision_ground_reference_url or "",
            illegal_content_legal_ground=m.illegal_content_legal_ground or "",
            illegal_content_explanation=m.illegal_content_explanation or "",
            incompatible_content_ground=m.incompatible_content_ground or "",
            incompatible_content_explanation=m.incompatible_content_explanation or "",
            incompatible_content_illegal=m.incompatible_content_illegal or "",
            content_type=list(m.content_type),
            content_type_other=m.content_type_other or "",
            category=m.category or "",
            category_specification=list(m.category_specification),
            category_specification_other=m.category_specification_other or "",
            territorial_scope=list(m.territorial_scope or d.territorial_scope),
            content_language=d.content_language or "",
            content_date=day,
            application_date=day,
            decision_facts=decision_facts(plan.rule, m, action.policy_version, action.event_time_ms),
            source_type=d.source_type,
            automated_detection=d.automated_detection,
            automated_decision=d.automated_decision,
        )
        return s

    def statements(self, actions: Iterable[pb.Action]) -> Iterator[pb.StatementOfReasons]:
        for a in actions:
            s = self.build(a)
            if s is not None:
                yield s


# ---------------------------------------------------------------- human review


def covers(label: pb.ReviewLabel, s: pb.StatementOfReasons) -> bool:
    """Whether a review decision is about this statement's action: it names the action, or it judged the
    statement's subject after the restriction was applied (a reviewer decides about a subject)."""
    if s.action_id in label.action_ids:
        return True
    return (
        label.subject.kind == s.subject.kind
        and label.subject.id == s.subject.id
        and s.event_time_ms <= label.decided_ms
    )


def apply_review(s: pb.StatementOfReasons, label: pb.ReviewLabel) -> pb.StatementOfReasons:
    """The statement after a human review: a new revision (new PUID: the Database never reuses one).

    Uphold keeps the restriction; overturn (or a granted appeal) revokes it. Either way a person took
    part in the decision, so ``automated_decision`` becomes ``AUTOMATED_DECISION_PARTIALLY`` (detection
    stays automated). The same decision applied twice, or a decision older than the statement's last
    revision, changes nothing.
    """
    if label.decision_id and label.decision_id == s.review_decision_id:
        return s
    if s.revision > 0 and label.decided_ms < s.updated_ms:
        return s
    if label.decision not in (pb.ReviewLabel.UPHOLD, pb.ReviewLabel.OVERTURN):
        return s
    out = pb.StatementOfReasons()
    out.CopyFrom(s)
    out.revision = s.revision + 1
    # A PUID is never reused: one per (statement, review decision).
    out.puid = f"{s.statement_id}-{label.decision_id or f'r{out.revision}'}"[:500]
    out.updated_ms = label.decided_ms
    out.review_decision_id = label.decision_id
    out.appeal = bool(label.appealed_decision_id)
    out.automated_decision = "AUTOMATED_DECISION_PARTIALLY"
    on = utc_date(label.decided_ms)
    base = s.decision_facts.split(" Human review: ")[0]
    if label.decision == pb.ReviewLabel.UPHOLD:
        out.status = pb.StatementOfReasons.ACTIVE
        what = "the appeal was rejected and the decision upheld" if out.appeal else "the decision was upheld"
        out.decision_facts = f"{base} Human review: a reviewer examined the case on {on}; {what}."
    else:
        out.status = pb.StatementOfReasons.REVOKED
        what = "the appeal was granted" if out.appeal else "the decision was reversed"
        out.decision_facts = (
            f"{base} Human review: a reviewer examined the case on {on}; {what} and the restriction lifted."
        )
    return out


class StatementLedger:
    """The current revision of every statement, from the statements and review decisions seen so far,
    in any order: a decision seen before its statement is applied when the statement arrives."""

    def __init__(self) -> None:
        self._current: dict[str, pb.StatementOfReasons] = {}
        self._labels: list[pb.ReviewLabel] = []
        self._seen_decisions: set[str] = set()

    def add_statement(self, s: pb.StatementOfReasons) -> None:
        """Keep the newest revision: the one made last (review time), then the higher number (a
        revision the review service rebuilt from revision 0 carries 1 whatever came before it)."""
        cur = self._current.get(s.statement_id)
        if cur is not None and (cur.updated_ms, cur.revision) >= (s.updated_ms, s.revision):
            return
        for label in sorted(self._labels, key=lambda x: x.decided_ms):
            if covers(label, s):
                s = apply_review(s, label)
        self._current[s.statement_id] = s

    def add_label(self, label: pb.ReviewLabel) -> list[pb.StatementOfReasons]:
        """Apply one review decision; returns the statements it revised (their new revisions)."""
        if label.decision_id:
            if label.decision_id in self._seen_decisions:
                return []
            self._seen_decisions.add(label.decision_id)
        self._labels.append(label)
        changed = []
        for sid, s in self._current.items():
            if covers(label, s):
                new = apply_review(s, label)
                if new is not s:
                    self._current[sid] = new
                    changed.append(new)
        return changed

    def statements(self) -> list[pb.StatementOfReasons]:
        return sorted(self._current.values(), key=lambda s: (s.event_time_ms, s.statement_id))


def revisions_for_review(
    builder: StatementBuilder, label: pb.ReviewLabel, actions: Iterable[pb.Action]
) -> list[pb.StatementOfReasons]:
    """The statement revisions a review decision makes, from the actions it covers: each action's
    statement is rebuilt (it is a function of the action and the policy) and the decision applied. What
    the review service publishes on the statements topic next to the label."""
    out = []
    for a in actions:
        s = builder.build(a)
        if s is not None and covers(label, s):
            out.append(apply_review(s, label))
    return out
