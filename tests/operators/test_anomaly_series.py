"""Metric series: event routing, tumbling buckets, lateness, zero buckets for quiet series, expiry, state."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.anomaly._wire import StateFormatError
from streamwarden.operators.anomaly.series import (
    ClosedBucket,
    SeriesAggregator,
    SeriesPoint,
    bucket_start,
    points_for_dead_letter,
    points_for_event,
    series_id,
    split_series_id,
)
from streamwarden.operators.anomaly.spec import AnomalySpec, load_anomaly_spec, parse_anomaly_spec
from streamwarden.schemas import streamwarden_pb2 as pb

B = 60_000
T0 = 1_700_000_040_000  # a multiple of 60 s


def _spec(lateness_ms: int = 10_000, idle_ms: int = 5 * B) -> AnomalySpec:
    return parse_anomaly_spec(
        {
            "defaults": {"allowed_lateness_ms": lateness_ms, "idle_expiry_ms": idle_ms},
            "metrics": [
                {"name": "plays", "event_types": ["PLAY"], "key": "target.content_id"},
                {"name": "signups", "event_types": ["SIGNUP"], "key": "actor.asn"},
                {"name": "all_events"},
                {"name": "dlq", "source": "dead_letters"},
            ],
        }
    )


def _play(t_ms: int, track: str = "t1", asn: int = 0) -> pb.Event:
    return pb.Event(
        event_id=f"e{t_ms}-{track}",
        event_time_ms=t_ms,
        type=pb.Event.PLAY,
        actor=pb.Actor(account_id="a", asn=asn),
        target=pb.Target(content_id=track),
        schema_version=1,
    )


def test_points_for_event_routes_by_type_and_key() -> None:
    spec = _spec()
    play = _play(T0, "track-9")
    assert [(p.metric, p.series_key) for p in points_for_event(spec, play)] == [
        ("plays", "track-9"),
        ("all_events", "*"),
    ]
    signup = pb.Event(event_id="s", event_time_ms=T0, type=pb.Event.SIGNUP, actor=pb.Actor(asn=64500))
    assert [(p.metric, p.series_key) for p in points_for_event(spec, signup)] == [
        ("signups", "64500"),
        ("all_events", "*"),
    ]
    # A signup without an ASN does not count towards an empty-key series.
    no_asn = pb.Event(event_id="s2", event_time_ms=T0, type=pb.Event.SIGNUP)
    assert [p.metric for p in points_for_event(spec, no_asn)] == ["all_events"]
    assert points_for_dead_letter(spec, T0) == [SeriesPoint("dlq", "*", T0)]


def test_series_id_round_trips_keys_with_colons() -> None:
    sid = series_id("plays", "ip:2001:db8::1")
    assert split_series_id(sid) == ("plays", "ip:2001:db8::1")
    assert SeriesPoint("plays", "k", 0).series_id == "plays:k"


def test_buckets_close_after_end_plus_lateness_and_quiet_buckets_are_zero() -> None:
    agg = SeriesAggregator(_spec(lateness_ms=10_000))
    for t in (T0 + 1, T0 + 2, T0 + B + 5, T0 + 3 * B + 7):
        agg.on_event(_play(t))
    assert agg.advance_to(T0 + B + 9_999) == []  # end + lateness not reached yet
    closed = [b for b in agg.advance_to(T0 + B + 10_000) if b.metric == "plays"]
    assert closed == [ClosedBucket("plays", "t1", T0, T0 + B, 2.0)]
    closed = [b for b in agg.advance_to(T0 + 4 * B + 10_000) if b.metric == "plays"]
    assert [(b.start_ms - T0, b.value) for b in closed] == [(B, 1.0), (2 * B, 0.0), (3 * B, 1.0)]


def test_late_events_are_counted_not_applied() -> None:
    agg = SeriesAggregator(_spec(lateness_ms=10_000))
    agg.on_event(_play(T0 + 5))
    agg.advance_to(T0 + B + 10_000)
    assert agg.on_event(_play(T0 + 30_000, "t1")) == 0  # its bucket is closed: late for every series
    assert agg.late_count == 2  # plays/t1 and all_events/*
    assert agg.on_event(_play(T0 + B + 1)) == 2  # the next bucket is still open
    # A series never seen before is late too if its bucket closed already.
    assert agg.on_event(_play(T0 + 30_000, "new-track")) == 0


def test_quiet_series_expire_after_the_idle_horizon_with_a_last_zero_bucket() -> None:
    agg = SeriesAggregator(_spec(lateness_ms=0, idle_ms=3 * B))
    agg.on_event(_play(T0))
    closed = [b for b in agg.advance_to(T0 + 100 * B) if b.metric == "plays"]
    assert [(b.start_ms - T0, b.value, b.last) for b in closed] == [
        (0, 1.0, False),
        (B, 0.0, False),
        (2 * B, 0.0, False),
        (3 * B, 0.0, True),
    ]
    assert agg.series_count == 0
    assert agg.advance_to(T0 + 200 * B) == []


def test_dead_letters_feed_their_own_series() -> None:
    agg = SeriesAggregator(_spec(lateness_ms=0))
    for t in (T0, T0 + 1, T0 + 2):
        agg.on_dead_letter(t)
    assert agg.advance_to(T0 + B) == [ClosedBucket("dlq", "*", T0, T0 + B, 3.0)]


def test_bucket_offset_alignment() -> None:
    assert bucket_start(T0 + 59_999, B) == T0
    assert bucket_start(T0 + 30_000, B, offset_ms=30_000) == T0 + 30_000
    assert bucket_start(T0 + 29_999, B, offset_ms=30_000) == T0 - 30_000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20 * B), st.sampled_from(["a", "b", "c"]), st.booleans()),
        min_size=1,
        max_size=150,
    )
)
def test_property_closed_buckets_equal_a_brute_force_count(items) -> None:
    """Out-of-order events and watermark steps: every on-time event lands in exactly its bucket."""
    lateness = 30_000
    agg = SeriesAggregator(_spec(lateness_ms=lateness, idle_ms=10**9))
    applied: Counter[tuple[str, int]] = Counter()
    closed: list[ClosedBucket] = []
    max_t = 0
    for t, track, step in items:
        if agg.on_event(_play(T0 + t, track)):
            applied[(track, bucket_start(T0 + t, B))] += 1
        max_t = max(max_t, t)
        if step:
            closed += agg.advance_to(T0 + max_t - 2 * B)  # the watermark trails the max time seen
    closed += agg.advance_to(T0 + 30 * B)
    plays = [b for b in closed if b.metric == "plays"]
    got = {(b.series_key, b.start_ms): b.value for b in plays if b.value}
    assert got == {k: float(v) for k, v in applied.items()}
    # Each series emits a contiguous run of buckets, each exactly once.
    for track in {b.series_key for b in plays}:
        starts = [b.start_ms for b in plays if b.series_key == track]
        assert starts == list(range(starts[0], starts[-1] + B, B))


def test_aggregator_state_round_trip() -> None:
    spec = _spec()
    agg = SeriesAggregator(spec)
    for i in range(50):
        agg.on_event(_play(T0 + i * 7_000, f"t{i % 4}"))
    agg.advance_to(T0 + 3 * B)
    blob = agg.to_bytes()
    clone = SeriesAggregator.from_bytes(spec, blob)
    assert clone.to_bytes() == blob
    for i in range(50, 80):
        agg.on_event(_play(T0 + i * 7_000, f"t{i % 4}"))
        clone.on_event(_play(T0 + i * 7_000, f"t{i % 4}"))
    assert agg.advance_to(T0 + 40 * B) == clone.advance_to(T0 + 40 * B)


def test_corrupt_state_is_rejected_clearly() -> None:
    spec = _spec()
    agg = SeriesAggregator(spec)
    agg.on_event(_play(T0))
    blob = agg.to_bytes()
    with pytest.raises(StateFormatError, match="truncated"):
        SeriesAggregator.from_bytes(spec, blob[:-3])
    with pytest.raises(StateFormatError, match="version"):
        SeriesAggregator.from_bytes(spec, b"\x09" + blob[1:])
    with pytest.raises(StateFormatError, match="metric"):
        SeriesAggregator.from_bytes(parse_anomaly_spec({"metrics": [{"name": "other"}]}), blob)


def test_shipped_spec_loads() -> None:
    spec = load_anomaly_spec()
    names = {m.name for m in spec.metrics}
    assert {"plays_per_track", "signups_per_asn", "failed_logins_per_ip", "reports_per_content"} <= names
    assert spec.metric("reports_per_content").bucket_ms == 600_000
    assert spec.metric("dead_letters").source == "dead_letters"
