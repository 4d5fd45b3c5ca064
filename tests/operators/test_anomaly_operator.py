"""AnomalyOperator: the per-key path engines use, against the un-keyed aggregator, with state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest

from streamwarden.operators.anomaly._wire import StateFormatError
from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import SeriesAggregator, points_for_event, series_id
from streamwarden.operators.anomaly.spec import AnomalySpec, parse_anomaly_spec
from streamwarden.schemas import streamwarden_pb2 as pb

B = 60_000
T0 = 1_700_000_040_000
LATENESS = 20_000
FIRING, RESOLVED = pb.AnomalyAlert.FIRING, pb.AnomalyAlert.RESOLVED


def _spec(detector: str = "robust_z", idle_ms: int = 30 * B, resolve_k: int = 3) -> AnomalySpec:
    return parse_anomaly_spec(
        {
            "defaults": {
                "allowed_lateness_ms": LATENESS,
                "idle_expiry_ms": idle_ms,
                "lifecycle": {"resolve_k": resolve_k},
            },
            "metrics": [
                {
                    "name": "plays",
                    "event_types": ["PLAY"],
                    "key": "target.content_id",
                    "detector": {
                        "kind": detector,
                        "direction": "up",
                        **({"slot_ms": 3_600_000} if detector == "seasonal" else {}),
                    },
                    "labels": {"team": "ts"},
                }
            ],
        }
    )


def _traffic(seed: int, minutes: int, attack: tuple[int, int] = (80, 95)) -> list[pb.Event]:
    """Plays on three tracks, ~20/min each, shuffled within the allowed lateness; track t0 is farmed."""
    rng = np.random.default_rng(seed)
    events = []
    n = 0
    for minute in range(minutes):
        for track in ("t0", "t1", "t2"):
            if track == "t2" and minute > minutes // 2:
                continue  # t2 goes quiet: it keeps closing zero buckets, then expires
            rate = 20 * (6 if track == "t0" and attack[0] <= minute < attack[1] else 1)
            for _ in range(int(rng.poisson(rate))):
                t = T0 + minute * B + int(rng.integers(0, B))
                events.append(
                    pb.Event(
                        event_id=f"e{n}",
                        event_time_ms=t,
                        type=pb.Event.PLAY,
                        schema_version=1,
                        target=pb.Target(content_id=track),
                    )
                )
                n += 1
    events.sort(key=lambda e: e.event_time_ms + int(rng.integers(0, LATENESS // 2)))  # mild disorder
    return events


def _keyed_run(spec: AnomalySpec, events: list[pb.Event], *, snapshot: bool = False) -> list[pb.AnomalyAlert]:
    """What a keyed engine does: route, key by series id, add, advance each key on the watermark."""
    state: dict[str, bytes] = {}
    alerts: list[pb.AnomalyAlert] = []
    max_t = 0
    ops: dict[str, AnomalyOperator] = {}

    def get(sid: str) -> AnomalyOperator:
        if snapshot:
            return (
                AnomalyOperator.from_bytes(spec, state[sid])
                if sid in state
                else AnomalyOperator.for_series_id(spec, sid)
            )
        if sid not in ops:
            ops[sid] = AnomalyOperator.for_series_id(spec, sid)
        return ops[sid]

    def put(sid: str, op: AnomalyOperator) -> None:
        if op.expired:
            state.pop(sid, None)
            ops.pop(sid, None)
        elif snapshot:
            state[sid] = op.to_bytes()

    for i, event in enumerate(events):
        for p in points_for_event(spec, event):
            op = get(p.series_id)
            op.add(p.time_ms, p.amount)
            put(p.series_id, op)
        max_t = max(max_t, event.event_time_ms)
        if i % 50 == 0:
            watermark = max_t - LATENESS // 2
            for sid in sorted(set(state) | set(ops)):
                op = get(sid)
                alerts += op.advance_to(watermark)
                put(sid, op)
    for sid in sorted(set(state) | set(ops)):
        op = get(sid)
        alerts += op.advance_to(max_t + 10**9)
        put(sid, op)
    return alerts


def _aggregator_run(spec: AnomalySpec, events: list[pb.Event]) -> list[pb.AnomalyAlert]:
    agg = SeriesAggregator(spec)
    ops: dict[str, AnomalyOperator] = {}
    alerts = []
    max_t = 0

    def consume(buckets) -> None:
        for b in buckets:
            sid = series_id(b.metric, b.series_key)
            op = ops.setdefault(sid, AnomalyOperator.for_series_id(spec, sid))
            alerts.extend(op.on_bucket(b).alerts)
            if b.last:
                del ops[sid]

    for i, event in enumerate(events):
        agg.on_event(event)
        max_t = max(max_t, event.event_time_ms)
        if i % 50 == 0:
            consume(agg.advance_to(max_t - LATENESS // 2))
    consume(agg.advance_to(max_t + 10**9))
    return alerts


def _key(alerts: list[pb.AnomalyAlert]) -> list[tuple[str, int, bytes]]:
    return sorted((a.series_key, a.window_end_ms, a.SerializeToString(deterministic=True)) for a in alerts)


def test_streaming_farm_fires_on_the_farmed_track_then_resolves() -> None:
    spec = _spec()
    alerts = _keyed_run(spec, _traffic(1, 180))
    farmed = [a for a in alerts if a.series_key == "t0"]
    assert [a.status for a in farmed] == [FIRING, RESOLVED]
    firing, resolved = farmed
    assert firing.window_start_ms >= T0 + 80 * B and firing.window_end_ms <= T0 + 83 * B
    assert T0 + 95 * B <= resolved.window_end_ms <= T0 + 100 * B
    assert firing.observed > 3 * firing.expected and firing.labels["team"] == "ts"
    assert firing.fingerprint == resolved.fingerprint
    assert [a for a in alerts if a.series_key != "t0"] == []


@pytest.mark.parametrize("detector", ["robust_z", "holt", "seasonal"])
def test_keyed_operators_equal_aggregator_plus_on_bucket(detector: str) -> None:
    spec = _spec(detector)
    events = _traffic(2, 150)
    keyed, unkeyed = _keyed_run(spec, events), _aggregator_run(spec, events)
    assert _key(keyed) == _key(unkeyed)
    if detector != "seasonal":  # seasonal needs days of history before it may alert
        assert keyed


@pytest.mark.parametrize("detector", ["robust_z", "holt", "seasonal"])
def test_state_round_trip_every_step_gives_identical_alerts(detector: str) -> None:
    spec = _spec(detector)
    events = _traffic(3, 120, attack=(60, 75))
    expected = _keyed_run(spec, events)
    assert _key(_keyed_run(spec, events, snapshot=True)) == _key(expected)
    if detector != "seasonal":
        assert expected, "the comparison should cover alerts, not only silence"


def _uncached_bytes(op: AnomalyOperator) -> bytes:
    """``to_bytes`` with the reused detector/lifecycle bytes thrown away first (white box)."""
    if op._detector_obj is not None:
        op._detector_blob = None
    if op._lifecycle_obj is not None:
        op._lifecycle_blob = None
    return op.to_bytes()


@pytest.mark.parametrize("detector", ["robust_z", "holt", "seasonal", "ensemble"])
def test_bytes_reused_between_bucket_closes_are_the_state_at_each_step(detector: str) -> None:
    """An engine checkpoints a series at every barrier; the operator reuses its detector's and
    lifecycle's bytes until a bucket closes. At every step they must equal a fresh serialization, and
    restoring them must carry on with the same alerts."""
    spec = _spec(detector)
    events = [e for e in _traffic(4, 90, attack=(40, 55)) if e.target.content_id == "t0"]

    def feed(op: AnomalyOperator, upto: int, serialize: bool) -> tuple[list[pb.AnomalyAlert], int]:
        alerts: list[pb.AnomalyAlert] = []
        max_t = 0
        for i, event in enumerate(events[:upto]):
            op.add(event.event_time_ms)
            max_t = max(max_t, event.event_time_ms)
            if i % 7 == 0:
                alerts += op.advance_to(max_t - LATENESS // 2)
            if serialize and i % 3 == 0:
                assert op.to_bytes() == _uncached_bytes(op), f"stale bytes after {i + 1} points"
        return alerts, max_t

    def fresh() -> AnomalyOperator:
        return AnomalyOperator.for_series_id(spec, series_id("plays", "t0"))

    op = fresh()
    alerts, max_t = feed(op, len(events), serialize=True)
    for upto in range(1, len(events), 97):  # restored from the bytes, it goes on like one never stored
        ref, stored = fresh(), fresh()
        _, t = feed(ref, upto, serialize=False)
        feed(stored, upto, serialize=True)
        restored = AnomalyOperator.from_bytes(spec, stored.to_bytes())
        assert restored.advance_to(t + 10 * B) == ref.advance_to(t + 10 * B)
        assert restored.to_bytes() == ref.to_bytes()
    final = AnomalyOperator.from_bytes(spec, op.to_bytes()).advance_to(max_t + 10**9)
    assert final == op.advance_to(max_t + 10**9)
    if detector in ("robust_z", "holt"):
        assert alerts, "the comparison should cover alerts, not only silence"


def test_expiry_resolves_an_open_alert_and_frees_the_key() -> None:
    spec = _spec(idle_ms=5 * B, resolve_k=10)  # still firing when the series expires
    op = AnomalyOperator.for_series(spec, "plays", "t9")
    rng = random.Random(4)
    alerts = []
    for minute in range(60):
        for _ in range(20 + rng.randint(-3, 3)):
            op.add(T0 + minute * B + rng.randint(0, B - 1))
        alerts += op.advance_to(T0 + (minute + 1) * B + LATENESS)
    for _ in range(800):
        op.add(T0 + 60 * B + rng.randint(0, 2 * B - 1))  # a two-minute burst, then silence
    alerts += op.advance_to(T0 + 62 * B + LATENESS)
    assert [a.status for a in alerts] == [FIRING]
    assert op.next_timer_ms() == T0 + 63 * B + LATENESS
    alerts += op.advance_to(T0 + 10_000 * B)
    assert [a.status for a in alerts] == [FIRING, RESOLVED]
    assert alerts[-1].labels["reason"] == "expired" and alerts[-1].window_end_ms == T0 + 67 * B
    assert op.expired and op.next_timer_ms() is None
    # A new event on an expired key starts a fresh series (new baseline, warm-up again).
    assert op.add(T0 + 20_000 * B)
    assert not op.expired and op.next_timer_ms() == T0 + 20_001 * B + LATENESS


def test_late_points_are_counted() -> None:
    op = AnomalyOperator.for_series(_spec(), "plays", "t1")
    assert op.add(T0 + 5)
    op.advance_to(T0 + B + LATENESS)
    assert not op.add(T0 + 10)
    assert op.late_count == 1


def test_state_is_checked_against_the_spec() -> None:
    op = AnomalyOperator.for_series(_spec("robust_z"), "plays", "t1")
    op.add(T0)
    blob = op.to_bytes()
    with pytest.raises(StateFormatError, match="holt"):
        AnomalyOperator.from_bytes(_spec("holt"), blob)
    restored = AnomalyOperator.from_bytes(_spec("robust_z").metric("plays"), blob)
    assert restored.to_bytes() == blob and restored.fingerprint == op.fingerprint
