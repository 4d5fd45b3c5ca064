"""``streamwarden run``: the streamwarden job on Beam (DirectRunner) or Flink, against any Kafka.

The job reads ``topics.events`` with consumer group ``group_id``, writes ``topics.actions``,
``topics.deadletter`` and, with ``write_features``, ``topics.features``. It runs until the input is
idle for ``--idle-timeout-s``, ``--max-records`` were read, or Ctrl-C: a stop request lets the current
bundle finish, flush and commit, so a restart with the same group continues where it stopped.
"""

from __future__ import annotations

import threading
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from streamwarden.jobs.cli.options import (
    BootstrapOpt,
    ConfigOpt,
    LogFormatOpt,
    LogLevelOpt,
    MetricsPortOpt,
    check_broker,
    job_config,
    setup_logging,
)
from streamwarden.jobs.config import JobConfig
from streamwarden.jobs.logging_setup import LogFormat, LogLevel
from streamwarden.operators.errors import ConfigError, StreamwardenError

if TYPE_CHECKING:
    from streamwarden.jobs.observability import LagPoller, MetricsServer

PROGRESS_EVERY_S = 5.0


class Engine(StrEnum):
    beam = "beam"
    flink = "flink"


def progress_line(elapsed_s: float) -> str:
    """One line of the job's live counters (this process's Prometheus registry)."""
    from streamwarden.jobs.observability import counter_value, sum_samples

    read = counter_value("streamwarden_records_total", {"stage": "decode", "direction": "in"})
    events = counter_value("streamwarden_records_total", {"stage": "decode", "direction": "out"})
    return (
        f"[{elapsed_s:6.0f} s] {read:.0f} records read, {events:.0f} events, "
        f"{sum_samples('streamwarden_dead_letters_total'):.0f} dead letters, "
        f"{sum_samples('streamwarden_actions_total'):.0f} actions "
        f"({sum_samples('streamwarden_actions_suppressed_total'):.0f} suppressed), "
        f"consumer lag {sum_samples('streamwarden_consumer_lag_records'):.0f}"
    )


class FlinkProgress:
    """The progress line of a Flink run, every ``PROGRESS_EVERY_S``, from the broker (the job's counters
    live in the JVM's metric groups, not in this process): input records committed by the job's group
    (Flink commits on each checkpoint) and the consumer lag, and how far the actions and dead-letter
    topics grew since the start (offsets: transactional commit markers count too)."""

    def __init__(self, job: JobConfig, interval_s: float = PROGRESS_EVERY_S) -> None:
        self._job = job
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flink-progress", daemon=True)

    def start(self) -> FlinkProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 10)

    def _run(self) -> None:
        from confluent_kafka import TopicPartition

        from streamwarden.jobs.kafka_io import make_consumer

        job = self._job
        consumer = make_consumer(job.kafka, job.group_id)

        def partitions(topic: str) -> list[TopicPartition]:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            return [TopicPartition(topic, p) for p in sorted(meta.partitions)] if meta else []

        def end(topic: str) -> int:
            return sum(
                consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in partitions(topic)
            )

        def position() -> tuple[int, int]:
            committed = lag = 0
            for tp in consumer.committed(partitions(job.topics.events), timeout=5):
                low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                offset = tp.offset if tp.offset >= 0 else low
                committed += offset
                lag += max(0, high - offset)
            return committed, lag

        started = time.monotonic()
        try:
            try:
                outputs = {name: end(name) for name in (job.topics.actions, job.topics.deadletter)}
                first, _ = position()
            except Exception as exc:  # no progress line, but the job runs on
                typer.echo(f"flink: no progress line ({exc})", err=True)
                return
            while not self._stop.wait(self._interval_s):
                elapsed = time.monotonic() - started
                try:
                    committed, lag = position()
                    grown = {name: end(name) - start for name, start in outputs.items()}
                    typer.echo(
                        f"[{elapsed:6.0f} s] flink: {committed - first:,} records committed by checkpoints, "
                        f"consumer lag {lag:,}, actions topic +{grown[job.topics.actions]:,}, "
                        f"dead-letter topic +{grown[job.topics.deadletter]:,} (offsets)",
                        err=True,
                    )
                except Exception as exc:  # a broker hiccup must not stop the job's output
                    typer.echo(f"[{elapsed:6.0f} s] flink: progress unavailable ({exc})", err=True)
        finally:
            consumer.close()


def _run_beam(
    job: JobConfig, max_records: int | None, idle_timeout_s: float | None, bundle_max_ms: int, progress: bool
) -> None:
    from streamwarden.jobs.beam.kafka_source import ReadOptions, request_stop
    from streamwarden.jobs.beam.pipeline import job_metrics, new_stop_token, run_beam

    token = new_stop_token()
    options = ReadOptions(  # type: ignore[call-arg]
        max_records=max_records,
        idle_timeout_s=idle_timeout_s,
        stop_token=token,
        bundle_max_ms=bundle_max_ms,
    )
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = run_beam(job, read_options=options)
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc

    typer.echo(
        f"beam job: {job.kafka.bootstrap_servers} {job.topics.events} -> {job.topics.actions} "
        f"(group {job.group_id}); Ctrl-C stops after the current bundle"
    )
    started = time.monotonic()
    worker = threading.Thread(target=work, name="beam-job", daemon=True)
    worker.start()
    next_progress = started + PROGRESS_EVERY_S
    try:
        while worker.is_alive():
            worker.join(timeout=0.5)
            if progress and time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                typer.echo(progress_line(time.monotonic() - started), err=True)
    except KeyboardInterrupt:
        typer.echo("stopping: finishing the current bundle ...")
        request_stop(token)
        worker.join()
    elapsed_s = time.monotonic() - started
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    result = outcome.get("result")
    if result is None:
        return
    m = job_metrics(result)  # type: ignore[arg-type]
    records = m.counter("records_in")
    verdicts = {k.split(".", 1)[1]: v for k, v in m.counters.items() if k.startswith("actions.")}
    reasons = {k.split(".", 1)[1]: v for k, v in m.counters.items() if k.startswith("dead_letters.")}
    typer.echo(
        f"{records} records in {elapsed_s:.1f} s: {m.counter('events')} events, "
        f"{m.counter('dead_letters')} dead letters {reasons or ''}, actions {verdicts or '{}'} "
        f"({m.counter('actions_suppressed')} suppressed by cooldown)"
    )


def run_cmd(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    engine: Annotated[
        Engine | None, typer.Option(help="Engine to run on (default: the config's engine).")
    ] = None,
    max_records: Annotated[
        int | None, typer.Option(help="Stop after reading this many records.", min=1)
    ] = None,
    idle_timeout_s: Annotated[
        float | None, typer.Option(help="Stop after the input has been idle this long.", min=0.1)
    ] = None,
    bundle_max_ms: Annotated[
        int, typer.Option(help="Beam: longest bundle (bounds the latency bundling adds).", min=1)
    ] = 100,
    metrics_port: MetricsPortOpt = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help=f"A progress line every {PROGRESS_EVERY_S:g} s.")
    ] = True,
    log_level: LogLevelOpt = LogLevel.info,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Run the streamwarden job: events in, actions (and dead letters, features) out."""
    setup_logging(log_level, log_format)
    server = lag = None
    try:
        job = job_config(config, bootstrap)
        chosen = engine.value if engine is not None else job.engine
        if chosen not in ("beam", "flink"):
            raise ConfigError(f"engine {chosen!r} cannot run a live job (use beam or flink)")
        check_broker(job)
        if chosen == "beam":
            if metrics_port is not None:
                server, lag = start_metrics(job, metrics_port)
            _run_beam(job, max_records, idle_timeout_s, bundle_max_ms, progress)
        else:
            from streamwarden.jobs.flink.job import run_flink  # PyFlink starts a JVM: import only when asked

            # Flink's own Prometheus reporter serves the port: the Python operators run in the JVM's
            # interpreter, so their counters live in Flink's metric groups, not in this process.
            flink_progress = FlinkProgress(job).start() if progress else None
            try:
                run_flink(
                    job, max_records=max_records, idle_timeout_s=idle_timeout_s, metrics_port=metrics_port
                )
            finally:
                if flink_progress is not None:
                    flink_progress.stop()
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        if lag is not None:
            lag.stop()
        if server is not None:
            server.stop()


def start_metrics(job: JobConfig, port: int) -> tuple[MetricsServer, LagPoller]:
    """The /metrics endpoint, the versions info metric and the consumer-lag poller of this run."""
    from streamwarden.jobs import observability
    from streamwarden.jobs.config import stages_config
    from streamwarden.operators.pipeline import Stages

    stages = Stages(stages_config(job))
    observability.set_versions(stages.model_version, stages.policy.version)
    lag = observability.LagPoller(job).start()
    server = observability.serve(port, health=lambda: lag.last_error)
    typer.echo(f"metrics: http://127.0.0.1:{server.port}/metrics (health: /healthz)", err=True)
    return server, lag
