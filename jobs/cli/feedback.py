"""``streamwarden feedback build``: reviewer decisions (``labels`` topic) joined with the feature log
(``features`` topic) into a training dataset file for ``streamwarden train --dataset FILE``.

The message format of the ``labels`` topic, the join rule and the CSV file format are defined in
``operators/evaluation/feedback.py``. The feature log names no subject, so the ``events`` topic links an
event id to the entities that acted (the job writes the feature log with ``write_features: true``).
Each topic is read from its beginning on every partition (``assign()``, no consumer group, nothing
committed) until it has been idle for ``--idle-timeout-s``: a bounded batch job over what the topics hold.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.message import DecodeError

from streamwarden.jobs.config import KafkaConfig, load_config
from streamwarden.jobs.kafka_io import Record, drain
from streamwarden.operators.errors import StreamwardenError
from streamwarden.operators.evaluation.feedback import (
    DEFAULT_LOOKBACK_MS,
    JoinStats,
    join_training_rows,
    parse_decisions,
    write_dataset,
)
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event


def _events(records: list[Record], bad: Counter[str]) -> Iterator[pb.Event]:
    for r in records:
        out = decode_event(r.value)
        if isinstance(out, pb.Event):
            yield out
        else:
            bad["events: " + pb.DeadLetter.ErrorKind.Name(out.error_kind)] += 1


def _features(records: list[Record], bad: Counter[str]) -> Iterator[pb.FeatureRecord]:
    for r in records:
        try:
            yield pb.FeatureRecord.FromString(r.value or b"")
        except DecodeError:
            bad["features: undecodable"] += 1


def build_dataset(
    kafka: KafkaConfig,
    *,
    labels_topic: str,
    features_topic: str,
    events_topic: str,
    out: Path,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
    idle_timeout_s: float = 3.0,
    max_wait_s: float = 600.0,
) -> tuple[JoinStats, Counter[str]]:
    """Read the three topics, join them and write the dataset file; the join's statistics and the
    records that could not be decoded (by topic and reason)."""
    read = {
        name: drain(kafka, topic, idle_timeout_s=idle_timeout_s, max_wait_s=max_wait_s)
        for name, topic in (("labels", labels_topic), ("features", features_topic), ("events", events_topic))
    }
    decisions, bad_decisions = parse_decisions(r.value for r in read["labels"])
    bad: Counter[str] = Counter()
    data = join_training_rows(
        decisions,
        _events(read["events"], bad),
        _features(read["features"], bad),
        lookback_ms=lookback_ms,
    )
    data.stats.bad_decisions.update(bad_decisions)
    write_dataset(out, data)
    return data.stats, bad


def feedback_build_cmd(
    out: Annotated[Path, typer.Option("--out", help="Dataset file to write (CSV; see the README).")],
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: from --config / environment).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Job config YAML (Kafka settings, topic names).")
    ] = None,
    labels_topic: Annotated[
        str | None, typer.Option(help="Reviewer decisions topic (default: topics.labels).")
    ] = None,
    features_topic: Annotated[
        str | None, typer.Option(help="Feature log topic (default: topics.features).")
    ] = None,
    events_topic: Annotated[str | None, typer.Option(help="Events topic (default: topics.events).")] = None,
    lookback_ms: Annotated[
        int, typer.Option(help="A decision labels its subject's events this long before it, ms.", min=1)
    ] = DEFAULT_LOOKBACK_MS,
    idle_timeout_s: Annotated[
        float, typer.Option(help="Stop reading a topic after it was idle this long.", min=0.1)
    ] = 3.0,
) -> None:
    """Join reviewer decisions with the feature log into a training dataset (``train --dataset``)."""
    started = time.perf_counter()
    try:
        job = load_config(config)
        kafka = job.kafka.model_copy(update={"bootstrap_servers": bootstrap}) if bootstrap else job.kafka
        topics = job.topics
        stats, bad = build_dataset(
            kafka,
            labels_topic=labels_topic or topics.labels,
            features_topic=features_topic or topics.features,
            events_topic=events_topic or topics.events,
            out=out,
            lookback_ms=lookback_ms,
            idle_timeout_s=idle_timeout_s,
        )
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    elapsed = time.perf_counter() - started
    typer.echo(
        f"{stats.decisions} decisions on {stats.subjects} subjects, {stats.events} events, "
        f"{stats.feature_records} feature records -> {stats.rows} rows ({stats.positives} abuse, "
        f"{stats.negatives} benign) in {out} ({elapsed:.1f} s)"
    )
    if stats.bad_decisions or bad:
        typer.echo(f"skipped undecodable records: {dict(stats.bad_decisions) | dict(bad)}")
    if stats.subjects_without_rows:
        typer.echo(
            f"{stats.subjects_without_rows} decided subjects gave no row (no logged event of theirs in "
            f"[decided_ms - {lookback_ms} ms, decided_ms], or not an actor kind)"
        )
    typer.echo(json.dumps({"out": str(out), **stats.as_dict(), "undecodable": dict(bad)}, sort_keys=True))
