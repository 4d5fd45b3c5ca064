"""Two independent paths to every event's feature vector, for tests that compare them: the brute-force
oracle (``operators/features/naive.py``) and the compiled core's per-key store."""

from __future__ import annotations

from streamwarden.operators.features.assemble import Assembler, event_partial
from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.naive import NaiveKeyState, NaivePlan
from streamwarden.operators.features.replay import VelocityStore
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, FeatureSpec
from streamwarden.schemas import streamwarden_pb2 as pb


def oracle(spec: FeatureSpec, events: list[pb.Event]) -> list[tuple[float, ...]]:
    fan = FanOut(spec)
    plans = {ENTITY_KIND_VALUES[k]: NaivePlan(spec, k) for k in spec.kinds()}
    states: dict[tuple[int, str], NaiveKeyState] = {}
    asm = Assembler(spec, timeout_ms=1)
    out = []
    for ev in events:
        facts, keys = fan(ev)
        vec = asm.add(event_partial(facts), 0)
        for key in keys:
            vec = asm.add(states.setdefault(key, NaiveKeyState(plans[key[0]])).on_event(facts), 0) or vec
        assert vec is not None
        out.append(vec.values)
    return out


def per_key(spec: FeatureSpec, events: list[pb.Event]) -> list[tuple[float, ...]]:
    fan, store, asm = FanOut(spec), VelocityStore(spec), Assembler(spec, timeout_ms=1)
    out = []
    for ev in events:
        facts, keys = fan(ev)
        out.append(asm.complete(facts, store.on_events(keys, facts)).values)
    return out
