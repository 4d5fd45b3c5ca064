"""Prometheus metrics of a running job, a ``/healthz`` endpoint, and a consumer-lag poller.

One set of metric families (``streamwarden_*``) for every long-running service. The Beam DirectRunner
runs its DoFns in this process, so its stages update these families directly (``observe_*``, a few
hundred ns each); on Flink the same numbers go through Flink's metric groups (``jobs/flink/metrics.py``)
and Flink's Prometheus reporter, under the names ``deploy/grafana/streamwarden.json`` reads.

``serve(port)`` starts a daemon HTTP server: ``/metrics`` (text exposition format) and ``/healthz``
(200 ``ok`` while the job's health check passes, else 503 and the reason).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    make_wsgi_app,
)

if TYPE_CHECKING:
    from streamwarden.jobs.config import JobConfig
    from streamwarden.operators.pipeline import ReloadOutcome
    from streamwarden.schemas import streamwarden_pb2 as pb

LOG = logging.getLogger("streamwarden.metrics")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: a reset shows in the counter

RECORDS = Counter(
    "streamwarden_records", "Records through each stage, by direction (in/out).", ["stage", "direction"]
)
DEAD_LETTERS = Counter("streamwarden_dead_letters", "Dead letters by error kind.", ["kind"])
ACTIONS = Counter(
    "streamwarden_actions",
    "Actions emitted (after cooldown), by rule, verdict and mode.",
    ["rule", "verdict", "mode"],
)
SUPPRESSED = Counter("streamwarden_actions_suppressed", "Actions suppressed by the cooldown gate.")
DECISION_LATENCY = Histogram(
    "streamwarden_decision_latency_seconds",
    "Event time to the action leaving the cooldown gate (includes producer delay and Kafka transit).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
EVENT_TIME_LAG = Gauge(
    "streamwarden_event_time_lag_seconds", "Wall clock minus the decoder's event-time watermark."
)
CONSUMER_LAG = Gauge(
    "streamwarden_consumer_lag_records",
    "High watermark minus the group's committed offset, per partition of the input topic.",
    ["topic", "partition"],
)
RELOADS = Counter(
    "streamwarden_reloads",
    "Hot-reload attempts of the policy and the models, by outcome.",
    ["what", "outcome"],
)
VERSIONS = Info("streamwarden_versions", "Model and policy versions the job runs.")
HEALTHY = Gauge("streamwarden_up", "1 while the job's health check passes.")

_STAGE_CACHE: dict[tuple[str, str], Any] = {}


def observe_records(stage: str, direction: str, n: int = 1) -> None:
    """``n`` records went ``direction`` ("in"/"out") through ``stage``."""
    child = _STAGE_CACHE.get((stage, direction))
    if child is None:
        child = _STAGE_CACHE[(stage, direction)] = RECORDS.labels(stage, direction)
    child.inc(n)


def observe_dead_letter(kind: str) -> None:
    DEAD_LETTERS.labels(kind).inc()


def observe_watermark(watermark_ms: int | None, now_ms: int) -> None:
    if watermark_ms is not None and watermark_ms > 0:
        EVENT_TIME_LAG.set(max(0.0, (now_ms - watermark_ms) / 1000.0))


def observe_action(action: pb.Action, now_ms: int) -> None:
    """One action admitted by the cooldown gate."""
    from streamwarden.schemas import streamwarden_pb2 as pb

    rule = action.reasons[0] if action.reasons else ""
    ACTIONS.labels(rule, pb.Action.Verdict.Name(action.verdict), pb.Action.Mode.Name(action.mode)).inc()
    DECISION_LATENCY.observe(max(0, now_ms - action.event_time_ms) / 1000.0)


def set_versions(model_version: str, policy_version: str) -> None:
    VERSIONS.info({"model_version": model_version, "policy_version": policy_version})


def observe_reloads(outcomes: Iterable[ReloadOutcome], model_version: str, policy_version: str) -> None:
    """Count reload outcomes; after any, the versions info shows what runs now."""
    seen = False
    for o in outcomes:
        seen = True
        RELOADS.labels(o.what, "applied" if o.ok else "refused").inc()
    if seen:
        set_versions(model_version, policy_version)


def counter_value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of a sample in this process's registry (0 if absent): for progress lines and tests."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return float(value) if value is not None else 0.0


def sum_samples(name: str) -> float:
    """Sum of every labelled sample called ``name``."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("metrics http: " + format, *args)


class MetricsServer:
    """The HTTP endpoint; ``health()`` returns None when healthy, else the reason."""

    def __init__(self, port: int, health: Callable[[], str | None], host: str = "0.0.0.0") -> None:
        metrics_app = make_wsgi_app(REGISTRY)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                problem = health()
                status = "503 Service Unavailable" if problem else "200 OK"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [(problem or "ok").encode() + b"\n"]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        HEALTHY.set_function(lambda: 0.0 if health() else 1.0)  # evaluated on every scrape
        self._server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        LOG.info("metrics on http://%s:%d/metrics, health on /healthz", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, health: Callable[[], str | None] = lambda: None) -> MetricsServer:
    """Start the endpoint on ``port`` (0 = any free port; ``.port`` tells which)."""
    return MetricsServer(port, health).start()


class LagPoller:
    """Every ``interval_s``, sets ``streamwarden_consumer_lag_records`` from the group's committed offsets
    and the partitions' high watermarks (its own consumer; it never joins the group)."""

    def __init__(self, job: JobConfig, interval_s: float = 5.0) -> None:
        self._job = job
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-poller", daemon=True)
        self.last_error: str | None = None

    def start(self) -> LagPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def _run(self) -> None:
        from confluent_kafka import TopicPartition

        from streamwarden.jobs.kafka_io import make_consumer

        job = self._job
        topic = job.topics.events
        consumer = make_consumer(job.kafka, job.group_id)
        try:
            while not self._stop.is_set():
                try:
                    md = consumer.list_topics(topic, timeout=5)
                    parts = [TopicPartition(topic, p) for p in sorted(md.topics[topic].partitions)]
                    for tp in consumer.committed(parts, timeout=5):
                        _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                        committed = tp.offset if tp.offset >= 0 else _low
                        CONSUMER_LAG.labels(topic, str(tp.partition)).set(max(0, high - committed))
                    self.last_error = None
                except Exception as exc:  # a broker hiccup must not kill the poller
                    self.last_error = f"consumer lag: {exc}"
                    LOG.debug("consumer lag poll failed: %s", exc)
                self._stop.wait(self._interval_s)
        finally:
            consumer.close()
