"""Fan-out: one ``Event`` becomes the (entity kind, entity id) keys whose windows it updates.

``FanOut(spec)(event)`` returns the event's ``EventFacts`` (a flat, typed copy of the fields the
features read, made once per event) and its keys, in vector order. An entity kind gets a key when the
spec has that kind, the event type is in the kind's ``event_types``, and the event names the entity
(non-empty id; ASN 0 means unknown). The assembler waits for one partial per key plus the event-level
partial; ``EventFacts.expect_mask`` says which (bit ``k`` for ``EntityKind`` value ``k``, bit 0 for the
event-level partial), so every partial tells the assembler what to wait for.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, EVENT_TYPE_NAMES, FeatureSpec
from streamwarden.schemas import streamwarden_pb2 as pb

EVENT_BIT = 1
"""Bit of ``expect_mask`` for the event-level partial (EntityKind 0 is unused by entities)."""

NUMBER_CAP = (1 << 40) - 1
"""Numeric fields are clamped to [0, NUMBER_CAP] so window sums stay exact 64-bit integers."""


Attributes = tuple[tuple[str, str], ...]
"""``Event.attributes`` in facts: (key, value) pairs sorted by key (immutable, encodes canonically)."""


class EventFacts(NamedTuple):
    """The fields of one event the features read. Numbers are clamped to [0, NUMBER_CAP]."""

    event_id: str
    time_ms: int
    type: int
    account: str
    ip: str
    device: str
    asn: str
    country: str
    user_agent: str
    target_account: str
    target_content: str
    content_hash: str
    play_duration_ms: int
    text_length: int
    url_count: int
    mention_count: int
    account_created_ms: int
    expect_mask: int
    attributes: Attributes = ()
    """The event's ``attributes`` (platform fields) as ``(key, value)`` pairs sorted by key; ``()``
    (shared, nothing to copy or encode) for the many events without any."""


FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(EventFacts._fields)}

N_PLAIN_FIELDS = FIELD_INDEX["attributes"]
"""Facts fields before ``attributes`` (the core's ``N_FACTS``): strings and integers."""

EntityKey = tuple[int, str]
"""(EntityKind value, entity id): the key of one window state."""

_KIND_FIELD: dict[str, str] = {
    "account": "account",
    "ip": "ip",
    "device": "device",
    "target_content": "target_content",
    "target_account": "target_account",
    "asn": "asn",
}


class FanOut:
    """Maps events to keys under a spec; stateless and cheap to call per event."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.kinds: tuple[int, ...] = tuple(ENTITY_KIND_VALUES[k] for k in spec.kinds())
        routes: list[tuple[tuple[int, int], ...]] = [()]
        for type_value in range(1, len(EVENT_TYPE_NAMES) + 1):
            type_name = pb.Event.Type.Name(type_value)  # type: ignore[arg-type]
            route = []
            for kind in spec.kinds():
                types = spec.entities[kind].event_types  # type: ignore[index]
                if types is None or type_name in types:
                    route.append((ENTITY_KIND_VALUES[kind], FIELD_INDEX[_KIND_FIELD[kind]]))
            routes.append(tuple(route))
        self._routes = tuple(routes)
        self.routes: tuple[tuple[tuple[int, int], ...], ...] = self._routes
        """Per event type value: (EntityKind value, facts field of the entity id) of its keys."""

    def facts(self, event: pb.Event) -> EventFacts:
        """The event's facts with ``expect_mask`` filled in."""
        return self(event)[0]

    def keys(self, facts: EventFacts) -> list[EntityKey]:
        """The keys ``facts`` fans out to, in vector order."""
        mask = facts.expect_mask
        out: list[EntityKey] = []
        t = facts.type
        for kind, field in self._routes[t] if 0 < t < len(self._routes) else ():
            if mask >> kind & 1:
                out.append((kind, str(facts[field])))
        return out

    def __call__(self, event: pb.Event) -> tuple[EventFacts, list[EntityKey]]:
        """Facts and keys of one event (one pass; this is on every event's path)."""
        a = event.actor
        tg = event.target
        c = event.content
        asn = a.asn
        t = event.type
        play = event.play_duration_ms
        if not 0 <= play <= NUMBER_CAP:
            play = 0 if play < 0 else NUMBER_CAP
        values: tuple[Any, ...] = (
            event.event_id,
            event.event_time_ms,
            t,
            a.account_id,
            a.ip,
            a.device_id,
            str(asn) if asn else "",
            a.country,
            a.user_agent,
            tg.account_id,
            tg.content_id,
            c.content_hash,
            play,
            c.text_length,  # uint32 fields never exceed NUMBER_CAP
            c.url_count,
            c.mention_count,
            event.account_created_ms,
        )
        attrs = event.attributes
        mask = EVENT_BIT
        keys: list[EntityKey] = []
        for kind, field in self._routes[t] if 0 < t < len(self._routes) else ():
            entity = values[field]
            if entity:
                mask |= 1 << kind
                keys.append((kind, entity))
        pairs = tuple(sorted(attrs.items())) if attrs else ()
        return _new_facts(EventFacts, (*values, mask, pairs)), keys

    @staticmethod
    def expected_partials(facts: EventFacts) -> int:
        """How many partials the assembler waits for: one per key plus the event-level one."""
        return int(facts.expect_mask).bit_count()


_new_facts = tuple.__new__
