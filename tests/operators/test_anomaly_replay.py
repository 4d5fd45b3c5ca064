"""Offline anomaly replay: the watermark/late contract by hand, and equality with a brute-force reference."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.replay import (
    END_OF_INPUT_WATERMARK_MS,
    AnomalyReplay,
    alert_sort_key,
    replay,
    replay_alerts,
)
from streamwarden.operators.anomaly.series import ClosedBucket, bucket_start
from streamwarden.operators.anomaly.spec import AnomalySpec, parse_anomaly_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SCHEMA_VERSION

B = 60_000
T0 = 1_700_000_040_000  # a minute boundary
LATENESS = 10_000
OOO = 5_000
FIRING, RESOLVED = pb.AnomalyAlert.FIRING, pb.AnomalyAlert.RESOLVED
GARBAGE = b"\x00\x01garbage"


def _spec(*, idle_ms: int = 10 * 3_600_000, dead_letters: bool = False) -> AnomalySpec:
    metrics: list[dict[str, object]] = [
        {
            "name": "plays",
            "event_types": ["PLAY"],
            "key": "target.content_id",
            "detector": {"direction": "up"},
        }
    ]
    if dead_letters:
        metrics.append({"name": "dead_letters", "source": "dead_letters", "detector": {"direction": "up"}})
    return parse_anomaly_spec(
        {
            "defaults": {
                "bucket_ms": B,
                "allowed_lateness_ms": LATENESS,
                "idle_expiry_ms": idle_ms,
                "detector": {"kind": "robust_z", "window_buckets": 10, "warmup_buckets": 3},
                "lifecycle": {"fire_m": 1, "fire_n": 1, "resolve_k": 2, "cooldown_buckets": 0},
            },
            "metrics": metrics,
        }
    )


_ids = iter(range(10**9))


def _play(track: str, offset_ms: int) -> pb.Event:
    return pb.Event(
        event_id=f"e{next(_ids)}",
        event_time_ms=T0 + offset_ms,
        type=pb.Event.PLAY,
        schema_version=SCHEMA_VERSION,
        target=pb.Target(content_id=track),
    )


# r0..r6 of the hand-worked example: (track, event time offset in s)
HAND = [("a", 10), ("a", 70), ("a", 30), ("b", 76), ("a", 59), ("c", 20), ("b", 65)]


def _hand_records() -> list[pb.Event]:
    return [_play(track, s * 1000) for track, s in HAND]


@pytest.mark.parametrize(
    ("every", "late"),
    [
        # W after r0: 5 s, after r1: 65 s (a's bucket [0,60) closes at 60+10 = 70 s), r2 (30 s) is in time;
        # after r3 (76 s): W = 71 closes it, so r4 (a at 59 s) is late, and so is r5: a new series "c"
        # at 20 s learns W = 71 first. r6 (b at 65 s, bucket [60,120)) is in time.
        (1, 2),
        # W after r1 = 65, after r3 = 71: r4 and r5 are judged against 71, both late.
        (2, 2),
        # W after r2 = 65, after r5 = 71: r3..r5 are judged against 65, nothing is late.
        (3, 0),
        # W only at the end: nothing is late.
        (100, 0),
    ],
)
def test_late_points_follow_the_watermark_cadence(every: int, late: int) -> None:
    res = replay(_hand_records(), _spec(), out_of_orderness_ms=OOO, watermark_every_records=every)
    assert res.late_points == late
    assert res.late_points_by_metric.get("plays", 0) == late
    assert res.events == len(HAND) and res.records == len(HAND)
    assert res.max_event_time_ms == T0 + 76_000
    assert res.watermark_ms == END_OF_INPUT_WATERMARK_MS
    assert res.open_series == 0


def test_watermark_is_max_event_time_minus_out_of_orderness_after_each_record() -> None:
    r = AnomalyReplay(_spec(), out_of_orderness_ms=OOO)
    seen = []
    for event in _hand_records():
        r.push(event)
        seen.append(r.result.watermark_ms - T0)
    assert seen == [5_000, 65_000, 65_000, 71_000, 71_000, 71_000, 71_000]
    r.finish(flush=False)
    assert r.result.watermark_ms == T0 + 71_000
    assert r.result.open_series == 3 - 1  # "c" only ever had a late point: it keeps no state


def test_bytes_and_events_give_the_same_alerts_and_invalid_events_are_dead_letters() -> None:
    events = _traffic(seed=3)
    as_bytes = [e.SerializeToString() if isinstance(e, pb.Event) else e for e in events]
    a = replay_alerts(events, _spec(), out_of_orderness_ms=OOO)
    b = replay_alerts(as_bytes, _spec(), out_of_orderness_ms=OOO)
    assert a and [x.SerializeToString() for x in a] == [x.SerializeToString() for x in b]
    bad = pb.Event(event_id="", event_time_ms=T0, type=pb.Event.PLAY, schema_version=SCHEMA_VERSION)
    res = replay([_play("a", 0), bad, GARBAGE], _spec(), out_of_orderness_ms=OOO)
    assert (res.events, res.dead_letters) == (1, 2)


def test_dead_letters_count_at_stream_time_and_untimed_ones_are_skipped() -> None:
    records: list[bytes | pb.Event] = [GARBAGE]  # before any event: no time to count it at
    for minute in range(12):
        records.append(_play("a", minute * B + 1_000))
        n = 30 if minute == 10 else 1
        records.extend([GARBAGE] * n)  # counted at the stream time: this minute
    res = replay(records, _spec(dead_letters=True), out_of_orderness_ms=OOO)
    assert res.untimed_dead_letters == 1
    assert res.dead_letters == 1 + 11 + 30
    fired = [a for a in res.alerts if a.metric == "dead_letters" and a.status == FIRING]
    assert len(fired) == 1
    # Baseline 1 per minute, then 30 in minute 10: the spike's bucket is [10, 11) min.
    assert fired[0].observed == 30 and fired[0].expected == 1
    assert fired[0].window_end_ms == T0 + 11 * B


def test_without_flush_open_firing_stays_open_and_flush_resolves_it() -> None:
    # Track "a": 5 plays a minute for 8 minutes, then 60 a minute until the end (still firing).
    events = []
    for minute in range(12):
        for k in range(60 if minute >= 8 else 5):
            events.append(_play("a", minute * B + k * 900))
    held = replay(events, _spec(), out_of_orderness_ms=OOO, flush_at_end=False)
    flushed = replay(events, _spec(), out_of_orderness_ms=OOO)
    assert [a.status for a in held.alerts] == [FIRING]
    assert held.open_series == 1 and flushed.open_series == 0
    # The flush only appends: what was emitted before the end is identical.
    assert [a.SerializeToString() for a in flushed.alerts[: len(held.alerts)]] == [
        a.SerializeToString() for a in held.alerts
    ]
    closing = flushed.emitted[-1]
    assert closing.alert.status == RESOLVED and closing.at_end_of_input
    assert not held.emitted[0].at_end_of_input


def test_expired_series_restarts_from_scratch() -> None:
    spec = _spec(idle_ms=5 * B)
    events = [_play("a", 0), _play("b", 20 * B), _play("a", 21 * B)]  # "a" expired in between
    r = AnomalyReplay(spec, out_of_orderness_ms=OOO)
    r.push(events[0])
    r.push(events[1])
    assert set(r._ops) == {"plays:b"}  # "a" expired and was dropped
    r.push(events[2])
    assert r.result.late_points == 0 and set(r._ops) == {"plays:a", "plays:b"}


# -- brute-force reference ---------------------------------------------------------------------------


def _traffic(seed: int, minutes: int = 40) -> list[pb.Event | bytes]:
    """Plays on three tracks (~6/min, a spike on "t0"), delivered out of order; some beyond the lateness."""
    rng = np.random.default_rng(seed)
    timed: list[tuple[int, int, pb.Event | bytes]] = []
    for minute in range(minutes):
        for track in ("t0", "t1", "t2"):
            rate = 60 if track == "t0" and minute in (20, 21, 22) else 6
            for _ in range(int(rng.poisson(rate))):
                t = minute * B + int(rng.integers(0, B))
                delay = int(rng.integers(0, 90_000)) if rng.random() < 0.1 else int(rng.integers(0, 3_000))
                timed.append((t + delay, len(timed), _play(track, t)))
        if rng.random() < 0.3:
            timed.append((minute * B, len(timed), GARBAGE))
    timed.sort(key=lambda x: (x[0], x[1]))
    return [r for _, _, r in timed]


def _reference(
    records: list[pb.Event | bytes], spec: AnomalySpec, ooo: int, every: int
) -> tuple[list[pb.AnomalyAlert], int]:
    """Accepted iff the bucket's end + lateness is past the watermark of the records before; then each
    series' buckets, first to idle expiry, through a fresh operator (the contract, restated)."""
    metric = spec.metric("plays")
    step, lateness = metric.bucket_ms, metric.allowed_lateness_ms
    watermark: int | None = None
    max_t: int | None = None
    accepted: dict[str, list[int]] = defaultdict(list)
    late = 0
    for i, rec in enumerate(records, 1):
        if isinstance(rec, pb.Event):
            t = rec.event_time_ms
            if watermark is not None and bucket_start(t, step) + step + lateness <= watermark:
                late += 1
            else:
                accepted[rec.target.content_id].append(t)
            max_t = t if max_t is None else max(max_t, t)
        if i % every == 0 and max_t is not None:
            watermark = max_t - ooo
    alerts: list[pb.AnomalyAlert] = []
    quiet = math.ceil(metric.idle_expiry_ms / step)
    for key, times in accepted.items():
        counts: dict[int, int] = defaultdict(int)
        for t in times:
            counts[bucket_start(t, step)] += 1
        first, last_end = min(counts), max(counts) + step
        op = AnomalyOperator(metric, key)
        start = first
        while start + step <= last_end + quiet * step:
            last = start + step >= last_end + quiet * step
            bucket = ClosedBucket(metric.name, key, start, start + step, float(counts.get(start, 0)), last)
            alerts.extend(op.on_bucket(bucket).alerts)
            start += step
    return sorted(alerts, key=alert_sort_key), late


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("every", [1, 7])
def test_replay_equals_brute_force_reference(seed: int, every: int) -> None:
    records = _traffic(seed)
    spec = _spec()
    res = replay(records, spec, out_of_orderness_ms=OOO, watermark_every_records=every)
    expected, late = _reference(records, spec, OOO, every)
    assert res.late_points == late > 0
    got = sorted(res.alerts, key=alert_sort_key)
    assert any(a.status == FIRING and a.series_key == "t0" for a in got)
    assert [a.SerializeToString() for a in got] == [a.SerializeToString() for a in expected]
    # Emission happens once the watermark passes the closing bucket's end plus the lateness.
    for e in res.emitted:
        assert e.watermark_ms >= e.alert.window_end_ms + LATENESS


@pytest.mark.parametrize("seed", [0, 1])
def test_a_replay_restored_from_its_changes_emits_what_the_uninterrupted_one_does(seed: int) -> None:
    """What the Flink fused layout does at a checkpoint and after a restore: the changed series' bytes go
    to a map at each cut, a fresh instance takes the map and the clock over and goes on."""
    records = _traffic(seed)
    spec = _spec()
    whole = replay(records, spec, out_of_orderness_ms=OOO).alerts
    cuts = sorted({len(records) // 3, len(records) // 2, 2 * len(records) // 3})
    live = AnomalyReplay(spec, out_of_orderness_ms=OOO, keep_emitted=False)
    live.track_changes()
    saved: dict[str, bytes] = {}
    got: list[pb.AnomalyAlert] = []
    for i, record in enumerate(records):
        if i in cuts:  # checkpoint, then the job fails and restarts from it
            changed, gone = live.take_changes()
            saved.update(changed)
            for sid in gone:
                saved.pop(sid, None)
            clock = live.clock
            live = AnomalyReplay(spec, out_of_orderness_ms=OOO, keep_emitted=False)
            live.track_changes()
            live.restore(dict(saved), clock)
        got += [e.alert for e in live.push(record)]
    got += [e.alert for e in live.finish()]
    assert live.result.emitted == []  # keep_emitted=False: a long-running job holds no alert history
    assert any(a.status == FIRING for a in whole)
    assert [a.SerializeToString() for a in sorted(got, key=alert_sort_key)] == [
        a.SerializeToString() for a in sorted(whole, key=alert_sort_key)
    ]
