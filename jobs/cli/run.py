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
from pathlib import Path
from typing import Annotated

import typer

from streamwarden.jobs.config import JobConfig, load_config
from streamwarden.operators.errors import ConfigError, StreamwardenError


class Engine(StrEnum):
    beam = "beam"
    flink = "flink"


def _run_beam(
    job: JobConfig, max_records: int | None, idle_timeout_s: float | None, bundle_max_ms: int
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
    try:
        while worker.is_alive():
            worker.join(timeout=0.5)
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
    config: Annotated[
        Path | None, typer.Option(help="Job config YAML (Kafka, topics, group, spec/policy/model files).")
    ] = None,
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
) -> None:
    """Run the streamwarden job: events in, actions (and dead letters, features) out."""
    try:
        job = load_config(config)
        chosen = engine.value if engine is not None else job.engine
        if chosen == "beam":
            _run_beam(job, max_records, idle_timeout_s, bundle_max_ms)
        elif chosen == "flink":
            from streamwarden.jobs.flink.job import run_flink  # PyFlink starts a JVM: import only when asked

            run_flink(job, max_records=max_records, idle_timeout_s=idle_timeout_s)
        else:
            raise ConfigError(f"engine {chosen!r} cannot run a live job (use beam or flink)")
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
