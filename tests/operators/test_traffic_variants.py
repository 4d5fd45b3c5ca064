"""Adversarial variants and false-positive traps: deterministic by (split, seed), knobs inside their
split's ranges, traps labeled benign with organic actors, first_ms = the subject's own first event."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.traffic import SCENARIO_NAMES, iter_traffic, labels
from streamwarden.operators.traffic.organic import World
from streamwarden.operators.traffic.spec import TRAP_NAMES
from streamwarden.operators.traffic.variants import KNOBS, describe, variant_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event

SHORT_S = 600.0


def _digest(spec) -> str:
    return hashlib.sha256(b"".join(r.payload for r in iter_traffic(spec))).hexdigest()


@pytest.fixture(scope="module")
def outside():
    spec = variant_spec("outside", 301, duration_s=SHORT_S)
    records = list(iter_traffic(spec))
    return spec, records, labels(spec)


def test_same_split_and_seed_same_bytes_other_seed_other_bytes():
    a = variant_spec("unseen", 300, duration_s=300.0)
    assert a == variant_spec("unseen", 300, duration_s=300.0)
    assert _digest(a) == _digest(variant_spec("unseen", 300, duration_s=300.0))
    assert describe(a) != describe(variant_spec("unseen", 301, duration_s=300.0))


@pytest.mark.parametrize("split", ["train", "outside"])
def test_knobs_fall_in_their_splits_ranges(split):
    for seed in range(5):
        drawn = describe(variant_spec(split, seed))
        for family, knobs in KNOBS.items():
            for name, knob in knobs.items():
                if name in ("duration_s", "devices_per_account"):
                    continue  # clipped to the run / turned into a device count
                value = drawn[family][name]
                r = knob.outside if split == "outside" else knob.train
                if isinstance(r[0], str):
                    assert value in r, (family, name, value)
                else:
                    assert float(r[0]) <= value <= float(r[1]), (family, name, value)


def test_outside_ranges_do_not_overlap_training_ranges():
    for family, knobs in KNOBS.items():
        for name, knob in knobs.items():
            if isinstance(knob.train[0], str):
                assert not set(knob.train) & set(knob.outside), (family, name)
            elif knob.train != knob.outside:
                lo, hi = float(knob.train[0]), float(knob.train[1])
                olo, ohi = float(knob.outside[0]), float(knob.outside[1])
                assert ohi < lo or olo > hi or (lo == hi and olo > hi), (family, name)


def test_families_restrict_what_happens():
    spec = variant_spec("train", 100, families=["spam_burst"], duration_s=300.0)
    assert {x.scenario for x in labels(spec) if not x.benign} == {"spam_burst"}
    with pytest.raises(ConfigError):
        variant_spec("train", 1, families=["no_such_family"])
    with pytest.raises(ConfigError):
        variant_spec("nope", 1)  # type: ignore[arg-type]


def test_traps_are_benign_organic_accounts_and_tagged_organic(outside):
    spec, records, truth = outside
    benign = [x for x in truth if x.benign]
    assert {x.scenario for x in benign} == set(TRAP_NAMES)
    assert {x.scenario for x in truth if not x.benign} == set(SCENARIO_NAMES)
    organic_ids = set(World(spec).account_ids)
    trap_accounts = {x.entity_id for x in benign if x.entity_kind == "account"}
    assert trap_accounts and trap_accounts <= organic_ids
    # Trap events carry no scenario tag: only the labels tell them apart.
    seen_accounts = set()
    for r in records:
        e = decode_event(r.payload)
        if isinstance(e, pb.Event) and e.actor.account_id in trap_accounts and r.scenario is None:
            seen_accounts.add(e.actor.account_id)
    assert seen_accounts == trap_accounts


def test_first_ms_is_each_subjects_own_first_event(outside):
    _, records, truth = outside
    first: dict[tuple[str, str, str], int] = {}
    for r in records:
        if r.scenario is None or r.malformed is not None:
            continue
        e = decode_event(r.payload)
        assert isinstance(e, pb.Event)
        for kind, value in (
            ("account", e.actor.account_id),
            ("ip", e.actor.ip),
            ("device", e.actor.device_id),
        ):
            key = (r.scenario, kind, value)
            first[key] = min(first.get(key, e.event_time_ms), e.event_time_ms)
    checked = defaultdict(int)
    for x in truth:
        key = (x.scenario, x.entity_kind, x.entity_id)
        if not x.benign and key in first:
            assert x.onset_ms == first[key], x
            assert x.start_ms <= x.onset_ms < x.end_ms
            checked[x.scenario] += 1
    assert set(checked) == set(SCENARIO_NAMES)


def test_evaluation_only_traps_never_reach_training_or_thresholds():
    for split in ("train", "holdout"):
        spec = variant_spec(split, 100, duration_s=SHORT_S)
        assert not spec.traps.album_fans.enabled, split
        assert spec.traps.power_user.enabled
    for split in ("unseen", "outside"):
        assert variant_spec(split, 300, duration_s=SHORT_S).traps.album_fans.enabled, split


def test_album_fans_play_one_artists_tracks_at_organic_lengths(outside):
    _, records, truth = outside
    fans = {x.entity_id for x in truth if x.scenario == "album_fans" and x.entity_kind == "account"}
    assert fans and all(x.benign for x in truth if x.scenario == "album_fans")
    album_tracks = {
        x.entity_id for x in truth if x.scenario == "album_fans" and x.entity_kind == "target_content"
    }
    artists_of: dict[str, set[str]] = defaultdict(set)
    durations = []
    for r in records:
        e = decode_event(r.payload)
        if not isinstance(e, pb.Event) or e.type != pb.Event.PLAY or e.target.content_id not in album_tracks:
            continue
        assert e.actor.account_id in fans
        artists_of[e.actor.account_id].add(e.target.account_id)
        durations.append(e.play_duration_ms)
    assert set(artists_of) == fans
    assert all(len(a) == 1 for a in artists_of.values())  # each fan plays one album
    # organic play lengths: mostly full listens, never a farm's stop just past 30 s as the rule
    full = sum(d >= 60_000 for d in durations)
    assert full / len(durations) >= 0.7
