"""The policy file's ``statements:`` section: how each enforcing rule's actions become statements of
reasons, in the Transparency Database's own terms.

```yaml
statements:
  defaults:                       # apply to every rule unless the rule sets them
    territorial_scope: EEA        # EEA | EU | a list of country codes
    source_type: SOURCE_VOLUNTARY
    decision_ground_reference_url: https://example.com/terms
  rules:
    spam-comment-block:
      decision_visibility: [DECISION_VISIBILITY_CONTENT_REMOVED]
      decision_ground: DECISION_GROUND_INCOMPATIBLE_CONTENT
      incompatible_content_ground: "Terms of Service, section 4.2 (spam)"
      incompatible_content_explanation: Unsolicited repetitive posting ...
      category: STATEMENT_CATEGORY_SCAMS_AND_FRAUD
      content_type: [CONTENT_TYPE_TEXT]
      facts: The comment was not published.
    stuffing-login-challenge:
      exempt: A security check protecting the account's owner, not a restriction of the user.
```

Field values are checked against the Database's enumerations here (pydantic ``Literal``s); the
cross-field rules (``..._other`` when ``..._OTHER``, the ground's own fields, lengths) and "every
enforcing restrictive rule has a mapping" are checked by ``Policy.problems`` with the schema's
validator, so a bad mapping fails the policy load naming the file, the line, the rule and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamwarden.operators.transparency import schema

Visibility = Literal[schema.DECISION_VISIBILITY]  # type: ignore[valid-type]
Monetary = Literal[schema.DECISION_MONETARY]  # type: ignore[valid-type]
Provision = Literal[schema.DECISION_PROVISION]  # type: ignore[valid-type]
AccountDecision = Literal[schema.DECISION_ACCOUNT]  # type: ignore[valid-type]
AccountType = Literal[schema.ACCOUNT_TYPE]  # type: ignore[valid-type]
Ground = Literal[schema.DECISION_GROUND]  # type: ignore[valid-type]
ContentType = Literal[schema.CONTENT_TYPE]  # type: ignore[valid-type]
Category = Literal[schema.CATEGORY]  # type: ignore[valid-type]
Keyword = Literal[schema.KEYWORD]  # type: ignore[valid-type]
SourceType = Literal[schema.SOURCE_TYPE]  # type: ignore[valid-type]
AutomatedDecision = Literal[schema.AUTOMATED_DECISION]  # type: ignore[valid-type]
YesNo = Literal["Yes", "No"]


def _scope(value: object) -> object:
    if value == "EEA":
        return list(schema.EEA_COUNTRIES)
    if value == "EU":
        return list(schema.EU_COUNTRIES)
    return value


class StatementDefaults(BaseModel):
    """What every statement carries unless its rule's mapping says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    territorial_scope: tuple[str, ...] = Field(
        schema.EEA_COUNTRIES,
        description="EEA, EU or a list of EEA country codes where the restriction applies.",
    )
    source_type: SourceType = Field("SOURCE_VOLUNTARY", description="Own-initiative detection by default.")
    automated_detection: YesNo = Field("Yes", description="The job's detection is automated.")
    automated_decision: AutomatedDecision = Field(
        "AUTOMATED_DECISION_FULLY", description="Decided by the policy without a human (until a review)."
    )
    decision_ground_reference_url: str | None = Field(None, max_length=500, description="Terms or law URL.")
    account_type: AccountType | None = None
    content_language: str | None = Field(None, pattern=r"^[A-Z]{2}$")

    @field_validator("territorial_scope", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        return _scope(value)

    @field_validator("territorial_scope")
    @classmethod
    def _eea(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in value if c not in schema.EEA_COUNTRIES]
        if bad or not value:
            raise ValueError(f"must be EEA, EU or EEA country codes; not {bad or 'empty'}")
        return value


class StatementMapping(BaseModel):
    """One rule's statement: the restriction, ground, category and content type, in the API's values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exempt: str | None = Field(
        None,
        min_length=10,
        description="Why this enforcing rule's actions need no statement (then no other field is allowed).",
    )
    decision_visibility: tuple[Visibility, ...] = ()
    decision_visibility_other: str | None = None
    decision_monetary: Monetary | None = None
    decision_monetary_other: str | None = None
    decision_provision: Provision | None = None
    decision_account: AccountDecision | None = None
    decision_ground: Ground | None = None
    illegal_content_legal_ground: str | None = None
    illegal_content_explanation: str | None = None
    incompatible_content_ground: str | None = None
    incompatible_content_explanation: str | None = None
    incompatible_content_illegal: YesNo | None = None
    content_type: tuple[ContentType, ...] = ()
    content_type_other: str | None = None
    category: Category | None = None
    category_specification: tuple[Keyword, ...] = ()
    category_specification_other: str | None = None
    territorial_scope: tuple[str, ...] | None = None
    facts: str | None = Field(
        None, description="What was restricted and why, in plain words (no scores or thresholds)."
    )

    @field_validator("territorial_scope", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        return _scope(value)


class StatementsSection(BaseModel):
    """``statements:`` in the policy file: defaults plus one mapping per enforcing restrictive rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: StatementDefaults = Field(default_factory=lambda: StatementDefaults.model_validate({}))
    rules: dict[str, StatementMapping] = Field(default_factory=dict)


RESTRICTING_VERDICTS = frozenset({"block", "shadow", "rate_limit", "challenge"})
"""Verdicts that restrict a user or content: an enforcing rule with one needs a statement mapping."""

_SAMPLE = {"application_date": "2025-01-01", "content_date": "2025-01-01", "puid": "x", "decision_facts": "x"}


def mapping_problems(
    section: StatementsSection, rules: Iterable[tuple[int, str, str, str]]
) -> list[tuple[tuple[str | int, ...], str]]:
    """``(location, message)`` for every enforcing restrictive rule without a mapping (located at the
    rule's verdict), every mapping of an unknown or non-restrictive rule, and every mapping that breaks
    the Database's field rules (located at the mapping's field). ``rules``: (index, id, verdict, mode)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    known: dict[str, tuple[int, str, str]] = {}
    for index, rule_id, verdict, mode in rules:
        known[rule_id] = (index, verdict, mode)
        if mode == "enforce" and verdict in RESTRICTING_VERDICTS and rule_id not in section.rules:
            out.append(
                (
                    ("rules", index, "verdict"),
                    f"enforcing rule {rule_id!r} restricts ({verdict}) but has no statement of reasons "
                    f"mapping: add statements.rules.{rule_id} (or an 'exempt' reason)",
                )
            )
    d = section.defaults
    for rule_id, m in section.rules.items():
        where: tuple[str | int, ...] = ("statements", "rules", rule_id)
        if rule_id not in known:
            out.append((where, f"no rule {rule_id!r} in this policy"))
            continue
        _, verdict, mode = known[rule_id]
        if mode != "enforce" or verdict not in RESTRICTING_VERDICTS:
            out.append(
                (where, f"rule {rule_id!r} ({mode} {verdict}) restricts nothing: it gets no statement")
            )
            continue
        if m.exempt is not None:
            others = [k for k in m.model_fields_set if k != "exempt"]
            if others:
                out.append(((*where, others[0]), "an exempt rule takes no other statement field"))
            continue
        payload: dict[str, object] = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in m.model_dump(exclude={"exempt", "facts", "territorial_scope"}).items()
            if v not in (None, (), [])
        }
        payload.update(_SAMPLE)
        payload.update(
            territorial_scope=list(m.territorial_scope or d.territorial_scope),
            source_type=d.source_type,
            automated_detection=d.automated_detection,
            automated_decision=d.automated_decision,
        )
        if d.decision_ground_reference_url:
            payload["decision_ground_reference_url"] = d.decision_ground_reference_url
        if not m.facts:
            out.append(((*where, "facts"), "required: what was restricted and why, in plain words"))
        for err in schema.validate_statement(payload):
            field, _, msg = err.partition(": ")
            out.append(((*where, field), msg))
    return out
