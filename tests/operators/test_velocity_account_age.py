"""The derived ``account_age_s`` where range (new-vs-aged account shares): the core's three entry
points agree with the brute-force oracle, unknown creation times never count as fresh."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.features.replay import VelocityPipeline
from streamwarden.operators.features.spec import EVENT_TYPE_NAMES, FeatureSpec
from streamwarden.operators.features.synth import T0_MS, make_event, small_feature_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from tests.operators.velocity_paths import oracle, per_key

WINDOWS = {"5s": {"length_ms": 5_000, "bucket_ms": 1_000}, "60s": {"length_ms": 60_000, "bucket_ms": 10_000}}
ALL = list(EVENT_TYPE_NAMES)
HOUR_S = 3_600
AGE_GROUPS: list[dict[str, Any]] = [
    {
        "name": "fresh",
        "event_types": ALL,
        "where": {"field": "account_age_s", "max": HOUR_S},
        "aggregations": [
            {"name": "count_fresh", "op": "count"},
            {"name": "distinct_fresh_ip", "op": "distinct", "field": "ip"},
        ],
    },
    {
        "name": "day_old",
        "event_types": ["COMMENT", "MESSAGE", "PLAY"],
        "where": {"field": "account_age_s", "min": HOUR_S, "max": 24 * HOUR_S},
        "aggregations": [{"name": "sum_url_day_old", "op": "sum", "field": "url_count"}],
    },
    {
        "name": "aged",
        "event_types": ALL,
        "where": {"field": "account_age_s", "min": 24 * HOUR_S},
        "aggregations": [{"name": "count_aged", "op": "count"}],
    },
]
CREATED_OFFSETS_MS: list[int | None] = [
    None,  # unknown (account_created_ms = 0)
    10,  # created just before the event: age 0 s
    HOUR_S * 1000 - 1,  # 3599.999 s: still fresh (age floors to 3599)
    HOUR_S * 1000,  # exactly one hour: not fresh any more
    30 * 86_400_000,
    -5_000,  # created after the event (clock skew): age 0
]


def _spec() -> FeatureSpec:
    return small_feature_spec(WINDOWS, exact_limit=4096, precision=8, extra_groups=AGE_GROUPS)


def _events(draws: list[tuple[int, int, int, int, int]]) -> list[pb.Event]:
    t, out = T0_MS, []
    for i, (step, ty, acc, ip, created) in enumerate(draws):
        t += step
        offset = CREATED_OFFSETS_MS[created]
        out.append(
            make_event(
                f"e{i}",
                t,
                ty,
                account=f"a{acc}",
                ip=f"ip{ip}",
                url_count=ip % 3,
                account_created_ms=0 if offset is None else t - offset,
            )
        )
    return out


draw = st.tuples(
    st.sampled_from([0, 1, 400, 1_000, 7_000]),
    st.integers(1, 11),
    st.integers(0, 2),
    st.integers(0, 5),
    st.integers(0, len(CREATED_OFFSETS_MS) - 1),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(draw, min_size=1, max_size=150))
def test_account_age_ranges_agree_on_every_path_with_theoracle(
    draws: list[tuple[int, int, int, int, int]],
) -> None:
    spec = _spec()
    events = _events(draws)
    want = oracle(spec, events)
    assert per_key(spec, events) == want  # KeyState.on_event over facts tuples (the engines' path)
    _, rows, _ = VelocityPipeline(spec).process_batch(events)  # Batch.run over facts
    assert [tuple(r) for r in rows.tolist()] == want
    rows, _ = VelocityPipeline(spec).process_events(events)  # Batch.run_events over the Event
    assert [tuple(r) for r in rows.tolist()] == want


def test_fresh_aged_and_unknown_accounts_are_counted_where_they_belong() -> None:
    spec = _spec()
    # created: unknown, 10 ms, 3599.999 s, 3600 s, 30 days, in the future -- all one account
    events = _events([(0 if i == 0 else 10, pb.Event.COMMENT, 0, 1, i) for i in range(6)])
    names = spec.feature_names()
    pipe = VelocityPipeline(spec)
    last = [pipe.process(ev) for ev in events][-1].values
    # fresh (< 1 h): 10 ms, 3599.999 s and the future creation; unknown is never fresh
    assert last[names.index("account.count_fresh.60s")] == 3
    assert last[names.index("account.distinct_fresh_ip.60s")] == 1
    # 1 h .. 24 h: the one exactly an hour old (url_count = ip % 3 = 1)
    assert last[names.index("account.sum_url_day_old.60s")] == 1
    # >= 24 h: 30 days and the unknown one (read as the largest age)
    assert last[names.index("account.count_aged.60s")] == 2
    assert last[names.index("account.count_event.60s")] == 6


def test_account_age_is_a_where_field_only() -> None:
    bad = {
        "name": "s",
        "event_types": ALL,
        "aggregations": [{"name": "sum_age", "op": "sum", "field": "account_age_s"}],
    }
    with pytest.raises(ConfigError, match=r"aggregations\.0\.field"):
        small_feature_spec(WINDOWS, exact_limit=64, precision=8, extra_groups=[bad])
