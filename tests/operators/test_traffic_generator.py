"""The traffic generator: determinism, ground truth that matches the events, lateness, malformed records."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict

import pytest

from streamwarden.operators.traffic import (
    ENTITY_KINDS,
    MALFORMED_KINDS,
    SCENARIO_NAMES,
    Label,
    TrafficRecord,
    iter_traffic,
    labels,
    read_labels,
    small_spec,
    write_labels,
)
from streamwarden.operators.traffic.organic import diurnal_factor
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event, read_delimited, write_delimited


@pytest.fixture(scope="module")
def spec():
    return small_spec(seed=7)


@pytest.fixture(scope="module")
def records(spec) -> list[TrafficRecord]:
    return list(iter_traffic(spec))


@pytest.fixture(scope="module")
def truth(spec) -> list[Label]:
    return labels(spec)


@pytest.fixture(scope="module")
def events(records) -> list[tuple[TrafficRecord, pb.Event]]:
    out = []
    for rec in records:
        if rec.malformed is None:
            event = decode_event(rec.payload)
            assert isinstance(event, pb.Event), event
            out.append((rec, event))
    return out


def entities(event: pb.Event) -> dict[str, str]:
    """The (kind -> id) an event names, in the labels' vocabulary."""
    named = {
        "account": event.actor.account_id,
        "ip": event.actor.ip,
        "device": event.actor.device_id,
        "asn": str(event.actor.asn) if event.actor.asn else "",
        "target_content": event.target.content_id,
        "target_account": event.target.account_id,
    }
    return {k: v for k, v in named.items() if v}


def test_same_seed_same_bytes_and_labels(spec, records, truth):
    again = list(iter_traffic(spec))
    assert again == records
    assert labels(spec) == truth


def test_other_seed_other_traffic(spec, records, truth):
    other = spec.with_updates(seed=spec.seed + 1)
    other_records = list(iter_traffic(other))
    assert [r.payload for r in other_records[:100]] != [r.payload for r in records[:100]]
    other_ids = {label.entity_id for label in labels(other)}
    # Entity ids are salted by the seed: a model trained on one seed cannot memorise the next one's ids.
    assert not other_ids & {label.entity_id for label in truth if label.entity_kind != "asn"}


def test_every_scenario_is_labeled_inside_the_run(spec, truth):
    assert {label.scenario for label in truth} == set(SCENARIO_NAMES)
    for label in truth:
        assert label.entity_kind in ENTITY_KINDS
        assert spec.start_ms <= label.start_ms < label.end_ms <= spec.end_ms
    kinds = {(label.scenario, label.entity_kind) for label in truth}
    assert ("streaming_farm", "target_content") in kinds
    assert ("follow_farm", "target_account") in kinds
    assert ("credential_stuffing", "ip") in kinds
    assert ("signup_burst", "asn") in kinds
    assert ("spam_burst", "account") in kinds
    assert len({(label.entity_kind, label.entity_id) for label in truth}) == len(truth)


def test_labeled_entities_appear_in_their_scenario_during_the_span(truth, events):
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    spans = {label.scenario: (label.start_ms, label.end_ms) for label in truth}
    for rec, event in events:
        if rec.scenario is None:
            continue
        start, end = spans[rec.scenario]
        assert start <= event.event_time_ms < end, (rec.scenario, event.event_time_ms)
        seen[rec.scenario].update(entities(event).items())
    for label in truth:
        assert (label.entity_kind, label.entity_id) in seen[label.scenario], label


def test_organic_entities_are_never_labeled(truth, events):
    labeled = {(label.entity_kind, label.entity_id) for label in truth}
    labeled_ids = {label.entity_id for label in truth if label.entity_kind != "asn"}
    organic = 0
    for rec, event in events:
        if rec.scenario is not None:
            continue
        organic += 1
        named = entities(event)
        assert not labeled & set(named.items()), event
        assert not labeled_ids & set(named.values()), event
    assert organic > 0.7 * len(events)


def test_scenario_events_look_like_their_attack(spec, truth, events):
    by = defaultdict(list)
    for rec, event in events:
        by[rec.scenario].append(event)
    farm = by["streaming_farm"]
    assert {e.type for e in farm} == {pb.Event.PLAY}
    assert all(30_000 <= e.play_duration_ms <= 40_000 for e in farm)
    assert len({e.actor.ip for e in farm}) == spec.scenarios.streaming_farm.ips
    assert len({e.target.content_id for e in farm}) == spec.scenarios.streaming_farm.tracks

    spam = by["spam_burst"]
    assert {e.type for e in spam} == {pb.Event.COMMENT, pb.Event.MESSAGE}
    assert len({e.content.content_hash for e in spam}) <= spec.scenarios.spam_burst.content_variants
    assert all(e.content.url_count >= 1 and e.content.mention_count >= 1 for e in spam)
    assert all(0 < e.event_time_ms - e.account_created_ms <= 2 * 3_600_000 + 600_000 for e in spam)

    follow = by["follow_farm"]
    targets = {label.entity_id for label in truth if label.scenario == "follow_farm"}
    assert {e.type for e in follow} <= {pb.Event.FOLLOW, pb.Event.LIKE, pb.Event.REPOST}
    assert all(e.target.account_id in targets for e in follow)

    stuffing = by["credential_stuffing"]
    failed = [e for e in stuffing if e.type == pb.Event.LOGIN_FAILED]
    assert {e.type for e in stuffing} <= {pb.Event.LOGIN_FAILED, pb.Event.LOGIN}
    assert len(failed) > 0.9 * len(stuffing)
    per_ip = defaultdict(set)
    for e in failed:
        per_ip[e.actor.ip].add(e.actor.account_id)
    assert min(len(accounts) for accounts in per_ip.values()) > 50

    signups = by["signup_burst"]
    asn = next(label.entity_id for label in truth if label.entity_kind == "asn")
    assert {str(e.actor.asn) for e in signups} == {asn}
    assert sum(e.type == pb.Event.SIGNUP for e in signups) == spec.scenarios.signup_burst.accounts


def test_organic_traffic_has_the_configured_rate_and_mix(spec, events):
    organic = [e for rec, e in events if rec.scenario is None]
    expected = spec.organic_events_per_s * spec.duration_s * diurnal_factor(spec, spec.start_ms)
    assert 0.85 * expected < len(organic) < 1.15 * expected
    types = Counter(e.type for e in organic)
    assert types[pb.Event.PLAY] > 0.75 * len(organic)
    for kind in (pb.Event.LIKE, pb.Event.LOGIN, pb.Event.FOLLOW, pb.Event.COMMENT, pb.Event.SIGNUP):
        assert types[kind] > 0, pb.Event.Type.Name(kind)
    assert types[pb.Event.LOGIN_FAILED] < 0.1 * types[pb.Event.LOGIN]
    # The first minute is no busier than the second: sessions under way at the start are resumed mid-play.
    minute = [sum(1 for e in organic if (e.event_time_ms - spec.start_ms) // 60_000 == m) for m in (0, 1)]
    assert minute[0] < 1.15 * minute[1]


def test_event_ids_are_unique(events):
    ids = [event.event_id for _, event in events]
    assert len(set(ids)) == len(ids)


def test_malformed_records_fail_decoding_with_their_kind(spec, records):
    malformed = [r for r in records if r.malformed is not None]
    share = len(malformed) / len(records)
    assert 0.5 * spec.malformed_fraction < share < 1.5 * spec.malformed_fraction
    assert {r.malformed for r in malformed} == set(MALFORMED_KINDS)
    for rec in malformed:
        result = decode_event(rec.payload)
        assert isinstance(result, pb.DeadLetter), rec
        assert pb.DeadLetter.ErrorKind.Name(result.error_kind) == rec.malformed
        assert rec.scenario is None
    assert all(
        r.event_time_ms == 0 for r in malformed if r.malformed in ("UNDECODABLE", "MISSING_EVENT_TIME")
    )


def test_malformed_kinds_and_fraction_are_configurable():
    spec = small_spec(seed=3, malformed_fraction=0.2, malformed_kinds=("UNKNOWN_SCHEMA_VERSION",))
    records = list(iter_traffic(spec))
    malformed = [r for r in records if r.malformed]
    assert 0.17 < len(malformed) / len(records) < 0.23
    assert {r.malformed for r in malformed} == {"UNKNOWN_SCHEMA_VERSION"}
    none = list(iter_traffic(small_spec(seed=3, malformed_fraction=0.0, late_fraction=0.0)))
    assert not any(r.malformed for r in none)
    assert all(r.arrival_ms == r.event_time_ms for r in none)


def test_late_events_are_out_of_order_within_the_bound(spec, records, events):
    max_seen = 0
    out_of_order = 0
    last_arrival = 0
    for rec in records:
        assert rec.arrival_ms >= last_arrival  # records come in arrival order
        last_arrival = rec.arrival_ms
        if rec.event_time_ms == 0:
            continue
        assert max_seen - rec.event_time_ms <= spec.max_late_ms
        out_of_order += rec.event_time_ms < max_seen
        max_seen = max(max_seen, rec.event_time_ms)
        assert 0 <= rec.late_ms <= spec.max_late_ms
    late = sum(1 for rec, _ in events if rec.late_ms > 0)
    assert 0.5 * spec.late_fraction < late / len(events) < 1.5 * spec.late_fraction
    assert out_of_order > 0.5 * late


def test_turning_a_scenario_off_leaves_organic_traffic_unchanged(spec, records):
    without = list(iter_traffic(spec.without_scenarios("spam_burst", "signup_burst")))
    assert {r.scenario for r in without} == {None, "streaming_farm", "follow_farm", "credential_stuffing"}
    organic = [r for r in records if r.scenario is None and r.malformed is None]
    assert [r for r in without if r.scenario is None and r.malformed is None] == organic
    assert {label.scenario for label in labels(spec.without_scenarios("spam_burst"))} == set(
        SCENARIO_NAMES
    ) - {"spam_burst"}


def test_scenarios_are_clipped_to_the_run():
    spec = small_spec(seed=2, duration_s=50.0)  # credential stuffing 40-80 s, signup burst 70-100 s
    truth = labels(spec)
    assert "signup_burst" not in {label.scenario for label in truth}
    stuffing = [label for label in truth if label.scenario == "credential_stuffing"]
    assert stuffing and all(label.end_ms == spec.end_ms for label in stuffing)
    assert all(r.event_time_ms < spec.end_ms for r in iter_traffic(spec))


def test_file_round_trip(records, truth, tmp_path):
    buf = io.BytesIO()
    assert write_delimited(buf, (r.payload for r in records)) == len(records)
    buf.seek(0)
    assert list(read_delimited(buf)) == [r.payload for r in records]
    path = tmp_path / "labels.jsonl"
    assert write_labels(path, truth) == len(truth)
    assert read_labels(path) == truth
    first = path.read_text().splitlines()[0]
    # The five required keys plus first_ms (the subject's own first event); benign only on trap labels.
    assert set(json.loads(first)) == {
        "scenario",
        "entity_kind",
        "entity_id",
        "start_ms",
        "end_ms",
        "first_ms",
    }
    label = Label.from_json(first)
    assert label.start_ms <= label.onset_ms < label.end_ms
