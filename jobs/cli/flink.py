"""``streamwarden flink ...``: the Kafka connector jars, a local standalone cluster, smoke checks."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer

from streamwarden.jobs.flink.cluster import STATE_FILE, LocalFlinkCluster
from streamwarden.jobs.flink.connector import ensure_connector_jars
from streamwarden.jobs.flink.smoke_check import run_smoke

DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "streamwarden-flink-cluster"


_WORK_DIR_HELP = "Cluster directory (conf, lib, log, pid, cluster.json)."
_WORK_DIR_DEFAULT = "streamwarden-flink-cluster in the system temp directory"
"""Shown instead of the resolved path: help text says what the default is, not this machine's path."""


def cluster_start_cmd(
    work_dir: Annotated[
        Path, typer.Option(help=_WORK_DIR_HELP, show_default=_WORK_DIR_DEFAULT)
    ] = DEFAULT_WORK_DIR,
    taskmanagers: Annotated[
        int, typer.Option(help="TaskManager processes; with one slot each, the job's parallelism.")
    ] = 2,
    task_slots: Annotated[
        int,
        typer.Option(
            help="Slots per TaskManager (1: each subtask gets a JVM, so a Python interpreter, of its own)."
        ),
    ] = 1,
) -> None:
    """Start a local standalone Flink cluster bound to 127.0.0.1 and print its REST URL."""
    cluster = LocalFlinkCluster(work_dir.resolve(), task_slots=task_slots, taskmanagers=taskmanagers).start()
    typer.echo(f"Flink cluster up: {cluster.rest_url} (dir {cluster.work_dir})")


def cluster_submit_cmd(
    py_file: Annotated[Path, typer.Argument(help="The Python job file, e.g. jobs/flink/job.py.")],
    job_args: Annotated[
        list[str] | None, typer.Argument(help="Arguments for the job file (after --).")
    ] = None,
    work_dir: Annotated[
        Path, typer.Option(help=_WORK_DIR_HELP, show_default=_WORK_DIR_DEFAULT)
    ] = DEFAULT_WORK_DIR,
    savepoint: Annotated[str | None, typer.Option(help="Restore from this savepoint/checkpoint.")] = None,
) -> None:
    """Submit a Python job (detached) to the cluster started by 'cluster-start'; print its job id."""
    cluster = LocalFlinkCluster.attach(work_dir.resolve())
    typer.echo(cluster.submit(py_file.resolve(), job_args or [], savepoint=savepoint))


def cluster_stop_cmd(
    work_dir: Annotated[
        Path, typer.Option(help=_WORK_DIR_HELP, show_default=_WORK_DIR_DEFAULT)
    ] = DEFAULT_WORK_DIR,
) -> None:
    """Stop the cluster started by 'cluster-start' and kill any process it left behind."""
    cluster = LocalFlinkCluster.attach(work_dir.resolve())
    cluster.stop()
    (cluster.work_dir / STATE_FILE).unlink(missing_ok=True)
    typer.echo("Flink cluster stopped")


def jars_cmd(
    dest: Annotated[
        Path | None,
        typer.Option(
            help="Put the jars here instead of the cache (e.g. Flink's lib folder in an image build)."
        ),
    ] = None,
) -> None:
    """Fetch (if needed) the pinned Kafka connector jars, build the job's own jar, print their paths."""
    import shutil

    from streamwarden.jobs.flink.record_jar import ensure_record_jar

    for path in ensure_connector_jars(dest):
        typer.echo(str(path))
    jar = ensure_record_jar()
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        jar = Path(shutil.copyfile(jar, dest / jar.name))
    typer.echo(str(jar))


def smoke_cmd(
    events: Annotated[int, typer.Option(help="Records per run.")] = 20_000,
    modes: Annotated[
        list[str] | None, typer.Option("--mode", help="thread and/or process (repeatable).")
    ] = None,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option("--bootstrap", help="Use this broker instead of starting the embedded one."),
    ] = None,
) -> None:
    """Run the Flink smoke job (bytes in -> keyed Python state -> EXACTLY_ONCE out) on a MiniCluster per mode.

    Prints one JSON line per mode: correctness problems, start-up times and the keyed stage's events/s.
    """
    import contextlib
    import tempfile

    from streamwarden.jobs.cli.broker import broker_or_external

    chosen: list[Literal["thread", "process"]] = []
    for m in modes or ["thread", "process"]:
        if m not in ("thread", "process"):
            raise typer.BadParameter(f"--mode must be thread or process, got {m}")
        chosen.append(m)  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        kafka, create = stack.enter_context(broker_or_external(bootstrap_servers))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sw-flink-smoke-")))
        failed = False
        for mode in chosen:
            report = run_smoke(kafka, create, work / mode, mode=mode, n=events)
            failed |= bool(report["problems"])
            typer.echo(json.dumps(report))
    if failed:
        raise typer.Exit(1)
