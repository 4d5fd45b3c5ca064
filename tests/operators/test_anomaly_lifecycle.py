"""Alert lifecycle: m-of-n firing, k-clean resolving, dedup, cooldown, fingerprints, alert contents."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden.operators.anomaly.detectors import Score
from streamwarden.operators.anomaly.lifecycle import AlertLifecycle, fingerprint, severity_for
from streamwarden.operators.anomaly.spec import LifecycleConfig
from streamwarden.schemas import streamwarden_pb2 as pb

FIRING, RESOLVED = pb.AnomalyAlert.FIRING, pb.AnomalyAlert.RESOLVED
B = 60_000
THRESHOLD = 0.5


def _score(
    breach: bool, score: float | None = None, observed: float = 100.0, expected: float = 10.0
) -> Score:
    s = score if score is not None else (0.7 if breach else 0.1)
    return Score(s, 9.0 if breach else 0.1, observed, expected, breach, True)


def _run(lc: AlertLifecycle, breaches: list[bool]) -> list[tuple[int, pb.AnomalyAlert]]:
    out = []
    for i, b in enumerate(breaches):
        alert = lc.step(i * B, (i + 1) * B, _score(b))
        if alert is not None:
            out.append((i, alert))
    return out


def _lc(**cfg: int | float) -> AlertLifecycle:
    return AlertLifecycle(
        LifecycleConfig(**cfg),  # type: ignore[arg-type]
        "plays_per_track",
        "track-1",
        "robust_z",
        {"team": "ts"},
        threshold=THRESHOLD,
    )


def test_fires_on_m_of_n_and_resolves_after_k_clean() -> None:
    lc = _lc(fire_m=2, fire_n=3, resolve_k=3, cooldown_buckets=0)
    seq = [False, True, False, False, True, False, True, True, True, False, False, True, False, False, False]
    events = _run(lc, seq)
    assert [(i, a.status) for i, a in events] == [(6, FIRING), (14, RESOLVED)]
    firing, resolved = events[0][1], events[1][1]
    assert firing.window_start_ms == 4 * B  # the oldest breach inside the 3-bucket window
    assert firing.window_end_ms == 7 * B
    assert resolved.window_start_ms == firing.window_start_ms == resolved.started_ms
    assert resolved.updated_ms == resolved.window_end_ms == 15 * B
    assert resolved.labels["reason"] == "recovered" and resolved.labels["team"] == "ts"


def test_isolated_breaches_do_not_fire() -> None:
    lc = _lc(fire_m=2, fire_n=3)
    assert _run(lc, [True, False, False, True, False, False, True, False, False]) == []


def test_dedup_one_firing_while_the_series_keeps_breaching() -> None:
    lc = _lc(fire_m=2, fire_n=3, resolve_k=3)
    events = _run(lc, [True] * 50)
    assert [a.status for _, a in events] == [FIRING]


def test_cooldown_suppresses_a_quick_refire_and_then_lets_it_through() -> None:
    lc = _lc(fire_m=1, fire_n=1, resolve_k=1, cooldown_buckets=5)
    # fire at 0, resolve at 1, breaches at 2..6 are inside the cooldown, the one at 8 fires again
    events = _run(lc, [True, False, True, True, False, True, True, False, True, False])
    assert [(i, a.status) for i, a in events] == [(0, FIRING), (1, RESOLVED), (8, FIRING), (9, RESOLVED)]
    assert lc.suppressed == 4


def test_hysteresis_a_near_threshold_bucket_is_not_clean() -> None:
    lc = _lc(fire_m=1, fire_n=1, resolve_k=2, resolve_score_ratio=0.8)
    assert lc.step(0, B, _score(True)) is not None
    # Below the threshold (0.5) but above 0.8 * 0.5: not clean, the alert stays open.
    for i in range(1, 6):
        assert lc.step(i * B, (i + 1) * B, _score(False, score=0.45)) is None
    assert lc.step(6 * B, 7 * B, _score(False, score=0.1)) is None
    resolved = lc.step(7 * B, 8 * B, _score(False, score=0.1))
    assert resolved is not None and resolved.status == RESOLVED


def test_expiry_closes_an_open_alert() -> None:
    lc = _lc(fire_m=1, fire_n=1)
    lc.step(0, B, _score(True))
    alert = lc.expire(B, _score(True))
    assert alert is not None and alert.status == RESOLVED and alert.labels["reason"] == "expired"
    assert lc.expire(2 * B, _score(True)) is None


def test_alert_carries_observed_expected_score_severity_and_direction() -> None:
    lc = _lc(fire_m=1, fire_n=1)
    alert = lc.step(0, B, Score(0.9, -40.0, 0.0, 400.0, True, True))
    assert alert is not None
    assert (alert.observed, alert.expected, alert.score) == (0.0, 400.0, 0.9)
    assert alert.severity == pb.AnomalyAlert.CRITICAL
    assert alert.labels["direction"] == "down"
    assert (
        alert.metric == "plays_per_track" and alert.series_key == "track-1" and alert.detector == "robust_z"
    )
    assert alert.fingerprint == fingerprint("plays_per_track", "track-1")


def test_fingerprint_is_stable_and_distinct() -> None:
    assert fingerprint("m", "k") == fingerprint("m", "k")
    assert len(fingerprint("m", "k")) == 16
    assert int(fingerprint("m", "k"), 16) >= 0
    assert (
        len({fingerprint("m", "ab"), fingerprint("ma", "b"), fingerprint("m", "a"), fingerprint("n", "a")})
        == 4
    )
    # Pinned: consumers store fingerprints; changing the formula would orphan their open alerts.
    assert fingerprint("plays_per_track", "track-42") == _sha_prefix("plays_per_track\ntrack-42")


def _sha_prefix(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_severity_bands() -> None:
    cfg = LifecycleConfig(warning_score=0.6, critical_score=0.8)
    assert severity_for(cfg, 0.55) == pb.AnomalyAlert.INFO
    assert severity_for(cfg, 0.6) == pb.AnomalyAlert.WARNING
    assert severity_for(cfg, 0.85) == pb.AnomalyAlert.CRITICAL


def test_freezes_the_baseline_while_young_firing() -> None:
    lc = _lc(fire_m=1, fire_n=1, freeze_baseline_buckets=3)
    assert lc.learns
    lc.step(0, B, _score(True))
    learns = []
    for i in range(1, 6):
        learns.append(lc.learns)
        lc.step(i * B, (i + 1) * B, _score(True))
    assert learns == [False, False, False, True, True]


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.one_of(st.booleans(), st.just("expire")), max_size=120),
    m=st.integers(1, 4),
    extra_n=st.integers(0, 3),
    k=st.integers(1, 4),
    cooldown=st.integers(0, 6),
)
def test_property_firing_and_resolved_alternate_and_recovery_always_resolves(
    steps, m, extra_n, k, cooldown
) -> None:
    lc = _lc(fire_m=m, fire_n=m + extra_n, resolve_k=k, cooldown_buckets=cooldown)
    statuses = []
    t = 0
    for step in steps:
        alert = (
            lc.expire(t * B, _score(False)) if step == "expire" else lc.step(t * B, (t + 1) * B, _score(step))
        )
        if alert is not None:
            assert alert.fingerprint == lc.fingerprint
            statuses.append(alert.status)
        t += 1
    # Recovery: k clean buckets in a row close whatever is open.
    for _ in range(k):
        alert = lc.step(t * B, (t + 1) * B, _score(False))
        if alert is not None:
            statuses.append(alert.status)
        t += 1
    assert statuses == [FIRING, RESOLVED] * (len(statuses) // 2), "FIRING/RESOLVED must strictly alternate"
    assert not lc.firing


def test_state_round_trip_mid_sequence() -> None:
    seq = [True, True, False, True, False, False, False, True, True, True] * 6
    straight = _lc(fire_m=2, fire_n=3, resolve_k=2, cooldown_buckets=3)
    expected = _run(straight, seq)
    lc = _lc(fire_m=2, fire_n=3, resolve_k=2, cooldown_buckets=3)
    got = []
    for i, b in enumerate(seq):
        if i % 7 == 3:
            blob = lc.to_bytes()
            lc = _lc(fire_m=2, fire_n=3, resolve_k=2, cooldown_buckets=3)
            lc.restore(blob)
        alert = lc.step(i * B, (i + 1) * B, _score(b))
        if alert is not None:
            got.append((i, alert))
    assert [(i, a.SerializeToString(deterministic=True)) for i, a in got] == [
        (i, a.SerializeToString(deterministic=True)) for i, a in expected
    ]
    assert len(got) >= 4
