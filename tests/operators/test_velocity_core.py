"""The compiled core's two entry points against each other and against the brute-force oracle, on
random streams: out of order, late, expiring keys, distinct counts over the exact limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.operators.features.assemble import Assembler
from streamwarden.operators.features.fanout import EventFacts, FanOut
from streamwarden.operators.features.replay import EXPIRY_TICK_MS, VelocityPipeline, VelocityStore
from streamwarden.operators.features.spec import FeatureSpec, default_spec
from streamwarden.operators.features.synth import T0_MS, make_event, small_feature_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from tests.operators.velocity_paths import oracle

WINDOWS = {"5s": {"length_ms": 5_000, "bucket_ms": 1_000}, "60s": {"length_ms": 60_000, "bucket_ms": 10_000}}
ODD_WINDOWS = {
    "6s": {"length_ms": 6_000, "bucket_ms": 2_000},
    "21s": {"length_ms": 21_000, "bucket_ms": 3_000},
}

draw_event = st.tuples(
    st.sampled_from([0, 0, 1, 250, 999, 1_000, 4_000, 10_000, 30_000, 200_000]),  # step (200 s: keys expire)
    st.integers(0, 12_000),  # disorder: past the 7 s lateness sometimes
    st.booleans(),  # out of order?
    st.integers(1, 11),  # type
    st.integers(0, 3),  # account
    st.integers(0, 11),  # ip (12 values: over a small exact limit)
    st.integers(0, 3),  # device / track
    st.sampled_from([0, 5_000, 31_000, 34_999, 35_000]),
)


def build(draws: list[tuple[int, int, bool, int, int, int, int, int]]) -> list[pb.Event]:
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
                url_count=ip % 3,
                content_hash="h" if dev == 2 else "",
                account_created_ms=T0_MS - 3_600_000 * acc if acc else 0,
            )
        )
    return out


def per_key_reference(spec: FeatureSpec, events: list[pb.Event]) -> list[tuple[tuple[float, ...], int]]:
    """The per-key path (``KeyState`` objects in a ``VelocityStore``, Python assembly) with the replay's
    housekeeping: what the batch engine must reproduce exactly."""
    fan = FanOut(spec)
    store = VelocityStore(spec)
    asm = Assembler(spec, timeout_ms=10_000)
    lateness = spec.allowed_lateness_ms
    max_seen, next_hk = -(1 << 62), -(1 << 62)
    out = []
    for ev in events:
        facts, keys = fan(ev)
        t = facts.time_ms
        if t > max_seen:
            max_seen = t
            if t >= next_hk:
                store.advance_to(t - lateness)
                next_hk = t + min(EXPIRY_TICK_MS, 10_000)
        vec = asm.complete(facts, store.on_events(keys, facts))
        out.append((vec.values, vec.late_kinds))
    return out


def batch_rows(
    spec: FeatureSpec, events: list[pb.Event], chunk: int
) -> tuple[list[tuple[float, ...]], list[int]]:
    pipe = VelocityPipeline(spec)
    rows: list[tuple[float, ...]] = []
    lates: list[int] = []
    for i in range(0, len(events), chunk):
        _, values, late = pipe.process_batch(events[i : i + chunk])
        assert values.shape == (len(events[i : i + chunk]), len(spec.feature_names()))
        rows.extend(tuple(r) for r in values.tolist())
        lates.extend(late.tolist())
    return rows, lates


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(draw_event, min_size=1, max_size=220),
    st.sampled_from([3, 4, 64]),
    st.booleans(),
    st.integers(1, 50),
)
def test_batch_equals_per_key_path_exactly(draws, exact_limit, odd, chunk):
    spec = small_feature_spec(
        ODD_WINDOWS if odd else WINDOWS, exact_limit=exact_limit, precision=4, device=True
    )
    events = build(draws)
    ref = per_key_reference(spec, events)
    rows, lates = batch_rows(spec, events, chunk)
    assert rows == [r for r, _ in ref]
    assert lates == [late for _, late in ref]
    pipe = VelocityPipeline(spec)
    assert [(v.values, v.late_kinds) for v in map(pipe.process, events)] == ref


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draw_event, min_size=1, max_size=220), st.booleans())
def test_batch_equals_the_oracle_while_distinct_counts_are_exact(draws, odd):
    spec = small_feature_spec(ODD_WINDOWS if odd else WINDOWS, exact_limit=4096, precision=8, device=True)
    events = build(draws)
    rows, _ = batch_rows(spec, events, 64)
    assert rows == oracle(spec, events)


def test_over_the_exact_limit_distinct_counts_stay_within_the_hll_error():
    spec = small_feature_spec(WINDOWS, exact_limit=16, precision=10)
    events = [
        make_event(f"e{i}", T0_MS + i * 20, pb.Event.LOGIN, account="a", ip=f"ip{i % 700}")
        for i in range(3_000)
    ]
    rows, _ = batch_rows(spec, events, 500)
    exact = oracle(spec, events)
    names = spec.feature_names()
    bound = 4 * 1.04 / (1 << 10) ** 0.5
    for name in ("account.distinct_ip.5s", "account.distinct_ip.60s"):
        i = names.index(name)
        assert any(r[i] != e[i] for r, e in zip(rows, exact, strict=True))  # it did switch to HLL
        assert all(abs(r[i] - e[i]) <= bound * e[i] + 1 for r, e in zip(rows, exact, strict=True))
    other = [i for i, n in enumerate(names) if "distinct" not in n]
    assert all([r[i] for i in other] == [e[i] for i in other] for r, e in zip(rows, exact, strict=True))


def test_default_spec_batch_equals_oracle_and_expires_keys():
    spec = default_spec()
    from streamwarden.operators.features.synth import random_stream

    steps = (0, 1_000, 60_000, 30 * 3_600_000)
    events = random_stream(
        4, 800, steps_ms=steps, n_accounts=40, n_ips=30, disorder_ms=50_000, disorder_fraction=0.2
    )
    pipe = VelocityPipeline(spec)
    _, values, _ = pipe.process_batch(events)
    assert pipe.expired_keys > 0 and pipe.live_keys < pipe.max_keys
    assert [tuple(r) for r in values.tolist()] == oracle(spec, events)
    assert values.dtype == np.float64 and values.flags.c_contiguous


def test_bad_facts_are_refused_before_anything_is_applied():
    spec = small_feature_spec(WINDOWS, exact_limit=64, precision=8)
    fan = FanOut(spec)
    good = [fan(e)[0] for e in build([(1_000, 0, False, 4, 0, 1, 1, 0)] * 3)]
    pipe = VelocityPipeline(spec)
    bad = good[1]._replace(account=7)  # an entity id that is not a string
    with pytest.raises(TypeError):
        pipe.process_facts([good[0], bad, good[2]])
    with pytest.raises(ValueError, match="facts need 18 or 19 fields"):
        pipe.process_facts([good[0], tuple(good[1])[:5]])  # type: ignore[list-item]
    assert pipe.live_keys == 0  # nothing was applied
    rows, _ = pipe.process_facts(good)
    assert rows[-1][spec.feature_names().index("account.count_event.5s")] == 3
    with pytest.raises(ValueError, match="out of range"):
        pipe.process_facts([good[0]._replace(time_ms=1 << 60)])
    assert isinstance(good[0], EventFacts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draw_event, min_size=1, max_size=150), st.integers(1, 40))
def test_reading_events_in_the_core_equals_reading_facts_in_python(draws, chunk):
    spec = small_feature_spec(WINDOWS, exact_limit=4, precision=4, device=True)
    events = build(draws)
    for i, ev in enumerate(events):  # fields FanOut normalizes: ASN to text, play clamped to [0, cap]
        ev.actor.asn = [0, 64_500, 7][i % 3]
        ev.play_duration_ms = [ev.play_duration_ms, -5, 1 << 50][i % 3]
        ev.actor.country = ["", "FR"][i % 2]
    by_facts, by_events = VelocityPipeline(spec), VelocityPipeline(spec)
    for i in range(0, len(events), chunk):
        part = events[i : i + chunk]
        a, la = by_facts.process_batch(part)[1:]
        b, lb = by_events.process_events(part)
        assert a.tolist() == b.tolist() and la.tolist() == lb.tolist()


def test_process_events_refuses_other_objects():
    pipe = VelocityPipeline(small_feature_spec(WINDOWS, exact_limit=4, precision=4))
    with pytest.raises(TypeError, match="decoded Event"):
        pipe.process_events([build([(0, 0, False, 1, 0, 0, 0, 0)])[0], "x"])  # type: ignore[list-item]
