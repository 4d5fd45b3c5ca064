"""The policy file: ordered rules that turn features and model scores into actions.

A policy is YAML validated by pydantic (``extra="forbid"``). Every error names the file, the line,
the rule (index and id) and the field. Names used in conditions are checked against the feature
spec (and the loaded models) when the policy is loaded for a job, so a typo fails at start-up,
never on the hot path.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.policy.expr import ConditionSyntaxError, Node, parse_structured, refs
from streamwarden.operators.policy.yaml_source import (
    Loc,
    YamlSource,
    format_loc,
    format_validation,
    read_yaml,
)
from streamwarden.operators.transparency.mapping import StatementsSection, mapping_problems
from streamwarden.schemas import streamwarden_pb2 as pb

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "default_policy.yaml"

SubjectKind = Literal["account", "ip", "device", "target_content", "target_account", "asn"]
VerdictName = Literal["allow", "flag", "challenge", "rate_limit", "shadow", "block", "send_to_review"]
ModeName = Literal["enforce", "shadow"]

EVENT_TYPE_NAMES = tuple(v.name for v in pb.Event.Type.DESCRIPTOR.values if v.number != 0)


class Condition:
    """A parsed condition plus the text it came from (the tree is what runs)."""

    __slots__ = ("node", "source")

    def __init__(self, node: Node, source: Any) -> None:
        self.node = node
        self.source = source

    def text(self) -> str:
        """The condition in the text form, fully parenthesised."""
        return self.node.text()

    def __repr__(self) -> str:
        return f"Condition({self.text()!r})"


def _parse_condition(value: Any) -> Condition:
    if isinstance(value, Condition):
        return value
    try:
        return Condition(parse_structured(value), value)
    except ConditionSyntaxError as exc:
        raise ValueError(str(exc)) from None


class Unwind(BaseModel):
    """A rule that acts on an entity only once another entity it touched is flagged
    (``operators/policy/reputation.py``): e.g. the accounts behind a track the farm rules flagged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: SubjectKind = Field(
        description="The entity of the event whose flag unwinds to the rule's subject."
    )
    flagged_by: tuple[str, ...] = Field(
        min_length=1,
        description="Rule ids whose admitted actions on the target flag it (their subject is the target).",
    )
    within_ms: int = Field(
        21_600_000,
        ge=60_000,
        description=(
            "Flags are kept per aligned event-time window of this length; a subject whose events touched the "
            "target from one window before a flagged window to one window after it is acted on."
        ),
    )
    max_subjects: int = Field(
        256,
        ge=1,
        le=4096,
        description="Subjects remembered per target and rule (the oldest beyond are forgotten).",
    )
    min_flags: int = Field(
        1,
        ge=1,
        description=(
            "Flagging actions a window needs before it unwinds: one stray action on a popular target must "
            "not act on its whole audience."
        ),
    )
    min_touches: int = Field(
        1,
        ge=1,
        description="Events of the subject that touched the target (and met the condition) needed to act.",
    )
    share_of: str | None = Field(
        None,
        description=(
            "A feature counting the subject's events (e.g. account.count_play.1h): with ``min_share``, the "
            "subject's touches of the target must be at least that share of it (its largest value seen)."
        ),
    )
    min_share: float = Field(0.0, ge=0.0, le=1.0, description="See ``share_of``.")


class Rule(BaseModel):
    """One policy rule: when ``condition`` holds for an event, act on ``subject``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        max_length=64,
        description="Stable rule id (lower case, digits, _ . -); it is the Action's reason.",
    )
    description: str = Field(min_length=1, description="What the rule catches and why, for reviewers.")
    event_types: tuple[str, ...] | None = Field(
        None, description="Event types (e.g. PLAY, COMMENT) the rule applies to; omitted = all types."
    )
    condition: Annotated[Condition, BeforeValidator(_parse_condition)] = Field(
        description="Text expression or structured all/any/not/feature/score mapping over features and scores."
    )
    subject: SubjectKind = Field(description="Which entity of the event the action is about.")
    verdict: VerdictName = Field(description="What to do with the subject.")
    mode: ModeName = Field("enforce", description="enforce acts; shadow only records what it would do.")
    cooldown_ms: int = Field(
        0,
        ge=0,
        description=(
            "At most one action per subject per aligned event-time window of this length "
            "(0 = one action per matching event)."
        ),
    )
    stop: bool = Field(False, description="If the rule fires, skip the rules after it for this event.")
    unwind: Unwind | None = Field(
        None,
        description=(
            "Act only once the event's ``unwind.target`` is flagged by one of ``unwind.flagged_by`` "
            "(before or after this event, within ``unwind.within_ms``); at most once per subject, target "
            "and flagged window, so no cooldown."
        ),
    )

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must not be empty (omit it to match every event type)")
        unknown = [t for t in value if t not in EVENT_TYPE_NAMES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(EVENT_TYPE_NAMES)}")
        return value


class Policy(BaseModel):
    """A versioned, ordered list of rules. The version is stamped on every Action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=64, description="Policy version written into each Action.")
    description: str = Field("", description="Free text for humans.")
    rules: tuple[Rule, ...] = Field(description="Rules, evaluated in order for every event (at least one).")
    statements: StatementsSection | None = Field(
        None,
        description=(
            "DSA statements of reasons: how each enforcing restrictive rule's actions are described in "
            "the Transparency Database's terms (operators/transparency/mapping.py). When present, every "
            "enforcing rule that restricts needs a mapping; absent, the job writes no statements."
        ),
    )
    _source: YamlSource | None = PrivateAttr(None)

    @field_validator("rules")
    @classmethod
    def _not_empty(cls, value: tuple[Rule, ...]) -> tuple[Rule, ...]:
        if not value:
            raise ValueError("a policy needs at least one rule")
        return value

    @property
    def source_path(self) -> str:
        """The file the policy came from, or ``<policy>`` when built in code."""
        return self._source.path if self._source is not None else "<policy>"

    def problems(
        self,
        feature_names: Collection[str] | None = None,
        model_names: Collection[str] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> list[tuple[Loc, str]]:
        """Semantic problems: duplicate rule ids, and names the given features/models do not know.

        A ``None`` collection means "not checked".
        """
        out: list[tuple[Loc, str]] = []
        first_index: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.id in first_index:
                out.append(
                    (("rules", i, "id"), f"duplicate rule id, first used by rules[{first_index[rule.id]}]")
                )
            else:
                first_index[rule.id] = i
            for ref in refs(rule.condition.node):
                loc: Loc = ("rules", i, "condition")
                if ref.kind == "feature" and feature_names is not None and ref.name not in feature_names:
                    out.append((loc, _unknown("feature", ref.name, feature_names)))
                elif ref.kind == "score" and model_names is not None and ref.target not in model_names:
                    out.append((loc, _unknown("model", ref.target, model_names, prefix="score.")))
                elif ref.kind == "threshold" and thresholds is not None and ref.target not in thresholds:
                    out.append(
                        (loc, _unknown("model threshold", ref.target, thresholds, prefix="threshold."))
                    )
        out += self._unwind_problems(first_index, feature_names)
        if self.statements is not None:
            out += mapping_problems(
                self.statements, ((i, r.id, r.verdict, r.mode) for i, r in enumerate(self.rules))
            )
        return out

    def _unwind_problems(
        self, index: Mapping[str, int], feature_names: Collection[str] | None
    ) -> list[tuple[Loc, str]]:
        out: list[tuple[Loc, str]] = []
        for i, rule in enumerate(self.rules):
            u = rule.unwind
            if u is None:
                continue
            if rule.cooldown_ms:
                out.append(
                    (("rules", i, "cooldown_ms"), "an unwind rule acts once per flagged window: no cooldown")
                )
            if u.target == rule.subject:
                out.append(
                    (
                        ("rules", i, "unwind", "target"),
                        f"the target must differ from the subject {rule.subject!r}",
                    )
                )
            if u.share_of is not None and feature_names is not None and u.share_of not in feature_names:
                out.append(
                    (("rules", i, "unwind", "share_of"), _unknown("feature", u.share_of, feature_names))
                )
            for j, flagger in enumerate(u.flagged_by):
                loc: Loc = ("rules", i, "unwind", "flagged_by", j)
                k = index.get(flagger)
                if k is None:
                    out.append((loc, _unknown("rule", flagger, index)))
                elif self.rules[k].unwind is not None:
                    out.append((loc, f"rule {flagger!r} is an unwind rule itself"))
                elif self.rules[k].subject != u.target:
                    out.append(
                        (
                            loc,
                            f"rule {flagger!r} acts on {self.rules[k].subject!r}, not on the target {u.target!r}",
                        )
                    )
        return out

    def check(
        self,
        feature_names: Collection[str] | None = None,
        model_names: Collection[str] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        """Raise ``ConfigError`` (file:line: rule: field: message per problem) if ``problems`` finds any."""
        found = self.problems(feature_names, model_names, thresholds)
        if found:
            raise ConfigError("\n".join(self._where(loc) + f": {msg}" for loc, msg in found))

    def _where(self, loc: Loc) -> str:
        src = self._source
        if src is None:
            return f"<policy>: {format_loc(loc, {'rules': [{'id': r.id} for r in self.rules]})}"
        line = src.line_of(loc)
        head = f"{src.path}:{line}" if line is not None else src.path
        return f"{head}: {format_loc(loc, src.data)}"


def _unknown(what: str, name: str, known: Collection[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
    return f"unknown {what} {prefix + name!r}{hint}"


def parse_policy(data: Mapping[str, Any], source: YamlSource | None = None) -> Policy:
    """Validate an already-parsed mapping; errors name ``source`` (file, line, rule, field)."""
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        src = source if source is not None else YamlSource("<policy>", dict(data), None)
        raise ConfigError(format_validation(src, exc)) from None
    policy._source = source
    return policy


def load_policy(
    path: Path = DEFAULT_POLICY_PATH,
    *,
    feature_names: Sequence[str] | None = None,
    model_names: Collection[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Policy:
    """Read and validate a policy file; pass ``feature_names`` (and models) to check every name now."""
    source = read_yaml(path, ConfigError)
    policy = parse_policy(source.data, source)
    policy.check(feature_names, model_names, thresholds)
    return policy
