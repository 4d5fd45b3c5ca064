"""The watermark-expired key stores (``operators/expiring.py``) against the replay's ``VelocityStore``
and a brute-force scan."""

from __future__ import annotations

import random

import pytest

from streamwarden.operators.expiring import ExpiringStore, KeyStateStore, StoreSlot
from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.replay import VelocityStore
from streamwarden.operators.features.spec import load_spec
from streamwarden.operators.features.synth import T0_MS, make_event
from streamwarden.operators.features.window import KeyState
from streamwarden.operators.pipeline import KEY_SEP
from streamwarden.schemas import streamwarden_pb2 as pb


def test_a_value_is_dropped_once_the_watermark_passes_its_expiry_not_before():
    store: ExpiringStore[list[int]] = ExpiringStore(lambda v: v[0], tick_ms=10)
    store.put("a", [95])
    store.put("b", [101])
    assert store.next_due_ms == 100  # 95 rounded up to the tick
    assert store.advance_to(99) == 0 and len(store) == 2
    assert store.advance_to(100) == 1 and store.get("a") is None
    b = store.get("b")
    assert b is not None
    b[0] = 250  # moved on in place; put re-indexes it under its new tick
    store.put("b", b)
    assert store.advance_to(200) == 0 and store.get("b") == [250]
    b[0] = 300  # moved on without put: found still live at its old tick, indexed again
    assert store.advance_to(250) == 0
    assert store.advance_to(300) == 1 and len(store) == 0
    assert store.expired_keys == 2 and store.max_keys == 2
    store.put("c", [1])
    assert store.pop("c") == [1] and store.advance_to(10**9) == 0


def test_a_value_without_expiry_goes_at_the_next_advance():
    store: ExpiringStore[bytes] = ExpiringStore(lambda v: None)
    store.put("x", b"")
    assert store.advance_to(-(10**12)) == 1 and len(store) == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_key_state_store_keeps_and_drops_the_same_keys_as_the_replay_store(seed: int):
    spec = load_spec(None)
    fan = FanOut(spec)
    rng = random.Random(seed)
    ours, reference = KeyStateStore(), VelocityStore(spec)
    t = T0_MS
    for i in range(3_000):
        t += rng.choice([1_000, 60_000, 900_000])
        event = make_event(
            f"e{i}",
            t - rng.randrange(0, 50_000),  # out of order within the lateness
            pb.Event.PLAY,
            account=f"a{rng.randrange(200)}",
            ip=f"ip{rng.randrange(50)}",
            play_duration_ms=20_000,
        )
        facts, keys = fan(event)
        for kind, entity in keys:
            key = f"{kind}{KEY_SEP}{entity}"
            state = ours.get(key)
            if state is None:
                state = KeyState(reference.plans[kind])
            got = state.on_event(facts)
            ours.put(key, state)
            assert got == reference.on_event((kind, entity), facts)
        watermark = t - spec.allowed_lateness_ms
        ours.advance_to(watermark)
        reference.advance_to(watermark)
        # the index is coarser than the replay's (whole ticks), never later than a tick
        live = {f"{k}{KEY_SEP}{e}" for k, e in reference.states}
        assert live <= set(ours.values)
        assert all(s.expiry_ms() > watermark - ours.tick_ms for s in ours.values.values())
    assert ours.expired_keys > 100


def test_on_drop_sees_each_dropped_key_once_and_no_live_one():
    dropped: list[str] = []
    store: ExpiringStore[list[int]] = ExpiringStore(lambda v: v[0], tick_ms=10, on_drop=dropped.append)
    store.put("a", [95])
    store.put("b", [150])
    store.put("c", [95])
    store.pop("c")  # popped by the caller: not a drop
    store.advance_to(100)
    assert dropped == ["a"]
    store.advance_to(10**9)
    assert dropped == ["a", "b"] and len(store) == 0


def test_store_slot_on_put_hears_every_put_and_removal_of_its_key():
    heard: list[tuple[str, list[int] | None]] = []
    store: ExpiringStore[list[int]] = ExpiringStore(lambda v: v[0], tick_ms=10)
    slot = StoreSlot(store, on_put=lambda key, state: heard.append((key, state)))
    slot.key = "a"
    slot.put([50])
    slot.key = "b"
    slot.put([60])
    slot.put(None)
    assert heard == [("a", [50]), ("b", [60]), ("b", None)]
    assert store.get("a") == [50] and store.get("b") is None
    assert StoreSlot(store, "a").get() == [50]  # without a hook, the same store
