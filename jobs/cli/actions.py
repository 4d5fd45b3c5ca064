"""``streamwarden actions tail``: print the job's decisions from the actions topic."""

from __future__ import annotations

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


def format_action(action: pb.Action) -> str:
    """One line: decision time, verdict, mode, subject, rule(s), scores, event."""
    verdict = pb.Action.Verdict.Name(action.verdict)
    mode = "shadow" if action.mode == pb.Action.SHADOW_MODE else "enforce"
    subject = f"{pb.EntityKind.Name(action.subject.kind).lower()}:{action.subject.id}"
    scores = " ".join(f"{k}={v:.3f}" for k, v in sorted(action.scores.items()))
    return (
        f"{iso(action.decision_time_ms)} {verdict:<14} {mode:<7} {subject} rule={','.join(action.reasons)} "
        f"event={action.event_id} lag={action.decision_time_ms - action.event_time_ms}ms"
        + (f" {scores}" if scores else "")
        + f" policy={action.policy_version} id={action.action_id}"
    )


def tail_cmd(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: str | None = typer.Option(
        None, "--topic", help="Actions topic (default: the config's topics.actions)."
    ),
    json_lines: JsonOpt = False,
    from_beginning: FromBeginningOpt = False,
    max_messages: MaxOpt = None,
    idle_timeout_s: IdleOpt = None,
) -> None:
    """Follow the actions topic and print each Action (Ctrl-C to stop)."""
    try:
        job = job_config(config, bootstrap)
        consumer = open_tail(job, topic or job.topics.actions, from_beginning)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        for _msg, action in records(
            consumer,
            pb.Action.FromString,
            max_messages=max_messages,
            idle_timeout_s=idle_timeout_s,
            warn=lambda w: typer.echo(w, err=True),
        ):
            typer.echo(to_json(action) if json_lines else format_action(action))
    finally:
        consumer.close()
