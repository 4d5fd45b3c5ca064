"""Assembly: joining partials by event id, event-level features, timeouts and imputation."""

from __future__ import annotations

import pytest

from streamwarden.operators.features.assemble import EVENT_DEFAULTS, Assembler, event_features, event_partial
from streamwarden.operators.features.fanout import FanOut
from streamwarden.operators.features.spec import ENTITY_KIND_VALUES, EVENT_FEATURES, default_spec
from streamwarden.operators.features.synth import T0_MS, make_event
from streamwarden.operators.features.window import KeyState, compile_plans
from streamwarden.schemas import streamwarden_pb2 as pb

SPEC = default_spec()
PLANS = compile_plans(SPEC)
FAN = FanOut(SPEC)
NAMES = SPEC.feature_names()
ACCOUNT, IP, DEVICE = (ENTITY_KIND_VALUES[k] for k in ("account", "ip", "device"))


def _play(eid: str = "e1", **kw):
    fields = {"account": "a1", "ip": "10.0.0.1", "target_content": "t1", "play_duration_ms": 31_000}
    fields.update(kw)
    return FAN(make_event(eid, T0_MS, pb.Event.PLAY, **fields))


def _partials(facts, keys):
    return [event_partial(facts)] + [KeyState(PLANS[k[0]]).on_event(facts) for k in keys]


def _slice(vec, kind: str):
    first = NAMES.index(SPEC.entity_feature_names(kind)[0])
    return vec.values[first : first + len(SPEC.entity_feature_names(kind))]


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]])
def test_vector_completes_once_in_any_order(order):
    facts, keys = _play()
    assert FanOut.expected_partials(facts) == 4  # event, account, ip, target_content (no device)
    parts = _partials(facts, keys)
    asm = Assembler(SPEC, timeout_ms=1_000)
    outs = [asm.add(parts[i], now_ms=0) for i in order]
    assert outs[:-1] == [None, None, None]
    vec = outs[-1]
    assert vec is not None and len(vec.values) == len(NAMES)
    assert vec.imputed == () and vec.facts == facts and vec.event_time_ms == T0_MS
    assert _slice(vec, "account")[0] == 1  # account.count_event.1m
    # device was not named by the event: defaults, not imputed
    assert _slice(vec, "device") == PLANS[DEVICE].defaults
    assert asm.pending == 0
    assert asm.add(parts[order[0]], now_ms=1) is None and asm.duplicates == 1


def test_timeout_imputes_defaults_and_flags_names():
    facts, keys = _play("e2")
    parts = _partials(facts, keys)
    asm = Assembler(SPEC, timeout_ms=500)
    assert asm.add(parts[0], now_ms=100) is None  # event-level
    assert asm.add(parts[1], now_ms=150) is None  # account
    assert asm.expire(now_ms=599) == []
    [vec] = asm.expire(now_ms=600)
    ip_names = set(SPEC.entity_feature_names("ip"))
    tc_names = set(SPEC.entity_feature_names("target_content"))
    assert set(vec.imputed) == ip_names | tc_names
    assert _slice(vec, "ip") == PLANS[IP].defaults
    assert _slice(vec, "account") == parts[1].values
    assert asm.timed_out == 1 and asm.pending == 0
    # a straggler after the timeout does not open a second vector
    assert asm.add(parts[2], now_ms=700) is None and asm.pending == 0


def test_missing_event_partial_is_imputed_too():
    facts, keys = _play("e3")
    parts = _partials(facts, keys)
    asm = Assembler(SPEC, timeout_ms=10)
    for p in parts[1:]:
        asm.add(p, now_ms=0)
    [vec] = asm.expire(now_ms=10)
    assert vec.facts is None and vec.event_time_ms == 0
    assert vec.values[: len(EVENT_FEATURES)] == EVENT_DEFAULTS
    assert set(vec.imputed) == {f"event.{n}" for n in EVENT_FEATURES}


def test_late_partials_are_flagged_by_kind():
    facts, keys = _play("e4")
    state = KeyState(PLANS[ACCOUNT])
    later, _ = _play("e0")
    state.on_event(later._replace(time_ms=T0_MS + 3_600_000))
    asm = Assembler(SPEC, timeout_ms=10)
    out = None
    for p in [event_partial(facts), state.on_event(facts)] + [
        KeyState(PLANS[k[0]]).on_event(facts) for k in keys[1:]
    ]:
        out = asm.add(p, 0) or out
    assert out is not None and out.late_kinds == 1 << ACCOUNT


def test_event_features():
    created = T0_MS - 36 * 3_600_000
    f, _ = FAN(
        make_event(
            "e",
            T0_MS,
            pb.Event.COMMENT,
            account="a",
            url_count=2,
            content_hash="h",
            account_created_ms=created,
        )
    )
    vals = dict(zip(EVENT_FEATURES, event_features(f), strict=True))
    assert (
        vals["type_comment"] == 1.0 and sum(vals[n] for n in EVENT_FEATURES if n.startswith("type_")) == 1.0
    )
    assert vals["hour_of_day"] == (T0_MS // 3_600_000) % 24
    assert vals["account_age_h"] == 36.0 and vals["account_age_known"] == 1.0
    assert vals["url_count"] == 2.0 and vals["has_content_hash"] == 1.0
    g, _ = FAN(make_event("e", T0_MS, pb.Event.PLAY, account="a"))
    gv = dict(zip(EVENT_FEATURES, event_features(g), strict=True))
    assert gv["account_age_h"] == -1.0 and gv["account_age_known"] == 0.0


def test_fan_out_keys_follow_spec_routing():
    facts, keys = FAN(
        make_event("e", T0_MS, pb.Event.SIGNUP, account="a", ip="1.1.1.1", device="d", asn=64500)
    )
    assert [k for k, _ in keys] == [ENTITY_KIND_VALUES[k] for k in ("account", "ip", "device", "asn")]
    facts, keys = FAN(
        make_event(
            "e", T0_MS, pb.Event.PLAY, account="a", asn=64500, target_account="art", target_content="t"
        )
    )
    # asn only reads signups/logins, target_account does not read plays
    assert [k for k, _ in keys] == [ENTITY_KIND_VALUES["account"], ENTITY_KIND_VALUES["target_content"]]
    assert FanOut.expected_partials(facts) == 3
