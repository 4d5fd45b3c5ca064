"""State codec caches (each ring's and exact set's encoding kept on the ``KeyState``): at every point
of random event streams the bytes equal those of the plain layout-v1 encoder, through round trips."""

from __future__ import annotations

import copy
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, FeatureSpec
from streamwarden.operators.features.state_codec import LAYOUT_VERSION, MAGIC, decode_state, encode_state
from streamwarden.operators.features.synth import SMALL_LATENESS_MS, T0_MS, make_event, small_feature_spec
from streamwarden.operators.features.window import NO_TIME, KeyState, compile_plans
from streamwarden.schemas import streamwarden_pb2 as pb

LATENESS_MS = SMALL_LATENESS_MS


# ---------------------------------------------------------------- reference: layout v1, no caches
# The encoder as it was before the caches, kept verbatim (plus two switches that write valid but
# non-canonical bytes), so the cached encoder is checked against an independent implementation.

_HEADER = struct.Struct("<3sBBBIqQ")
_WIDTH_FMT = ("B", "H", "I", "Q")


def _width_code(top: int) -> int:
    if top < 1 << 8:
        return 0
    if top < 1 << 16:
        return 1
    if top < 1 << 32:
        return 2
    return 3


def _ref_pack_vectors(
    out: list[bytes], vectors: list[int], n_cols: int, min_code: int, all_lanes: bool
) -> None:
    lane_unpack = struct.Struct(f"<{n_cols}Q").unpack
    present_idx = [i for i, v in enumerate(vectors) if v]
    bitmap = 0
    for i in present_idx:
        bitmap |= 1 << i
    out.append(bitmap.to_bytes((len(vectors) + 7) // 8, "little"))
    n_mask_bytes = (n_cols + 7) // 8
    for i in present_idx:
        lanes = lane_unpack(vectors[i].to_bytes(8 * n_cols, "little"))
        present = list(lanes) if all_lanes else [x for x in lanes if x]
        lane_bits = 0
        for c, x in enumerate(lanes):
            if x or all_lanes:
                lane_bits |= 1 << c
        code = max(_width_code(max(present)), min_code)
        out.append(lane_bits.to_bytes(n_mask_bytes, "little"))
        out.append(bytes([code]))
        out.append(struct.pack(f"<{len(present)}{_WIDTH_FMT[code]}", *present))


def reference_encode(state: KeyState, *, min_code: int = 0, all_lanes: bool = False) -> bytes:
    """Layout v1 as first written; ``min_code`` / ``all_lanes`` make wider lanes / zero lanes
    present (bytes the decoder accepts but the encoder never writes)."""
    plan = state.plan
    out = [
        _HEADER.pack(
            MAGIC,
            LAYOUT_VERSION,
            plan.kind,
            len(plan.geoms),
            plan.fingerprint,
            state.high_ms,
            state.late_events,
        )
    ]
    if state.high_ms == NO_TIME:
        return b"".join(out)
    big_t = state.total & plan.col_mask
    for w, geo in enumerate(plan.geoms):
        out.append(struct.pack("<q", state.heads[w]))
        ring = state.rings[w]
        vectors = [big_t - state.b[w], *(ring if ring is not None else [0] * geo.n)]
        _ref_pack_vectors(out, vectors, plan.n_cols, min_code, all_lanes)
    high = state.high_ms
    for di, seen in enumerate(state.seen):
        hll = state.hlls[di] if state.hlls is not None else None
        if hll is None:
            raws = [v.encode("utf-8") for v in seen] if seen else []
            out.append(b"\x00")
            out.append(struct.pack("<I", len(raws)))
            if raws:
                assert seen is not None
                ages = [min(high - last, 0xFFFFFFFF) for last in seen.values()]
                out.append(struct.pack(f"<{len(raws)}H", *map(len, raws)))
                out.append(struct.pack(f"<{len(raws)}I", *ages))
                out.append(b"".join(raws))
        else:
            out.append(b"\x01")
            m = hll.m
            for w, (_, n) in enumerate(hll.geoms):
                regs = hll.regs[w]
                slots = [s for s in range(n) if any(regs[s * m : (s + 1) * m])]
                out.append(struct.pack("<H", len(slots)))
                for s in slots:
                    out.append(struct.pack("<H", s))
                    out.append(bytes(regs[s * m : (s + 1) * m]))
    return b"".join(out)


def uncached_encode(state: KeyState) -> bytes:
    """``to_bytes`` of a shallow copy whose caches start empty (the state itself is not touched)."""
    fresh = copy.copy(state)
    fresh.ring_enc = None
    fresh.seen_enc = None
    return encode_state(fresh)


# ---------------------------------------------------------------- spec and streams


# Twelve more columns: 20 per key, so lane bitmaps take 3 bytes (the packers' general path).
_WIDE_GROUPS: list[dict[str, Any]] = [
    {
        "name": f"t_{t.lower()}",
        "event_types": [t],
        "aggregations": [
            {"name": f"n_{t.lower()}", "op": "count"},
            {"name": f"ms_{t.lower()}", "op": "sum", "field": "play_duration_ms"},
        ],
    }
    for t in ("SIGNUP", "LOGIN", "LOGIN_FAILED", "PLAY", "LIKE", "COMMENT")
]


def codec_spec(*, nested: bool, wide: bool, exact_limit: int, precision: int) -> FeatureSpec:
    """Short windows, so a few hundred events cross every window's buckets many times. Nested: n = 5,
    12, 20 and 6 buckets (window bitmaps of 1, 2, 3 and 1 bytes); else two non-nested windows."""
    windows = (
        {
            "5s": {"length_ms": 5_000, "bucket_ms": 1_000},
            "12s": {"length_ms": 12_000, "bucket_ms": 1_000},
            "20s": {"length_ms": 20_000, "bucket_ms": 1_000},
            "60s": {"length_ms": 60_000, "bucket_ms": 10_000},
        }
        if nested
        else {
            "6s": {"length_ms": 6_000, "bucket_ms": 2_000},
            "21s": {"length_ms": 21_000, "bucket_ms": 3_000},
        }
    )
    return small_feature_spec(
        windows,
        exact_limit=exact_limit,
        precision=precision,
        extra_groups=_WIDE_GROUPS if wide else None,
        device=True,
    )


CONFIGS = [
    # small exact limit: sets compact and switch to HyperLogLog
    {"nested": True, "wide": False, "exact_limit": 6, "precision": 4},
    {"nested": False, "wide": True, "exact_limit": 6, "precision": 5},
    # large limit: exact sets grow (appends to the cached encoding)
    {"nested": True, "wide": True, "exact_limit": 4_096, "precision": 8},
]

NO_ACTION, ENCODE_TOUCHED, ENCODE_ALL, ROUND_TRIP_TOUCHED = range(4)

event_strategy = st.tuples(
    st.sampled_from([0, 0, 1, 250, 999, 1_000, 1_001, 4_000, 9_999, 10_000, 30_000, 80_000]),  # step
    st.integers(0, LATENESS_MS + 3_000),  # disorder: up to 3 s beyond the lateness (those are late)
    st.booleans(),  # out of order?
    st.sampled_from([1, 2, 3, 4, 4, 4, 5, 8]),  # type
    st.integers(0, 2),  # account
    st.integers(0, 11),  # ip: more values than the small exact limit
    st.integers(0, 5),  # device / track; 4 and 5 are not ASCII
    st.sampled_from([0, 5_000, 31_000, 34_999, 120_000, 1 << 40]),  # 1-, 2-, 4- and 8-byte lanes
    st.sampled_from([NO_ACTION, NO_ACTION, ENCODE_TOUCHED, ENCODE_ALL, ROUND_TRIP_TOUCHED]),
)


def _device(i: int) -> str:
    return ("", "d1", "d2", "d3", "dé4", "設備5")[i]


def build_stream(draws: list[tuple[Any, ...]]) -> list[tuple[pb.Event, int]]:
    t = T0_MS
    out = []
    for i, (step, disorder, ooo, ty, acc, ip, dev, dur, action) in enumerate(draws):
        t += step
        ev = make_event(
            f"e{i}",
            t - disorder if ooo else t,
            ty,
            account=f"a{acc}",
            ip=f"ip{ip}",
            device=_device(dev),
            target_content=f"c{dev}" if dev < 4 else f"ç{dev}",
            play_duration_ms=dur,
        )
        out.append((ev, action))
    return out


def check_bytes(state: KeyState) -> bytes:
    """The state's bytes, asserted equal to the reference's, the uncached encoder's and a re-encoded
    decode's."""
    blob = encode_state(state)
    assert blob == reference_encode(state)
    assert blob == uncached_encode(state)
    assert encode_state(decode_state(state.plan, blob)) == blob
    return blob


# ---------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, min_size=20, max_size=160), st.sampled_from(CONFIGS))
def test_cached_bytes_equal_reference_at_every_point(draws, config):
    spec = codec_spec(**config)
    plans = compile_plans(spec)
    fan = FanOut(spec)
    plain: dict[tuple[int, str], KeyState] = {}
    cycled: dict[tuple[int, str], KeyState] = {}
    for ev, action in build_stream(draws):
        facts, keys = fan(ev)
        for key in keys:
            a = plain.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
            b = cycled.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
            assert a == b  # a decoded state (with caches filled from its bytes) behaves the same
        if action == ENCODE_ALL:
            for state in cycled.values():
                check_bytes(state)
        elif action in (ENCODE_TOUCHED, ROUND_TRIP_TOUCHED):
            for key in keys:
                blob = check_bytes(cycled[key])
                if action == ROUND_TRIP_TOUCHED:
                    cycled[key] = decode_state(plans[key[0]], blob)
    for key, state in cycled.items():
        assert check_bytes(state) == check_bytes(plain[key])


@pytest.mark.parametrize("variant", [{"min_code": 3}, {"all_lanes": True}])
def test_non_canonical_bytes_decode_then_encode_canonically(variant):
    """Wider lanes than needed and zero lanes marked present are accepted, and re-encoded canonically
    (so such ring bytes are never cached as they are)."""
    spec = codec_spec(nested=True, wide=False, exact_limit=6, precision=4)
    plan = compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    fan = FanOut(spec)
    state = KeyState(plan)
    for i in range(40):
        ev = make_event(
            f"e{i}", T0_MS + i * 700, pb.Event.PLAY, account="a", ip=f"ip{i % 3}", play_duration_ms=31_000
        )
        state.on_event(fan(ev)[0])
    assert any(ring is not None for ring in state.rings)
    canonical = reference_encode(state)
    odd = reference_encode(state, **variant)
    assert odd != canonical
    restored = decode_state(plan, odd)
    assert encode_state(restored) == canonical
    assert restored.values() == state.values()


def test_compaction_resets_the_cached_set_encoding():
    """A compaction that drops values, then appends back to the cached size, must not reuse the
    cached values (same count and lengths, other values)."""
    spec = codec_spec(nested=False, wide=False, exact_limit=4, precision=4)
    plan = compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    fan = FanOut(spec)
    state = KeyState(plan)

    def login(i: int, at_ms: int, ip: str) -> None:
        state.on_event(fan(make_event(f"e{i}", T0_MS + at_ms, pb.Event.LOGIN, account="a", ip=ip))[0])

    login(0, 0, "ip1")
    login(1, 100, "ip2")
    check_bytes(state)  # caches the two-value set
    login(2, 60_000, "ip3")  # both old values left every window
    login(3, 60_100, "ip4")  # fourth value: compaction drops ip1 and ip2
    di = [name for name, _, _ in (plan.columns[c] for c in plan.distinct_cols)].index("distinct_ip")
    assert state.seen[di] is not None and list(state.seen[di]) == ["ip3", "ip4"]
    check_bytes(state)


def test_ages_beyond_u32_saturate_as_in_the_reference():
    """A value left in an exact set for more than 2**32 ms is written with the saturated age, alone
    in its set and among others."""
    spec = codec_spec(nested=False, wide=False, exact_limit=4_096, precision=4)
    plan = compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    fan = FanOut(spec)
    state = KeyState(plan)
    later = T0_MS + (1 << 32) + 10

    def login(i: int, at_ms: int, ip: str) -> None:
        state.on_event(fan(make_event(f"e{i}", at_ms, pb.Event.LOGIN, account="a", ip=ip))[0])

    login(0, T0_MS, "ip1")
    check_bytes(state)
    login(1, later, "")  # no ip: the set keeps its one, now saturated, value
    check_bytes(state)
    login(2, later + 1, "ip2")
    login(3, later + 2, "ip3")
    blob = check_bytes(state)
    assert blob.count((0xFFFFFFFF).to_bytes(4, "little")) == 1
