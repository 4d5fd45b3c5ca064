"""``iter_traffic``: organic and scenario drafts heap-merged by event time, given ids and encoded,
then delivered in arrival order with a share of late (out-of-order, bounded delay) events and
malformed records mixed in. ``labels``: the ground truth of the same spec.

Everything is a pure function of the spec. Per-event choices (late or not, malformed or not) hang off
the event id, itself a bijective hash of (source, per-source counter, seed), so turning a scenario
off leaves the organic events byte-identical.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from streamwarden.operators.traffic import ids
from streamwarden.operators.traffic.labels import ENTITY_KINDS, Label
from streamwarden.operators.traffic.organic import ORGANIC_SOURCE, Draft, Organic, World
from streamwarden.operators.traffic.scenarios import Built, build
from streamwarden.operators.traffic.spec import SCENARIO_NAMES, TRAP_NAMES, TrafficSpec
from streamwarden.operators.traffic.traps import build_trap
from streamwarden.operators.traffic.wire import TYPE_FIELD, encode_event, varint
from streamwarden.schemas.codec import SCHEMA_VERSION

_M32 = 0xFFFFFFFF
_DELAY_SALT = 0xD1A7
_MAL_KIND_SALT = 0xBADC0DE
_MAL_ID_SALT = 0xBAD1D


class TrafficRecord(NamedTuple):
    """One record as delivered: the bytes to produce and what the generator knows about them.

    Immutable (a named tuple: cheaper to build than a frozen dataclass, which matters at 10^5/s).

    ``event_time_ms`` is 0 for garbage and for records without an event time; ``arrival_ms`` is the
    event time at which the record is delivered (later than ``event_time_ms`` for late events).
    ``account_id`` is the actor account (the Kafka key; empty for garbage). ``scenario`` names the abuse
    scenario that produced a valid event (``None`` = organic); ``malformed`` is the ``DeadLetter``
    error kind name a decoder must give a malformed record (``None`` = valid).
    """

    payload: bytes
    event_time_ms: int
    arrival_ms: int
    account_id: str
    scenario: str | None = None
    malformed: str | None = None

    @property
    def late_ms(self) -> int:
        """How much later than its event time this record is delivered."""
        return self.arrival_ms - self.event_time_ms if self.event_time_ms else 0


def _sources(spec: TrafficSpec, world: World) -> list[tuple[str | None, int, Iterator[Draft]]]:
    sources: list[tuple[str | None, int, Iterator[Draft]]] = [
        (None, ORGANIC_SOURCE, Organic(spec, world).drafts())
    ]
    for name in SCENARIO_NAMES:
        built = build(spec, name, world)
        if built is not None:
            sources.append((name, built.source, iter(built.drafts)))
    for name in TRAP_NAMES:
        built = build_trap(spec, name, world)
        if built is not None:  # benign traffic: tagged organic, labeled benign
            sources.append((None, built.source, iter(built.drafts)))
    return sources


def _malformed(spec: TrafficSpec, d: Draft, eid_int: int, arrival_ms: int) -> TrafficRecord:
    """A broken copy of draft ``d`` of the kind picked by its id."""
    h = ids.mix64(eid_int ^ _MAL_KIND_SALT)
    kinds = spec.malformed_kinds
    kind = kinds[h % len(kinds)]
    mal_int = ids.mix64(eid_int ^ _MAL_ID_SALT)
    t, etype, actor, target, content, play_ms, created, aid = d
    if kind == "UNDECODABLE":
        rng = random.Random(mal_int)
        body = rng.randbytes(8 + rng.randrange(120))
        if rng.random() < 0.5:
            payload = b"\x00" + body  # field number 0 is never valid
        else:
            payload = b"\x0a" + varint(len(body) + 1 + rng.randrange(64)) + body  # truncated field
        return TrafficRecord(payload, 0, arrival_ms, "", None, kind)
    event_id, event_time, version = f"{mal_int:016x}", t, SCHEMA_VERSION
    if kind == "MISSING_EVENT_ID":
        event_id = ""
    elif kind == "MISSING_EVENT_TIME":
        event_time = 0
    else:  # UNKNOWN_SCHEMA_VERSION
        version = SCHEMA_VERSION + 1 + mal_int % 100
    payload = encode_event(event_id, event_time, etype, actor, target, content, play_ms, created, version)
    return TrafficRecord(payload, event_time, arrival_ms, aid, None, kind)


_ID_BATCH = 1024


def _event_ids(first: int, salt: int) -> list[int]:
    """``mix64(i ^ salt)`` for ``_ID_BATCH`` consecutive indices from ``first``."""
    index = np.arange(first, first + _ID_BATCH, dtype=np.uint64)
    values: list[int] = ids.mix64_array(index ^ np.uint64(salt)).tolist()
    return values


def iter_traffic(spec: TrafficSpec) -> Iterator[TrafficRecord]:
    """Every record of ``spec`` in arrival order. Same spec, same records, byte for byte."""
    world = World(spec)
    sources = _sources(spec, world)
    end_ms = spec.end_ms
    salt = ids.mix64(spec.seed ^ 0xE7E47)
    mix64, index64, kind_event = ids.mix64, ids.index64, ids.KIND_EVENT
    late_threshold = int(spec.late_fraction * (1 << 32))
    max_late_ms = spec.max_late_ms
    f = spec.malformed_fraction
    mal_threshold = int(f / (1.0 - f) * (1 << 32)) if f > 0 else 0
    heap: list[tuple[int, int, Draft, Iterator[Draft]]] = []
    for k, (_, _, it) in enumerate(sources):
        first = next(it, None)
        if first is not None:
            heap.append((first[0], k, first, it))
    heapq.heapify(heap)
    names = [name for name, _, _ in sources]
    # Event ids: mix64(index64(source, EVENT, n) ^ salt) for the n-th event of a source, computed in
    # vectorised batches of ``_ID_BATCH``.
    bases = [index64(source, kind_event, 0) for _, source, _ in sources]
    counters = [0] * len(sources)
    id_batches: list[list[int]] = [[] for _ in sources]
    pending: list[tuple[int, int, TrafficRecord]] = []  # late records by arrival time
    seq = 0
    heappop, heappush, heapreplace = heapq.heappop, heapq.heappush, heapq.heapreplace
    type_field, vint = TYPE_FIELD, varint
    version = b"\x40" + varint(SCHEMA_VERSION)
    while heap:
        t, k, d, it = heap[0]
        if t >= end_ms:
            break
        nxt = next(it, None)
        if nxt is None:
            heappop(heap)
        else:
            heapreplace(heap, (nxt[0], k, nxt, it))
        n = counters[k]
        counters[k] = n + 1
        pos = n % _ID_BATCH
        if pos == 0:
            id_batches[k] = _event_ids(bases[k] + n, salt)
        eid_int = id_batches[k][pos]
        while pending and pending[0][0] <= t:
            yield heappop(pending)[2]
        # Inline encode_event (same bytes): 16-hex-char id, time, type, parts, version, created.
        _, etype, actor, target, content, play_ms, created, aid = d
        payload = b"".join(
            (
                b"\x0a\x10%016x\x10" % eid_int,
                bytes(
                    (
                        (t & 127) | 128,
                        ((t >> 7) & 127) | 128,
                        ((t >> 14) & 127) | 128,
                        ((t >> 21) & 127) | 128,
                        ((t >> 28) & 127) | 128,
                        t >> 35,
                    )
                )
                if 1 << 35 <= t < 1 << 42
                else vint(t),
                type_field[etype],
                actor,
                target,
                content,
                b"\x38" + vint(play_ms) if play_ms else b"",
                version,
                created,
            )
        )
        if (eid_int & _M32) < late_threshold:
            delay = 1 + mix64(eid_int ^ _DELAY_SALT) % max_late_ms
            seq += 1
            heappush(pending, (t + delay, seq, TrafficRecord(payload, t, t + delay, aid, names[k])))
        else:
            yield TrafficRecord(payload, t, t, aid, names[k])
        if ((eid_int >> 32) & _M32) < mal_threshold:
            yield _malformed(spec, d, eid_int, t)
    while pending:
        yield heappop(pending)[2]


def _labels_of(built: Built, benign: bool) -> list[Label]:
    w = built.window
    first = built.first_ms
    return [
        Label(built.name, kind, entity_id, w.start_ms, w.end_ms, first[(kind, entity_id)], benign)
        for kind in ENTITY_KINDS
        for entity_id in built.entities.get(kind, ())
    ]


def labels(spec: TrafficSpec) -> list[Label]:
    """Ground truth of ``spec``: one label per entity each enabled scenario used, with the scenario's
    window and the entity's own first event (``first_ms``); then the traps' subjects, marked benign."""
    world = World(spec)
    out: list[Label] = []
    for name in SCENARIO_NAMES:
        built = build(spec, name, world)
        if built is not None:
            out.extend(_labels_of(built, benign=False))
    for name in TRAP_NAMES:
        built = build_trap(spec, name, world)
        if built is not None:
            out.extend(_labels_of(built, benign=True))
    return out
