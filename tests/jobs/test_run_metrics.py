"""``streamwarden run --metrics-port`` on the real broker: /metrics scraped while the Beam job runs shows
the counters moving; records in Confluent Schema Registry framing (written by confluent-kafka's own
ProtobufSerializer) go through the job like plain ones; /healthz answers; a missing broker is one error."""

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
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import drain, make_producer
from streamwarden.jobs.schema_registry import event_serializer
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
    """name{labels} -> value of every sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def _wait_scrape(port: int, until: Callable[[dict[str, float]], bool], timeout_s: float) -> dict[str, float]:
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
    raise AssertionError(
        f"timed out; last scrape: { {k: v for k, v in last.items() if 'streamwarden' in k} }"
    )


def test_metrics_move_during_a_run_and_framed_records_decode(
    kafka_config: KafkaConfig, kafka_topics: Topics, tmp_path: Path
) -> None:
    events, actions, dead, features = kafka_topics(
        "events", "actions", "deadletter", "features", partitions=2
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300},
                "topics": {"events": events, "actions": actions, "deadletter": dead, "features": features},
                "group_id": f"g-{uuid.uuid4().hex[:8]}",
            }
        )
    )
    traffic = list(iter_traffic(small_spec(seed=11)))
    valid = [r for r in traffic if r.malformed is None]
    serialize = event_serializer(MockSchemaRegistryClient({"url": "mock://run-metrics"}))
    ctx = SerializationContext(events, MessageField.VALUE)
    # every other valid record in Schema Registry framing, by the real serializer
    framed = {i: serialize(pb.Event.FromString(r.payload), ctx) for i, r in enumerate(valid) if i % 2 == 0}
    payloads = [framed.get(i, r.payload) for i, r in enumerate(valid)]
    assert all(p[0] == 0 for p in framed.values())
    first, second = payloads[: len(payloads) // 2], payloads[len(payloads) // 2 :]
    malformed = [r.payload for r in traffic if r.malformed is not None]

    producer = make_producer(kafka_config)
    # both partitions get records from the start: the watermark (and so the event-time lag) waits for a
    # record in every assigned partition, and keyless records may all go to one partition
    for i, p in enumerate(first):
        producer.produce(events, p, partition=i % 2)
    assert producer.flush(30) == 0

    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwarden.jobs.cli.app", "run", "--engine", "beam", "--config", str(config),
         "--bootstrap", kafka_config.bootstrap_servers, "--metrics-port", str(port), "--idle-timeout-s", "6",
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        read = 'streamwarden_records_total{direction="in",stage="decode"}'
        out_ = 'streamwarden_records_total{direction="out",stage="decode"}'
        s1 = _wait_scrape(port, lambda s: s.get(read, 0) >= len(first), 120)
        assert s1[out_] > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200 and resp.read().strip() == b"ok"
        assert any(k.startswith("streamwarden_versions_info{") and "policy_version" in k for k in s1)
        # more input while it runs: the counters move
        for i, p in enumerate([*second, *malformed]):
            producer.produce(events, p, partition=i % 2)
        assert producer.flush(30) == 0
        total = len(payloads) + len(malformed)
        s2 = _wait_scrape(port, lambda s: s.get(read, 0) >= total, 120)
        assert s2[read] == total > s1[read]
        assert s2[out_] > s1[out_]
        assert _sum(s2, "streamwarden_dead_letters_total") >= len(malformed)
        assert _sum(s2, "streamwarden_actions_total") > 0
        assert _sum(s2, "streamwarden_decision_latency_seconds_count") == _sum(
            s2, "streamwarden_actions_total"
        )
        assert s2.get("streamwarden_event_time_lag_seconds", 0) > 0
        lag = _wait_scrape(
            port, lambda s: any(k.startswith("streamwarden_consumer_lag_records{") for k in s), 30
        )
        assert {k for k in lag if k.startswith("streamwarden_consumer_lag_records{")} == {
            f'streamwarden_consumer_lag_records{{partition="{p}",topic="{events}"}}' for p in (0, 1)
        }
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{total} records in" in stdout
    # no framed record was dead-lettered: each of them decoded as its event
    letters = [pb.DeadLetter.FromString(r.value) for r in drain(kafka_config, dead, idle_timeout_s=3)]
    framed_bytes = set(framed.values())
    assert letters and not [d for d in letters if d.original in framed_bytes]


def test_run_without_a_broker_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streamwarden.jobs.cli.app", "run", "--bootstrap", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: no Kafka broker reachable at 127.0.0.1:{port}")
    assert time.monotonic() - started < 40
