"""Flink plumbing on the real broker: bytes KafkaSource -> Python keyed ValueState -> EXACTLY_ONCE KafkaSink.

Runs ``jobs/flink/smoke_job.py`` on a local MiniCluster in a subprocess, bounded by explicit stopping
offsets (the job ends by itself once its final checkpoint committed the last transaction), and checks
with a ``read_committed`` consumer that every input produced exactly one output and that the per-key
counts kept in keyed state are exactly 1..n, in both Python execution modes.
"""

from __future__ import annotations

import pytest

from streamwarden.jobs.cli.broker import broker_topic_creator
from streamwarden.jobs.flink.smoke_check import run_smoke

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(("mode", "n"), [("thread", 20_000), ("process", 4_000)])
def test_flink_smoke_exactly_once(kafka_config, broker, tmp_path, mode, n):
    report = run_smoke(kafka_config, broker_topic_creator(broker.bootstrap_servers), tmp_path, mode=mode, n=n)

    assert report["outputs"] == n
    assert report["problems"] == []
    print(f"\nflink smoke: {report}")
