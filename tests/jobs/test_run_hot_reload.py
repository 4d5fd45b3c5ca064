"""A policy swapped during a real Beam run (real broker) takes effect for later events, without a
restart; a broken one is refused, counted on /metrics, and the running policy keeps deciding."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import drain, make_producer
from streamwarden.operators.policy import DEFAULT_POLICY_PATH
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.engine]

Topics = Callable[..., list[str]]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        m.group(1) + (m.group(2) or ""): float(m.group(3)) for m in map(_SAMPLE.match, text.splitlines()) if m
    }


def _wait(port: int, until: Callable[[dict[str, float]], bool], timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            last = _scrape(port)
            if until(last):
                return last
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError({k: v for k, v in last.items() if k.startswith("streamwarden_")})


def _swap(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # atomic, as a config-map update or a deploy tool does it


def test_policy_swap_during_a_run(kafka_config: KafkaConfig, kafka_topics: Topics, tmp_path: Path) -> None:
    events, actions, dead, features = kafka_topics(
        "events", "actions", "deadletter", "features", partitions=1
    )
    policy = tmp_path / "policy.yaml"
    base_text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    base_version = yaml.safe_load(base_text)["version"]
    policy.write_text(base_text, encoding="utf-8")
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300},
                "topics": {"events": events, "actions": actions, "deadletter": dead, "features": features},
                "group_id": f"g-{uuid.uuid4().hex[:8]}",
                "policy": str(policy),
                "reload_interval_ms": 200,
            }
        )
    )
    valid = [r.payload for r in iter_traffic(small_spec(seed=11)) if r.malformed is None]
    third = len(valid) // 3
    parts = [valid[:third], valid[third : 2 * third], valid[2 * third :]]
    ids = [{pb.Event.FromString(p).event_id for p in part} for part in parts]
    producer = make_producer(kafka_config)

    def produce(payloads: list[bytes]) -> None:
        for p in payloads:
            producer.produce(events, p)
        assert producer.flush(30) == 0

    read = 'streamwarden_records_total{direction="in",stage="decode"}'
    applied = 'streamwarden_reloads_total{outcome="applied",what="policy"}'
    refused = 'streamwarden_reloads_total{outcome="refused",what="policy"}'
    port = _free_port()
    produce(parts[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwarden.jobs.cli.app", "run", "--engine", "beam", "--config", str(config),
         "--bootstrap", kafka_config.bootstrap_servers, "--metrics-port", str(port), "--idle-timeout-s", "8",
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        _wait(port, lambda s: s.get(read, 0) >= len(parts[0]), 120)
        # a new version: the next decisions use it (the first events after the swap may still see the old)
        _swap(policy, base_text.replace(f'version: "{base_version}"', 'version: "hot-2"'))
        produce(parts[1][:200])
        s = _wait(port, lambda s: s.get(applied, 0) == 1, 60)
        assert 'policy_version="hot-2"' in next(k for k in s if k.startswith("streamwarden_versions_info"))
        produce(parts[1][200:])
        _wait(port, lambda s: s.get(read, 0) >= len(parts[0]) + len(parts[1]), 60)
        # a broken file: refused and counted, the running policy keeps deciding
        broken = base_text.replace(f'version: "{base_version}"', 'version: "hot-3"').replace(
            "    condition: score.gbt >= threshold.gbt\n", "    condition: score.gbt >= threshold.nope\n"
        )
        assert "threshold.nope" in broken
        _swap(policy, broken)
        produce(parts[2][:200])
        _wait(port, lambda s: s.get(refused, 0) >= 1, 60)
        produce(parts[2][200:])
        s = _wait(port, lambda s: s.get(read, 0) >= len(valid), 60)
        assert s[applied] == 1 and s[refused] == 1
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert "policy reload refused, keeping version hot-2" in stderr and "threshold.nope" in stderr
    out = [pb.Action.FromString(r.value or b"") for r in drain(kafka_config, actions, idle_timeout_s=3)]
    version_of = {}
    for a in out:
        version_of.setdefault(a.event_id, set()).add(a.policy_version)
    first = [vs for e, vs in version_of.items() if e in ids[0]]
    later = {v for e, vs in version_of.items() if e in ids[1] for v in vs}
    last = {v for e, vs in version_of.items() if e in ids[2] for v in vs}
    # decisions follow the policy live when they are made: part 0 was read before the swap, but an event
    # whose partials were still being assembled at the swap is decided (correctly) under hot-2
    assert first and sum(vs == {base_version} for vs in first) >= 0.8 * len(first)
    assert "hot-2" in later and "hot-3" not in later
    assert last == {"hot-2"}, last  # the broken file never ran
