"""False-positive traps: benign traffic that looks like abuse on one signal, labeled *benign*.

- ``viral_release``: a new track that many organic fans play and like at once (per-track volume and
  account diversity like a streaming farm's target);
- ``cgnat`` / ``office``: organic accounts listening normally behind a few shared IPs (many accounts per
  IP, the odd failed login, like a farm's or a stuffer's IP);
- ``power_user``: heavy organic users with back-to-back plays, many skips and engagement;
- ``album_fans``: fans playing a new album through, one artist's tracks back to back at organic lengths,
  many fans at once and a share of them behind shared mobile gateways (a streaming farm's loop over one
  artist's tracks, but organic: the trap for rules that act on that loop without a model).

The actors are existing organic accounts (chosen by hash; they keep their organic history), so only the
labels tell trap subjects apart. Trap ``k`` (in ``TRAP_NAMES`` order) owns id space
``len(SCENARIO_NAMES) + 1 + k`` for the things it creates (the new track, the shared IPs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from streamwarden.operators.traffic import ids
from streamwarden.operators.traffic.organic import (
    FOLLOW,
    FULL_CLIP_MS,
    FULL_MEDIAN_MS,
    FULL_SIGMA,
    LIKE,
    LOGIN,
    LOGIN_FAILED,
    MAX_DEVICES,
    PLAY,
    SKIP_MS,
    USER_AGENTS,
    Draft,
    World,
)
from streamwarden.operators.traffic.scenarios import Built, Cast, Window, pool
from streamwarden.operators.traffic.spec import SCENARIO_NAMES, TRAP_NAMES, TrafficSpec
from streamwarden.operators.traffic.wire import actor_chunk, target_chunk

_K_PICK = 9
_K_TRAP_IP = 10


def source_of_trap(name: str) -> int:
    """The id space of trap ``name``."""
    return len(SCENARIO_NAMES) + 1 + TRAP_NAMES.index(name)


def trap_window(spec: TrafficSpec, name: str) -> Window | None:
    """The trap's window clipped to the run; ``None`` if disabled or empty."""
    params = getattr(spec.traps, name)
    if not params.enabled:
        return None
    start = spec.start_ms + round(params.start_offset_s * 1000)
    end = min(spec.end_ms, start + round(params.duration_s * 1000))
    return Window(start, end) if end > start else None


def _organic_accounts(world: World, source: int, n: int) -> list[int]:
    """``n`` distinct organic account indices chosen by hash (the whole population if n exceeds it)."""
    n = min(n, world.n_accounts)
    out: list[int] = []
    seen: set[int] = set()
    j = 0
    while len(out) < n:
        k = ids.mix64(ids.index64(source, _K_PICK, j) ^ world.salt) % world.n_accounts
        j += 1
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def _duration(rng: random.Random, skip_fraction: float) -> int:
    """An organic play length: a skip (2-30 s) or a full listen (log-normal around 190 s)."""
    if rng.random() < skip_fraction:
        return SKIP_MS[0] + int(rng.random() * (SKIP_MS[1] - SKIP_MS[0]))
    full = int(rng.lognormvariate(math.log(FULL_MEDIAN_MS), FULL_SIGMA))
    return min(FULL_CLIP_MS[1], max(FULL_CLIP_MS[0], full))


def _home_actor(world: World, i: int, ip: str | None = None, asn: int | None = None) -> bytes:
    ua = USER_AGENTS[world.ua_index[i * MAX_DEVICES]][0]
    return actor_chunk(
        world.account_ids[i],
        ip if ip is not None else world.home_ip(i),
        world.device_id(i, 0),
        asn if asn is not None else world.home_asn[i],
        world.country[i],
        ua,
    )


def _viral_release(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    p = spec.traps.viral_release
    s = source_of_trap("viral_release")
    rng = random.Random(f"{spec.seed}/trap/viral_release")
    artist = world.account_ids[ids.mix64(world.salt ^ s) % world.n_artists]
    track = world.ids.content(s, 0)
    target = target_chunk(artist, track)
    span = w.end_ms - w.start_ms
    drafts: list[Draft] = []
    for i in _organic_accounts(world, s, p.listeners):
        aid = world.account_ids[i]
        actor = _home_actor(world, i)
        created = world.created_fields[i]
        # Release-day shape: most listeners arrive early, then it tails off.
        t = w.start_ms + int(span * rng.random() ** 2)
        plays = (
            1 + int(rng.expovariate(1.0 / max(1e-9, p.plays_per_listener - 1.0)))
            if p.plays_per_listener > 1
            else 1
        )
        for _ in range(plays):
            dur = _duration(rng, 0.2)
            t += dur
            if t >= w.end_ms:
                break
            drafts.append((t, PLAY, actor, target, b"", dur, created, aid))
            for kind, entity in (("account", aid), ("target_content", track), ("target_account", artist)):
                cast.add(kind, entity, t=t)
            if rng.random() < p.like_fraction / plays:
                drafts.append((t + 1_000, LIKE, actor, target, b"", 0, created, aid))
            t += 300 + int(rng.random() * 3_000) + int(rng.expovariate(1.0 / 120_000.0))
    return drafts


def _trap_ips(world: World, source: int, n: int, asn_pool: str) -> list[tuple[str, int]]:
    """``n`` shared (IP, ASN) pairs of a trap's id space, ASNs drawn from ``asn_pool``."""
    asns = pool(asn_pool)
    nets = []
    for k in range(n):
        asn, _ = asns[ids.mix64(ids.index64(source, _K_TRAP_IP, k) ^ world.salt) % len(asns)]
        nets.append((world.ids.ip(ids.ip_index(source, k)), asn))
    return nets


def _shared_ip(name: str) -> Callable[[TrafficSpec, World, Window, Cast], list[Draft]]:
    def build(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
        p = getattr(spec.traps, name)
        s = source_of_trap(name)
        rng = random.Random(f"{spec.seed}/trap/{name}")
        nets = _trap_ips(world, s, p.ips, p.asn_pool)
        span = w.end_ms - w.start_ms
        drafts: list[Draft] = []
        for n, i in enumerate(_organic_accounts(world, s, p.accounts)):
            aid = world.account_ids[i]
            ip, asn = nets[n % len(nets)]
            actor = _home_actor(world, i, ip, asn)
            created = world.created_fields[i]
            for _ in range(p.sessions_per_account):
                t = w.start_ms + int(rng.random() * span)
                if rng.random() < p.failed_login_fraction:
                    drafts.append((t, LOGIN_FAILED, actor, b"", b"", 0, created, aid))
                    t += 3_000 + int(rng.random() * 10_000)
                    drafts.append((t, LOGIN, actor, b"", b"", 0, created, aid))
                for _ in range(1 + int(rng.expovariate(1.0 / 6.0))):
                    track = world.popular_track(rng, top=world.n_tracks)
                    target = world.track_target(track)
                    dur = _duration(rng, 0.3)
                    t += dur
                    if t >= w.end_ms:
                        break
                    drafts.append((t, PLAY, actor, target, b"", dur, created, aid))
                    if rng.random() < 0.05:
                        drafts.append((t + 500, LIKE, actor, target, b"", 0, created, aid))
                    cast.add("account", aid, t=t)
                    cast.add("ip", ip, t=t)
                    t += 300 + int(rng.random() * 2_700)
        return drafts

    return build


def _power_user(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    p = spec.traps.power_user
    s = source_of_trap("power_user")
    rng = random.Random(f"{spec.seed}/trap/power_user")
    drafts: list[Draft] = []
    for i in _organic_accounts(world, s, p.accounts):
        aid = world.account_ids[i]
        actor = _home_actor(world, i)
        created = world.created_fields[i]
        t = w.start_ms + int(rng.random() * 60_000)
        while True:
            track = world.popular_track(rng, top=world.n_tracks)
            target = world.track_target(track)
            dur = _duration(rng, p.skip_fraction)
            t += dur
            if t >= w.end_ms:
                break
            drafts.append((t, PLAY, actor, target, b"", dur, created, aid))
            cast.add("account", aid, t=t)
            if rng.random() < p.engage_fraction:
                if rng.random() < 0.7:
                    drafts.append((t + 800, LIKE, actor, target, b"", 0, created, aid))
                else:
                    artist = world.account_ids[world.artist_index(track)]
                    drafts.append((t + 800, FOLLOW, actor, target_chunk(artist), b"", 0, created, aid))
            t += 200 + int(rng.random() * 1_500)
    return drafts


_K_ALBUM_ARTIST = 11


def _album_fans(spec: TrafficSpec, world: World, w: Window, cast: Cast) -> list[Draft]:
    p = spec.traps.album_fans
    s = source_of_trap("album_fans")
    rng = random.Random(f"{spec.seed}/trap/album_fans")
    albums = []
    for a in range(p.artists):
        artist = world.account_ids[
            ids.mix64(ids.index64(s, _K_ALBUM_ARTIST, a) ^ world.salt) % world.n_artists
        ]
        tracks = [world.ids.content(s, a * p.album_tracks + j) for j in range(p.album_tracks)]
        albums.append((artist, [(track, target_chunk(artist, track)) for track in tracks]))
    gateways = _trap_ips(world, s, p.mobile_ips, "mobile")
    span = w.end_ms - w.start_ms
    drafts: list[Draft] = []
    for n, i in enumerate(_organic_accounts(world, s, p.fans)):
        aid = world.account_ids[i]
        on_mobile = rng.random() < p.mobile_share
        ip, asn = gateways[n % len(gateways)] if on_mobile else (world.home_ip(i), world.home_asn[i])
        actor = _home_actor(world, i, ip, asn)
        created = world.created_fields[i]
        artist, album = albums[n % len(albums)]
        # Release-day shape like the viral release; most fans start at the first track, some mid-album.
        t = w.start_ms + int(span * rng.random() ** 2)
        first = 0 if rng.random() < 0.7 else int(rng.random() * len(album))
        count = min(len(album) - first, 1 + int(rng.expovariate(1.0 / max(1e-9, p.tracks_per_fan - 1.0))))
        for track, target in album[first : first + count]:
            dur = _duration(rng, p.skip_fraction)
            t += dur
            if t >= w.end_ms:
                break
            drafts.append((t, PLAY, actor, target, b"", dur, created, aid))
            for kind, entity in (("account", aid), ("target_content", track), ("target_account", artist)):
                cast.add(kind, entity, t=t)
            if on_mobile:
                cast.add("ip", ip, t=t)
            if rng.random() < 0.05:
                drafts.append((t + 1_000, LIKE, actor, target, b"", 0, created, aid))
            t += 200 + int(rng.random() * 2_000)
    return drafts


_BUILDERS: dict[str, Callable[[TrafficSpec, World, Window, Cast], list[Draft]]] = {
    "viral_release": _viral_release,
    "cgnat": _shared_ip("cgnat"),
    "office": _shared_ip("office"),
    "power_user": _power_user,
    "album_fans": _album_fans,
}
if tuple(_BUILDERS) != TRAP_NAMES:  # pragma: no cover - programmer error
    raise RuntimeError("trap builders out of sync with TrapsSpec")


def build_trap(spec: TrafficSpec, name: str, world: World) -> Built | None:
    """Build trap ``name``; ``None`` when it is disabled or its window is empty."""
    w = trap_window(spec, name)
    if w is None:
        return None
    cast = Cast()
    drafts = _BUILDERS[name](spec, world, w, cast)
    drafts.sort(key=lambda d: d[0])
    return Built(name, source_of_trap(name), w, cast.entities(), drafts, cast.first_ms())
