"""Adversarial scenario families: every abuse scenario with its evasion knobs drawn per run from ranges.

A *variant* is one ``TrafficSpec``: organic background, every family once with knobs sampled for the
variant's seed, and every false-positive trap (``EVAL_ONLY_TRAPS`` only in the evaluation splits). Each knob has a **training range** and an **outside
range** beyond it in the evasive direction (lower rates, longer and slower attacks, more IPs/ASNs,
fewer devices, organic-looking play lengths, aged accounts, other ASN pools). Splits:

- ``train``: knobs in the training ranges, seeds ``TRAIN_SEEDS`` (what models and thresholds see);
- ``holdout``: training ranges, seeds ``HOLDOUT_SEEDS`` (thresholds are chosen here, not on ``train``);
- ``unseen``: training ranges, any other seed (evaluation: unseen seeds);
- ``outside``: knobs in the outside ranges (evaluation: outside-range variants).

Same (split, seed), same spec, same bytes. ``families`` restricts which families happen (the others
are disabled), for leave-one-family-out training.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.traffic.spec import SCENARIO_NAMES, TRAP_NAMES, TrafficSpec

Split = Literal["train", "holdout", "unseen", "outside"]
SPLITS: tuple[Split, ...] = ("train", "holdout", "unseen", "outside")
TRAIN_SEEDS: tuple[int, ...] = tuple(range(100, 108))
HOLDOUT_SEEDS: tuple[int, ...] = (200, 201, 202)
UNSEEN_SEEDS: tuple[int, ...] = (300, 301, 302)
"""Default evaluation seeds (any seed outside the two sets above is unseen)."""

VARIANT_DURATION_S = 2400.0
"""Event-time length of a variant run (40 minutes; attacks of up to 30 minutes fit in it)."""
VARIANT_ORGANIC_EVENTS_PER_S = 40.0
VARIANT_ORGANIC_ACCOUNTS = 30_000


@dataclass(frozen=True, slots=True)
class Knob:
    """One evasion knob: a training range and an outside range (numbers: [lo, hi]; choices: a tuple)."""

    train: tuple[float, float] | tuple[str, ...]
    outside: tuple[float, float] | tuple[str, ...]
    integer: bool = False

    def draw(self, rng: random.Random, outside: bool) -> Any:
        r = self.outside if outside else self.train
        if isinstance(r[0], str):
            return r[int(rng.random() * len(r))]
        lo, hi = float(r[0]), float(r[1])
        value = lo + (hi - lo) * rng.random()
        return round(value) if self.integer else round(value, 3)


def _n(train: tuple[float, float], outside: tuple[float, float]) -> Knob:
    return Knob(train, outside, integer=True)


def _x(train: tuple[float, float], outside: tuple[float, float]) -> Knob:
    return Knob(train, outside)


KNOBS: dict[str, dict[str, Knob]] = {
    "streaming_farm": {
        "duration_s": _x((180, 600), (900, 1800)),
        "accounts": _n((50, 300), (15, 40)),
        "ips": _n((2, 20), (40, 150)),
        "tracks": _n((2, 10), (15, 30)),
        "play_duration_s": _x((31, 45), (60, 200)),
        "play_jitter_s": _x((1, 5), (10, 40)),
        "gap_s": _x((1, 10), (15, 60)),
        "devices_per_account": _x((0.5, 1.0), (0.05, 0.2)),
        "aged_fraction": _x((0.0, 0.3), (0.5, 1.0)),
        "asn_pool": Knob(("residential",), ("mobile", "hosting")),
    },
    "spam_burst": {
        "duration_s": _x((60, 300), (600, 1500)),
        "accounts": _n((20, 100), (5, 15)),
        "ips": _n((3, 20), (40, 100)),
        "posts_per_account": _n((8, 25), (3, 6)),
        "content_variants": _n((1, 4), (8, 20)),
        "account_age_max_s": _x((3_600, 86_400), (604_800, 5_184_000)),
        "aged_fraction": _x((0.0, 0.2), (0.5, 1.0)),
        "asn_pool": Knob(("hosting",), ("residential", "mobile")),
    },
    "follow_farm": {
        "duration_s": _x((120, 600), (900, 1800)),
        "accounts": _n((40, 200), (15, 30)),
        "ips": _n((3, 20), (40, 120)),
        "target_accounts": _n((1, 5), (10, 30)),
        "target_tracks": _n((3, 12), (20, 60)),
        "actions_per_account": _n((10, 30), (4, 8)),
        "gap_s": _x((1, 10), (20, 90)),
        "aged_fraction": _x((0.0, 0.3), (0.5, 1.0)),
        "asn_pool": Knob(("residential",), ("mobile", "hosting")),
    },
    "credential_stuffing": {
        "duration_s": _x((60, 300), (900, 1800)),
        "ips": _n((5, 40), (100, 400)),
        "devices": _n((5, 40), (100, 300)),
        "attempts_per_s": _x((5, 40), (0.5, 3)),
        "asn_pool": Knob(("hosting",), ("residential", "mobile")),
    },
    "signup_burst": {
        "duration_s": _x((60, 300), (900, 1800)),
        "accounts": _n((100, 600), (30, 80)),
        "ips": _n((10, 60), (100, 300)),
        "activity_fraction": _x((0.2, 0.5), (0.6, 0.9)),
        "asns": _n((1, 1), (2, 4)),
        "asn_pool": Knob(("farm",), ("residential", "mobile")),
    },
}
"""Per family, the knobs drawn per variant (``devices_per_account`` becomes the farm's ``devices``)."""

TRAP_KNOBS: dict[str, dict[str, Knob]] = {
    "viral_release": {
        "listeners": _n((300, 1500), (300, 1500)),
        "plays_per_listener": _x((1, 2.5), (1, 2.5)),
    },
    "cgnat": {"accounts": _n((100, 400), (100, 400)), "ips": _n((2, 6), (2, 6))},
    "office": {"accounts": _n((15, 60), (15, 60)), "ips": _n((1, 2), (1, 2))},
    "power_user": {"accounts": _n((10, 40), (10, 40)), "skip_fraction": _x((0.3, 0.8), (0.3, 0.8))},
    "album_fans": {
        "fans": _n((30, 120), (30, 120)),
        "artists": _n((1, 3), (1, 3)),
        "tracks_per_fan": _x((4, 10), (4, 10)),
        "mobile_share": _x((0.2, 0.6), (0.2, 0.6)),
    },
}
"""Trap sizes: the same ranges in every split (traps test precision, not generalization)."""

EVAL_ONLY_TRAPS: frozenset[str] = frozenset({"album_fans"})
"""Traps that happen only in the evaluation splits (``unseen``, ``outside``): no model or threshold saw
them, so they test whether a rule's precision holds on benign traffic nobody tuned it on."""


def _family_params(family: str, rng: random.Random, outside: bool, span_s: float) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for knob, spec in KNOBS[family].items():
        params[knob] = spec.draw(rng, outside)
    if "devices_per_account" in params:
        ratio = params.pop("devices_per_account")
        params["devices"] = max(1, round(params["accounts"] * ratio))
    duration = min(float(params["duration_s"]), span_s - 120.0)
    params["duration_s"] = duration
    # Start anywhere that leaves room for the attack (two quiet minutes first).
    params["start_offset_s"] = round(120.0 + rng.random() * max(0.0, span_s - 120.0 - duration), 3)
    return params


def variant_spec(
    split: Split,
    seed: int,
    *,
    families: Collection[str] | None = None,
    traps: bool = True,
    duration_s: float = VARIANT_DURATION_S,
) -> TrafficSpec:
    """The ``TrafficSpec`` of variant ``seed`` of ``split`` (see the module docstring)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; known: {list(SPLITS)}")
    chosen = set(SCENARIO_NAMES if families is None else families)
    unknown = sorted(chosen - set(SCENARIO_NAMES))
    if unknown:
        raise ConfigError(f"unknown famil(ies) {unknown}; known: {list(SCENARIO_NAMES)}")
    outside = split == "outside"
    scenarios: dict[str, Any] = {}
    for family in SCENARIO_NAMES:
        rng = random.Random(f"variant/{split}/{seed}/{family}")
        params = _family_params(family, rng, outside, duration_s)
        params["enabled"] = family in chosen
        scenarios[family] = params
    trap_params: dict[str, Any] = {}
    for trap in TRAP_NAMES:
        rng = random.Random(f"variant/{split}/{seed}/trap/{trap}")
        p = {k: v.draw(rng, outside) for k, v in TRAP_KNOBS[trap].items()}
        length = duration_s * (0.3 + 0.5 * rng.random())
        enabled = traps and (trap not in EVAL_ONLY_TRAPS or split in ("unseen", "outside"))
        p.update(
            enabled=enabled, start_offset_s=round(rng.random() * (duration_s - length), 3), duration_s=length
        )
        trap_params[trap] = p
    return TrafficSpec.model_validate(
        {
            "seed": seed,
            "duration_s": duration_s,
            "organic_accounts": VARIANT_ORGANIC_ACCOUNTS,
            "organic_events_per_s": VARIANT_ORGANIC_EVENTS_PER_S,
            "tracks": 10_000,
            "scenarios": scenarios,
            "traps": trap_params,
        }
    )


def default_seeds(split: Split) -> Sequence[int]:
    """The seeds a split uses by default."""
    return {"train": TRAIN_SEEDS, "holdout": HOLDOUT_SEEDS, "unseen": UNSEEN_SEEDS, "outside": UNSEEN_SEEDS}[
        split
    ]


def describe(spec: TrafficSpec) -> dict[str, dict[str, Any]]:
    """The sampled knobs of every enabled family of ``spec`` (for reports)."""
    out: dict[str, dict[str, Any]] = {}
    dumped = spec.scenarios.model_dump()
    for family in SCENARIO_NAMES:
        p = dumped[family]
        if p["enabled"]:
            keys = [k for k in KNOBS[family] if k in p] + (["devices"] if family == "streaming_farm" else [])
            out[family] = {k: p[k] for k in keys}
    return out
