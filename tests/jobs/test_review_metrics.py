"""``review serve --metrics-port``: the review service's Prometheus endpoint, scraped from a real
``streamwarden review serve`` process over a real SQLite store, while a reviewer decides jobs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streamwarden.jobs.review.store import ReviewStore
from streamwarden.operators.review.decisions import DecisionInput
from streamwarden.schemas import streamwarden_pb2 as pb


def _action(n: int) -> pb.Action:
    return pb.Action(
        action_id=f"a{n}", event_id=f"ev{n}", subject=pb.Subject(kind=pb.ACCOUNT, id=f"acc{n}"),
        verdict=pb.Action.SEND_TO_REVIEW, reasons=["spam-account-review"], event_time_ms=1000,
        decision_time_ms=1005, mode=pb.Action.ENFORCE, model_version="m1", policy_version="p1",
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int, timeout_s: float = 60.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_review_serve_metrics_follow_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    store = ReviewStore.open(url)
    now = int(time.time() * 1000)
    store.ingest_actions([(_action(1), "spam")], received_ms=now - 90_000)  # the oldest: 90 s
    store.ingest_actions([(_action(2), "spam"), (_action(3), "spam")], received_ms=now - 30_000)
    first = store.claim_next("spam", "alice", lease_s=60)
    assert first is not None
    store.decide(first, "alice", DecisionInput("uphold", "spam_burst"))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwarden.jobs.cli.app", "review", "serve", "--db", url, "--no-kafka",
         "--port", "0", "--metrics-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        m = _scrape(port)
        pending = ("streamwarden_review_pending_jobs", (("queue", "spam"), ("status", "pending")))
        claimed = ("streamwarden_review_pending_jobs", (("queue", "spam"), ("status", "claimed")))
        uphold = ("streamwarden_review_decisions_total", (("decision", "uphold"), ("queue", "spam")))
        overturn = ("streamwarden_review_decisions_total", (("decision", "overturn"), ("queue", "spam")))
        oldest = ("streamwarden_review_oldest_pending_age_seconds", (("queue", "spam"),))
        assert (m[pending], m[claimed], m[uphold]) == (2, 0, 1)
        assert overturn not in m
        assert 30 <= m[oldest] < 120  # the 90 s job is decided: the oldest open one is 30 s old
        assert m[("streamwarden_review_outbox_backlog", ())] == 1  # --no-kafka: nothing produced
        assert m[("streamwarden_up", ())] == 1
        # Every queue of the routing is listed, empty ones at 0.
        assert sum(1 for name, labels in m if name == oldest[0]) > 1
        # A reviewer decides while the service runs: the next scrape shows it.
        job = store.claim_next("spam", "bob", lease_s=60)
        assert job is not None
        again = _scrape(port)
        assert (again[pending], again[claimed]) == (1, 1)
        store.decide(job, "bob", DecisionInput("overturn", reason="organic"))
        again = _scrape(port)
        assert (again[pending], again[claimed], again[uphold], again[overturn]) == (1, 0, 1, 1)
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200 and health.read() == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        store.close()
    assert proc.returncode == 0, err[-2000:]
    assert f"metrics on port {port}" in out
