"""The feature spec: which velocity features exist, in which order, and how each is computed.

A spec lists, per entity kind (account, ip, device, target_content, target_account, asn), the windows
its features use and feature *groups*: an event-type filter (plus an optional numeric range on one
field, or one platform field's value: ``where: {attribute: plan, equals: free}``) and the aggregations
over the matching events — ``count``, ``sum`` of a numeric field,
``distinct`` count of a categorical field — and *ratios* of two count/sum aggregations.

Feature names are stable and read ``<entity>.<aggregation>.<window>``, e.g. ``ip.distinct_account.1h``,
``account.count_play.10m``, ``ip.ratio_login_failed.10m``; event-level features read ``event.<name>``.
``FeatureSpec.feature_names()`` is the ordered vector layout, a contract with the model card:
the event-level features first, then one block per entity kind in ``ENTITY_KINDS`` order; inside a
block, for each of the entity's windows the group aggregations in spec order, then the ratios for each
window. See ``operators/features/window.py`` for the exact window semantics.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from streamwarden.operators.config_io import format_validation_error, load_yaml_mapping
from streamwarden.operators.errors import ConfigError
from streamwarden.schemas import streamwarden_pb2 as pb

DEFAULT_SPEC_PATH = Path(__file__).with_name("default_spec.yaml")

ENTITY_KINDS: tuple[str, ...] = ("account", "ip", "device", "target_content", "target_account", "asn")
"""Entity kinds in vector order; each maps to the ``EntityKind`` enum value of the same (upper) name."""

ENTITY_KIND_VALUES: dict[str, int] = {k: int(pb.EntityKind.Value(k.upper())) for k in ENTITY_KINDS}

EVENT_TYPE_NAMES: tuple[str, ...] = tuple(pb.Event.Type.Name(v) for v in sorted(pb.Event.Type.values()) if v)
"""Event type names in value order (1..11); event-type one-hot features follow this order."""

EVENT_FEATURES: tuple[str, ...] = (
    *(f"type_{name.lower()}" for name in EVENT_TYPE_NAMES),
    "hour_of_day",
    "account_age_h",
    "account_age_known",
    "play_duration_ms",
    "text_length",
    "url_count",
    "mention_count",
    "has_content_hash",
)
"""Event-level features (``event.<name>``), taken from the event itself; see ``assemble.py``."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_WINDOW_NAME = re.compile(r"^[a-z0-9]+$")

EventTypeName = Literal[
    "SIGNUP",
    "LOGIN",
    "LOGIN_FAILED",
    "PLAY",
    "LIKE",
    "REPOST",
    "FOLLOW",
    "COMMENT",
    "MESSAGE",
    "UPLOAD",
    "REPORT",
]
NumericField = Literal["play_duration_ms", "text_length", "url_count", "mention_count"]
CategoricalField = Literal[
    "account",
    "ip",
    "device",
    "asn",
    "country",
    "user_agent",
    "target_account",
    "target_content",
    "content_hash",
]
NUMERIC_FIELDS: tuple[str, ...] = get_args(NumericField)
"""Fields a ``sum`` or a ``where`` range can read (integers; negatives count as 0)."""

WhereOnlyField = Literal["account_age_s"]
"""Derived numbers only a ``where`` range reads: ``account_age_s`` is the acting account's age at the
event, ``(event_time_ms - account_created_ms) // 1000`` floored at 0, and ``NUMBER_CAP`` when the
creation time is unknown (0) so an unknown account never passes a "fresh" range (``max``)."""

CATEGORICAL_FIELDS: tuple[str, ...] = get_args(CategoricalField)
"""Fields a ``distinct`` aggregation can count (empty values are not counted)."""

EntityName = Literal["account", "ip", "device", "target_content", "target_account", "asn"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSpec(_Strict):
    """A sliding event-time window made of equal buckets."""

    length_ms: int = Field(gt=0, description="Window length W in ms; a multiple of bucket_ms.")
    bucket_ms: int = Field(
        gt=0, description="Bucket granularity g in ms: the window slides in steps of g (W/g <= 1024)."
    )

    @model_validator(mode="after")
    def _multiple(self) -> WindowSpec:
        if self.length_ms % self.bucket_ms:
            raise ValueError(f"length_ms {self.length_ms} is not a multiple of bucket_ms {self.bucket_ms}")
        if self.length_ms // self.bucket_ms > 1024:
            raise ValueError("more than 1024 buckets per window")
        return self

    @property
    def n_buckets(self) -> int:
        """Buckets per window, n = W / g."""
        return self.length_ms // self.bucket_ms


MAX_ATTRIBUTE_TESTS = 16
"""Distinct ``attribute``/``equals`` filters a spec may hold (the core's ``MAX_ATTR_TESTS``)."""


class Where(_Strict):
    """What an event must also pass, besides the event-type filter: a numeric range of one field
    (``field``, ``min``, ``max``), or one platform field's value (``attribute``, ``equals``:
    ``Event.attributes[attribute] == equals``; a missing attribute does not pass)."""

    field: NumericField | WhereOnlyField | None = Field(None, description="The numeric field tested.")
    min: int | None = Field(None, description="Inclusive lower bound; None = unbounded.")
    max: int | None = Field(None, description="Exclusive upper bound; None = unbounded.")
    attribute: str | None = Field(
        None, min_length=1, description="Key of an Event.attributes entry (instead of field)."
    )
    equals: str | None = Field(None, description="The attribute's value an event must have.")

    @model_validator(mode="after")
    def _one_test(self) -> Where:
        if (self.field is None) == (self.attribute is None):
            raise ValueError(
                "where tests either a numeric field (field, min, max) or an attribute (attribute, equals)"
            )
        if self.attribute is not None and (
            self.equals is None or self.min is not None or self.max is not None
        ):
            raise ValueError("an attribute where takes equals (and no min/max)")
        if self.field is not None and self.equals is not None:
            raise ValueError("equals goes with attribute, not with a numeric field")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A numeric where dumps as before attributes existed, so specs without them keep their fingerprint.
        out: dict[str, Any] = handler(self)
        if self.attribute is None:
            out.pop("attribute", None)
            out.pop("equals", None)
        return out


class Aggregation(_Strict):
    """One aggregated column of a group; it yields one feature per window."""

    name: str = Field(description="Feature stem, unique within the entity, e.g. count_play.")
    op: Literal["count", "sum", "distinct"] = Field(description="count | sum | distinct.")
    field: NumericField | CategoricalField | None = Field(
        None, description="sum: a numeric field; distinct: a categorical field; count: none."
    )
    default: float = Field(0.0, description="Value imputed when the entity's partial never arrived.")

    @model_validator(mode="after")
    def _field_fits(self) -> Aggregation:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must match {_NAME.pattern}")
        if self.op == "count" and self.field is not None:
            raise ValueError("count takes no field")
        if self.op == "sum" and self.field not in NUMERIC_FIELDS:
            raise ValueError(f"sum needs a numeric field, one of {list(NUMERIC_FIELDS)}")
        if self.op == "distinct" and self.field not in CATEGORICAL_FIELDS:
            raise ValueError(f"distinct needs a categorical field, one of {list(CATEGORICAL_FIELDS)}")
        return self


class Group(_Strict):
    """Aggregations over the events of one entity that pass an event-type filter (and a range)."""

    name: str = Field(description="Group name (documentation only; names come from aggregations).")
    event_types: list[EventTypeName] = Field(min_length=1, description="Event types the group reads.")
    where: Where | None = Field(None, description="Optional numeric range the events must also pass.")
    aggregations: list[Aggregation] = Field(min_length=1, description="Columns computed over the group.")


class Ratio(_Strict):
    """numerator / denominator of two count or sum aggregations of the same entity, per window."""

    name: str = Field(description="Feature stem, unique within the entity, e.g. ratio_login_failed.")
    numerator: str = Field(description="Name of a count or sum aggregation of this entity.")
    denominator: str = Field(description="Name of a count or sum aggregation of this entity.")
    default: float = Field(0.0, description="Value when the denominator is 0, and when imputed.")


class EntitySpec(_Strict):
    """The features of one entity kind."""

    event_types: list[EventTypeName] | None = Field(
        None, description="Event types that fan out to this entity (state update + lookup); None = all."
    )
    windows: list[str] = Field(min_length=1, description="Names of the spec windows, in feature order.")
    groups: list[Group] = Field(min_length=1, description="Feature groups, in feature order.")
    ratios: list[Ratio] = Field(default_factory=list, description="Ratios, in feature order.")


class FeatureSpec(_Strict):
    """A validated feature spec; ``feature_names()`` is the vector layout the model card pins."""

    version: int = Field(ge=1, description="Spec version, bumped on any change to names or semantics.")
    name: str = Field("default", description="Spec name, for the model card.")
    allowed_lateness_ms: int = Field(
        ge=0, description="Per key: events older than the key's latest event time minus this are late."
    )
    exact_distinct_limit: int = Field(
        128, ge=1, le=65_536, description="Distinct counts stay exact up to this many tracked values."
    )
    hll_precision: int = Field(
        8, ge=4, le=14, description="HyperLogLog precision p (2**p registers, std error 1.04/sqrt(2**p))."
    )
    windows: dict[str, WindowSpec] = Field(min_length=1, description="Named windows, e.g. 1m, 10m.")
    entities: dict[EntityName, EntitySpec] = Field(min_length=1, description="Features per entity kind.")

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        for wname in self.windows:
            if not _WINDOW_NAME.match(wname):
                raise ValueError(f"window name {wname!r} must match {_WINDOW_NAME.pattern}")
        for kind, ent in self.entities.items():
            _check_entity(kind, ent, self.windows)
        if len(self.attribute_tests()) > MAX_ATTRIBUTE_TESTS:
            raise ValueError(f"more than {MAX_ATTRIBUTE_TESTS} distinct attribute filters (where: attribute)")
        return self

    def kinds(self) -> list[str]:
        """The entity kinds the spec covers, in vector order."""
        return [k for k in ENTITY_KINDS if k in self.entities]

    def entity_feature_names(self, kind: str) -> list[str]:
        """The names of one entity's block, in order."""
        ent = self.entities[kind]  # type: ignore[index]
        names: list[str] = []
        for w in ent.windows:
            names.extend(f"{kind}.{agg.name}.{w}" for g in ent.groups for agg in g.aggregations)
        for w in ent.windows:
            names.extend(f"{kind}.{r.name}.{w}" for r in ent.ratios)
        return names

    def feature_names(self) -> list[str]:
        """The ordered feature vector: event-level features, then each entity's block."""
        names = [f"event.{n}" for n in EVENT_FEATURES]
        for kind in self.kinds():
            names.extend(self.entity_feature_names(kind))
        return names

    def attribute_tests(self) -> list[tuple[str, str]]:
        """The ``(attribute, equals)`` filters of every group, sorted, each once: the window core
        evaluates them once per event (test ``s`` reads as numeric field ``N_FACTS + s``)."""
        return sorted(
            {
                (g.where.attribute, g.where.equals)
                for ent in self.entities.values()
                for g in ent.groups
                if g.where is not None and g.where.attribute is not None and g.where.equals is not None
            }
        )

    def fingerprint(self) -> int:
        """CRC-32 of the canonical spec JSON: state and model cards record it to detect a changed spec."""
        return zlib.crc32(self.model_dump_json().encode("utf-8"))


def _check_entity(kind: str, ent: EntitySpec, windows: dict[str, WindowSpec]) -> None:
    for w in ent.windows:
        if w not in windows:
            raise ValueError(f"entities.{kind}.windows: unknown window {w!r} (spec has {sorted(windows)})")
    if len(set(ent.windows)) != len(ent.windows):
        raise ValueError(f"entities.{kind}.windows: duplicate window")
    allowed = set(ent.event_types) if ent.event_types is not None else set(EVENT_TYPE_NAMES)
    aggs: dict[str, Aggregation] = {}
    for g in ent.groups:
        outside = set(g.event_types) - allowed
        if outside:
            raise ValueError(
                f"entities.{kind}.groups.{g.name}: event types {sorted(outside)} never reach this entity"
            )
        for agg in g.aggregations:
            if agg.name in aggs:
                raise ValueError(f"entities.{kind}: duplicate aggregation name {agg.name!r}")
            aggs[agg.name] = agg
    for r in ent.ratios:
        if not _NAME.match(r.name):
            raise ValueError(f"entities.{kind}.ratios: name {r.name!r} must match {_NAME.pattern}")
        if r.name in aggs:
            raise ValueError(f"entities.{kind}.ratios: {r.name!r} clashes with an aggregation")
        for ref in (r.numerator, r.denominator):
            if ref not in aggs:
                raise ValueError(f"entities.{kind}.ratios.{r.name}: unknown aggregation {ref!r}")
            if aggs[ref].op == "distinct":
                raise ValueError(f"entities.{kind}.ratios.{r.name}: {ref!r} is a distinct count")
    if len({r.name for r in ent.ratios}) != len(ent.ratios):
        raise ValueError(f"entities.{kind}.ratios: duplicate ratio name")


def parse_spec(data: Any, source: str = "(feature spec)") -> FeatureSpec:
    """Validate a spec mapping; errors name ``source`` and the field."""
    try:
        return FeatureSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def load_spec(path: Path | None = None) -> FeatureSpec:
    """Load and validate a feature spec YAML; ``None`` loads the shipped default."""
    path = DEFAULT_SPEC_PATH if path is None else path
    return parse_spec(load_yaml_mapping(path), str(path))


def default_spec() -> FeatureSpec:
    """The shipped spec (``default_spec.yaml``)."""
    return load_spec(None)
