"""The named abuse scenarios. Each builds time-sorted drafts inside its window and reports its cast:
exactly the entities its events use, by kind (victims such as spammed users or stuffed accounts are
not part of the cast). Scenario ``k`` (1-based, in ``SCENARIO_NAMES`` order) owns id space ``k``, so
its entities never collide with organic ones, and only the labels file tells them apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from streamwarden.operators.traffic import ids
from streamwarden.operators.traffic.labels import ENTITY_KINDS
from streamwarden.operators.traffic.organic import (
    COMMENT,
    DAY_MS,
    FOLLOW,
    HOME_ISPS,
    HOSTING_ASNS,
    LIKE,
    LOGIN,
    LOGIN_FAILED,
    MESSAGE,
    MOBILE_CARRIERS,
    PLAY,
    REPOST,
    SIGNUP,
    SIGNUP_FARM_ASNS,
    Draft,
    World,
    ua_for,
)
from streamwarden.operators.traffic.spec import SCENARIO_NAMES, TrafficSpec
from streamwarden.operators.traffic.wire import actor_chunk, content_chunk, created_field, target_chunk

_RESIDENTIAL = tuple((asn, country) for asn, country, _ in HOME_ISPS)
_K_IP_ASN = 7
_K_UA = 6


def source_of(name: str) -> int:
    """The id space of scenario ``name``."""
    return SCENARIO_NAMES.index(name) + 1


@dataclass(frozen=True, slots=True)
class Window:
    """A scenario's event-time span, [start_ms, end_ms)."""

    start_ms: int
    end_ms: int


def window_of(spec: TrafficSpec, name: str) -> Window | None:
    """The scenario's window clipped to the run; ``None`` if disabled or empty."""
    params = getattr(spec.scenarios, name)
    if not params.enabled:
        return None
    start = spec.start_ms + round(params.start_offset_s * 1000)
    end = min(spec.end_ms, start + round(params.duration_s * 1000))
    return Window(start, end) if end > start else None


class Cast:
    """Entities a scenario's drafts used, by kind, in first-use order, with each one's first event time."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, int]] = {k: {} for k in ENTITY_KINDS}

    def add(self, kind: str, *entity_ids: str, t: int) -> None:
        bucket = self._seen[kind]
        for entity_id in entity_ids:
            first = bucket.get(entity_id)
            if first is None or t < first:
                bucket[entity_id] = t

    def entities(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in self._seen.items() if v}

    def first_ms(self) -> dict[tuple[str, str], int]:
        """(kind, id) → the entity's first event time in the scenario."""
        return {(k, i): t for k, v in self._seen.items() for i, t in v.items()}


@dataclass(frozen=True, slots=True)
class _Ip:
    ip: str
    asn: int
    country: str


def _ips(world: World, source: int, n: int, asns: tuple[tuple[int, str], ...]) -> list[_Ip]:
    out = []
    for i in range(n):
        asn, country = asns[ids.mix64(ids.index64(source, _K_IP_ASN, i) ^ world.salt) % len(asns)]
        out.append(_Ip(world.ids.ip(ids.ip_index(source, i)), asn, country))
    return out


_K_AGED = 8


def pool(name: str) -> tuple[tuple[int, str], ...]:
    """The (ASN, country) pairs of an ``AsnPool``."""
    if name == "residential":
        return _RESIDENTIAL
    if name == "mobile":
        return MOBILE_CARRIERS
    if name == "hosting":
        return HOSTING_ASNS
    return SIGNUP_FARM_ASNS


def _account(
    spec: TrafficSpec, world: World, source: int, i: int, aged_fraction: float
) -> tuple[str, int | None]:
    """Account ``i`` of an attack: its own (``(id, None)``) or, for a share ``aged_fraction`` chosen by
    hash, an existing organic account with its history (``(id, created_ms)``)."""
    h = ids.mix64(ids.index64(source, _K_AGED, i) ^ world.salt)
    if aged_fraction > 0 and (h >> 11) * (1.0 / (1 << 53)) < aged_fraction:
        k = ids.mix64(h) % world.n_accounts
        return world.account_ids[k], world.created_ms[k]
    return world.ids.account(source, i), None


def _ua(spec: TrafficSpec, source: int, i: int) -> str:
    return ua_for(ids.mix64(spec.seed) ^ ids.index64(source, _K_UA, i))[0]


def _rng(spec: TrafficSpec, name: str) -> random.Random:
    return random.Random(f"{spec.seed}/{name}")


def _streaming_farm(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    """Accounts behind a few IPs loop the target tracks with plays just past 30 s."""
    p = spec.scenarios.streaming_farm
    s = source_of("streaming_farm")
    rng = _rng(spec, "streaming_farm")
    idsp = world.ids
    ips = _ips(world, s, p.ips, pool(p.asn_pool))
    artist = idsp.account(s, p.accounts)
    tracks = [idsp.content(s, j) for j in range(p.tracks)]
    targets = [target_chunk(artist, t) for t in tracks]
    mean_ms, jitter_ms = p.play_duration_s * 1000.0, p.play_jitter_s * 1000.0
    floor_ms = min(30_500, int(mean_ms))
    stagger_ms = min(30_000.0, (w.end_ms - w.start_ms) / 4.0)
    n_dev = p.devices or p.accounts
    drafts: list[Draft] = []
    for i in range(p.accounts):
        aid, aged_ms = _account(spec, world, s, i, p.aged_fraction)
        dev, net = idsp.device(s, i % n_dev), ips[i % len(ips)]
        actor = actor_chunk(aid, net.ip, dev, net.asn, net.country, _ua(spec, s, i))
        created = created_field(w.start_ms - int((1.0 + rng.random() * p.account_age_days_max) * DAY_MS))
        if aged_ms is not None:
            created = created_field(aged_ms)
        k = int(rng.random() * len(tracks))
        t = w.start_ms + int(rng.random() * stagger_ms)
        while True:
            dur = max(floor_ms, int(rng.gauss(mean_ms, jitter_ms)))
            if t + dur >= w.end_ms:
                break
            t += dur
            track = k % len(tracks)
            drafts.append((t, PLAY, actor, targets[track], b"", dur, created, aid))
            cast.add("account", aid, t=t)
            cast.add("device", dev, t=t)
            cast.add("ip", net.ip, t=t)
            cast.add("target_content", tracks[track], t=t)
            cast.add("target_account", artist, t=t)
            k += 1
            t += int(rng.expovariate(1.0 / (p.gap_s * 1000.0))) if p.gap_s > 0 else 0
    return drafts


def _spam_burst(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    """Fresh accounts post the same texts (URLs, mentions) as comments and messages through proxies."""
    p = spec.scenarios.spam_burst
    s = source_of("spam_burst")
    rng = _rng(spec, "spam_burst")
    idsp = world.ids
    ips = _ips(world, s, p.ips, pool(p.asn_pool))
    variants = []
    for v in range(p.content_variants):
        length = 60 + int(rng.random() * 140)
        urls = 1 + int(rng.random() * p.max_urls)
        mentions = 1 + int(rng.random() * p.max_mentions)
        variants.append(content_chunk(length, urls, mentions, idsp.content_hash(s, v)))
    span = w.end_ms - w.start_ms
    age_ms = p.account_age_max_s * 1000.0
    drafts: list[Draft] = []
    posts = 0
    for i in range(p.accounts):
        (aid, aged_ms), dev, ua = (
            _account(spec, world, s, i, p.aged_fraction),
            idsp.device(s, i),
            _ua(spec, s, i),
        )
        created = created_field(
            w.start_ms - int(min(age_ms, 60_000.0) + rng.random() * max(0.0, age_ms - 60_000.0))
        )
        if aged_ms is not None:
            created = created_field(aged_ms)
        for _ in range(p.posts_per_account):
            t = w.start_ms + int(rng.random() * span)
            net = ips[posts % len(ips)]  # rotating proxies
            posts += 1
            actor = actor_chunk(aid, net.ip, dev, net.asn, net.country, ua)
            content = variants[int(rng.random() * len(variants))]
            if rng.random() < p.message_fraction:
                victim = world.account_ids[int(rng.random() * world.n_accounts)]
                drafts.append((t, MESSAGE, actor, target_chunk(victim), content, 0, created, aid))
            else:
                target = world.track_target(world.popular_track(rng))
                drafts.append((t, COMMENT, actor, target, content, 0, created, aid))
            cast.add("account", aid, t=t)
            cast.add("device", dev, t=t)
            cast.add("ip", net.ip, t=t)
    return drafts


def _follow_farm(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    """Aged accounts behind a few IPs follow the same customers and like/repost their tracks, fast."""
    p = spec.scenarios.follow_farm
    s = source_of("follow_farm")
    rng = _rng(spec, "follow_farm")
    idsp = world.ids
    ips = _ips(world, s, p.ips, pool(p.asn_pool))
    customers = [idsp.account(s, p.accounts + k) for k in range(p.target_accounts)]
    tracks = [idsp.content(s, j) for j in range(p.target_tracks)]
    owners = [customers[j % len(customers)] for j in range(len(tracks))]
    follow_targets = [target_chunk(c) for c in customers]
    track_targets = [target_chunk(owners[j], t) for j, t in enumerate(tracks)]
    span = w.end_ms - w.start_ms
    gap_rate = 1.0 / (p.gap_s * 1000.0)
    drafts: list[Draft] = []
    for i in range(p.accounts):
        (aid, aged_ms), dev, net = (
            _account(spec, world, s, i, p.aged_fraction),
            idsp.device(s, i),
            ips[i % len(ips)],
        )
        actor = actor_chunk(aid, net.ip, dev, net.asn, net.country, _ua(spec, s, i))
        created = created_field(w.start_ms - int((30.0 + rng.random() * 370.0) * DAY_MS))
        if aged_ms is not None:
            created = created_field(aged_ms)
        order = list(range(len(customers)))
        rng.shuffle(order)
        plan: list[tuple[int, int]] = [(FOLLOW, k) for k in order]
        while len(plan) < p.actions_per_account:
            plan.append(
                (REPOST if rng.random() < p.repost_fraction else LIKE, int(rng.random() * len(tracks)))
            )
        t = w.start_ms + int(rng.random() * span * 0.6)
        for kind, k in plan[: p.actions_per_account]:
            if t >= w.end_ms:
                break
            if kind == FOLLOW:
                drafts.append((t, kind, actor, follow_targets[k], b"", 0, created, aid))
                cast.add("target_account", customers[k], t=t)
            else:
                drafts.append((t, kind, actor, track_targets[k], b"", 0, created, aid))
                cast.add("target_content", tracks[k], t=t)
                cast.add("target_account", owners[k], t=t)
            cast.add("account", aid, t=t)
            cast.add("device", dev, t=t)
            cast.add("ip", net.ip, t=t)
            t += 1 + int(rng.expovariate(gap_rate))
    return drafts


def _credential_stuffing(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    """A few IPs try logins on many accounts (real and unknown names); a few succeed."""
    p = spec.scenarios.credential_stuffing
    s = source_of("credential_stuffing")
    rng = _rng(spec, "credential_stuffing")
    idsp = world.ids
    ips = _ips(world, s, p.ips, pool(p.asn_pool))
    devices = [idsp.device(s, i) for i in range(p.devices)]
    uas = [_ua(spec, s, i) for i in range(p.devices)]
    rate_per_ms = p.attempts_per_s / 1000.0
    drafts: list[Draft] = []
    unknown = 0
    n = 0
    t = w.start_ms + rng.expovariate(rate_per_ms)
    while t < w.end_ms:
        net = ips[n % len(ips)]
        d = (n // len(ips) + n) % len(devices)
        n += 1
        if rng.random() < p.existing_account_fraction:
            victim = int(rng.random() * world.n_accounts)
            aid, created = world.account_ids[victim], created_field(world.created_ms[victim])
            kind = LOGIN if rng.random() < p.success_fraction else LOGIN_FAILED
        else:
            # A name from a leaked list with no account here: the platform knows no creation time.
            aid, created, kind = idsp.account(s, unknown), b"", LOGIN_FAILED
            unknown += 1
        actor = actor_chunk(aid, net.ip, devices[d], net.asn, net.country, uas[d])
        drafts.append((int(t), kind, actor, b"", b"", 0, created, aid))
        cast.add("ip", net.ip, t=int(t))
        cast.add("device", devices[d], t=int(t))
        t += rng.expovariate(rate_per_ms)
    return drafts


def signup_burst_asn(spec: TrafficSpec) -> tuple[int, str]:
    """The (ASN, country) the signup burst comes from; never an organic ASN."""
    return SIGNUP_FARM_ASNS[ids.mix64(spec.seed ^ 0xA5) % len(SIGNUP_FARM_ASNS)]


def _signup_burst(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    """Many signups from one ASN, each with a new device; some accounts log in and follow/like at once."""
    p = spec.scenarios.signup_burst
    s = source_of("signup_burst")
    rng = _rng(spec, "signup_burst")
    idsp = world.ids
    if p.asn_pool == "farm" and p.asns == 1:
        ips = [_Ip(idsp.ip(ids.ip_index(s, i)), *signup_burst_asn(spec)) for i in range(p.ips)]
    else:
        options = pool(p.asn_pool)
        first = ids.mix64(spec.seed ^ 0xA5) % len(options)
        chosen = tuple(options[(first + k) % len(options)] for k in range(min(p.asns, len(options))))
        ips = _ips(world, s, p.ips, chosen)
    span = w.end_ms - w.start_ms
    drafts: list[Draft] = []
    for i in range(p.accounts):
        aid, dev, net = idsp.account(s, i), idsp.device(s, i), ips[i % len(ips)]
        ip, asn, country = net.ip, net.asn, net.country
        t = w.start_ms + int(rng.random() * span)
        actor = actor_chunk(aid, ip, dev, asn, country, _ua(spec, s, i))
        drafts.append((t, SIGNUP, actor, b"", b"", 0, created_field(t), aid))
        cast.add("asn", str(asn), t=t)
        cast.add("account", aid, t=t)
        cast.add("device", dev, t=t)
        cast.add("ip", ip, t=t)
        if rng.random() >= p.activity_fraction:
            continue
        created = created_field(t)
        t += 2_000 + int(rng.random() * 18_000)
        if t >= w.end_ms:
            continue
        drafts.append((t, LOGIN, actor, b"", b"", 0, created, aid))
        for _ in range(1 + int(rng.random() * 3)):
            t += 1_000 + int(rng.random() * 9_000)
            if t >= w.end_ms:
                break
            track = world.popular_track(rng, top=1000)
            if rng.random() < 0.5:
                artist = world.account_ids[world.artist_index(track)]
                drafts.append((t, FOLLOW, actor, target_chunk(artist), b"", 0, created, aid))
            else:
                drafts.append((t, LIKE, actor, world.track_target(track), b"", 0, created, aid))
    return drafts


_BUILDERS: dict[str, Callable[[TrafficSpec, World, Window, Cast], list[Draft]]] = {
    "streaming_farm": _streaming_farm,
    "spam_burst": _spam_burst,
    "follow_farm": _follow_farm,
    "credential_stuffing": _credential_stuffing,
    "signup_burst": _signup_burst,
}
if tuple(_BUILDERS) != SCENARIO_NAMES:  # pragma: no cover - programmer error
    raise RuntimeError("scenario builders out of sync with ScenariosSpec")


@dataclass(frozen=True, slots=True)
class Built:
    """One scenario, ready to merge: its window, its cast and its drafts sorted by event time."""

    name: str
    source: int
    window: Window
    entities: dict[str, tuple[str, ...]]
    drafts: list[Draft]
    first_ms: dict[tuple[str, str], int]
    """(kind, id) → the entity's first event time in the scenario."""


def build(spec: TrafficSpec, name: str, world: World) -> Built | None:
    """Build scenario ``name``; ``None`` when it is disabled or its window is empty."""
    w = window_of(spec, name)
    if w is None:
        return None
    cast = Cast()
    drafts = _BUILDERS[name](spec, world, w, cast)
    drafts.sort(key=lambda d: d[0])
    return Built(name, source_of(name), w, cast.entities(), drafts, cast.first_ms())
