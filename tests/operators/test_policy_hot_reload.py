"""``Stages.maybe_reload``: a changed policy file takes effect for later decisions, a broken one (or one
whose rules changed without a version bump) is refused and the running policy stays."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.operators.policy import DEFAULT_POLICY_PATH

T0 = 1_800_000_000_000


def _write(path: Path, data: dict, bump_mtime_s: int) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_mtime_s * 1_000_000_000))


def test_reload_applies_a_valid_policy_and_refuses_a_broken_one(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    base = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    _write(policy, base, 0)
    stages = Stages(StagesConfig(policy=policy, reload_interval_ms=1000))
    assert stages.policy.version == base["version"]
    assert stages.maybe_reload(T0) == []  # nothing changed

    _write(policy, {**base, "version": "hot-2"}, 10)
    assert stages.maybe_reload(T0 + 500) == []  # not due yet
    (ok,) = stages.maybe_reload(T0 + 1000)
    assert (ok.what, ok.ok, ok.version, ok.error) == ("policy", True, "hot-2", None)
    assert stages.policy.version == "hot-2" and stages.decider.policy_version == "hot-2"

    broken = {**base, "version": "hot-3", "rules": [{**base["rules"][0], "condition": "ip.no_such >= 1"}]}
    _write(policy, broken, 20)
    (refused,) = stages.maybe_reload(T0 + 2000)
    assert not refused.ok and refused.version == "hot-2"
    assert "ip.no_such" in (refused.error or "")
    assert stages.decider.policy_version == "hot-2"

    rules = [dict(r) for r in base["rules"]]
    rules[1]["cooldown_ms"] = 300_000  # a real change under the running version
    same_version = {**base, "version": "hot-2", "rules": rules}
    _write(policy, same_version, 30)
    (refused,) = stages.maybe_reload(T0 + 3000)
    assert not refused.ok and "version hot-2 did not" in (refused.error or "")

    policy.write_text("rules: [", encoding="utf-8")
    os.utime(policy, ns=(0, policy.stat().st_mtime_ns + 40_000_000_000))
    (refused,) = stages.maybe_reload(T0 + 4000)
    assert not refused.ok and stages.policy.version == "hot-2"
    assert stages.maybe_reload(T0 + 5000) == []  # the same broken file is reported once


def test_reload_is_off_by_default(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    base = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    _write(policy, base, 0)
    stages = Stages(StagesConfig(policy=policy))
    _ = stages.policy
    _write(policy, {**base, "version": "hot-2"}, 10)
    assert stages.maybe_reload(T0 + 10**9) == []
    assert stages.policy.version == base["version"]
