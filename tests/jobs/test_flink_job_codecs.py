"""The Flink binding's byte layouts round-trip, and the velocity stage's base + log state rebuilds the
same window state as applying the events directly (what a restored or evicted key relies on). No engine
runs here: the functions are plain Python."""

from __future__ import annotations

from collections import defaultdict

from streamwarden.jobs.flink.assemble import decode_pending
from streamwarden.jobs.flink.decode import ROUTE_CARRIES_EVENT, route_value, split_route_value
from streamwarden.jobs.flink.score import decode_vector, encode_vector
from streamwarden.jobs.flink.velocity import (
    decode_partial,
    decode_window,
    encode_partial,
    encode_window,
    join_partials,
    log_entry,
    split_partials,
)
from streamwarden.operators.features.facts_codec import decode_facts, encode_facts
from streamwarden.operators.features.fanout import EventFacts
from streamwarden.operators.features.replay import VelocityPipeline
from streamwarden.operators.features.state_codec import encode_state
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb


def _events(n: int = 1500) -> list[pb.Event]:
    out = []
    for rec in iter_traffic(small_spec(seed=9, duration_s=30.0)):
        if rec.malformed is None:
            event = pb.Event.FromString(rec.payload)
            if len(out) % 3 == 0:  # platform fields on a third of them: facts layout 2
                event.attributes.update({"plan": "free", "région": "é"})
            out.append(event)
        if len(out) == n:
            break
    return out


def test_facts_routes_partials_and_vectors_round_trip() -> None:
    stages = Stages(StagesConfig())
    pipe = VelocityPipeline(stages.spec)
    layouts = set()
    for event in _events(400):
        fanned = stages.fan_out(event)
        raw = encode_facts(fanned.facts)
        assert decode_facts(raw) == fanned.facts
        assert (raw[0] == 2) == bool(fanned.facts.attributes)
        layouts.add(raw[0])
        for i, key in enumerate([*fanned.keys, fanned.event_key]):
            assert split_route_value(route_value(key, raw)) == (key, raw, 1, 0)
            assert split_route_value(route_value(key, raw, i + 2, ROUTE_CARRIES_EVENT)) == (
                key,
                raw,
                i + 2,
                ROUTE_CARRIES_EVENT,
            )
        partial = stages.velocity(None, fanned.event_key, fanned.facts).partial
        assert decode_partial(encode_partial(partial, raw)) == partial
        parts = [encode_partial(partial, raw), b"", encode_partial(partial)]
        assert split_partials(join_partials(parts)) == parts
        vector = pipe.process(event)
        assert decode_vector(encode_vector(vector)) == vector
        assert decode_vector(
            encode_vector(vector._replace(facts=None, imputed=("a.b", "c")))
        ) == vector._replace(facts=None, imputed=("a.b", "c"))
    assert layouts == {1, 2}


def test_window_base_plus_log_rebuilds_the_same_state() -> None:
    stages = Stages(StagesConfig())
    by_key: dict[str, list[EventFacts]] = defaultdict(list)
    for event in _events():
        fanned = stages.fan_out(event)
        for k in fanned.keys:
            by_key[k].append(fanned.facts)
    key, facts_seen = max(by_key.items(), key=lambda kv: len(kv[1]))
    assert len(facts_seen) > 10
    direct = stages.new_key_state(key)
    for facts in facts_seen:
        direct.on_event(facts)
    split = len(facts_seen) // 2
    base_state = stages.new_key_state(key)
    for facts in facts_seen[:split]:
        base_state.on_event(facts)
    blob = encode_window(
        encode_state(base_state), b"".join(log_entry(encode_facts(f)) for f in facts_seen[split:])
    )
    base, log = decode_window(blob)
    rebuilt = stages.decode_key_state(base)
    for raw in log:
        rebuilt.on_event(decode_facts(raw))
    assert encode_state(rebuilt) == encode_state(direct)
    assert rebuilt.values() == direct.values()


def test_pending_assembly_layout_lists_the_partials_in_order() -> None:
    import struct

    parts = [b"first", b"second partial", b""]
    blob = struct.pack("<Bq", 1, 1234) + b"".join(struct.pack("<I", len(p)) + p for p in parts)
    assert decode_pending(blob) == (1234, parts)
