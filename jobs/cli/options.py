"""Options shared by the commands that talk to Kafka or run for long: one spelling everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamwarden.jobs.config import JobConfig, load_config
from streamwarden.jobs.logging_setup import LogFormat, LogLevel, configure_logging
from streamwarden.operators.errors import BrokerError

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Job config YAML (Kafka, topics, group, spec/policy/model files)."),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers host:port[,...] (overrides the config)."),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus /metrics and /healthz on this port (0 = any free port).",
        min=0,
    ),
]
LogLevelOpt = Annotated[LogLevel, typer.Option("--log-level", help="Log level.")]
LogFormatOpt = Annotated[LogFormat, typer.Option("--log-format", help="text, or json: one object a line.")]


def job_config(config: Path | None, bootstrap: str | None) -> JobConfig:
    """The job config from ``--config`` (and ``STREAMWARDEN_*``), with ``--bootstrap`` applied."""
    job = load_config(config)
    if bootstrap:
        job = job.model_copy(update={"kafka": job.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
    return job


def setup_logging(level: LogLevel, fmt: LogFormat) -> None:
    configure_logging(level.value, fmt.value)


def check_broker(job: JobConfig, timeout_s: float = 10.0) -> None:
    """One clear ``BrokerError`` when no broker answers at the configured address within ``timeout_s``."""
    from confluent_kafka import KafkaException

    from streamwarden.jobs.kafka_io import make_admin

    admin = make_admin(job.kafka, **{"log.connection.close": False})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(
            f"no Kafka broker reachable at {job.kafka.bootstrap_servers} within {timeout_s:g} s "
            f"({exc.args[0].str() if exc.args else exc}); check --bootstrap / kafka.bootstrap_servers"
        ) from None
