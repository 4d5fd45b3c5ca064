"""The streamwarden job on Beam: read → decode → velocity → assemble → score → decide → cooldown → write.

::

    ReadFromKafka(events) ─ DecodeFn ─┬─ dead letters ─────────────────────────────▶ WriteToKafka(deadletter)
                                      └─ (entity key, facts) ─ VelocityFn [keyed by entity; joins per bundle]
                                           ─ (event id, vector | partials) ─ AssembleFn [keyed by event id]
                                           ─ vector ─ ScoreFn [micro-batch] ─ DecideFn ─┬─ features ─▶ WriteToKafka(features)
                                           ─ (subject, action) ─ CooldownFn [keyed by subject] ─▶ WriteToKafka(actions)
                                                └─ StatementsFn (enforcing restrictions) ─▶ WriteToKafka(statements)
                     └─ (alerts=True) SeriesPointsFn ─ AnomalyFn [keyed by series id] ─▶ WriteToKafka(alerts)

Every DoFn is a few lines over ``operators.pipeline.Stages``. On the DirectRunner (FnApiRunner, one
worker) the whole graph is one fused stage: there is no GroupByKey, Reshuffle or multi-input Flatten
(those would hold their output until the input ends), keyed stateful DoFns read their key from the
element, and the event-level partial takes the velocity route under key ``"0|<event id>"``. So each
bundle of records flows through to the sinks' flush before the source's bundle finalizer commits its
offsets: at-least-once end to end; a re-processed event yields the same action ids.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import Pipeline
from apache_beam.pvalue import PCollection
from apache_beam.runners.runner import PipelineResult
from apache_beam.transforms.ptransform import PTransform

from streamwarden.jobs.beam.alerts import AnomalyAlerts
from streamwarden.jobs.beam.assemble import AssembleFn
from streamwarden.jobs.beam.cooldown import CooldownFn
from streamwarden.jobs.beam.decide import FEATURES, DecideFn
from streamwarden.jobs.beam.decode import DEAD_LETTERS, METRICS_NAMESPACE, DecodeFn
from streamwarden.jobs.beam.kafka_sink import WriteToKafka
from streamwarden.jobs.beam.kafka_source import (
    KafkaRecord,
    ReadFromKafka,
    ReadOptions,
    clear_stop,
    event_time_from_event,
    request_stop,
)
from streamwarden.jobs.beam.runtime import tune_state_cache
from streamwarden.jobs.beam.score import ScoreFn
from streamwarden.jobs.beam.shared_store import GateClocks, SharedHandle
from streamwarden.jobs.beam.statements import StatementsFn
from streamwarden.jobs.beam.velocity import VelocityFn
from streamwarden.jobs.config import JobConfig, KafkaConfig, stages_config
from streamwarden.operators.pipeline import OPERATOR_STAGES, Stages, StagesConfig

__all__ = [
    "JobMetrics",
    "JobOutputs",
    "StreamwardenTransform",
    "build_job",
    "job_metrics",
    "new_stop_token",
    "pipeline_options",
    "request_stop",
    "run_beam",
    "run_beam_in_process",
    "stages_config",
]


def pipeline_options(*extra: str) -> PipelineOptions:
    """DirectRunner options the job needs: one worker (the Kafka SDF requires it), in-memory mode."""
    return PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory", *extra])


class JobOutputs(NamedTuple):
    """The job's output streams, each ``(key bytes, value bytes)`` ready for ``WriteToKafka``."""

    actions: PCollection[tuple[bytes, bytes]]
    dead_letters: PCollection[tuple[bytes | None, bytes]]
    features: PCollection[tuple[bytes, bytes]] | None
    alerts: PCollection[tuple[bytes, bytes]] | None = None
    statements: PCollection[tuple[bytes, bytes]] | None = None
    operator_errors: tuple[PCollection[tuple[bytes, bytes]], ...] = ()
    """The ``OPERATOR_ERROR`` dead letters of velocity, assemble, score and decide (one stream each),
    for the dead-letter topic too."""


class StreamwardenTransform(PTransform[PCollection[KafkaRecord], JobOutputs]):
    """``KafkaRecord``s → actions, dead letters and (optionally) feature records, as encoded pairs.

    ``check_future`` applies the decoder's wall-clock future-time check (off for recorded replays);
    ``score_batch`` caps the micro-batch; ``arm_timers`` arms the assembly's never-hang timers;
    ``alerts`` adds the anomaly stage (``jobs/beam/alerts.py``; ``anomaly_spec`` None = shipped spec,
    ``flush_alerts_at_end`` for bounded inputs only).
    """

    def __init__(
        self,
        config: StagesConfig,
        *,
        write_features: bool = False,
        check_future: bool = True,
        score_batch: int = 256,
        arm_timers: bool = True,
        alerts: bool = True,
        anomaly_spec: Path | None = None,
        flush_alerts_at_end: bool = False,
    ) -> None:
        super().__init__()
        self._alerts = alerts
        self._anomaly_spec = anomaly_spec
        self._flush_alerts_at_end = flush_alerts_at_end
        self._config = config
        self._write_features = write_features
        self._check_future = check_future
        self._score_batch = score_batch
        self._arm_timers = arm_timers

    def expand(self, records: PCollection[KafkaRecord]) -> JobOutputs:
        tune_state_cache()
        config = self._config
        gate: SharedHandle[GateClocks] = SharedHandle()  # the decoder's gate, for the stages' expiry
        decoded = records | "Decode" >> beam.ParDo(
            DecodeFn(config, check_future=self._check_future, gate_clocks=gate)
        ).with_outputs(DEAD_LETTERS, main="routes")
        # Each stage after fan-out sends the events it failed on to its own dead-letter output
        # (jobs/beam/guard.py), written by a sink of its own: a Flatten would hold them to the end.
        partials = decoded.routes | "Velocity" >> beam.ParDo(
            VelocityFn(config, join_in_bundle=True, gate_clocks=gate)
        ).with_outputs(DEAD_LETTERS, main="out")
        vectors = partials.out | "Assemble" >> beam.ParDo(
            AssembleFn(config, arm_timers=self._arm_timers)
        ).with_outputs(DEAD_LETTERS, main="out")
        scored = vectors.out | "Score" >> beam.ParDo(
            ScoreFn(config, max_batch=self._score_batch)
        ).with_outputs(DEAD_LETTERS, main="out")
        decided = scored.out | "Decide" >> beam.ParDo(
            DecideFn(config, write_features=self._write_features)
        ).with_outputs(FEATURES, DEAD_LETTERS, main="actions")
        operator_errors = tuple(s[DEAD_LETTERS] for s in (partials, vectors, scored, decided))
        actions = decided.actions | "Cooldown" >> beam.ParDo(CooldownFn(config, gate_clocks=gate))
        statements = actions | "Statements" >> beam.ParDo(StatementsFn(config))
        features = decided[FEATURES] if self._write_features else None
        alerts = None
        if self._alerts:
            alerts = records | "Alerts" >> AnomalyAlerts(
                config,
                self._anomaly_spec,
                check_future=self._check_future,
                flush_at_end=self._flush_alerts_at_end,
            )
        return JobOutputs(actions, decoded[DEAD_LETTERS], features, alerts, statements, operator_errors)


def build_job(
    pipeline: Pipeline,
    job: JobConfig,
    *,
    read_options: ReadOptions | None = None,
    records: PCollection[KafkaRecord] | None = None,
    check_future: bool = True,
    score_batch: int = 256,
    anomaly_spec: Path | None = None,
) -> JobOutputs:
    """Add the whole job to ``pipeline``: the Kafka read (unless ``records`` is given), the transform and
    the three sinks of ``job.topics``; ``anomaly_spec``: the alerts stage's spec (None = shipped)."""
    if records is None:
        records = pipeline | "ReadEvents" >> ReadFromKafka(
            job.kafka,
            job.topics.events,
            job.group_id,
            options=read_options,
            event_time_fn=event_time_from_event,
        )
    outputs: JobOutputs = records | "Streamwarden" >> StreamwardenTransform(
        stages_config(job),
        write_features=job.write_features,
        check_future=check_future,
        score_batch=score_batch,
        anomaly_spec=anomaly_spec,
    )
    topics = job.topics
    outputs.actions | "WriteActions" >> WriteToKafka(job.kafka, topics.actions)
    if outputs.statements is not None:
        outputs.statements | "WriteStatements" >> WriteToKafka(job.kafka, topics.statements)
    outputs.dead_letters | "WriteDeadLetters" >> WriteToKafka(job.kafka, topics.deadletter)
    for stage, letters in zip(OPERATOR_STAGES, outputs.operator_errors, strict=True):
        letters | f"WriteDeadLetters-{stage}" >> WriteToKafka(job.kafka, topics.deadletter)
    if outputs.features is not None:
        outputs.features | "WriteFeatures" >> WriteToKafka(job.kafka, topics.features)
    if outputs.alerts is not None:
        outputs.alerts | "WriteAlerts" >> WriteToKafka(job.kafka, topics.alerts)
    return outputs


def run_beam(
    job: JobConfig,
    *,
    read_options: ReadOptions | None = None,
    options: PipelineOptions | None = None,
    score_batch: int = 256,
    anomaly_spec: Path | None = None,
) -> PipelineResult:
    """Build the operators (start-up errors name the file), run the job on the DirectRunner until the
    read stops (``read_options``: max records, idle timeout, stop token), and return the result."""
    _ = Stages.shared(stages_config(job)).decider  # load and check spec, models, policy now
    pipeline = Pipeline(options=options if options is not None else pipeline_options())
    build_job(pipeline, job, read_options=read_options, score_batch=score_batch, anomaly_spec=anomaly_spec)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def run_beam_in_process(
    bootstrap_servers: str,
    stop_token: str,
    *,
    job: JobConfig | None = None,
    kafka: KafkaConfig | None = None,
    read_options: ReadOptions | None = None,
    anomaly_spec: Path | None = None,
) -> PipelineResult:
    """Run the job against ``bootstrap_servers`` until ``request_stop(stop_token)`` is called (from
    another thread of this process); blocks, so call it in a thread. ``job`` gives topics, group and
    operator files (default: ``JobConfig()``), ``kafka`` the connection (default: ``job.kafka`` with
    ``bootstrap_servers``). The token is cleared first, so it can be reused."""
    base = job if job is not None else JobConfig()  # type: ignore[call-arg]
    conn = (
        kafka if kafka is not None else base.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    )
    run_job = base.model_copy(update={"kafka": conn})
    opts = read_options if read_options is not None else ReadOptions(bundle_max_ms=100)  # type: ignore[call-arg]
    clear_stop(stop_token)
    return run_beam(
        run_job, read_options=opts.model_copy(update={"stop_token": stop_token}), anomaly_spec=anomaly_spec
    )


@dataclass(frozen=True)
class JobMetrics:
    """The job's Beam metrics (namespace ``streamwarden``) after or during a run."""

    counters: dict[str, int]
    distributions: dict[str, tuple[int, int, int, int]]
    """name → (count, sum, min, max)."""

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)


def job_metrics(result: PipelineResult) -> JobMetrics:
    """Committed counters and distributions of the job (``streamwarden``, ``kafka_source``,
    ``kafka_sink`` namespaces; names are prefixed by the namespace except for ``streamwarden``)."""
    query = result.metrics().query()
    counters: dict[str, int] = {}
    for c in query["counters"]:
        name = _metric_name(c.key.metric.namespace, c.key.metric.name)
        counters[name] = counters.get(name, 0) + int(c.committed or 0)
    dists: dict[str, tuple[int, int, int, int]] = {}
    for d in query["distributions"]:
        name = _metric_name(d.key.metric.namespace, d.key.metric.name)
        v: Any = d.committed
        if v is None or not v.count:
            continue
        dists[name] = (int(v.count), int(v.sum), int(v.min), int(v.max))
    return JobMetrics(counters, dists)


def _metric_name(namespace: str, name: str) -> str:
    return name if namespace == METRICS_NAMESPACE else f"{namespace}.{name}"


def new_stop_token() -> str:
    """A fresh token for ``ReadOptions.stop_token`` / ``run_beam_in_process``."""
    return f"streamwarden-{uuid.uuid4().hex}"
