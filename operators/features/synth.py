"""Small synthetic event streams for the velocity tests and benchmark workloads (deterministic by seed)."""

from __future__ import annotations

import random
from typing import Any

from streamwarden.operators.features.spec import FeatureSpec, parse_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SCHEMA_VERSION

T0_MS = 1_700_000_000_000
"""A fixed epoch-ms start (2023-11-14) so bucket alignment is reproducible."""


SMALL_GROUPS: list[dict[str, Any]] = [
    {
        "name": "all",
        "event_types": ["SIGNUP", "LOGIN", "LOGIN_FAILED", "PLAY", "LIKE", "COMMENT"],
        "aggregations": [
            {"name": "count_event", "op": "count"},
            {"name": "distinct_ip", "op": "distinct", "field": "ip"},
        ],
    },
    {
        "name": "play",
        "event_types": ["PLAY"],
        "aggregations": [
            {"name": "count_play", "op": "count"},
            {"name": "sum_play_ms", "op": "sum", "field": "play_duration_ms"},
            {"name": "distinct_track", "op": "distinct", "field": "target_content"},
        ],
    },
    {
        "name": "short",
        "event_types": ["PLAY"],
        "where": {"field": "play_duration_ms", "min": 30_000, "max": 35_000},
        "aggregations": [
            {"name": "count_short", "op": "count"},
            {"name": "distinct_short_device", "op": "distinct", "field": "device"},
        ],
    },
    {
        "name": "failed",
        "event_types": ["LOGIN_FAILED"],
        "aggregations": [{"name": "count_failed", "op": "count"}],
    },
]
"""Aggregation groups for the short-window specs the velocity tests build: every aggregation kind,
a range filter, and distinct columns on several fields."""

SMALL_RATIOS: list[dict[str, str]] = [
    {"name": "ratio_short", "numerator": "count_short", "denominator": "count_play"},
    {"name": "ratio_failed", "numerator": "count_failed", "denominator": "count_event"},
]
"""Ratios over ``SMALL_GROUPS``."""

SMALL_LATENESS_MS = 7_000
"""Allowed lateness of ``small_feature_spec``."""


def small_feature_spec(
    windows: dict[str, dict[str, int]],
    *,
    exact_limit: int,
    precision: int,
    extra_groups: list[dict[str, Any]] | None = None,
    device: bool = False,
) -> FeatureSpec:
    """A spec over ``windows`` for the velocity tests: ``account`` with ``SMALL_GROUPS`` (plus
    ``extra_groups``) and ``SMALL_RATIOS`` over the windows in order, ``ip`` with the first two groups
    over them reversed, and with ``device`` a ``device`` entity with the second group on the last one."""
    names = list(windows)
    entities: dict[str, Any] = {
        "account": {"windows": names, "groups": SMALL_GROUPS + (extra_groups or []), "ratios": SMALL_RATIOS},
        "ip": {"windows": list(reversed(names)), "groups": SMALL_GROUPS[:2]},
    }
    if device:
        entities["device"] = {"windows": names[-1:], "groups": SMALL_GROUPS[1:2]}
    return parse_spec(
        {
            "version": 1,
            "allowed_lateness_ms": SMALL_LATENESS_MS,
            "exact_distinct_limit": exact_limit,
            "hll_precision": precision,
            "windows": windows,
            "entities": entities,
        }
    )


def make_event(
    event_id: str,
    time_ms: int,
    type_: int,
    *,
    account: str = "",
    ip: str = "",
    device: str = "",
    asn: int = 0,
    target_account: str = "",
    target_content: str = "",
    play_duration_ms: int = 0,
    url_count: int = 0,
    content_hash: str = "",
    account_created_ms: int = 0,
) -> pb.Event:
    """One valid ``Event`` with the given fields."""
    e = pb.Event(
        event_id=event_id,
        event_time_ms=time_ms,
        type=type_,  # type: ignore[arg-type]
        schema_version=SCHEMA_VERSION,
        play_duration_ms=play_duration_ms,
        account_created_ms=account_created_ms,
    )
    e.actor.account_id = account
    e.actor.ip = ip
    e.actor.device_id = device
    e.actor.asn = asn
    e.target.account_id = target_account
    e.target.content_id = target_content
    e.content.url_count = url_count
    e.content.content_hash = content_hash
    return e


def random_stream(
    seed: int,
    n: int,
    *,
    n_accounts: int = 5,
    n_ips: int = 4,
    steps_ms: tuple[int, ...] = (0, 1, 10, 100, 1_000, 5_000, 30_000, 200_000),
    disorder_ms: int = 0,
    disorder_fraction: float = 0.0,
) -> list[pb.Event]:
    """Random events of every type over a few entities, in arrival order.

    Event time advances by a random step from ``steps_ms``; a ``disorder_fraction`` of the events
    carry a time up to ``disorder_ms`` before the current clock (out-of-order arrival).
    """
    rng = random.Random(seed)
    t = T0_MS
    out: list[pb.Event] = []
    for i in range(n):
        t += rng.choice(steps_ms)
        tt = t - rng.randrange(disorder_ms + 1) if rng.random() < disorder_fraction else t
        out.append(
            make_event(
                f"e{seed}-{i}",
                max(1, tt),
                rng.randint(1, 11),
                account=f"a{rng.randrange(n_accounts)}",
                ip=f"10.0.0.{rng.randrange(n_ips)}",
                device=rng.choice(["", "d1", "d2", "d3"]),
                asn=rng.choice([0, 64500, 64501]),
                target_account=rng.choice(["", "x1", "x2"]),
                target_content=rng.choice(["", "c1", "c2", "c3"]),
                play_duration_ms=rng.choice([0, 5_000, 31_000, 33_500, 120_000]),
                url_count=rng.randrange(3),
                content_hash=rng.choice(["", "h1", "h2"]),
                account_created_ms=rng.choice([0, T0_MS - 86_400_000]),
            )
        )
    return out


def steady_stream(
    seed: int,
    n: int,
    *,
    groups: int,
    events_per_window: int,
    window_ms: int,
    start_ms: int = T0_MS,
) -> list[pb.Event]:
    """Plays from ``groups`` fixed (account, ip, device, track) tuples, round robin, evenly spaced so
    each key holds about ``events_per_window`` events in a window of ``window_ms``."""
    rng = random.Random(seed)
    step = max(1, window_ms // (events_per_window * groups))
    out: list[pb.Event] = []
    for i in range(n):
        g = i % groups
        out.append(
            make_event(
                f"s{seed}-{i}",
                start_ms + i * step,
                pb.Event.PLAY,
                account=f"acct-{g}",
                ip=f"10.1.{g // 250}.{g % 250}",
                device=f"dev-{g}",
                asn=64_512 + g % 7,
                target_account=f"artist-{g % 11}",
                target_content=f"track-{g}",
                play_duration_ms=rng.choice((31_000, 95_000, 180_000)),
            )
        )
    return out
