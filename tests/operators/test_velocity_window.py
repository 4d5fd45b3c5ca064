"""Window state: exact agreement with the brute-force recount, lateness, buckets, expiry, round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.naive import NaiveKeyState, NaivePlan
from streamwarden.operators.features.replay import VelocityStore
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, FeatureSpec, default_spec, parse_spec
from streamwarden.operators.features.state_codec import StateFormatError, decode_state, encode_state
from streamwarden.operators.features.synth import SMALL_LATENESS_MS, T0_MS, make_event, small_feature_spec
from streamwarden.operators.features.window import NO_TIME, KeyState, compile_plans
from streamwarden.schemas import streamwarden_pb2 as pb

LATENESS_MS = SMALL_LATENESS_MS


def small_spec(*, nested: bool = True, exact_limit: int = 4096, precision: int = 8) -> FeatureSpec:
    """Short windows so a few hundred events cross many bucket boundaries."""
    windows = (
        {"5s": {"length_ms": 5_000, "bucket_ms": 1_000}, "60s": {"length_ms": 60_000, "bucket_ms": 10_000}}
        if nested
        else {
            "6s": {"length_ms": 6_000, "bucket_ms": 2_000},
            "21s": {"length_ms": 21_000, "bucket_ms": 3_000},
        }
    )
    return small_feature_spec(windows, exact_limit=exact_limit, precision=precision)


event_strategy = st.tuples(
    st.sampled_from([0, 0, 1, 250, 999, 1_000, 1_001, 4_000, 9_999, 10_000, 30_000, 80_000]),  # step
    st.integers(0, LATENESS_MS + 3_000),  # disorder: up to 3 s beyond the lateness (those are late)
    st.booleans(),  # out of order?
    st.sampled_from([1, 2, 3, 4, 4, 4, 5, 8]),  # type
    st.integers(0, 2),  # account
    st.integers(0, 3),  # ip
    st.integers(0, 3),  # device / track
    st.sampled_from([0, 5_000, 31_000, 34_999, 35_000, 120_000]),
)


def build_stream(draws: list[tuple[int, int, bool, int, int, int, int, int]]) -> list[pb.Event]:
    t = T0_MS
    out = []
    for i, (step, disorder, ooo, ty, acc, ip, dev, dur) in enumerate(draws):
        t += step
        out.append(
            make_event(
                f"e{i}",
                t - disorder if ooo else t,
                ty,
                account=f"a{acc}",
                ip=f"ip{ip}",
                device=f"d{dev}" if dev else "",
                target_content=f"c{dev}",
                play_duration_ms=dur,
            )
        )
    return out


def run_both(spec: FeatureSpec, events: list[pb.Event]) -> list[tuple[object, object]]:
    """Per partial: (ours, brute force)."""
    fan = FanOut(spec)
    plans = compile_plans(spec)
    nplans = {ENTITY_KIND_VALUES[k]: NaivePlan(spec, k) for k in spec.kinds()}
    ours: dict[tuple[int, str], KeyState] = {}
    ref: dict[tuple[int, str], NaiveKeyState] = {}
    pairs = []
    for ev in events:
        facts, keys = fan(ev)
        for key in keys:
            a = ours.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
            b = ref.setdefault(key, NaiveKeyState(nplans[key[0]])).on_event(facts)
            pairs.append((a, b))
    return pairs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, min_size=30, max_size=150), st.booleans())
def test_every_window_value_equals_brute_force_recount(draws, nested):
    spec = small_spec(nested=nested)
    for ours, ref in run_both(spec, build_stream(draws)):
        assert ours == ref


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, min_size=30, max_size=150), st.data())
def test_serialize_then_continue_equals_never_serializing(draws, data):
    spec = small_spec(exact_limit=6, precision=6)  # small limit: HLL state is round-tripped too
    plans = compile_plans(spec)
    fan = FanOut(spec)
    events = build_stream(draws)
    cuts = set(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    plain: dict[tuple[int, str], KeyState] = {}
    cycled: dict[tuple[int, str], KeyState] = {}
    for i, ev in enumerate(events):
        if i in cuts:
            for key, state in list(cycled.items()):
                blob = encode_state(state)
                restored = decode_state(plans[key[0]], blob)
                assert encode_state(restored) == blob  # canonical
                cycled[key] = restored
        facts, keys = fan(ev)
        for key in keys:
            a = plain.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
            b = cycled.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
            assert a == b


def test_exact_while_small_then_hll_within_error():
    spec = small_spec(exact_limit=16, precision=10)
    plan = compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    nplan = NaivePlan(spec, "account")
    ours, ref = KeyState(plan), NaiveKeyState(nplan)
    d_pos = spec.entity_feature_names("account").index("account.distinct_ip.60s")
    bound = 4 * 1.04 / (1 << 10) ** 0.5
    switched = False
    fan = FanOut(spec)
    for i in range(1_500):
        ev = make_event(f"e{i}", T0_MS + i * 40, pb.Event.PLAY, account="a", ip=f"ip{i}")
        facts, _ = fan(ev)
        a, b = ours.on_event(facts), ref.on_event(facts)
        true = b.values[d_pos]
        if "hll" not in ours.distinct_modes:
            assert a.values == b.values
        else:
            switched = True
            assert abs(a.values[d_pos] - true) <= bound * true + 1
    assert switched


def _one_window_spec(lateness_ms: int = 3_000) -> FeatureSpec:
    return parse_spec(
        {
            "version": 1,
            "allowed_lateness_ms": lateness_ms,
            "windows": {"10s": {"length_ms": 10_000, "bucket_ms": 1_000}},
            "entities": {
                "account": {
                    "windows": ["10s"],
                    "groups": [
                        {
                            "name": "play",
                            "event_types": ["PLAY"],
                            "aggregations": [
                                {"name": "count_play", "op": "count"},
                                {"name": "sum_play_ms", "op": "sum", "field": "play_duration_ms"},
                            ],
                        }
                    ],
                }
            },
        }
    )


class Clock:
    """Injected event-time clock for the unit tests (all times are relative to a bucket-aligned base)."""

    def __init__(self) -> None:
        self.base = T0_MS - T0_MS % 60_000
        self.spec = _one_window_spec()
        self.plan = compile_plans(self.spec)[ENTITY_KIND_VALUES["account"]]
        self.fan = FanOut(self.spec)
        self.state = KeyState(self.plan)
        self.n = 0

    def play(self, at_ms: int, dur_ms: int = 1, state: KeyState | None = None):
        self.n += 1
        facts, _ = self.fan(
            make_event(f"e{self.n}", self.base + at_ms, pb.Event.PLAY, account="a", play_duration_ms=dur_ms)
        )
        return (state or self.state).on_event(facts)


def test_empty_state_and_first_event():
    c = Clock()
    assert c.state.high_ms == NO_TIME
    assert c.state.values() == (0, 0)
    p = c.play(1_500, 30)
    assert p.values == (1, 30) and not p.late
    assert c.state.high_ms == c.base + 1_500


def test_bucket_boundaries_enter_and_leave_exactly():
    c = Clock()
    assert c.play(1_000).values[0] == 1  # bucket 1
    # As of bucket 10 the window holds buckets 1..10: the first event is still in.
    assert c.play(10_999).values[0] == 2
    # Bucket 11: buckets 2..11, the event of bucket 1 has left.
    assert c.play(11_000).values[0] == 2
    # A jump of more than a window empties it but for the new event.
    assert c.play(30_000).values[0] == 1


def test_lateness_is_per_key_counted_and_not_applied():
    c = Clock()
    c.play(20_000)
    late = c.play(16_999)  # < high - 3000
    assert late.late and late.values == (1, 1)
    assert c.state.late_events == 1
    ok = c.play(17_000, 5)  # exactly at the bound: applied, into its own (older) bucket
    assert not ok.late and ok.values == (2, 6)
    assert c.play(26_999).values == (3, 7)  # buckets 17..26: all three events
    # Bucket 27: buckets 18..27; the out-of-order event of bucket 17 (sum 5) has left, 20 s is in.
    assert c.play(27_000).values == (3, 3)
    assert c.state.late_events == 1


def test_out_of_order_event_before_the_window_counts_nowhere_but_moves_nothing():
    spec = _one_window_spec(lateness_ms=30_000)
    c = Clock()
    c.spec, c.plan = spec, compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    c.fan, c.state = FanOut(spec), KeyState(c.plan)
    c.play(40_000)
    p = c.play(15_000)  # within the lateness, but before the window's first bucket (31)
    assert not p.late and p.values == (1, 1)
    assert c.play(41_000).values == (2, 2)


def test_expiry_drops_state_without_changing_later_outputs():
    spec = _one_window_spec()
    store = VelocityStore(spec)
    keep = VelocityStore(spec)
    fan = FanOut(spec)
    base = T0_MS - T0_MS % 60_000

    def send(i: int, at_ms: int):
        facts, keys = fan(make_event(f"x{i}", base + at_ms, pb.Event.PLAY, account="a", play_duration_ms=i))
        return store.on_event(keys[0], facts), keep.on_event(keys[0], facts)

    send(1, 1_000)
    send(2, 4_000)
    state = store.states[(ENTITY_KIND_VALUES["account"], "a")]
    assert state.expiry_ms() == base + 4_000 + 10_000 + 3_000
    assert store.advance_to(state.expiry_ms() - 1) == 0
    assert store.advance_to(state.expiry_ms()) == 1
    assert not store.states
    # Any event within the lateness of that watermark sees the same values as with the state kept.
    for i, at in enumerate((14_000, 14_500, 20_000), start=3):
        a, b = send(i, at)
        assert a == b


def test_state_bytes_refuse_other_spec_and_garbage():
    c = Clock()
    c.play(1_000)
    blob = encode_state(c.state)
    other = compile_plans(_one_window_spec(lateness_ms=4_000))[ENTITY_KIND_VALUES["account"]]
    with pytest.raises(StateFormatError, match="different feature spec"):
        decode_state(other, blob)
    with pytest.raises(StateFormatError):
        decode_state(c.plan, b"nope" + blob)
    with pytest.raises(StateFormatError, match="truncated"):
        decode_state(c.plan, blob[:-1])
    with pytest.raises(StateFormatError, match="trailing"):
        decode_state(c.plan, blob + b"\x00")
    empty = KeyState(c.plan)
    assert decode_state(c.plan, encode_state(empty)).high_ms == NO_TIME


def test_default_spec_state_is_compact_and_round_trips():
    spec = default_spec()
    plans = compile_plans(spec)
    fan = FanOut(spec)
    states: dict[tuple[int, str], KeyState] = {}
    rng = random.Random(5)
    for i in range(400):
        ev = make_event(
            f"e{i}",
            T0_MS + i * 7_000,
            rng.choice([pb.Event.PLAY, pb.Event.LIKE, pb.Event.LOGIN]),
            account=f"a{rng.randrange(3)}",
            ip="1.2.3.4",
            device=f"d{rng.randrange(2)}",
            asn=64500,
            target_content=f"c{rng.randrange(4)}",
            target_account="art",
            play_duration_ms=31_000,
        )
        facts, keys = fan(ev)
        for key in keys:
            states.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
    for key, state in states.items():
        blob = encode_state(state)
        again = decode_state(plans[key[0]], blob)
        assert again.values() == state.values()
        assert len(blob) < 4_000
