"""Metrics wiring in deploy/: the Flink Prometheus reporter port is the one the pod exposes and the
PodMonitor scrapes, and every metric the Grafana dashboard queries is one the job really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import streamwarden.jobs.observability  # noqa: F401 - registers the streamwarden_* families

REPO = Path(__file__).resolve().parents[2]
FLINK = REPO / "deploy" / "flink"
DASHBOARD = REPO / "deploy" / "grafana" / "streamwarden.json"
FLINK_GROUP = "flink_taskmanager_job_task_operator_streamwarden_"


def _config() -> dict[str, str]:
    return yaml.safe_load((FLINK / "config.yaml").read_text(encoding="utf-8"))


def _container() -> dict:
    docs = list(yaml.safe_load_all((FLINK / "flinkdeployment.yaml").read_text(encoding="utf-8")))
    (deployment,) = [d for d in docs if d and d["kind"] == "FlinkDeployment"]
    (main,) = [
        c
        for c in deployment["spec"]["podTemplate"]["spec"]["containers"]
        if c["name"] == "flink-main-container"
    ]
    return main


def test_reporter_port_is_exposed_and_scraped() -> None:
    conf = _config()
    assert conf["metrics.reporter.prom.factory.class"].endswith("PrometheusReporterFactory")
    port = int(conf["metrics.reporter.prom.port"])
    (exposed,) = [p for p in _container()["ports"] if p["name"] == "metrics"]
    assert exposed["containerPort"] == port
    monitor = yaml.safe_load((FLINK / "podmonitor.yaml").read_text(encoding="utf-8"))
    assert monitor["kind"] == "PodMonitor"
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app": "streamwarden"}


def _exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_exported_streamwarden_metrics() -> None:
    families = {fam.name for fam in REGISTRY.collect()}  # labelled families have no sample until set
    exported = (
        families
        | {s.name for fam in REGISTRY.collect() for s in fam.samples}
        | {f"{fam.name}_{suffix}" for fam in REGISTRY.collect() for suffix in ("total", "bucket", "info")}
    )
    used = {m for e in _exprs() for m in re.findall(r"\b(streamwarden_[a-z_]+)", e)}
    assert used, "the dashboard charts no streamwarden_* metric"
    assert used <= exported, sorted(used - exported)


def test_dashboard_flink_counters_exist_in_the_flink_stages() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "jobs" / "flink").glob("*.py"))
    used = {m for e in _exprs() for m in re.findall(FLINK_GROUP + r"([a-z_]+)", e)}
    assert used
    for name in used:
        # key/value groups put their keys into the name: ..._streamwarden_mode_rule_verdict_actions_by_rule
        stem = re.sub(
            r"^(?:(?:mode|rule|verdict|what|outcome|model_version|policy_version)_)+", "", name
        ).rstrip("_")  # dead_letters_.+ is the per-kind family dead_letters.<KIND>
        assert f'"{stem}"' in source or f'"{stem}.' in source or f'f"{stem}.' in source, name
