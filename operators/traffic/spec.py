"""What traffic to generate: one frozen pydantic ``TrafficSpec``, loadable from YAML.

The defaults describe ten minutes of event time: two quiet minutes (a baseline for detectors), then
every abuse scenario once, some overlapping; about 83k events in all. Every number has a unit in its name; offsets are relative to ``start_ms``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamwarden.operators.config_io import format_validation_error, load_yaml_mapping
from streamwarden.operators.errors import ConfigError

MalformedKind = Literal["UNDECODABLE", "MISSING_EVENT_ID", "MISSING_EVENT_TIME", "UNKNOWN_SCHEMA_VERSION"]
"""Kinds of malformed record; each is the ``DeadLetter.ErrorKind`` name the decoder must give it."""

MALFORMED_KINDS: tuple[MalformedKind, ...] = (
    "UNDECODABLE",
    "MISSING_EVENT_ID",
    "MISSING_EVENT_TIME",
    "UNKNOWN_SCHEMA_VERSION",
)

DEFAULT_START_MS = 1_704_117_600_000
"""2024-01-01T14:00:00Z: a fixed start so default output is reproducible (diurnal factor ~1 there)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


AsnPool = Literal["residential", "mobile", "hosting", "farm"]
"""Where an attack's IPs live: home ISPs, mobile carriers (CGNAT ranges organic users share), hosting /
proxy ranges organic users never use, or the signup-farm ASNs."""


class _Scenario(_Strict):
    enabled: bool = Field(True, description="Whether this scenario happens at all.")
    start_offset_s: float = Field(description="When the attack starts, seconds after start_ms.", ge=0)
    duration_s: float = Field(description="How long the attack lasts, seconds (clipped to the run).", gt=0)
    aged_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the attack's accounts that are existing organic accounts (weeks of organic "
        "history) turning abusive, instead of the scenario's own accounts.",
    )


class StreamingFarmSpec(_Scenario):
    """Many accounts/devices behind few IPs looping a few tracks with ~31 s plays."""

    start_offset_s: float = Field(120.0, ge=0, description="When the farm starts playing, s after start_ms.")
    duration_s: float = Field(300.0, gt=0, description="How long the farm plays, seconds.")
    accounts: int = Field(300, ge=1, description="Farm accounts (one device each).")
    ips: int = Field(4, ge=1, description="IPs the farm's accounts share.")
    tracks: int = Field(5, ge=1, description="Target tracks looped by the farm (all by one artist).")
    play_duration_s: float = Field(
        31.0, gt=0, description="Mean play length, just past the 30 s payout mark."
    )
    play_jitter_s: float = Field(1.0, ge=0, description="Standard deviation of the play length, seconds.")
    gap_s: float = Field(1.5, ge=0, description="Mean pause between two plays of one account, seconds.")
    account_age_days_max: float = Field(
        90.0, gt=0, description="Farm accounts were created up to this long ago."
    )
    devices: int | None = Field(
        None, ge=1, description="Devices the farm's accounts share (None = one per account)."
    )
    asn_pool: AsnPool = Field("residential", description="Where the farm's IPs live.")


class SpamBurstSpec(_Scenario):
    """Comment/message spam from fresh accounts: URLs, mentions, one repeated content hash."""

    start_offset_s: float = Field(180.0, ge=0, description="When the burst starts, s after start_ms.")
    duration_s: float = Field(60.0, gt=0, description="How long the burst lasts, seconds.")
    accounts: int = Field(80, ge=1, description="Fresh spam accounts (one device each).")
    ips: int = Field(10, ge=1, description="Proxy IPs the spammers rotate through.")
    posts_per_account: int = Field(20, ge=1, description="Comments plus messages per spam account.")
    message_fraction: float = Field(0.4, ge=0, le=1, description="Share of posts that are direct messages.")
    content_variants: int = Field(2, ge=1, description="Distinct spam texts (content hashes) in the burst.")
    max_urls: int = Field(2, ge=1, description="Each spam text carries 1..max_urls URLs.")
    max_mentions: int = Field(4, ge=1, description="Each spam text carries 1..max_mentions mentions.")
    account_age_max_s: float = Field(7200.0, gt=0, description="Spam accounts were created this recently.")
    asn_pool: AsnPool = Field("hosting", description="Where the spammers' proxy IPs live.")


class FollowFarmSpec(_Scenario):
    """A set of accounts following and liking the same few target accounts and tracks."""

    start_offset_s: float = Field(240.0, ge=0, description="When the farm starts, s after start_ms.")
    duration_s: float = Field(120.0, gt=0, description="How long the farm runs, seconds.")
    accounts: int = Field(150, ge=1, description="Farm accounts (one device each).")
    ips: int = Field(6, ge=1, description="IPs the farm's accounts share.")
    target_accounts: int = Field(3, ge=1, description="Accounts that bought the follows.")
    target_tracks: int = Field(8, ge=1, description="Tracks of the target accounts that get the likes.")
    actions_per_account: int = Field(24, ge=1, description="Follows + likes + reposts per farm account.")
    repost_fraction: float = Field(
        0.2, ge=0, le=1, description="Share of non-follow actions that are reposts."
    )
    gap_s: float = Field(2.0, gt=0, description="Mean time between two actions of one farm account, seconds.")
    asn_pool: AsnPool = Field("residential", description="Where the farm's IPs live.")


class CredentialStuffingSpec(_Scenario):
    """Login attempts against many accounts from a few IPs; almost all fail."""

    start_offset_s: float = Field(300.0, ge=0, description="When the attack starts, s after start_ms.")
    duration_s: float = Field(90.0, gt=0, description="How long the attack lasts, seconds.")
    ips: int = Field(25, ge=1, description="Attacker IPs.")
    devices: int = Field(25, ge=1, description="Attacker device ids.")
    attempts_per_s: float = Field(40.0, gt=0, description="Login attempts per second, all IPs together.")
    success_fraction: float = Field(
        0.02, ge=0, le=1, description="Share of attempts on existing accounts that succeed (LOGIN)."
    )
    existing_account_fraction: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Share of attempts naming a real (organic) account; the rest are unknown.",
    )
    asn_pool: AsnPool = Field("hosting", description="Where the attacker IPs live (residential = proxies).")


class SignupBurstSpec(_Scenario):
    """A burst of signups from one ASN: many new accounts, devices and IPs."""

    start_offset_s: float = Field(420.0, ge=0, description="When the burst starts, s after start_ms.")
    duration_s: float = Field(60.0, gt=0, description="How long the burst lasts, seconds.")
    accounts: int = Field(600, ge=1, description="Accounts signed up (one new device each).")
    ips: int = Field(40, ge=1, description="IPs inside the one ASN.")
    activity_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of new accounts that log in and follow/like right after."
    )
    asn_pool: AsnPool = Field("farm", description="Where the signups come from (farm = one farm ASN).")
    asns: int = Field(1, ge=1, description="ASNs of the pool the signups spread over.")


class ScenariosSpec(_Strict):
    """The named abuse scenarios, each switchable and parameterised."""

    streaming_farm: StreamingFarmSpec = Field(
        default_factory=StreamingFarmSpec,  # type: ignore[arg-type]
        description="Artificial streaming farm.",
    )
    spam_burst: SpamBurstSpec = Field(
        default_factory=SpamBurstSpec,  # type: ignore[arg-type]
        description="Comment/message spam burst.",
    )
    follow_farm: FollowFarmSpec = Field(
        default_factory=FollowFarmSpec,  # type: ignore[arg-type]
        description="Follow/like farm.",
    )
    credential_stuffing: CredentialStuffingSpec = Field(
        default_factory=CredentialStuffingSpec,  # type: ignore[arg-type]
        description="Credential stuffing.",
    )
    signup_burst: SignupBurstSpec = Field(
        default_factory=SignupBurstSpec,  # type: ignore[arg-type]
        description="Signup burst from one ASN.",
    )


SCENARIO_NAMES: tuple[str, ...] = tuple(ScenariosSpec.model_fields)
"""Scenario names in their fixed order (the order also fixes their id spaces)."""


class _Trap(_Strict):
    enabled: bool = Field(False, description="Whether this false-positive trap happens at all.")
    start_offset_s: float = Field(0.0, ge=0, description="When the trap starts, seconds after start_ms.")
    duration_s: float = Field(600.0, gt=0, description="How long it lasts, seconds (clipped to the run).")


class ViralReleaseSpec(_Trap):
    """An organic surge: a new track by one artist that many organic fans play (and like) at once."""

    listeners: int = Field(800, ge=1, description="Organic accounts that play the new track.")
    plays_per_listener: float = Field(1.5, ge=1, description="Mean plays of the track per listener.")
    like_fraction: float = Field(0.15, ge=0, le=1, description="Share of listeners who also like it.")


class SharedIpSpec(_Trap):
    """Crowded shared infrastructure: organic accounts listening normally behind few IPs."""

    accounts: int = Field(300, ge=1, description="Organic accounts behind the shared IPs.")
    ips: int = Field(3, ge=1, description="Shared IPs (one CGNAT gateway, an office, a campus).")
    asn_pool: AsnPool = Field("mobile", description="mobile = carrier-grade NAT; residential = offices.")
    sessions_per_account: int = Field(2, ge=1, description="Listening sessions per account in the window.")
    failed_login_fraction: float = Field(
        0.05, ge=0, le=1, description="Share of sessions opened by a failed then a good login."
    )


class OfficeSpec(SharedIpSpec):
    """A household or an office: a few dozen organic accounts behind one residential IP."""

    accounts: int = Field(40, ge=1, description="Organic accounts behind the shared IPs.")
    ips: int = Field(1, ge=1, description="Shared IPs.")
    asn_pool: AsnPool = Field("residential", description="Where the shared IPs live.")


class PowerUserSpec(_Trap):
    """Heavy organic users: back-to-back plays with many skips, lots of likes and follows."""

    accounts: int = Field(25, ge=1, description="Power users.")
    skip_fraction: float = Field(0.6, ge=0, le=1, description="Share of plays skipped after 2-30 s.")
    engage_fraction: float = Field(0.25, ge=0, le=1, description="Share of plays followed by a like/follow.")


class AlbumFansSpec(_Trap):
    """Fans playing a new album through: one artist's tracks back to back, many fans at once, a share of
    them on mobile behind a few carrier-grade NAT gateways (a farm's loop over one artist, but organic)."""

    fans: int = Field(60, ge=1, description="Organic accounts that play the album.")
    artists: int = Field(2, ge=1, description="Artists with a new album (each fan plays one).")
    album_tracks: int = Field(10, ge=2, description="Tracks per album.")
    tracks_per_fan: float = Field(7.0, ge=1, description="Mean tracks a fan plays, in album order.")
    skip_fraction: float = Field(0.15, ge=0, le=1, description="Share of plays skipped after 2-30 s.")
    mobile_share: float = Field(0.4, ge=0, le=1, description="Share of fans behind the shared mobile IPs.")
    mobile_ips: int = Field(3, ge=1, description="Carrier-grade NAT gateways the mobile fans share.")


class TrapsSpec(_Strict):
    """False-positive traps: benign traffic that looks like abuse on one signal; labeled benign."""

    viral_release: ViralReleaseSpec = Field(
        default_factory=ViralReleaseSpec,  # type: ignore[arg-type]
        description="An organic surge around a new release.",
    )
    cgnat: SharedIpSpec = Field(
        default_factory=SharedIpSpec,  # type: ignore[arg-type]
        description="Mobile subscribers behind a carrier-grade NAT.",
    )
    office: OfficeSpec = Field(
        default_factory=OfficeSpec,  # type: ignore[arg-type]
        description="A household or office behind one IP.",
    )
    power_user: PowerUserSpec = Field(
        default_factory=PowerUserSpec,  # type: ignore[arg-type]
        description="Heavy organic users.",
    )
    album_fans: AlbumFansSpec = Field(
        default_factory=AlbumFansSpec,  # type: ignore[arg-type]
        description="Fans playing a new album through (evaluation-only in variants: no model saw it).",
    )


TRAP_NAMES: tuple[str, ...] = tuple(TrapsSpec.model_fields)
"""Trap names in their fixed order (id spaces after the scenarios')."""


class TrafficSpec(_Strict):
    """Everything that determines the generated traffic: same spec, same bytes."""

    seed: int = Field(1, ge=0, description="Seed of every random choice.")
    start_ms: int = Field(
        DEFAULT_START_MS,
        gt=0,
        description="Event time of the start, ms since epoch (fixed for reproducibility).",
    )
    duration_s: float = Field(600.0, gt=0, description="Event-time length of the run, seconds.")
    organic_accounts: int = Field(60_000, ge=1, description="Existing organic accounts.")
    organic_events_per_s: float = Field(
        120.0,
        ge=0,
        description="Daily-mean organic event rate in event time; the diurnal factor scales it by time of day.",
    )
    organic_signups_per_s: float = Field(0.2, ge=0, description="Organic signups per second of event time.")
    tracks: int = Field(20_000, ge=1, description="Organic track catalogue size (Zipf popularity).")
    diurnal_amplitude: float = Field(
        0.3, ge=0, lt=1, description="Diurnal swing: rate factor is 1 + amplitude * cos(hour - peak)."
    )
    diurnal_peak_hour_utc: float = Field(20.0, ge=0, lt=24, description="UTC hour of peak organic activity.")
    late_fraction: float = Field(
        0.02, ge=0, le=1, description="Share of events delivered late (out of order)."
    )
    max_late_ms: int = Field(30_000, ge=1, description="Upper bound of a late event's delivery delay, ms.")
    malformed_fraction: float = Field(
        0.002,
        ge=0,
        le=0.5,
        description="Share of output records that are malformed (for the dead-letter path).",
    )
    malformed_kinds: tuple[MalformedKind, ...] = Field(
        MALFORMED_KINDS, description="Which malformed kinds to produce, chosen uniformly."
    )
    scenarios: ScenariosSpec = Field(
        default_factory=ScenariosSpec,
        description="The abuse scenarios.",
    )
    traps: TrapsSpec = Field(
        default_factory=TrapsSpec,
        description="False-positive traps (all disabled by default).",
    )

    @model_validator(mode="after")
    def _kinds_present(self) -> TrafficSpec:
        if self.malformed_fraction > 0 and not self.malformed_kinds:
            raise ValueError("malformed_kinds must not be empty when malformed_fraction > 0")
        return self

    @property
    def end_ms(self) -> int:
        """Event time just past the run (exclusive)."""
        return self.start_ms + round(self.duration_s * 1000)

    def with_updates(self, **updates: Any) -> TrafficSpec:
        """A validated copy with top-level fields replaced (``None`` values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in updates.items() if v is not None})
        return TrafficSpec.model_validate(data)

    def scaled_to(self, duration_s: float) -> TrafficSpec:
        """A copy lasting ``duration_s`` whose scenario windows (offsets and durations) are scaled along,
        so every scenario still happens, at the same relative time; sizes and rates stay."""
        factor = duration_s / self.duration_s
        data = self.model_dump()
        data["duration_s"] = duration_s
        for name in SCENARIO_NAMES:
            data["scenarios"][name]["start_offset_s"] *= factor
            data["scenarios"][name]["duration_s"] *= factor
        for name in TRAP_NAMES:
            data["traps"][name]["start_offset_s"] *= factor
            data["traps"][name]["duration_s"] *= factor
        return TrafficSpec.model_validate(data)

    def without_scenarios(self, *names: str) -> TrafficSpec:
        """A copy with the named scenarios disabled; unknown names raise ``ConfigError``."""
        unknown = sorted(set(names) - set(SCENARIO_NAMES))
        if unknown:
            raise ConfigError(f"unknown scenario(s) {unknown}; known: {list(SCENARIO_NAMES)}")
        data = self.model_dump()
        for name in names:
            data["scenarios"][name]["enabled"] = False
        return TrafficSpec.model_validate(data)


def load_spec(path: Path | None = None, **overrides: Any) -> TrafficSpec:
    """A ``TrafficSpec`` from YAML (optional) with top-level ``overrides`` on top; errors name file and field."""
    source = str(path) if path is not None else "(defaults)"
    data: dict[str, Any] = load_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrafficSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def small_spec(seed: int = 1, **overrides: Any) -> TrafficSpec:
    """Two minutes of traffic (~10k records) with every scenario, scaled down: for tests and demos."""
    data: dict[str, Any] = {
        "seed": seed,
        "duration_s": 120.0,
        "organic_accounts": 3_000,
        "organic_events_per_s": 60.0,
        "tracks": 2_000,
        "late_fraction": 0.05,
        "max_late_ms": 5_000,
        "malformed_fraction": 0.01,
        "scenarios": {
            "streaming_farm": {"start_offset_s": 10, "duration_s": 80, "accounts": 40, "ips": 2, "tracks": 3},
            "spam_burst": {"start_offset_s": 20, "duration_s": 30, "accounts": 15, "ips": 4, "posts_per_account": 6},
            "follow_farm": {"start_offset_s": 30, "duration_s": 60, "accounts": 30, "ips": 3, "actions_per_account": 10},
            "credential_stuffing": {"start_offset_s": 40, "duration_s": 40, "attempts_per_s": 20, "ips": 5, "devices": 5},
            "signup_burst": {"start_offset_s": 70, "duration_s": 30, "accounts": 100, "ips": 8},
        },
    }  # fmt: skip
    data.update(overrides)
    return TrafficSpec.model_validate(data)
