"""Unit tests of the Kafka source's engine-independent parts: the per-partition watermark and the
restriction tracker (no broker, no pipeline)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwarden.jobs.beam.kafka_source import (
    _STOP,
    KafkaRestriction,
    KafkaRestrictionTracker,
    PartitionWatermark,
    _ClaimBatch,
    _Start,
)

IDLE_MS = 1_000


def test_watermark_is_unknown_until_every_active_partition_delivered() -> None:
    wm = PartitionWatermark(idle_ms=IDLE_MS)
    wm.add_partitions([0, 1, 2], now_ms=0)
    wm.observe(0, 5_000, now_ms=10)
    wm.observe(1, 7_000, now_ms=10)
    assert wm.watermark_ms(now_ms=20) is None
    wm.observe(2, 6_000, now_ms=30)
    assert wm.watermark_ms(now_ms=40) == 5_000


def test_watermark_is_the_minimum_of_partition_maxima_minus_out_of_orderness() -> None:
    wm = PartitionWatermark(idle_ms=IDLE_MS, max_out_of_orderness_ms=200)
    wm.add_partitions([0, 1], now_ms=0)
    wm.observe(0, 9_000, now_ms=1)
    wm.observe(0, 8_000, now_ms=2)  # out of order: the partition's max stays 9000
    wm.observe(1, 4_000, now_ms=3)
    assert wm.watermark_ms(now_ms=4) == 4_000 - 200
    wm.observe(1, 12_000, now_ms=5)
    assert wm.watermark_ms(now_ms=6) == 9_000 - 200


def test_an_idle_partition_stops_holding_the_watermark_back() -> None:
    wm = PartitionWatermark(idle_ms=IDLE_MS)
    wm.add_partitions([0, 1], now_ms=0)
    wm.observe(0, 1_000, now_ms=0)
    wm.observe(1, 50_000, now_ms=0)
    for t in range(100, 2_000, 100):
        wm.observe(1, 50_000 + t, now_ms=t)
    # partition 0 has been silent for >= IDLE_MS: only partition 1 counts
    assert wm.watermark_ms(now_ms=1_950) == 50_000 + 1_900
    # a partition that never delivered anything also turns idle
    wm2 = PartitionWatermark(idle_ms=IDLE_MS)
    wm2.add_partitions([0, 1], now_ms=0)
    wm2.observe(0, 3_000, now_ms=500)
    assert wm2.watermark_ms(now_ms=900) is None
    assert wm2.watermark_ms(now_ms=1_000) == 3_000


def test_when_every_partition_is_idle_the_watermark_is_the_largest() -> None:
    wm = PartitionWatermark(idle_ms=IDLE_MS)
    wm.add_partitions([0, 1], now_ms=0)
    wm.observe(0, 2_000, now_ms=0)
    wm.observe(1, 3_000, now_ms=0)
    assert wm.watermark_ms(now_ms=10) == 2_000
    assert wm.watermark_ms(now_ms=5_000) == 3_000


def test_watermark_state_round_trips() -> None:
    wm = PartitionWatermark(idle_ms=IDLE_MS)
    wm.add_partitions([0, 1], now_ms=0)
    wm.observe(0, 2_000, now_ms=0)
    wm.observe(1, 3_000, now_ms=0)
    assert wm.watermark_ms(now_ms=1) == 2_000
    restored = PartitionWatermark(idle_ms=IDLE_MS, state=wm.state())
    assert restored.state() == wm.state()
    assert restored.watermark_ms(now_ms=1) == 2_000


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 500)),
        min_size=1,
        max_size=60,
    )
)
def test_watermark_never_decreases_and_never_passes_an_active_partition(
    steps: list[tuple[int, int, int]],
) -> None:
    wm = PartitionWatermark(idle_ms=IDLE_MS)
    wm.add_partitions([0, 1, 2, 3], now_ms=0)
    now = 0
    last: int | None = None
    maxima: dict[int, int] = {}
    seen_at: dict[int, int] = dict.fromkeys(range(4), 0)
    for partition, event_ms, dt in steps:
        now += dt
        wm.observe(partition, event_ms, now)
        maxima[partition] = max(maxima.get(partition, event_ms), event_ms)
        seen_at[partition] = now
        current = wm.watermark_ms(now)
        if last is not None:
            assert current is not None and current >= last
        active = [p for p in range(4) if now - seen_at[p] < IDLE_MS]
        if current is not None and current != last and active:
            # a newly advanced watermark never passes an active partition's max event time
            assert all(p in maxima and current <= maxima[p] for p in active)
        last = current


def test_tracker_claims_batches_within_the_budget_and_checkpoints() -> None:
    tracker = KafkaRestrictionTracker(KafkaRestriction(records_left=10))
    assert tracker.try_claim(_Start(positions=((0, 0), (1, 5)), deadline_s=None))
    assert tracker.try_claim(_ClaimBatch(next_offsets=((0, 4),), count=4))
    assert not tracker.try_claim(_ClaimBatch(next_offsets=((1, 12),), count=7))  # over budget
    assert tracker.try_claim(_ClaimBatch(next_offsets=((1, 8),), count=3))
    with pytest.raises(ValueError, match="without stopping or checkpointing"):
        tracker.check_done()
    split = tracker.try_split(0.0)
    assert split is not None
    primary, residual = split
    assert primary.done and not residual.done
    assert residual.positions == ((0, 4), (1, 8))
    assert residual.records_left == 3
    tracker.check_done()
    assert not tracker.try_claim(_ClaimBatch(next_offsets=((0, 5),), count=1))


def test_tracker_does_not_split_dynamically_and_stop_finishes_it() -> None:
    tracker = KafkaRestrictionTracker(KafkaRestriction())
    tracker.try_claim(_Start(positions=((0, 0),), deadline_s=None))
    assert tracker.try_split(0.5) is None
    assert tracker.try_claim(_ClaimBatch(next_offsets=(), count=0, idle_s=1.5))
    assert tracker.current_restriction().idle_s == 1.5
    assert not tracker.try_claim(_STOP)
    tracker.check_done()
    assert tracker.try_split(0.0) is None
