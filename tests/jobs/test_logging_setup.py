"""One logging setup: JSON lines, levels, librdkafka's own log lines routed through it (a client that
cannot reach its broker) and repeats of the same line suppressed."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator

import pytest

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import make_producer
from streamwarden.jobs.logging_setup import RepeatFilter, configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    handler = configure_logging("info", "json", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])


def test_json_lines_carry_level_logger_and_extra(captured: io.StringIO) -> None:
    logging.getLogger("streamwarden.test").warning("disk %s is full", "/data", extra={"partition": 3})
    logging.getLogger("streamwarden.test").debug("not shown at info")
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "warning" and record["logger"] == "streamwarden.test"
    assert record["message"] == "disk /data is full" and record["partition"] == 3
    assert record["time"].endswith("Z")


def test_librdkafka_logs_come_through_once(captured: io.StringIO) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens
    producer = make_producer(KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}"))  # type: ignore[call-arg]
    for _ in range(8):
        producer.poll(0.5)  # librdkafka hands its log lines to the logger from poll()
    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    kafka = [r for r in records if r["logger"] == "streamwarden.kafka"]
    assert kafka, records
    assert any(f"127.0.0.1:{port}" in r["message"] for r in kafka)
    messages = [r["message"] for r in kafka]
    assert len(messages) == len(set(messages))  # each distinct line once (RepeatFilter)


def test_repeat_filter_lets_a_line_through_again_after_its_window() -> None:
    f = RepeatFilter(window_s=10)

    def rec(t: float) -> logging.LogRecord:
        r = logging.makeLogRecord({"name": "x", "levelno": 40, "msg": "same"})
        r.created = t
        return r

    assert [f.filter(rec(t)) for t in (0, 1, 9.9, 10.5, 11)] == [True, False, False, True, False]
    assert f.suppressed == 3
