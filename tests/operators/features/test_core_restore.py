"""Write-through keyed state of the compiled core (``track_changes`` / ``take_changes`` / ``load_state`` /
``restore_clock``): a pipeline rebuilt from a key/value mirror of another's changes goes on exactly as the
uninterrupted one, as a Flink operator restores its core from MapState after a failure."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.operators.evaluation.harness import traffic_from_spec
from streamwarden.operators.features._core import decode_state
from streamwarden.operators.features.replay import VelocityPipeline
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, FeatureSpec, default_spec
from streamwarden.operators.features.synth import T0_MS, make_event, random_stream, small_feature_spec
from streamwarden.operators.features.window import compile_plans
from streamwarden.operators.traffic import SCENARIO_NAMES, load_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event

ACCOUNT = ENTITY_KIND_VALUES["account"]
ASN = ENTITY_KIND_VALUES["asn"]
WINDOWS = {"5s": {"length_ms": 5_000, "bucket_ms": 1_000}, "60s": {"length_ms": 60_000, "bucket_ms": 10_000}}

Changes = tuple[list[tuple[bytes, bytes]], list[bytes]]


@functools.cache
def sparse_day() -> tuple[pb.Event, ...]:
    """~4.2k generated events over 27 h of event time (thinned organic traffic, no attack scenarios), so
    that under the default spec keys expire: ASNs idle past its 1 h span from the first hours on, then
    (from event ~3 950 on) accounts, IPs, devices and targets idle past its 24 h span. (The default ten
    minutes of traffic, ~85k events, expire nothing under 24 h windows.)"""
    traffic = load_spec(
        None,
        seed=2,
        duration_s=27 * 3_600,
        organic_events_per_s=0.02,
        organic_signups_per_s=0.002,
        scenarios={name: {"enabled": False} for name in SCENARIO_NAMES},
    )
    decoded = (decode_event(p) for p in traffic_from_spec(traffic).payloads)
    return tuple(e for e in decoded if isinstance(e, pb.Event))


@functools.cache
def small_spec() -> FeatureSpec:
    """Short windows (span 67 s), a small exact limit (distinct sets switch to HLL) and three kinds."""
    return small_feature_spec(WINDOWS, exact_limit=4, precision=4, device=True)


def apply(mirror: dict[bytes, bytes], changes: Changes) -> int:
    """Apply one ``take_changes`` to a key/value store; returns the number of removals.

    Deletes first, then puts: that order is right even if a key dropped and re-created since the last
    take were in both lists, the put of its new state winning. The core reports such a key only as
    updated (the lists are disjoint, checked here), so either order gives the same store; what matters
    is applying each take in full, in the order of the takes."""
    updated, removed = changes
    assert not {k for k, _ in updated} & set(removed)
    assert len({k for k, _ in updated}) == len(updated) and len(set(removed)) == len(removed)
    for key in removed:
        mirror.pop(key, None)
    mirror.update(updated)
    return len(removed)


def restored(
    spec: FeatureSpec, mirror: dict[bytes, bytes], max_seen_ms: int, next_housekeeping_ms: int | None = None
) -> VelocityPipeline:
    """A fresh pipeline rebuilt from the mirror, as after a failure."""
    pipe = VelocityPipeline(spec)
    for key, data in mirror.items():
        pipe.load_state(key, data)
    pipe.restore_clock(max_seen_ms, next_housekeeping_ms)
    return pipe


def outputs(pipe: VelocityPipeline, events: list[pb.Event]) -> tuple[bytes, list[int]]:
    """The vectors (exact bytes) and late masks of ``events``."""
    rows, late = pipe.process_events(events)
    return rows.tobytes(), late.tolist()


def mirrored(
    pipe: VelocityPipeline, events: list[pb.Event], every: int, mirror: dict[bytes, bytes]
) -> tuple[bytes, list[int]]:
    """``outputs`` of ``events`` in runs of ``every`` events, each run's changes applied to ``mirror``."""
    rows, late = b"", []
    for start in range(0, len(events), every):
        r, m = outputs(pipe, events[start : start + every])
        rows, late = rows + r, late + m
        apply(mirror, pipe.take_changes())
    return rows, late


@functools.cache
def uninterrupted() -> tuple[bytes, list[int]]:
    """``sparse_day`` through a pipeline that never tracks nor restores: the reference."""
    return outputs(VelocityPipeline(default_spec()), list(sparse_day()))


@pytest.mark.parametrize("cut", [1_500, 4_000])
def test_a_pipeline_restored_from_its_mirrored_changes_goes_on_as_the_uninterrupted_one(cut: int):
    spec, events = default_spec(), list(sparse_day())
    assert 4_100 < len(events) < 5_000
    a = VelocityPipeline(spec)
    a.track_changes()
    mirror: dict[bytes, bytes] = {}
    removals, removed_kinds = 0, set[int]()
    for ev in events[:cut]:
        a.process(ev)
        changes = a.take_changes()
        removed_kinds |= {k[0] for k in changes[1]}
        removals += apply(mirror, changes)
    # keys expired before the cut, and their removals reached the mirror
    assert a.expired_keys > 0 and 0 < removals <= a.expired_keys
    assert removed_kinds == ({ASN} if cut < 3_900 else set(ENTITY_KIND_VALUES.values()))
    assert len(mirror) == a.live_keys
    b = restored(spec, mirror, a.max_seen_ms)
    assert b.live_keys == a.live_keys and b.max_seen_ms == a.max_seen_ms
    assert b.take_changes() == ([], [])  # loads are not changes

    rest_a, rest_b = outputs(a, events[cut:]), outputs(b, events[cut:])
    assert rest_b == rest_a
    width = 8 * a.width
    reference_rows, reference_late = uninterrupted()
    assert rest_b == (reference_rows[cut * width :], reference_late[cut:])
    assert b.expired_keys > 0  # housekeeping went on after the restore


draw_stream = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(2, 300),  # events
    st.floats(0.05, 0.95),  # cut, as a share of the events
    st.sampled_from([1, 1, 3, 1_000]),  # take_changes every this many events (1 000: once before the cut)
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(draw_stream)
def test_restore_with_both_clocks_goes_on_bit_for_bit_on_random_streams(drawn: tuple[int, int, float, int]):
    seed, n, share, every = drawn
    spec = small_spec()
    # disorder up to 12 s: past the 7 s lateness (late events); 200 s steps expire keys; 12 IPs go over
    # the exact limit (HLL)
    events = random_stream(
        seed,
        n,
        n_accounts=4,
        n_ips=12,
        steps_ms=(0, 1, 100, 1_000, 5_000, 30_000, 200_000),
        disorder_ms=12_000,
        disorder_fraction=0.3,
    )
    cut = max(1, int(n * share))
    a = VelocityPipeline(spec)
    a.track_changes()
    mirror_a: dict[bytes, bytes] = {}
    mirrored(a, events[:cut], every, mirror_a)
    assert len(mirror_a) == a.live_keys
    expired_at_cut = a.expired_keys
    b = restored(spec, mirror_a, a.max_seen_ms, a.next_housekeeping_ms)
    b.track_changes()
    mirror_b = dict(mirror_a)
    rest_a = mirrored(a, events[cut:], every, mirror_a)
    rest_b = mirrored(b, events[cut:], every, mirror_b)
    assert rest_b == rest_a
    reference_rows, reference_late = outputs(VelocityPipeline(spec), events)
    assert rest_b == (reference_rows[cut * 8 * b.width :], reference_late[cut:])
    # the same keys dropped at the same events, the same state bytes written through
    assert mirror_b == mirror_a and len(mirror_b) == b.live_keys == a.live_keys
    assert b.expired_keys == a.expired_keys - expired_at_cut
    assert (b.max_seen_ms, b.next_housekeeping_ms) == (a.max_seen_ms, a.next_housekeeping_ms)


def _event(i: int, t: int, account: str, ip: str = "10.0.0.1") -> pb.Event:
    return make_event(f"e{i}", t, pb.Event.PLAY, account=account, ip=ip, play_duration_ms=31_000)


def test_changes_are_deduplicated_and_a_dropped_key_is_reported_once_not_live():
    pipe = VelocityPipeline(small_spec())
    pipe.track_changes()
    a1, a2, ip = bytes([ACCOUNT]) + b"a1", bytes([ACCOUNT]) + b"a2", bytes([ENTITY_KIND_VALUES["ip"]])
    for i in range(3):
        pipe.process(_event(i, T0_MS + i, "a1"))
    updated, removed = pipe.take_changes()
    assert sorted(k for k, _ in updated) == [a1, ip + b"10.0.0.1"] and removed == []
    assert pipe.take_changes() == ([], [])
    # a late event changes the key's state too (its late count): a1 and the IP are dirty again
    pipe.process(_event(9, T0_MS - 10_000, "a1"))
    updated, removed = pipe.take_changes()
    assert sorted(k for k, _ in updated) == [a1, ip + b"10.0.0.1"] and removed == []
    assert decode_state(compile_plans(pipe.spec)[ACCOUNT], dict(updated)[a1]).late_events == 1
    # 200 s on (span 67 s): a1 and the IP expire at the housekeeping; a2 is new, the IP is re-created
    pipe.process(_event(3, T0_MS + 200_000, "a2"))
    updated, removed = pipe.take_changes()
    assert sorted(k for k, _ in updated) == [a2, ip + b"10.0.0.1"] and removed == [a1]
    assert pipe.expired_keys == 2 and pipe.live_keys == 2
    # tracking off: nothing recorded
    pipe.track_changes(False)
    pipe.process(_event(4, T0_MS + 400_000, "a1"))
    assert pipe.expired_keys == 4 and pipe.take_changes() == ([], [])


def test_take_changes_is_empty_when_tracking_is_off():
    pipe = VelocityPipeline(small_spec())
    events = random_stream(1, 300, steps_ms=(0, 1_000, 200_000))
    pipe.process_events(events)
    assert pipe.expired_keys > 0 and pipe.live_keys > 0
    assert pipe.take_changes() == ([], [])


def test_load_rejects_unknown_kinds_and_bad_bytes_with_value_error():
    spec = small_spec()
    source = VelocityPipeline(spec)
    source.track_changes()
    source.process(_event(0, T0_MS, "a1"))
    states = dict(source.take_changes()[0])
    good = states[bytes([ACCOUNT]) + b"a1"]
    ip_state = states[bytes([ENTITY_KIND_VALUES["ip"]]) + b"10.0.0.1"]
    pipe = VelocityPipeline(spec)
    cases = [
        (bytes([ACCOUNT]) + b"a1", b"garbage", "bad magic"),
        (bytes([ACCOUNT]) + b"a1", good[:-1], "truncated"),
        (bytes([ACCOUNT]) + b"a1", good + b"\x00", "trailing"),
        (bytes([ACCOUNT]) + b"a1", ip_state, "kind"),  # another kind's state under an account key
        (bytes([ASN]) + b"64500", good, "no plan"),  # the small spec has no ASN entity
        (bytes([200]) + b"x", good, "no plan"),
        (b"", good, "empty"),
        (bytes([ACCOUNT]), good, "non-empty UTF-8"),
        (bytes([ACCOUNT]) + b"\xff", good, "non-empty UTF-8"),
    ]
    for key, data, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe.load_state(key, data)
    assert pipe.live_keys == 0
    # same kind and windows, another spec (exact limit 5): its fingerprint differs
    other = VelocityPipeline(small_feature_spec(WINDOWS, exact_limit=5, precision=4, device=True))
    with pytest.raises(ValueError, match="fingerprint"):
        other.load_state(bytes([ACCOUNT]) + b"a1", good)
    pipe.load_state(bytes([ACCOUNT]) + b"a1", good)
    assert pipe.live_keys == 1 and pipe.max_keys == 1
    with pytest.raises(ValueError, match="out of range"):
        pipe.restore_clock(1 << 60)


def test_housekeeping_goes_on_from_the_restored_clock():
    spec = small_spec()
    a = VelocityPipeline(spec)
    a.track_changes()
    a.process(_event(0, T0_MS, "a1"))
    a.process(_event(1, T0_MS + 70_000, "a2", ip="10.0.0.2"))  # housekeeping: watermark 63 s, nothing due
    a.process(_event(2, T0_MS + 75_000, "a3", ip="10.0.0.2"))  # a1 and its IP due (67 s), no housekeeping yet
    assert a.expired_keys == 0 and a.live_keys == 5
    mirror: dict[bytes, bytes] = {}
    apply(mirror, a.take_changes())
    b = restored(spec, mirror, a.max_seen_ms)
    assert b.watermark_ms == a.watermark_ms == T0_MS + 68_000
    b.track_changes()
    b.process(_event(3, T0_MS + 71_000, "a4", ip="10.0.0.3"))  # behind the restored clock: no housekeeping
    assert b.expired_keys == 0
    # past it: housekeeping at the restored watermark (69 s) drops a1 and its IP (without restore_clock
    # the 71 s event would have set the clock and the next housekeeping would be due at 81 s)
    b.process(_event(4, T0_MS + 76_000, "a4", ip="10.0.0.3"))
    assert b.expired_keys == 2 and b.live_keys == 5
    updated, removed = b.take_changes()
    assert sorted(removed) == [bytes([ACCOUNT]) + b"a1", bytes([ENTITY_KIND_VALUES["ip"]]) + b"10.0.0.1"]
    assert sorted(k for k, _ in updated) == [
        bytes([ACCOUNT]) + b"a4",
        bytes([ENTITY_KIND_VALUES["ip"]]) + b"10.0.0.3",
    ]


def test_the_checkpointed_housekeeping_time_drops_an_hll_key_at_the_same_event():
    spec = small_spec()
    distinct_ip_60s = spec.feature_names().index("account.distinct_ip.60s")
    # a1 sees 8 IPs (over the exact limit 4: HLL mode); housekeeping at 70 s finds nothing due and sets
    # the next one to 80 s; at the cut (75 s) a1 is due (expiry 67 s) but still live
    events = [_event(i, T0_MS + i, "a1", ip=f"10.0.0.{i}") for i in range(8)]
    events += [_event(8, T0_MS + 70_000, "a2", ip="10.1.0.1"), _event(9, T0_MS + 75_000, "a3", ip="10.1.0.1")]
    a = VelocityPipeline(spec)
    a.track_changes()
    mirror: dict[bytes, bytes] = {}
    mirrored(a, events, 1, mirror)
    assert a.next_housekeeping_ms == T0_MS + 80_000 and a.expired_keys == 0
    after = _event(10, T0_MS + 76_000, "a1", ip="10.0.0.0")
    exact = restored(spec, mirror, a.max_seen_ms, a.next_housekeeping_ms)
    clock_only = restored(spec, mirror, a.max_seen_ms)
    expected = a.process(after).values
    assert exact.process(after).values == expected and exact.expired_keys == 0
    # with the watermark base alone, housekeeping runs at 76 s and drops a1 (and its 8 IPs) before the
    # event: a1 restarts in exact mode, and its HLL estimate of one IP (not exactly 1) becomes 1
    assert expected[distinct_ip_60s] != 1.0
    assert clock_only.process(after).values[distinct_ip_60s] == 1.0 and clock_only.expired_keys == 9
