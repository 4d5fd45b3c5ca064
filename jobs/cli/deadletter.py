"""``streamwarden deadletter tail|replay``: read the dead-letter topic; re-submit records once fixed.

``replay`` reads the dead letters present now (from the oldest, up to the end it finds), keeps the kinds
asked for, and produces each kept record's original bytes to the events topic with headers saying where
it came from. By default only records that the current decoder (this config: framing, limits, schema
ids) accepts are sent, so a replay after a decoder fix re-submits exactly what that fix repaired; a
record cut short in its dead letter (``original_sha256`` set) can never be replayed and is counted.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streamwarden.jobs.cli.options import BootstrapOpt, ConfigOpt, job_config
from streamwarden.jobs.cli.tail import (
    FromBeginningOpt,
    IdleOpt,
    JsonOpt,
    MaxOpt,
    iso,
    open_tail,
    records,
    to_json,
)
from streamwarden.operators.errors import StreamwardenError
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef

ErrorKind = pb.DeadLetter.ErrorKind
KINDS = [v.name for v in ErrorKind.DESCRIPTOR.values if v.number != 0]


def format_dead_letter(letter: pb.DeadLetter) -> str:
    """One line: when, kind, where the record was, why, how big."""
    where = f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
    cut = f" (kept {len(letter.original)} of {letter.original_size} bytes)" if letter.original_sha256 else ""
    stage = f" stage={letter.stage}" if letter.stage else ""
    return (
        f"{iso(letter.time_ms)} {ErrorKind.Name(letter.error_kind):<22} {where} "
        f"{letter.original_size} bytes{cut}{stage}: {letter.message}"
    )


TopicOpt = Annotated[
    str | None, typer.Option("--topic", help="Dead-letter topic (default: the config's topics.deadletter).")
]
KindOpt = Annotated[
    list[str] | None,
    typer.Option("--kind", help=f"Only these error kinds (repeatable): {', '.join(KINDS)}."),
]


def _kinds(kind: list[str] | None) -> set[int] | None:
    if not kind:
        return None
    unknown = sorted(set(kind) - set(KINDS))
    if unknown:
        raise typer.BadParameter(f"unknown kind(s) {unknown}; known: {KINDS}", param_hint="--kind")
    return {ErrorKind.Value(k) for k in kind}


def tail_cmd(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    kind: KindOpt = None,
    json_lines: JsonOpt = False,
    from_beginning: FromBeginningOpt = False,
    max_messages: MaxOpt = None,
    idle_timeout_s: IdleOpt = None,
) -> None:
    """Follow the dead-letter topic and print each DeadLetter (Ctrl-C to stop)."""
    kinds = _kinds(kind)
    try:
        job = job_config(config, bootstrap)
        consumer = open_tail(job, topic or job.topics.deadletter, from_beginning)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        for _msg, letter in records(
            consumer,
            pb.DeadLetter.FromString,
            max_messages=max_messages,
            idle_timeout_s=idle_timeout_s,
            warn=lambda w: typer.echo(w, err=True),
        ):
            if kinds is None or letter.error_kind in kinds:
                typer.echo(to_json(letter) if json_lines else format_dead_letter(letter))
    finally:
        consumer.close()


def replay_cmd(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    kind: KindOpt = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Where to re-submit (default: topics.events).")
    ] = None,
    only_decodable: Annotated[
        bool,
        typer.Option(
            "--only-decodable/--all",
            help="Send only records the current decoder accepts (the fixed ones), or every kept record.",
        ),
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--send", help="Count what would be sent; send nothing.")
    ] = False,
    idle_timeout_s: Annotated[
        float, typer.Option("--idle-timeout-s", min=0.1, help="The topic's end: this long without a record.")
    ] = 3.0,
) -> None:
    """Re-submit dead-lettered records (those the current decoder now accepts) to the events topic."""
    from streamwarden.jobs.config import stages_config
    from streamwarden.jobs.kafka_io import CheckedProducer
    from streamwarden.operators.pipeline import Stages

    kinds = _kinds(kind)
    try:
        job = job_config(config, bootstrap)
        source = topic or job.topics.deadletter
        target = to or job.topics.events
        stages = Stages(stages_config(job))
        consumer = open_tail(job, source, from_beginning=True)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    counts = {"read": 0, "other_kind": 0, "truncated": 0, "still_bad": 0, "sent": 0}
    producer = None if dry_run else CheckedProducer.create(job.kafka)
    try:
        for msg, letter in records(
            consumer,
            pb.DeadLetter.FromString,
            max_messages=None,
            idle_timeout_s=idle_timeout_s,
            warn=lambda w: typer.echo(w, err=True),
        ):
            counts["read"] += 1
            if kinds is not None and letter.error_kind not in kinds:
                counts["other_kind"] += 1
                continue
            if letter.original_sha256:
                counts["truncated"] += 1
                continue
            if only_decodable and isinstance(
                stages.decode(letter.original, SourceRef(), None), pb.DeadLetter
            ):
                counts["still_bad"] += 1
                continue
            counts["sent"] += 1
            if producer is not None:
                headers = [
                    (
                        "streamwarden.replay.of",
                        f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}".encode(),
                    ),
                    (
                        "streamwarden.replay.dead-letter",
                        f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode(),
                    ),
                    ("streamwarden.replay.kind", ErrorKind.Name(letter.error_kind).encode()),
                ]
                producer.produce(target, letter.original, headers=headers)
        if producer is not None:
            producer.flush(30)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        consumer.close()
    verb = "would send" if dry_run else "sent"
    typer.echo(
        f"{counts['read']} dead letters read from {source}: {verb} {counts['sent']} to {target}; "
        f"skipped {counts['other_kind']} of other kinds, {counts['still_bad']} the decoder still refuses, "
        f"{counts['truncated']} cut short"
    )
