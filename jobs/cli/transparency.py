"""``streamwarden transparency statements|report``: DSA statements of reasons for the Transparency
Database, and the transparency report of a period."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from google.protobuf.message import DecodeError, Message

from streamwarden.operators.errors import ConfigError, StreamwardenError
from streamwarden.schemas import streamwarden_pb2 as pb

app = typer.Typer(add_completion=False, no_args_is_help=True)

M = TypeVar("M", bound=Message)


def parse_time(text: str) -> int:
    """``YYYY-MM-DD`` (midnight UTC), an ISO date-time (UTC if no offset) or integer milliseconds."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected YYYY-MM-DD, an ISO date-time or milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def read_messages(path: Path, parse: Callable[[bytes], M]) -> list[M]:
    """A length-delimited protobuf file (the actions file format); errors name the file."""
    from streamwarden.schemas.codec import read_delimited

    try:
        with path.open("rb") as f:
            return [parse(p) for p in read_delimited(f)]
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (ValueError, DecodeError) as exc:
        raise ConfigError(f"{path}: not a length-delimited protobuf file of that message: {exc}") from None


def _topic_messages(
    config: Path | None, bootstrap: str | None, topic_of: str, parse: Callable[[bytes], M]
) -> list[M]:
    from streamwarden.jobs.config import load_config
    from streamwarden.jobs.kafka_io import drain

    job = load_config(config)
    kafka = job.kafka if bootstrap is None else job.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    topic = getattr(job.topics, topic_of)
    out: list[M] = []
    for rec in drain(kafka, topic, idle_timeout_s=2.0):
        try:
            out.append(parse(rec.value or b""))
        except DecodeError:
            continue  # e.g. the JSON labels feedback also reads: not a decision record
    return out


def _statements(
    statements_file: Path | None,
    actions_file: Path | None,
    policy: Path | None,
    config: Path | None,
    bootstrap: str | None,
) -> list[pb.StatementOfReasons]:
    if statements_file is not None:
        return read_messages(statements_file, pb.StatementOfReasons.FromString)
    if actions_file is not None:
        from streamwarden.operators.evaluation.actions_io import read_actions
        from streamwarden.operators.policy.policy import DEFAULT_POLICY_PATH, load_policy
        from streamwarden.operators.transparency.statements import StatementBuilder

        builder = StatementBuilder(load_policy(policy or DEFAULT_POLICY_PATH))
        return list(builder.statements(read_actions(actions_file)))
    return _topic_messages(config, bootstrap, "statements", pb.StatementOfReasons.FromString)


def _reviews(
    reviews_file: Path | None, config: Path | None, bootstrap: str | None, topic: bool
) -> list[pb.ReviewLabel]:
    if reviews_file is not None:
        return read_messages(reviews_file, pb.ReviewLabel.FromString)
    if topic:
        return [
            r
            for r in _topic_messages(config, bootstrap, "labels", pb.ReviewLabel.FromString)
            if r.decision_id
        ]
    return []


def _ledger(
    statements: list[pb.StatementOfReasons], reviews: list[pb.ReviewLabel]
) -> list[pb.StatementOfReasons]:
    from streamwarden.operators.transparency.statements import StatementLedger

    ledger = StatementLedger()
    for s in statements:
        ledger.add_statement(s)
    for r in sorted(reviews, key=lambda x: x.decided_ms):
        ledger.add_label(r)
    return ledger.statements()


From = Annotated[
    str, typer.Option("--from", help="Start of the period (inclusive): YYYY-MM-DD, ISO time or ms.")
]
To = Annotated[str, typer.Option("--to", help="End of the period (exclusive): YYYY-MM-DD, ISO time or ms.")]
StatementsFile = Annotated[
    Path | None,
    typer.Option(help="Read statements from this length-delimited StatementOfReasons file, not the topic."),
]
ActionsFile = Annotated[
    Path | None,
    typer.Option(help="Build the statements from an actions file (eval --actions-out) and --policy instead."),
]
PolicyFile = Annotated[
    Path | None, typer.Option(help="Policy for --actions-file (default: the shipped one).")
]
ReviewsFile = Annotated[
    Path | None,
    typer.Option(help="Review decisions (length-delimited ReviewLabel file) instead of the labels topic."),
]
ReviewsTopic = Annotated[
    bool, typer.Option(help="Read review decisions from the labels topic (when no --reviews-file).")
]
Config = Annotated[Path | None, typer.Option(help="Job config (broker and topic names).")]
Bootstrap = Annotated[str | None, typer.Option(help="Kafka bootstrap servers (overrides the config).")]


@app.command("statements")
def statements_cmd(
    start: From,
    end: To,
    out: Annotated[
        Path, typer.Option(help='JSON-lines file: one {"statements": [...]} request body per line.')
    ],
    statements_file: StatementsFile = None,
    actions_file: ActionsFile = None,
    policy: PolicyFile = None,
    reviews_file: ReviewsFile = None,
    reviews_topic: ReviewsTopic = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100, help="Statements per request body (API max 100).")
    ] = 100,
    config: Config = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Write a period's statements of reasons as the Transparency Database API's batch JSON.

    Statements come from the statements topic (or a file, or are rebuilt from an actions file); review
    decisions revise them (new PUID) or revoke them. Each line of OUT is one body for
    ``POST /api/v1/statements``, validated against the API's field rules; revoked and invalid statements
    are counted and left out.
    """
    from streamwarden.operators.transparency.export import export_period, write_bodies

    try:
        start_ms, end_ms = parse_time(start), parse_time(end)
        if end_ms <= start_ms:
            raise typer.BadParameter("--to must be after --from")
        current = _ledger(
            _statements(statements_file, actions_file, policy, config, bootstrap),
            _reviews(reviews_file, config, bootstrap, reviews_topic),
        )
        res = export_period(current, start_ms, end_ms, batch_size=batch_size)
        write_bodies(res.bodies, out)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{res.statements} statements in {len(res.bodies)} request bodies -> {out}; "
        f"{len(res.revoked)} revoked (withdraw earlier submissions), {len(res.invalid)} invalid"
    )
    for sid, problems in res.invalid[:10]:
        typer.echo(f"invalid {sid}: {'; '.join(problems)}", err=True)
    if res.invalid:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    start: From,
    end: To,
    statements_file: StatementsFile = None,
    actions_file: Annotated[
        Path | None, typer.Option(help="Actions file (eval --actions-out); else the actions topic.")
    ] = None,
    policy: PolicyFile = None,
    reviews_file: ReviewsFile = None,
    reviews_topic: ReviewsTopic = False,
    appeals_file: Annotated[
        Path | None, typer.Option(help="Opened appeals (length-delimited ReviewAppeal).")
    ] = None,
    events: Annotated[
        Path | None, typer.Option(help="Labeled evaluation data: the events file (generate --out).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Labeled evaluation data: the labels file (generate --labels).")
    ] = None,
    out_json: Annotated[Path | None, typer.Option(help="Write the report as JSON.")] = None,
    out_csv: Annotated[
        Path | None, typer.Option(help="Write the report as CSV rows (section, key, value, low, high).")
    ] = None,
    out_html: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML page with charts.")
    ] = None,
    config: Config = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Compute the transparency report of a period (DSA Art. 15) as text, JSON, CSV and HTML.

    Actions by restriction type, ground and category; the share detected and decided by automated means;
    the median time from first abusive event to action (with labels); review volumes and median time to
    review; appeals and outcomes; per rule the reviewer overturn rate and, with --events/--labels,
    precision and recall, each with a 95% Wilson interval. Prints a summary; writes JSON, CSV and HTML.
    """
    from streamwarden.operators.transparency.report import build_report, report_rows

    try:
        start_ms, end_ms = parse_time(start), parse_time(end)
        if actions_file is not None:
            from streamwarden.operators.evaluation.actions_io import read_actions

            actions = read_actions(actions_file)
        else:
            actions = _topic_messages(config, bootstrap, "actions", pb.Action.FromString)
        reviews = _reviews(reviews_file, config, bootstrap, reviews_topic)
        statements = _ledger(_statements(statements_file, actions_file, policy, config, bootstrap), reviews)
        appeals = read_messages(appeals_file, pb.ReviewAppeal.FromString) if appeals_file else []
        truth = scen = None
        if (events is None) != (labels is None):
            raise typer.BadParameter("--events and --labels go together")
        if events is not None and labels is not None:
            from streamwarden.operators.evaluation.harness import traffic_from_files

            traffic = traffic_from_files(events, labels)
            truth, scen = traffic.labels, traffic.event_scenarios
        report = build_report(
            start_ms=start_ms, end_ms=end_ms, actions=actions, statements=statements, reviews=reviews,
            appeals=appeals, labels=truth, event_scenarios=scen,
        )  # fmt: skip
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    rows = report_rows(report)
    width = max(len(f"{r['section']}.{r['key']}") for r in rows)
    for r in rows:
        ci = f"  [{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None and r["high"] is not None else ""
        value = f"{r['value']:.3f}" if isinstance(r["value"], float) else r["value"]
        typer.echo(f"{r['section'] + '.' + r['key']:<{width}}  {value}{ci}")
    if out_json is not None:
        out_json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if out_csv is not None:
        with out_csv.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["section", "key", "value", "low", "high"])
            w.writeheader()
            w.writerows(rows)
    if out_html is not None:
        from streamwarden.operators.transparency.html import render_html

        try:
            page = render_html(report)
        except ImportError:  # plotly is in the [report] extra
            typer.echo("error: the HTML report needs plotly: pip install 'streamwarden[report]'", err=True)
            raise typer.Exit(2) from None
        out_html.write_text(page, encoding="utf-8")
