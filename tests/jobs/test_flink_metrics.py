"""The Flink job's numbers through Flink's metric groups and its Prometheus reporter (the plugin PyFlink
ships, configured as in deploy/flink/config.yaml): a scrape during a bounded MiniCluster run shows the
streamwarden group's counters under the names deploy/grafana/streamwarden.json queries, the decision
latency histogram (a summary with quantiles) and the running model and policy versions."""

from __future__ import annotations

import re
import socket
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamwarden.jobs.bench.flink import JobProcess, job_args, job_config_for, produce, write_job_config
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions, stages_config
from streamwarden.jobs.flink.metrics import expose_reporter_to_local_gateway, prometheus_reporter
from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config
from streamwarden.operators.pipeline import Stages
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GROUP = "flink_taskmanager_job_task_operator_streamwarden_"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
        text = resp.read().decode()
    return {
        m.group(1) + (m.group(2) or ""): float(m.group(3)) for m in map(_SAMPLE.match, text.splitlines()) if m
    }


def test_flink_counters_reach_prometheus(
    broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HADOOP_CLASSPATH", "")  # restored after the test
    expose_reporter_to_local_gateway()  # the job process inherits it
    conf = yaml.safe_load((REPO / "deploy" / "flink" / "config.yaml").read_text(encoding="utf-8"))
    port = _free_port()
    reporter = prometheus_reporter(port)
    shipped = {k: str(v) for k, v in conf.items() if k.startswith("metrics.reporter.prom.")}
    assert shipped == {**reporter, "metrics.reporter.prom.port": shipped["metrics.reporter.prom.port"]}
    records = list(iter_traffic(small_spec(seed=21, duration_s=60.0)))
    suffix = uuid.uuid4().hex[:8]
    topics = [f"{n}-{suffix}" for n in ("events", "actions", "deadletter", "features")]
    create_local_topics(broker.bootstrap_servers, topics, 1)
    kafka = embedded_kafka_config(broker.bootstrap_servers)
    ends = produce(kafka, topics[0], [r.payload for r in records])
    job = job_config_for(kafka, topics, f"flink-metrics-{suffix}")
    flink = FlinkConfig(checkpoint_dir=(tmp_path / "ckpt").as_uri(), extra=reporter)  # type: ignore[call-arg]
    options = FlinkJobOptions(check_future=False)  # type: ignore[call-arg]
    seen: dict[str, float] = {}
    scrapes = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal scrapes
        while not stop.is_set():
            try:
                for k, v in _scrape(port).items():
                    if k.startswith("flink_"):
                        seen[k] = max(v, seen.get(k, v))
                scrapes += 1
            except OSError:
                pass
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    proc = JobProcess(
        job_args(write_job_config(tmp_path / "job.yaml", job), flink=flink, options=options, stop_at=ends),
        tmp_path / "logs",
    )
    with proc:
        poller.start()
        try:
            proc.wait(300)
        finally:
            stop.set()
            poller.join(5)
    assert scrapes > 0, "the reporter never answered"
    names = {k.split("{")[0] for k in seen}
    records_in = [v for k, v in seen.items() if k.startswith(GROUP + "records_in")]
    assert records_in and max(records_in) > 0, sorted(n for n in names if "streamwarden" in n)
    by_rule = [k for k in seen if k.startswith(GROUP) and "actions_by_rule" in k]
    assert by_rule, sorted(n for n in names if "streamwarden" in n)
    assert all('rule="' in k and 'verdict="' in k and 'mode="' in k for k in by_rule)
    malformed = {r.malformed for r in records if r.malformed is not None}
    dead = {
        k.split("{")[0].removeprefix(GROUP + "dead_letters_")
        for k in seen
        if k.startswith(GROUP + "dead_letters_")
    }
    assert malformed and dead and dead <= set(pb.DeadLetter.ErrorKind.keys()), (malformed, dead)
    # event time -> decision (recorded traffic: its age), a Flink histogram exported as a summary
    latency = GROUP + "event_to_decision_ms"
    quantiles = {
        re.search(r'quantile="([0-9.]+)"', k).group(1): v  # type: ignore[union-attr]
        for k, v in seen.items()
        if k.startswith(latency + "{") and "quantile=" in k
    }
    assert {"0.5", "0.99"} <= set(quantiles), sorted(n for n in names if "streamwarden" in n)
    assert 0 < quantiles["0.5"] <= quantiles["0.99"]
    assert max(v for k, v in seen.items() if k.startswith(latency + "_count")) > 0
    # the versions that run, as an info gauge (1) labelled with them
    stages = Stages.build(stages_config(job, options))
    versions = GROUP + "model_version_policy_version_versions"
    running = [k for k, v in seen.items() if k.startswith(versions + "{") and v == 1]
    assert running, sorted(n for n in names if "streamwarden" in n)
    # (Flink's reporter turns every character but letters, digits and _ into _ in label values)
    model, policy = (re.sub(r"[^A-Za-z0-9_]", "_", v) for v in (stages.model_version, stages.policy.version))
    assert all(f'model_version="{model}"' in k and f'policy_version="{policy}"' in k for k in running), (
        running,
        model,
        policy,
    )
    # the dashboard's Flink queries name these series
    dashboard = (REPO / "deploy" / "grafana" / "streamwarden.json").read_text(encoding="utf-8")
    for name in {by_rule[0].split("{")[0], GROUP + "records_in", latency, versions}:
        assert name in dashboard, name
