"""Organic platform traffic: a population of accounts, a track catalogue, and listening sessions.

Sessions start as a Poisson process whose rate follows the diurnal curve; each session is a run of
plays with realistic durations (skips and full listens) with the odd like, repost, follow, comment,
message, report or upload in between, sometimes opened by a login that rarely fails first. Sessions
already in progress at the start are resumed mid-play, so the rate is steady from the first second.
Account attributes are hashes of the account index (drawn vectorised for the whole population), so
they do not depend on the order in which accounts are first used.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from streamwarden.operators.traffic import ids
from streamwarden.operators.traffic.spec import TrafficSpec
from streamwarden.operators.traffic.wire import (
    actor_chunk,
    content_chunk,
    created_field,
    created_fields,
    target_chunk,
)
from streamwarden.schemas import streamwarden_pb2 as pb

Draft = tuple[int, int, bytes, bytes, bytes, int, bytes, str]
"""An event before it gets an id: (event_time_ms, type, actor, target, content, play_duration_ms,
created, actor account id). ``actor``/``target``/``content``/``created`` are encoded fields
(see ``wire``), built once per session and shared by its events."""

ORGANIC_SOURCE = 0
DAY_MS = 86_400_000

SIGNUP: int = pb.Event.SIGNUP
LOGIN: int = pb.Event.LOGIN
LOGIN_FAILED: int = pb.Event.LOGIN_FAILED
PLAY: int = pb.Event.PLAY
LIKE: int = pb.Event.LIKE
REPOST: int = pb.Event.REPOST
FOLLOW: int = pb.Event.FOLLOW
COMMENT: int = pb.Event.COMMENT
MESSAGE: int = pb.Event.MESSAGE
UPLOAD: int = pb.Event.UPLOAD
REPORT: int = pb.Event.REPORT

# (user agent, mobile, weight)
USER_AGENTS: tuple[tuple[str, bool, float], ...] = (
    ("SoundApp/7.12.0 (iPhone; iOS 17.2; Scale/3.00)", True, 0.22),
    ("SoundApp/7.11.1 (iPhone; iOS 16.7.2; Scale/2.00)", True, 0.08),
    ("SoundApp/7.12.0 (Linux; Android 14; Pixel 8)", True, 0.10),
    ("SoundApp/7.10.3 (Linux; Android 13; SM-S911B)", True, 0.14),
    ("SoundApp/7.9.0 (Linux; Android 12; Redmi Note 11)", True, 0.08),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        False,
        0.16,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.2 Safari/605.1.15",
        False,
        0.09,
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", False, 0.04),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", False, 0.05),
    ("SoundDesktop/2.4.1 (Windows 10.0.19045)", False, 0.04),
)

# Residential ISPs: (asn, country, weight).
HOME_ISPS: tuple[tuple[int, str, float], ...] = (
    (7922, "US", 0.10), (7018, "US", 0.06), (701, "US", 0.04), (20115, "US", 0.05),
    (2856, "GB", 0.04), (5089, "GB", 0.03), (3320, "DE", 0.05), (3209, "DE", 0.03),
    (3215, "FR", 0.04), (12322, "FR", 0.03), (28573, "BR", 0.04), (18881, "BR", 0.03),
    (4713, "JP", 0.04), (2516, "JP", 0.03), (24560, "IN", 0.03), (9498, "IN", 0.02),
    (812, "CA", 0.02), (1221, "AU", 0.02), (1136, "NL", 0.02), (3352, "ES", 0.02),
    (8151, "MX", 0.02), (3301, "SE", 0.01), (5617, "PL", 0.01), (29465, "NG", 0.01),
)  # fmt: skip
# Mobile carriers (their IPs are CGNAT pools shared by many subscribers): (asn, country).
MOBILE_CARRIERS: tuple[tuple[int, str], ...] = (
    (21928, "US"), (6167, "US"), (20057, "US"), (12576, "GB"), (6805, "DE"), (51207, "FR"),
    (26615, "BR"), (9605, "JP"), (55836, "IN"), (577, "CA"), (4804, "AU"),
)  # fmt: skip
# Hosting/proxy ASNs that organic users never come from.
HOSTING_ASNS: tuple[tuple[int, str], ...] = (
    (14061, "US"), (16276, "FR"), (24940, "DE"), (20473, "US"),
)  # fmt: skip
SIGNUP_FARM_ASNS: tuple[tuple[int, str], ...] = (
    (9009, "GB"), (62240, "GB"), (212238, "GB"), (51167, "DE"),
)  # fmt: skip

BUCKET_MS = 1_000
"""Width of one calendar-queue bucket (see ``Organic.drafts``)."""
CGNAT_POOL = 64
"""IPs per mobile carrier's CGNAT pool."""

_UA_CUM = list(accumulate(w for _, _, w in USER_AGENTS))
_HOME_CUM = list(accumulate(w for _, _, w in HOME_ISPS))
_CARRIER_BY_COUNTRY = {country: k for k, (_, country) in enumerate(MOBILE_CARRIERS)}

# Salts that keep the per-entity hashes of different attributes independent.
_S_CREATED, _S_NDEV, _S_HOME, _S_ISP, _S_UA = 0x11, 0x12, 0x13, 0x14, 0x15

# Session shape.
P_LOGIN = 0.3
P_LOGIN_FAIL = 0.04
PLAYS_PER_SESSION = 8.0
P_SKIP = 0.3
SKIP_MS = (2_000, 30_000)
FULL_MEDIAN_MS = 190_000.0
FULL_SIGMA = 0.35
FULL_CLIP_MS = (31_000, 900_000)
GAP_MS = (300, 3_000)
# At most one interaction per play, chosen by one draw: (cumulative probability, type).
EXTRAS: tuple[tuple[float, int], ...] = tuple(
    zip(
        accumulate((0.06, 0.012, 0.015, 0.01, 0.006, 0.001)),
        (LIKE, REPOST, FOLLOW, COMMENT, MESSAGE, REPORT),
        strict=True,
    )
)
P_UPLOAD_ARTIST = 0.02
_SKIP_MEAN_MS = sum(SKIP_MS) / 2.0
_FULL_MEAN_MS = FULL_MEDIAN_MS * math.exp(FULL_SIGMA**2 / 2.0)
P_SKIP_IN_PROGRESS = P_SKIP * _SKIP_MEAN_MS / (P_SKIP * _SKIP_MEAN_MS + (1.0 - P_SKIP) * _FULL_MEAN_MS)
"""Share of skips among plays in progress at an instant (plays weighted by their length)."""
ARTIST_SHARE = 0.05
MOBILE_CGNAT_SHARE = 0.6


def pick(cum: Sequence[float], u: float) -> int:
    """Index chosen by ``u`` in [0, 1) from cumulative weights (never past the end, whatever the rounding)."""
    return bisect_left(cum, u * cum[-1])


def weighted_stream(cum: Sequence[float], seed: int, batch: int = 4096) -> Iterator[int]:
    """Endless indices drawn with the cumulative weights ``cum``, in seeded vectorised batches."""
    rng = np.random.default_rng(seed)
    cum_array = np.asarray(cum)
    total = cum_array[-1]
    while True:
        yield from np.searchsorted(cum_array, rng.random(batch) * total, side="left").tolist()


def play_durations(seed: int, batch: int = 4096) -> Iterator[int]:
    """Endless play lengths in ms: a share ``P_SKIP`` of skips (uniform in ``SKIP_MS``), the rest full
    listens (log-normal around ``FULL_MEDIAN_MS``, clipped to ``FULL_CLIP_MS``); seeded, vectorised."""
    rng = np.random.default_rng(seed)
    while True:
        skip = rng.random(batch) < P_SKIP
        skips = SKIP_MS[0] + (rng.random(batch) * (SKIP_MS[1] - SKIP_MS[0])).astype(np.int64)
        fulls = rng.lognormal(math.log(FULL_MEDIAN_MS), FULL_SIGMA, batch).astype(np.int64)
        yield from np.where(skip, skips, np.clip(fulls, *FULL_CLIP_MS)).tolist()


def diurnal_factor(spec: TrafficSpec, t_ms: int) -> float:
    """Organic rate multiplier at ``t_ms``: 1 + amplitude * cos(2 pi (hour - peak) / 24); mean 1 over a day."""
    hour = (t_ms % DAY_MS) / 3_600_000.0
    return 1.0 + spec.diurnal_amplitude * math.cos(2.0 * math.pi * (hour - spec.diurnal_peak_hour_utc) / 24.0)


class OrganicAccount(NamedTuple):
    """One organic account's fixed attributes (a view over ``World``'s columns)."""

    account_index: int
    account_id: str
    created_ms: int
    device_ids: tuple[str, ...]
    user_agents: tuple[str, ...]
    home_ip: str
    home_asn: int
    country: str
    carrier: int
    is_artist: bool


def ua_for(h: int) -> tuple[str, bool]:
    """A user agent (and whether it is mobile) for a hash value."""
    ua, mobile, _ = USER_AGENTS[pick(_UA_CUM, ids.unit(h))]
    return ua, mobile


_HOME_CUM_ARRAY = np.array(_HOME_CUM)
_UA_CUM_ARRAY = np.array(_UA_CUM)
MAX_DEVICES = 3


class World:
    """The organic population (columns indexed by account) and the track catalogue.

    Attributes of the accounts that exist at the start are drawn vectorised from per-account hashes;
    accounts that sign up during the run are appended with the same code on a one-element array.
    """

    def __init__(self, spec: TrafficSpec) -> None:
        self.spec = spec
        self.salt = ids.mix64(spec.seed ^ 0x5EED)
        self.ids = ids.IdSpace(spec.seed)
        self.n_accounts = spec.organic_accounts
        self.n_artists = max(1, int(spec.organic_accounts * ARTIST_SHARE))
        self.n_home_ips = max(1, int(spec.organic_accounts * 0.85))
        self.n_tracks = spec.tracks
        # Activity (sessions per account) and track popularity are Zipf-like by index; ids are hashed,
        # so the index order leaks nowhere.
        self.account_cum: list[float] = np.cumsum(np.arange(10.0, self.n_accounts + 10.0) ** -0.8).tolist()
        self.track_cum: list[float] = np.cumsum(1.0 / np.arange(3.0, self.n_tracks + 3.0)).tolist()
        self.account_ids: list[str] = []
        self.created_ms: list[int] = []
        self.created_fields: list[bytes] = []  # encoded Event.account_created_ms, per account
        self.n_devices: list[int] = []
        self.ua_index: list[int] = []  # MAX_DEVICES per account
        self.home_index: list[int] = []  # index of the account's home IP (households share some)
        self.home_asn: list[int] = []
        self.country: list[str] = []
        self.carrier: list[int] = []
        self._append(np.arange(self.n_accounts, dtype=np.uint64), None)
        self.cgnat_ips = [
            self.ids.ips(np.arange(CGNAT_POOL, dtype=np.uint64) + np.uint64((1 << 30) + carrier * 4096))
            for carrier in range(len(MOBILE_CARRIERS))
        ]
        self._track_targets: dict[int, bytes] = {}

    def _u(self, salt: int, index: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
        return ids.unit_array(np.uint64(self.salt ^ (salt << 40)) ^ index)

    def _append(self, index: npt.NDArray[np.uint64], created_ms: int | None) -> None:
        if created_ms is None:
            age_days = 1.0 - np.log1p(-self._u(_S_CREATED, index)) * 600.0
            created = self.spec.start_ms - (age_days * DAY_MS).astype(np.int64)
            self.created_ms.extend(created.tolist())
            self.created_fields.extend(created_fields(created))
        else:
            self.created_ms.extend([created_ms] * len(index))
            self.created_fields.extend([created_field(created_ms)] * len(index))
        u_dev = self._u(_S_NDEV, index)
        self.n_devices.extend(np.where(u_dev < 0.7, 1, np.where(u_dev < 0.95, 2, 3)).tolist())
        slots = (index[:, None] * np.uint64(4) + np.arange(MAX_DEVICES, dtype=np.uint64)).ravel()
        u_ua = self._u(_S_UA, slots)
        self.ua_index.extend(np.searchsorted(_UA_CUM_ARRAY, u_ua * _UA_CUM[-1], side="left").tolist())
        home = (self._u(_S_HOME, index) * self.n_home_ips).astype(np.uint64)
        isp = np.searchsorted(_HOME_CUM_ARRAY, self._u(_S_ISP, home) * _HOME_CUM[-1], side="left").tolist()
        self.home_asn.extend(HOME_ISPS[k][0] for k in isp)
        countries = [HOME_ISPS[k][1] for k in isp]
        self.country.extend(countries)
        self.carrier.extend(_CARRIER_BY_COUNTRY.get(c, -1) for c in countries)
        self.home_index.extend(home.tolist())
        self.account_ids.extend(self.ids.accounts(ORGANIC_SOURCE, index))

    def add_account(self, created_ms: int) -> int:
        """Append an account that signs up at ``created_ms``; returns its index."""
        i = len(self.account_ids)
        self._append(np.array([i], dtype=np.uint64), created_ms)
        return i

    def device_id(self, i: int, k: int) -> str:
        """Device ``k`` of account ``i``."""
        return self.ids.device(ORGANIC_SOURCE, i * 4 + k)

    def home_ip(self, i: int) -> str:
        """The home IP of account ``i``."""
        return self.ids.ip(self.home_index[i])

    def account(self, i: int) -> OrganicAccount:
        """All attributes of account ``i`` in one value (the hot path reads the columns directly)."""
        n = self.n_devices[i]
        return OrganicAccount(
            account_index=i,
            account_id=self.account_ids[i],
            created_ms=self.created_ms[i],
            device_ids=tuple(self.device_id(i, k) for k in range(n)),
            user_agents=tuple(USER_AGENTS[self.ua_index[i * MAX_DEVICES + k]][0] for k in range(n)),
            home_ip=self.home_ip(i),
            home_asn=self.home_asn[i],
            country=self.country[i],
            carrier=self.carrier[i],
            is_artist=i < self.n_artists,
        )

    def cgnat_ip(self, carrier: int, j: int) -> str:
        """IP ``j`` of the CGNAT pool of mobile carrier ``carrier``."""
        return self.cgnat_ips[carrier][j]

    def artist_index(self, track: int) -> int:
        return ids.mix64(self.salt ^ track) % self.n_artists

    def track_target(self, track: int) -> bytes:
        """Encoded target (artist, track) of organic track ``track``."""
        chunk = self._track_targets.get(track)
        if chunk is None:
            artist = self.account_ids[self.artist_index(track)]
            chunk = target_chunk(artist, self.ids.content(ORGANIC_SOURCE, track))
            self._track_targets[track] = chunk
        return chunk

    def popular_track(self, rng: random.Random, top: int = 100) -> int:
        """A track among the ``top`` most popular, weighted by popularity."""
        return pick(self.track_cum[: min(top, self.n_tracks)], rng.random())


def _session_shape() -> tuple[float, float]:
    """(mean events per session, mean session length ms) of a fresh session, from the constants above."""
    p_extra = EXTRAS[-1][0] + ARTIST_SHARE * P_UPLOAD_ARTIST
    events = PLAYS_PER_SESSION * (1.0 + p_extra) + P_LOGIN * (1.0 + P_LOGIN_FAIL)
    play_mean = P_SKIP * _SKIP_MEAN_MS + (1.0 - P_SKIP) * _FULL_MEAN_MS + sum(GAP_MS) / 2.0
    login_ms = P_LOGIN * (P_LOGIN_FAIL * 8_500.0 + 2_750.0)
    return events, PLAYS_PER_SESSION * play_mean + login_ms


class Organic:
    """The organic event stream: an endless iterator of drafts in event-time order."""

    def __init__(self, spec: TrafficSpec, world: World) -> None:
        self.spec = spec
        self.world = world
        self.rng = random.Random(f"{spec.seed}/organic")
        self.busy: set[int] = set()
        self.events_per_session, self.session_ms = _session_shape()
        self._hashes = 0
        self._uploads = 0
        self._signups = 0
        self._p_continue = 1.0 - 1.0 / PLAYS_PER_SESSION
        self._end_ms = spec.end_ms
        # Weighted picks (which account starts a session, which track plays next) come pre-drawn in
        # vectorised batches from their own seeded streams: a bisect per pick was a tenth of the cost.
        self._accounts = weighted_stream(world.account_cum, ids.mix64(spec.seed ^ 0xACC0))
        self._tracks = weighted_stream(world.track_cum, ids.mix64(spec.seed ^ 0x7AC5))
        self._durations = play_durations(ids.mix64(spec.seed ^ 0xD0D0))

    def _sessions_per_ms(self, t_ms: int) -> float:
        rate_per_s = self.spec.organic_events_per_s * diurnal_factor(self.spec, t_ms)
        return rate_per_s / self.events_per_session / 1000.0

    def _pick_account(self) -> int:
        """An idle account, weighted by activity (a busy heavy user gets a second session only rarely)."""
        draw = self._accounts
        i = next(draw)
        for _ in range(8):
            if i not in self.busy:
                break
            i = next(draw)
        self.busy.add(i)
        return i

    def _next_hash(self) -> str:
        self._hashes += 1
        return self.world.ids.content_hash(ORGANIC_SOURCE, self._hashes)

    def _text(self, median: float) -> bytes:
        rng = self.rng
        length = max(1, min(2000, int(rng.lognormvariate(math.log(median), 0.8))))
        urls = 1 if rng.random() < 0.03 else 0
        mentions = 0 if rng.random() < 0.85 else 1 + int(rng.random() * 2)
        return content_chunk(length, urls, mentions, self._next_hash())

    def _extra(
        self, u: float, t: int, i: int, track: int, target: bytes, actor: bytes, created: bytes, aid: str
    ) -> Draft:
        """The interaction that ``u`` picks (see ``EXTRAS``) by account ``i`` at ``t``, during a play of
        ``track``."""
        kind = UPLOAD
        for p, k in EXTRAS:
            if u < p:
                kind = k
                break
        world = self.world
        content = b""
        if kind == FOLLOW:
            target = target_chunk(world.account_ids[world.artist_index(track)])
        elif kind == COMMENT:
            content = self._text(27.0)
        elif kind == MESSAGE:
            friend = int(self.rng.random() * world.n_accounts)
            target, content = target_chunk(world.account_ids[friend]), self._text(40.0)
        elif kind == REPORT:
            target = world.track_target(int(self.rng.random() * world.n_tracks))
        elif kind == UPLOAD:  # a new track of this artist
            self._uploads += 1
            new_track = world.ids.content(ORGANIC_SOURCE, world.n_tracks + self._uploads)
            target, content = target_chunk(world.account_ids[i], new_track), self._text(80.0)
        return (t, kind, actor, target, content, 0, created, aid)

    def session(self, i: int, t: int, *, resume: bool = False) -> Iterator[Draft]:
        """One listening session of account ``i`` from ``t``; ``resume`` = already under way (mid-play,
        no login)."""
        rng = self.rng
        rand = rng.random
        world = self.world
        k = int(rand() * world.n_devices[i])
        ua, mobile, _ = USER_AGENTS[world.ua_index[i * MAX_DEVICES + k]]
        carrier = world.carrier[i]
        if mobile and carrier >= 0 and rand() < MOBILE_CGNAT_SHARE:
            ip = world.cgnat_ips[carrier][int(rand() * CGNAT_POOL)]
            asn = MOBILE_CARRIERS[carrier][0]
        else:
            ip, asn = world.home_ip(i), world.home_asn[i]
        aid = world.account_ids[i]
        device = world.device_id(i, k)
        actor = actor_chunk(aid, ip, device, asn, world.country[i], ua)
        created = world.created_fields[i]
        if not resume and rand() < P_LOGIN:
            if rand() < P_LOGIN_FAIL:
                yield (t, LOGIN_FAILED, actor, b"", b"", 0, created, aid)
                t += 2_000 + int(rand() * 13_000)
            yield (t, LOGIN, actor, b"", b"", 0, created, aid)
            t += 500 + int(rand() * 4_500)
        next_track = self._tracks
        targets = world._track_targets
        track_target = world.track_target
        skip_lo, skip_span = SKIP_MS[0], SKIP_MS[1] - SKIP_MS[0]
        clip_lo, clip_hi = FULL_CLIP_MS
        mu, sigma, play = math.log(FULL_MEDIAN_MS), FULL_SIGMA, PLAY
        gauss, exp = rng.gauss, math.exp
        gap_lo, gap_span = GAP_MS[0], GAP_MS[1] - GAP_MS[0]
        upload_p = EXTRAS[-1][0] + (P_UPLOAD_ARTIST if i < world.n_artists else 0.0)
        p_continue = self._p_continue
        end_ms = self._end_ms
        if resume:
            # A play caught under way is length-biased (long plays are likelier to be in progress) and
            # has a uniform share of it left; its interactions fall uniformly within the whole play, so
            # those in the part already over happened before the run.
            track = next(next_track)
            target = targets.get(track) or track_target(track)
            if rand() < P_SKIP_IN_PROGRESS:
                dur = skip_lo + int(rand() * skip_span)
            else:
                dur = min(clip_hi, max(clip_lo, int(exp(mu + sigma * sigma + sigma * gauss()))))
            left = int(dur * rand())
            u = rand()
            if u < upload_p:
                offset = int(dur * rand()) - (dur - left)
                if offset >= 0:
                    yield self._extra(u, t + offset, i, track, target, actor, created, aid)
            t += left
            yield (t, play, actor, target, b"", dur, created, aid)
            if rand() >= p_continue:
                return
            t += gap_lo + int(rand() * gap_span)
            if t >= end_ms:  # nothing more of this session falls inside the run
                return
        next_duration = self._durations
        while True:
            track = next(next_track)
            target = targets.get(track) or track_target(track)
            dur = next(next_duration)
            u = rand()
            if u < upload_p:
                yield self._extra(u, t + int(dur * rand()), i, track, target, actor, created, aid)
            t += dur
            yield (t, play, actor, target, b"", dur, created, aid)
            if rand() >= p_continue:
                return
            t += gap_lo + int(rand() * gap_span)
            if t >= end_ms:  # nothing more of this session falls inside the run
                return

    def drafts(self) -> Iterator[Draft]:
        """Organic drafts in event-time order, without end (the caller stops at the run's end).

        The pending next draft of every live session waits in a calendar queue: one list per second of
        event time, turned into a small heap when its second comes. Tens of thousands of sessions are
        live at once, and one big heap of them was the generator's main cost (cache misses).
        """
        spec, world, rng = self.spec, self.world, self.rng
        start = spec.start_ms
        width = BUCKET_MS
        buckets: dict[int, list[tuple[int, int, Draft, Iterator[Draft], int]]] = {}
        current: list[tuple[int, int, Draft, Iterator[Draft], int]] = []  # heap of the current second
        current_bucket = start // width
        seq = 0
        heappush, heappop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace

        def push(gen: Iterator[Draft], index: int) -> None:
            nonlocal seq
            first = next(gen, None)
            if first is None:
                self.busy.discard(index)
                return
            seq += 1
            entry = (first[0], seq, first, gen, index)
            b = first[0] // width
            if b <= current_bucket:
                heappush(current, entry)
            else:
                buckets.setdefault(b, []).append(entry)

        if spec.organic_events_per_s > 0:
            in_progress = round(self._sessions_per_ms(start) * self.session_ms)
            for _ in range(in_progress):
                i = self._pick_account()
                push(self.session(i, start, resume=True), i)
        inf = math.inf
        next_spawn: float = inf
        if spec.organic_events_per_s > 0:
            next_spawn = start + rng.expovariate(self._sessions_per_ms(start))
        signups_per_ms = spec.organic_signups_per_s / 1000.0
        next_signup: float = start + rng.expovariate(signups_per_ms) if signups_per_ms > 0 else inf
        while True:
            special = next_spawn if next_spawn <= next_signup else next_signup
            if current:
                top = current[0]
                if top[0] <= special:
                    _, _, draft, gen, index = top
                    yield draft
                    nxt = next(gen, None)
                    if nxt is None:
                        heappop(current)
                        self.busy.discard(index)
                    else:
                        seq += 1
                        b = nxt[0] // width
                        if b <= current_bucket:
                            heapreplace(current, (nxt[0], seq, nxt, gen, index))
                        else:
                            heappop(current)
                            entry = (nxt[0], seq, nxt, gen, index)
                            later = buckets.get(b)
                            if later is None:
                                buckets[b] = [entry]
                            else:
                                later.append(entry)
                    continue
            elif buckets:
                b = current_bucket + 1 if current_bucket + 1 in buckets else min(buckets)
                if b * width <= special:
                    current_bucket = b
                    current = buckets.pop(b)
                    heapq.heapify(current)
                    continue
            elif special == inf:
                return
            if next_spawn <= next_signup:
                t = int(next_spawn)
                i = self._pick_account()
                push(self.session(i, t), i)
                next_spawn += rng.expovariate(self._sessions_per_ms(t))
            else:
                t = int(next_signup)
                i = world.add_account(created_ms=t)
                self._signups += 1
                ua, _, _ = USER_AGENTS[world.ua_index[i * MAX_DEVICES]]
                aid = world.account_ids[i]
                actor = actor_chunk(
                    aid, world.home_ip(i), world.device_id(i, 0), world.home_asn[i], world.country[i], ua
                )
                yield (t, SIGNUP, actor, b"", b"", 0, created_field(t), aid)
                self.busy.add(i)
                push(self.session(i, t + 5_000 + int(rng.random() * 55_000)), i)
                next_signup += rng.expovariate(signups_per_ms)
