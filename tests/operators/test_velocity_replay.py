"""Offline replay: the whole chain against a brute-force chain, files with dead letters, expiry."""

from __future__ import annotations

import pytest

from streamwarden.operators.features.assemble import Assembler, event_partial
from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.naive import NaiveKeyState, NaivePlan
from streamwarden.operators.features.replay import VelocityPipeline, replay
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, FeatureSpec, default_spec
from streamwarden.operators.features.synth import random_stream
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import write_delimited


def brute_force_chain(spec: FeatureSpec, events: list[pb.Event]) -> list[tuple[float, ...]]:
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


def test_replay_equals_brute_force_chain_with_disorder():
    spec = default_spec()
    events = random_stream(3, 1_500, disorder_ms=90_000, disorder_fraction=0.2)
    vectors, stats = replay(events, spec)
    assert stats.events == 1_500 and stats.late_partials > 0
    assert [v.values for v in vectors] == brute_force_chain(spec, events)
    assert [v.event_id for v in vectors] == [e.event_id for e in events]
    assert all(len(v.values) == len(spec.feature_names()) for v in vectors)


def test_expiry_never_changes_outputs():
    spec = default_spec()
    steps = (0, 1_000, 60_000, 30 * 3_600_000)  # idle gaps longer than the 24 h window
    events = random_stream(4, 600, steps_ms=steps, n_accounts=40, n_ips=30)
    expiring, stats = replay(events, spec)
    never, never_stats = replay(events, spec, out_of_orderness_ms=1 << 50)
    assert stats.expired_keys > 0 and never_stats.expired_keys == 0
    assert stats.max_keys < never_stats.max_keys
    assert [v.values for v in expiring] == [v.values for v in never]


def test_replay_from_file_counts_dead_letters(tmp_path):
    spec = default_spec()
    events = random_stream(5, 50)
    missing_id = pb.Event(event_time_ms=5, type=pb.Event.PLAY, schema_version=1)
    payloads = [e.SerializeToString() for e in events[:20]]
    payloads += [b"\x00garbage", missing_id.SerializeToString()]
    payloads += [e.SerializeToString() for e in events[20:]]
    path = tmp_path / "events.bin"
    with path.open("wb") as fh:
        write_delimited(fh, payloads)
    vectors, stats = replay(path, spec)
    assert stats.events == 50 and stats.dead_letters == 2
    assert stats.dead_letter_kinds == {"UNDECODABLE": 1, "MISSING_EVENT_ID": 1}
    in_memory, _ = replay(events, spec)
    assert [v.values for v in vectors] == [v.values for v in in_memory]


def test_generated_traffic_replays_deterministically():
    traffic = pytest.importorskip("streamwarden.operators.traffic")
    tspec = traffic.TrafficSpec(duration_s=120, organic_accounts=2_000, organic_events_per_s=40)
    spec = default_spec()
    first, stats = replay((r.payload for r in traffic.iter_traffic(tspec)), spec)
    second, _ = replay((r.payload for r in traffic.iter_traffic(tspec)), spec)
    assert stats.events > 1_000
    assert [v.values for v in first] == [v.values for v in second]
    pipe = VelocityPipeline(spec)
    assert pipe.watermark_ms < 0  # nothing seen yet
