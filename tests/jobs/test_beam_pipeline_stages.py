"""The keyed Beam stages under TestStream on the DirectRunner's streaming engine: out-of-order events,
lateness, per-key isolation, state across bundle boundaries, assembly timeouts, and the whole transform
against the offline replay."""

from __future__ import annotations

from collections import Counter
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from streamwarden.jobs.beam.assemble import AssembleFn, JoinInBundleFn
from streamwarden.jobs.beam.kafka_source import KafkaRecord
from streamwarden.jobs.beam.pipeline import StreamwardenTransform
from streamwarden.jobs.beam.velocity import VelocityFn
from streamwarden.operators.features.assemble import Assembler, FeatureVector
from streamwarden.operators.features.synth import T0_MS, make_event
from streamwarden.operators.features.window import KeyState
from streamwarden.operators.pipeline import Stages, StagesConfig, iter_kafka_like, key_kind, replay_actions
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine]

CONFIG = StagesConfig()
STAGES = Stages.shared(CONFIG)
LATENESS_MS = STAGES.spec.allowed_lateness_ms


def _streaming() -> BeamTestPipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return BeamTestPipeline(options=options)


def _play(eid: str, t_ms: int, account: str, ip: str) -> pb.Event:
    return make_event(eid, t_ms, pb.Event.PLAY, account=account, ip=ip, play_duration_ms=31_000)


# Two accounts sharing one IP, interleaved; out of order within the lateness; e5 is late for a1 (more
# than the lateness behind a1's high-water mark) but not for the IP, which a2 moved on less.
EVENTS = [
    _play("e1", T0_MS, "a1", "ip1"),
    _play("e2", T0_MS + 5_000, "a2", "ip1"),
    _play("e3", T0_MS + 2_000, "a1", "ip1"),  # out of order for a1 and ip1
    _play("e4", T0_MS + 100_000, "a1", "ip2"),
    _play("e5", T0_MS + 30_000, "a1", "ip1"),  # a1's high-water mark is +100 s: late there
    _play("e6", T0_MS + 6_000, "a2", "ip1"),
]


def _velocity_reference(events: list[pb.Event]) -> list[tuple[str, str, tuple[float, ...], bool]]:
    states: dict[str, KeyState] = {}
    out = []
    for event in events:
        fanned = STAGES.fan_out(event)
        for key in fanned.keys:
            partial = states.setdefault(key, KeyState(STAGES.plans[key_kind(key)])).on_event(fanned.facts)
            out.append((partial.event_id, key, partial.values, partial.late))
    return out


def test_velocity_keeps_per_key_state_across_bundles_in_event_time():
    stream = BeamTestStream()
    for i, event in enumerate(EVENTS):
        fanned = STAGES.fan_out(event)
        # one bundle per event: every state read after the first comes from an earlier bundle
        stream = stream.add_elements(
            [TimestampedValue((key, fanned.facts), event.event_time_ms / 1000) for key in fanned.keys]
        )
        stream = stream.advance_watermark_to(T0_MS / 1000 + i)
    stream = stream.advance_watermark_to_infinity()
    expected = _velocity_reference(EVENTS)
    assert any(late for *_, late in expected), "the scenario must contain a late event"
    with _streaming() as p:
        got = (
            p
            | stream
            | beam.Map(lambda kv: kv)  # keyed input comes from the element, as in the job
            | beam.ParDo(VelocityFn(CONFIG))
            | beam.Map(lambda kv: (kv[0], kv[1].kind, kv[1].values, kv[1].late))
        )
        assert_that(
            got, equal_to([(eid, key_kind(key), values, late) for eid, key, values, late in expected])
        )


def test_velocity_isolates_keys_within_one_bundle():
    a = [_play(f"a{i}", T0_MS + 1_000 * i, "acct-a", f"ip-a{i}") for i in range(4)]
    b = [_play(f"b{i}", T0_MS + 1_000 * i, "acct-b", f"ip-b{i}") for i in range(4)]
    mixed = [e for pair in zip(a, b, strict=True) for e in pair]
    stream = (
        BeamTestStream()
        .add_elements(
            [
                TimestampedValue((key, f.facts), e.event_time_ms / 1000)
                for e in mixed
                for f in [STAGES.fan_out(e)]
                for key in f.keys[:1]  # the account route only
            ]
        )
        .advance_watermark_to_infinity()
    )
    with _streaming() as p:
        counts = (
            p
            | stream
            | beam.ParDo(VelocityFn(CONFIG))
            | beam.Map(lambda kv: (kv[0], kv[1].values[0]))  # account.count_event.1m
        )
        assert_that(
            counts, equal_to([(f"a{i}", i + 1) for i in range(4)] + [(f"b{i}", i + 1) for i in range(4)])
        )


def _partials(events: list[pb.Event]) -> list[Any]:
    out = []
    for event in events:
        fanned = STAGES.fan_out(event)
        out.append(fanned.event_partial)
        out.extend(KeyState(STAGES.plans[key_kind(k)]).on_event(fanned.facts) for k in fanned.keys)
    return out


def test_assembly_joins_partials_from_different_bundles_and_imputes_on_timeout():
    config = StagesConfig(assembly_timeout_ms=60_000)  # event time after the event
    events = [_play(f"e{i}", T0_MS + 1_000 * i, f"a{i}", "ip1") for i in range(3)]
    partials = _partials(events)
    # e0 and e1 complete with partials spread over two bundles (reversed order) before their deadlines;
    # e2's ip partial never comes: the watermark passing e2 + 60 s imputes it
    first, second = (
        [p for p in partials if p.event_id != "e2"][::2],
        [p for p in partials if p.event_id != "e2"][1::2],
    )
    e2 = [p for p in partials if p.event_id == "e2"]
    missing = e2.pop()
    stream = (
        BeamTestStream()
        .add_elements([TimestampedValue((p.event_id, p), T0_MS / 1000) for p in reversed(first)])
        .advance_watermark_to(T0_MS / 1000 + 1)
        .add_elements([TimestampedValue((p.event_id, p), T0_MS / 1000 + 1) for p in second + e2])
        .advance_watermark_to(T0_MS / 1000 + 600)
    )
    reference = Assembler(STAGES.spec, timeout_ms=1)
    want = [v for v in (reference.add(p, 0) for p in partials if p is not missing) if v is not None]
    want += reference.expire(10)
    assert [v.event_id for v in want] == ["e0", "e1", "e2"] and want[-1].imputed
    with _streaming() as p:
        vectors = p | stream | beam.ParDo(AssembleFn(config))
        assert_that(vectors, equal_to(want))


def test_join_in_bundle_passes_incomplete_events_to_the_keyed_assembly():
    events = [_play(f"e{i}", T0_MS + 1_000 * i, f"a{i}", "ip1") for i in range(3)]
    partials = _partials(events)
    by_event = {e.event_id: [p for p in partials if p.event_id == e.event_id] for e in events}
    assert all(len(ps) >= 3 for ps in by_event.values())
    # e0 complete within bundle 1; e1 split over bundles 1 and 2; e2 complete within bundle 2, reversed
    bundle1 = by_event["e0"] + by_event["e1"][:1]
    bundle2 = by_event["e1"][1:] + by_event["e2"][::-1]
    stream = (
        BeamTestStream()
        .add_elements([TimestampedValue((p.event_id, p), T0_MS / 1000) for p in bundle1])
        .advance_watermark_to(T0_MS / 1000 + 1)
        .add_elements([TimestampedValue((p.event_id, p), T0_MS / 1000 + 1) for p in bundle2])
        .advance_watermark_to_infinity()
    )
    reference = Assembler(STAGES.spec, timeout_ms=1)
    want = [v for v in (reference.add(p, 0) for p in partials) if v is not None]
    assert [v.event_id for v in want] == ["e0", "e1", "e2"] and not any(v.imputed for v in want)
    n_e1 = len(by_event["e1"])
    with _streaming() as p:
        joined = p | stream | beam.ParDo(JoinInBundleFn(CONFIG))
        # e0 and e2 leave as vectors; e1's partials go on to the keyed stage, one element per bundle
        shapes = joined | "Shapes" >> beam.Map(
            lambda kv: (kv[0], "vector" if isinstance(kv[1], FeatureVector) else len(kv[1]))
        )
        assert_that(
            shapes,
            equal_to([("e0", "vector"), ("e1", 1), ("e1", n_e1 - 1), ("e2", "vector")]),
            label="shapes",
        )
        vectors = joined | beam.ParDo(AssembleFn(StagesConfig(assembly_timeout_ms=600_000)))
        assert_that(vectors, equal_to(want), label="vectors")


def test_the_whole_transform_matches_the_offline_replay():
    payloads = [r.payload for r in iter_traffic(small_spec(seed=5, duration_s=40.0))][:1_200]
    records = [KafkaRecord("events", 0, i, None, v, 0) for i, v in enumerate(payloads)]
    stream = BeamTestStream()
    for start in range(0, len(records), 300):  # several bundles
        stream = stream.add_elements([TimestampedValue(r, 0) for r in records[start : start + 300]])
    stream = stream.advance_watermark_to_infinity()
    reference = replay_actions(iter_kafka_like(payloads, "events"), Stages.build(CONFIG))
    assert reference.actions, "the sample must produce actions"
    with _streaming() as p:
        out = p | stream | StreamwardenTransform(CONFIG, write_features=True, check_future=False)
        action_ids = out.actions | "Ids" >> beam.Map(lambda kv: pb.Action.FromString(kv[1]).action_id)
        assert_that(action_ids, equal_to([a.action_id for a in reference.actions]), label="actions")
        kinds = out.dead_letters | beam.Map(lambda kv: pb.DeadLetter.FromString(kv[1]).source_offset)
        assert_that(kinds, equal_to([d.source_offset for d in reference.dead_letters]), label="dead letters")
        assert out.features is not None
        events = out.features | beam.Map(lambda kv: kv[0].decode())
        assert_that(events, equal_to([r.event_id for r in reference.feature_records]), label="features")
    assert sum(Counter(reference.counters.dead_letters).values()) == len(reference.dead_letters)
