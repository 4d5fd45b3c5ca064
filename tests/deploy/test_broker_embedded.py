"""The embedded broker: starts, answers metadata, creates topics, and never leaves a process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streamwarden.deploy.broker import EmbeddedBroker, find_tansu_binary
from streamwarden.jobs.kafka_io import create_local_topics
from streamwarden.operators.errors import BrokerError

REPO = Path(__file__).resolve().parents[2]


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for a reaper does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def test_tansu_binary_is_shipped() -> None:
    path = find_tansu_binary()
    assert path.name == "tansu"
    assert os.access(path, os.X_OK)


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    broker = EmbeddedBroker(binary=tmp_path / "no-such-tansu", log_path=tmp_path / "b.log")
    with pytest.raises(BrokerError, match="does not exist or is not executable"):
        broker.start()


def test_broker_that_exits_at_once_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(binary=fake, log_path=tmp_path / "b.log", start_timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match="boom: cannot start"):
        broker.start()
    assert time.monotonic() - t0 < 5
    assert not broker.is_running()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is already in use"):
            EmbeddedBroker(port, log_path=tmp_path / "b.log").start()


@pytest.mark.integration
def test_start_answers_metadata_and_stop_leaves_no_process(tmp_path: Path) -> None:
    log_path = tmp_path / "tansu.log"
    t0 = time.monotonic()
    with EmbeddedBroker(log_path=log_path) as broker:
        started_s = time.monotonic() - t0
        pid = broker.pid
        assert pid is not None and _pid_alive(pid)
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
        md = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5)
        assert md.cluster_id == broker.cluster_id
        assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", broker.port)]
        print(f"\nembedded broker start: {started_s:.3f} s (ready check {broker.startup_s:.3f} s)")
    assert not broker.is_running()
    assert _wait_gone(pid, 1.0), f"tansu pid {pid} still alive after stop()"
    broker.stop()  # idempotent
    assert "listening on: tcp://127.0.0.1:" in log_path.read_text()


@pytest.mark.integration
def test_create_topics_shows_partitions_and_is_idempotent(broker: EmbeddedBroker) -> None:
    name = f"broker-three-{time.monotonic_ns()}"
    assert create_local_topics(broker.bootstrap_servers, [name], partitions=3) == {name: 3}
    md = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=5)
    assert sorted(md.topics[name].partitions) == [0, 1, 2]
    # A second call changes nothing and reports the existing partition count.
    assert create_local_topics(broker.bootstrap_servers, [name], partitions=5) == {name: 3}


@pytest.mark.integration
def test_broker_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from deploy.broker import EmbeddedBroker\n"
        f"b = EmbeddedBroker(log_path=Path({str(tmp_path / 'b.log')!r})).start()\n"
        "print(b.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _pid_alive(pid)
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally in the parent
        parent.wait(5)
    assert _wait_gone(pid, 5.0), f"tansu pid {pid} outlived its SIGKILLed parent"


@pytest.mark.integration
def test_foreground_command_creates_topics_and_stops_on_sigterm(tmp_path: Path) -> None:
    script = "import typer\nfrom streamwarden.jobs.cli.broker import run_foreground_cmd\ntyper.run(run_foreground_cmd)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "--topics", "in,out", "--partitions", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("export STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS="):
                break
        out = "".join(lines)
        bootstrap = lines[-1].strip().split("=", 1)[1]
        match = re.search(r"\(pid (\d+)\)", out)
        assert match, out
        pid = int(match.group(1))
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
        assert {t: len(md.topics[t].partitions) for t in ("in", "out")} == {"in": 2, "out": 2}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "broker stopped" in proc.stdout.read()
        assert _wait_gone(pid, 1.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.integration
def test_temporary_log_is_removed_by_a_clean_stop() -> None:
    broker = EmbeddedBroker().start()
    log_dir = broker.log_path.parent
    assert "ready in" in broker.log_tail()
    broker.stop()
    assert not log_dir.exists()
