"""``streamwarden demo`` as a user runs it: a subprocess with the embedded broker, live traffic and the Beam
job; it must show the broker, the events, attacks being caught, and leave no broker process behind when
stopped by Ctrl-C (SIGINT) or by ``--duration-s``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.engine, pytest.mark.slow]

STREAMWARDEN = Path(sys.executable).parent / "streamwarden"


class _Demo:
    """The demo in a subprocess, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [str(STREAMWARDEN), "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if re.search(pattern, self.output):
                return True
            time.sleep(0.2)
        return bool(re.search(pattern, self.output))

    def finish(self, timeout_s: float) -> int:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        return rc


def _broker_port(output: str) -> int:
    m = re.search(r"embedded broker: 127\.0\.0\.1:(\d+) \(pid (\d+)\)", output)
    assert m, f"no broker address in the output:\n{output}"
    return int(m.group(1))


def _tansu_on(port: int) -> list[int]:
    """Pids of tansu processes listening on ``port`` (there may be other helpers' brokers on other ports)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tansu" in cmdline and f"127.0.0.1:{port}" in cmdline:
            pids.append(int(entry.name))
    return pids


def test_demo_catches_attacks_live_and_stops_cleanly_on_ctrl_c() -> None:
    demo = _Demo("--duration-s", "80", "--report-every-s", "3")
    try:
        assert demo.wait_for(r"embedded broker: 127\.0\.0\.1:\d+", 30), demo.output
        port = _broker_port(demo.output)
        assert _tansu_on(port), "the broker the demo announced is not running"
        # the first attacks start 15 s in; the spam burst is caught within about a second of its start
        caught = demo.wait_for(r"CAUGHT", 65)
        demo.proc.send_signal(signal.SIGINT)
        rc = demo.finish(45)
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
    out = demo.output
    assert caught, f"no scenario caught before the stop:\n{out}"
    assert rc == 0, out
    assert "stopping" in out and "broker stopped" in out, out
    events = [int(n) for n in re.findall(r"events in: (\d+)", out)]
    assert events and events[-1] > 500, out
    m = re.search(r"scenarios caught: (\d)/5 \(([^)]*)\)", out)
    assert m and int(m.group(1)) >= 1, out
    assert re.search(r"latency ms \(decision - produce\): p50 \d+", out), out
    assert not _tansu_on(port), f"a tansu process on port {port} survived the demo"


def test_demo_stops_by_itself_after_duration() -> None:
    started = time.monotonic()
    demo = _Demo("--duration-s", "4", "--report-every-s", "2")
    rc = demo.finish(60)
    out = demo.output
    assert rc == 0, out
    assert time.monotonic() - started < 45, out
    assert "final" in out and "broker stopped" in out, out
    assert not _tansu_on(_broker_port(out)), "a tansu process survived the demo"


def test_the_live_panel_keeps_verdicts_and_modes_apart_within_120_columns() -> None:
    from rich.console import Console

    from streamwarden.jobs.cli.demo import PANEL_WIDTH, DemoState
    from streamwarden.schemas import streamwarden_pb2 as pb

    state = DemoState()
    for verdict, mode, rule in (
        (pb.Action.BLOCK, pb.Action.ENFORCE, "spam-message-block"),
        (pb.Action.BLOCK, pb.Action.SHADOW_MODE, "candidate-rule-" + "x" * 150),
        (pb.Action.BLOCK, pb.Action.SHADOW_MODE, "candidate-rule-2"),
        (pb.Action.RATE_LIMIT, pb.Action.ENFORCE, "spam-ip-rate-limit"),
    ):
        state.on_action(
            pb.Action(
                action_id=rule, event_id="e", verdict=verdict, mode=mode, reasons=[rule], event_time_ms=1
            )
        )
    console = Console(record=True, width=200)
    console.print(state.panel(12.0, 100.0, 0))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= PANEL_WIDTH
    cells = {
        line.split("│")[2].strip(): line.split("│")[3:5] for line in text.splitlines() if line.count("│") >= 5
    }
    assert [c.strip() for c in cells["block"]] == ["1", "2"]  # enforced and shadow-mode counted apart
    assert [c.strip() for c in cells["rate_limit"]] == ["1", "0"]
    assert "rate_limit" in text and "shadow_mode" in text and "enforce" in text
    summary = state.summary(12.0, 100.0, 0)
    assert "by verdict, enforced: BLOCK=1 RATE_LIMIT=1" in summary
    assert "by verdict, shadow mode: BLOCK=2" in summary
