"""Window state bytes: layout-1 states written by the pre-core engine restore under the core (and are
rewritten as layout 2); layout 2 is canonical, takes values of any length, and bad bytes give a clear
``StateFormatError``, never a crash."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.features import _core
from streamwarden.operators.features.fanout import EventFacts, FanOut
from streamwarden.operators.features.hll import item_hash
from streamwarden.operators.features.naive import NaiveKeyState, NaivePlan
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, parse_spec
from streamwarden.operators.features.state_codec import (
    LAYOUT_VERSION,
    StateFormatError,
    decode_state,
    encode_state,
)
from streamwarden.operators.features.synth import T0_MS, make_event, small_feature_spec
from streamwarden.operators.features.window import KeyState, compile_plans
from streamwarden.schemas import streamwarden_pb2 as pb

FIXTURE = Path(__file__).with_name("fixtures") / "key_state_v1.json"
CASES = json.loads(FIXTURE.read_text())["cases"]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_layout_1_states_restore_and_continue_as_the_old_engine_did(case):
    data = CASES[case]
    spec = parse_spec(data["spec"])
    plans = compile_plans(spec)
    fan = FanOut(spec)
    states: dict[tuple[int, str], KeyState] = {}
    for s in data["states"]:
        blob = base64.b64decode(s["blob"])
        assert blob[3] == 1  # really layout 1
        state = decode_state(plans[s["kind"]], blob)
        v2 = encode_state(state)
        assert v2[3] == LAYOUT_VERSION == 2
        again = decode_state(plans[s["kind"]], v2)
        assert encode_state(again) == v2 and again.values() == state.values()
        states[(s["kind"], s["id"])] = state
    hll_keys = sum("hll" in st.distinct_modes for st in states.values())
    assert hll_keys >= 1  # the fixture exercises the HyperLogLog part of layout 1
    expected = iter(data["partials_after_split"])
    checked = 0
    for raw in data["facts"][data["split"] :]:
        facts = EventFacts(*raw)
        for key in fan.keys(facts):
            want = next(expected)
            assert (want["kind"], want["id"], want["event_id"]) == (key[0], key[1], facts.event_id)
            p = states.setdefault(key, KeyState(plans[key[0]])).on_event(facts)
            assert p.late == want["late"]
            assert list(p.values) == want["values"], (key, facts.event_id)
            checked += 1
    assert checked == len(data["partials_after_split"]) > 500


def test_exact_layout_1_states_agree_with_the_oracle_over_the_whole_stream():
    """Keys that stayed exact: restored state + later events == brute force over all events."""
    data = CASES[1]
    spec = parse_spec(data["spec"])
    plans = compile_plans(spec)
    fan = FanOut(spec)
    restored = {
        (s["kind"], s["id"]): decode_state(plans[s["kind"]], base64.b64decode(s["blob"]))
        for s in data["states"]
    }
    naive = {k: NaivePlan(spec, k) for k in spec.kinds()}
    oracle: dict[tuple[int, str], NaiveKeyState] = {}
    compared = 0
    for i, raw in enumerate(data["facts"]):
        facts = EventFacts(*raw)
        for key in fan.keys(facts):
            kind_name = next(k for k, v in ENTITY_KIND_VALUES.items() if v == key[0])
            ref = oracle.setdefault(key, NaiveKeyState(naive[kind_name])).on_event(facts)
            if i >= data["split"] and key in restored:
                got = restored[key].on_event(facts)
                if "hll" not in restored[key].distinct_modes:
                    assert got.values == ref.values
                    compared += 1
    assert compared > 100


def _spec():
    return small_feature_spec(
        {"5s": {"length_ms": 5_000, "bucket_ms": 1_000}, "60s": {"length_ms": 60_000, "bucket_ms": 10_000}},
        exact_limit=64,
        precision=6,
    )


def test_values_of_any_length_fit_the_layout():
    spec = _spec()
    plan = compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    fan = FanOut(spec)
    state = KeyState(plan)
    huge = "x" * 200_000  # layout 1 stored UTF-8 lengths as u16 and crashed on this
    for i, ip in enumerate([huge, "é" * 70_000, "short"]):
        state.on_event(fan(make_event(f"e{i}", T0_MS + i, pb.Event.LOGIN, account="a", ip=ip))[0])
    blob = encode_state(state)
    assert len(blob) < 200  # values are stored as 64-bit hashes
    restored = decode_state(plan, blob)
    assert restored.values() == state.values()
    p = restored.on_event(fan(make_event("e9", T0_MS + 10, pb.Event.LOGIN, account="a", ip=huge))[0])
    assert p.values[spec.entity_feature_names("account").index("account.distinct_ip.5s")] == 3


def test_value_hash_is_the_python_blake2b_hash():
    for v in ["", "a", "10.0.0.1", "é" * 100, "x" * 70_000]:
        assert _core.item_hash(v) == item_hash(v)


def _some_state() -> tuple[object, bytes]:
    spec = _spec()
    plan = compile_plans(spec)[ENTITY_KIND_VALUES["account"]]
    fan = FanOut(spec)
    state = KeyState(plan)
    for i in range(300):
        ev = make_event(
            f"e{i}",
            T0_MS + i * 700 - (i % 7) * 900,
            [1, 3, 4, 8][i % 4],
            account="a",
            ip=f"ip{i % 90}",
            device=f"d{i % 3}",
            target_content=f"c{i % 5}",
            play_duration_ms=[0, 31_000, 120_000][i % 3],
        )
        state.on_event(fan(ev)[0])
    assert "hll" in state.distinct_modes and "exact" in state.distinct_modes
    return plan, encode_state(state)


def test_every_truncation_and_extension_is_refused():
    plan, blob = _some_state()
    assert encode_state(decode_state(plan, blob)) == blob
    for cut in range(len(blob)):
        with pytest.raises(StateFormatError):
            decode_state(plan, blob[:cut])
    with pytest.raises(StateFormatError, match="trailing"):
        decode_state(plan, blob + b"\x00")
    with pytest.raises(StateFormatError, match="version"):
        decode_state(plan, blob[:3] + b"\x09" + blob[4:])
    other = compile_plans(_spec().model_copy(update={"allowed_lateness_ms": 1}))[
        ENTITY_KIND_VALUES["account"]
    ]
    with pytest.raises(StateFormatError, match="fingerprint"):
        decode_state(other, blob)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupt_bytes_raise_state_format_error_or_decode(data):
    plan, blob = _some_state_cached()
    pos = data.draw(st.integers(0, len(blob) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = blob[:pos] + bytes([byte]) + blob[pos + 1 :]
    try:
        state = decode_state(plan, mutated)
    except StateFormatError:
        return
    state.values()  # a blob that decodes is a usable state
    encode_state(state)


_CACHE: list[tuple[object, bytes]] = []


def _some_state_cached() -> tuple[object, bytes]:
    if not _CACHE:
        _CACHE.append(_some_state())
    return _CACHE[0]
