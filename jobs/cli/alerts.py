"""``streamwarden alerts tail``: print AnomalyAlert records from the alerts topic, readably or as JSON lines."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from streamwarden.jobs.cli.options import BootstrapOpt, ConfigOpt, job_config
from streamwarden.jobs.config import JobConfig
from streamwarden.operators.errors import StreamwardenError
from streamwarden.schemas import streamwarden_pb2 as pb


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_alert(alert: pb.AnomalyAlert) -> str:
    """One human-readable line per alert."""
    status = pb.AnomalyAlert.Status.Name(alert.status)
    severity = pb.AnomalyAlert.Severity.Name(alert.severity)
    labels = " ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return (
        f"{_iso(alert.updated_ms)} {status:<8} {severity:<8} {alert.metric} key={alert.series_key} "
        f"observed={alert.observed:g} expected={alert.expected:.1f} score={alert.score:.2f} "
        f"window={_iso(alert.window_start_ms)}..{_iso(alert.window_end_ms)} detector={alert.detector} "
        f"fp={alert.fingerprint}" + (f" [{labels}]" if labels else "")
    )


def alert_to_dict(alert: pb.AnomalyAlert) -> dict[str, Any]:
    """The canonical JSON form (proto3 JSON mapping, proto field names, defaults included)."""
    return json_format.MessageToDict(
        alert, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def alert_to_json(alert: pb.AnomalyAlert) -> str:
    return json.dumps(alert_to_dict(alert), sort_keys=True, separators=(",", ":"))


def _consumer(job: JobConfig) -> Consumer:
    conf = job.kafka.client_config()
    # A throwaway group: tail never commits, and assign() avoids the group-join wait.
    conf.update({"group.id": f"streamwarden-alerts-tail-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    return Consumer(conf)


def _assign(consumer: Consumer, topic: str, from_beginning: bool, timeout_s: float) -> int:
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        reason = info.error if info is not None and info.error is not None else "no partitions"
        raise StreamwardenError(f"topic {topic!r} is not available: {reason}")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in sorted(info.partitions)])
    return len(info.partitions)


def tail_cmd(
    bootstrap: BootstrapOpt = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Alerts topic (default: topics.alerts of the job config).")
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json/--no-json", help="Print one JSON object per line.")
    ] = False,
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning/--from-end", help="Start at the oldest alert, or at new ones."),
    ] = False,
    config: ConfigOpt = None,
    max_messages: Annotated[
        int | None, typer.Option("--max-messages", min=1, help="Stop after this many alerts.")
    ] = None,
    idle_timeout_s: Annotated[
        float | None, typer.Option("--idle-timeout-s", min=0.0, help="Stop after this long without an alert.")
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", min=0.1, help="How long to wait for the broker's metadata.")
    ] = 10.0,
) -> None:
    """Follow the alerts topic and print each AnomalyAlert (Ctrl-C to stop)."""
    try:
        job = job_config(config, bootstrap)
        consumer = _consumer(job)
    except (StreamwardenError, KafkaException) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    topic = topic or job.topics.alerts
    seen = 0
    servers = job.kafka.bootstrap_servers
    try:
        try:
            _assign(consumer, topic, from_beginning, timeout_s=timeout_s)
        except StreamwardenError as exc:
            typer.echo(f"error: {servers}: {exc}", err=True)
            raise typer.Exit(2) from exc
        except KafkaException as exc:
            typer.echo(f"error: cannot read topic {topic!r} from {servers}: {exc.args[0]}", err=True)
            raise typer.Exit(2) from exc
        last = time.monotonic()
        while max_messages is None or seen < max_messages:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                    break
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                typer.echo(f"warning: {err}", err=True)
                continue
            last = time.monotonic()
            try:
                alert = pb.AnomalyAlert.FromString(msg.value() or b"")
            except DecodeError:
                typer.echo(
                    f"warning: {msg.topic()}[{msg.partition()}]@{msg.offset()} is not an AnomalyAlert",
                    err=True,
                )
                continue
            typer.echo(alert_to_json(alert) if json_lines else format_alert(alert))
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
