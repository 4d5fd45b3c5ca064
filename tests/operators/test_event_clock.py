"""The lateness gate tracks event time per partition: a backlog read in any partition order is never
misread as late; a quiet partition stops holding the watermark back once idle; one partition behaves
exactly as the plain max-event-time clock."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streamwarden.operators.pipeline import EventClock

OOO_MS, LATENESS_MS = 5_000, 60_000
T0 = 1_735_689_600_000


def _backlog(partitions: int, per_partition: int, span_ms: int) -> dict[int, list[int]]:
    """Each partition in event-time order, all spanning the same ``span_ms``."""
    step = span_ms // per_partition
    return {p: [T0 + i * step + p for i in range(per_partition)] for p in range(partitions)}


def test_a_backlog_drained_one_partition_after_another_has_no_late_event() -> None:
    backlog = _backlog(3, 4_000, span_ms=2 * 3600_000)  # two hours of event time per partition
    for order in ([0, 1, 2], [2, 0, 1]):
        clock = EventClock(OOO_MS, LATENESS_MS)
        clock.assign(range(3))
        late = sum(not clock.admit(t, p) for p in order for t in backlog[p])
        assert late == 0
        assert clock.watermark_ms == T0 + 3_999 * 1_800 - OOO_MS  # the lowest of the three maxima


def test_interleaved_reads_in_random_bursts_have_no_late_event() -> None:
    backlog = _backlog(4, 2_000, span_ms=3600_000)
    cursors = dict.fromkeys(backlog, 0)
    rng = random.Random(7)
    clock = EventClock(OOO_MS, LATENESS_MS)
    clock.assign(backlog)
    late = 0
    while any(cursors[p] < len(backlog[p]) for p in backlog):
        p = rng.choice([q for q in backlog if cursors[q] < len(backlog[q])])
        burst = backlog[p][cursors[p] : cursors[p] + rng.randint(1, 500)]
        cursors[p] += len(burst)
        late += sum(not clock.admit(t, p) for t in burst)
    assert late == 0


def test_without_the_assignment_a_drained_partition_would_mark_the_next_late() -> None:
    """Why the engines pass the assignment: the gate cannot wait for a partition it does not know."""
    backlog = _backlog(2, 1_000, span_ms=3600_000)
    clock = EventClock(OOO_MS, LATENESS_MS)
    late = sum(not clock.admit(t, p) for p in (0, 1) for t in backlog[p])
    assert late > 900


def test_a_quiet_partition_goes_idle_and_comes_back() -> None:
    clock = EventClock(OOO_MS, LATENESS_MS, idle_timeout_ms=10_000)
    clock.assign([0, 1], now_ms=0)
    assert clock.admit(T0, 0, now_ms=1_000)
    assert clock.watermark_ms < T0 - 10**12  # partition 1 has not delivered yet: held back
    assert clock.admit(T0 + 600_000, 0, now_ms=12_000)  # partition 1 silent for 12 s: idle
    assert clock.watermark_ms == T0 + 600_000 - OOO_MS
    # partition 1's next record counts again; an old one behind the watermark is late
    assert not clock.admit(T0, 1, now_ms=13_000)
    assert clock.admit(T0 + 590_000, 1, now_ms=13_500)
    assert clock.watermark_ms == T0 + 600_000 - OOO_MS  # never backwards


def test_replays_never_go_idle() -> None:
    clock = EventClock(OOO_MS, LATENESS_MS, idle_timeout_ms=1)
    clock.assign([0, 1])
    assert clock.admit(T0 + 10**9, 0)
    assert clock.admit(T0, 1)  # partition 1 still holds the watermark back: not late


@given(st.lists(st.integers(min_value=T0 - 10**7, max_value=T0 + 10**7), max_size=300))
def test_one_partition_is_the_max_event_time_clock(times: list[int]) -> None:
    clock = EventClock(OOO_MS, LATENESS_MS)
    high = None
    for t in times:
        expected = high is None or t >= high - OOO_MS - LATENESS_MS
        assert clock.admit(t) is expected
        if expected and (high is None or t > high):
            high = t
        if high is not None:
            assert clock.watermark_ms == high - OOO_MS
