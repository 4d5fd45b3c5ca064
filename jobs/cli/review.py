"""``streamwarden review``: the human review service (actions in, reviewer decisions out as labels) and
its accounts.

The store is SQLite by default (``--db sqlite:///review.db``); for production give a PostgreSQL URL
(``postgresql+psycopg://user:pass@host/db``), or set ``STREAMWARDEN_REVIEW_DB``. Every command brings the
schema up to date first (Alembic migrations).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from streamwarden.jobs.cli.options import MetricsPortOpt
from streamwarden.operators.errors import StreamwardenError

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: $STREAMWARDEN_REVIEW_DB or sqlite:///review.db)."),
]


def _db(url: str | None) -> str:
    return url or os.environ.get("STREAMWARDEN_REVIEW_DB") or "sqlite:///review.db"


def serve_cmd(
    db: DbOption = None,
    config: Annotated[
        Path | None, typer.Option(help="Job config YAML (Kafka settings, topic names).")
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (overrides the config).")
    ] = None,
    routing: Annotated[
        Path | None, typer.Option(help="Routing YAML (default: operators/review/default_routing.yaml).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the console binds to.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Console port (0 = any free port).", min=0, max=65535)] = 8080,
    appeals_topic: Annotated[
        str, typer.Option(help="Topic of ReviewAppeal messages ('' = none).")
    ] = "appeals",
    group_id: Annotated[
        str, typer.Option(help="Consumer group of the review service.")
    ] = "streamwarden-review",
    no_kafka: Annotated[
        bool, typer.Option("--no-kafka", help="Console only: consume and produce nothing.")
    ] = False,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run the review service: consume actions into review queues, serve the console, produce labels.

    ``--metrics-port``: Prometheus ``/metrics`` (open jobs per queue, the oldest one's age, decisions,
    the label outbox: ``jobs/review/metrics.py``) and ``/healthz`` (503 once a service thread failed)."""
    from streamwarden.jobs.config import load_config
    from streamwarden.jobs.review.kafka_loops import ReviewTopics
    from streamwarden.jobs.review.service import ReviewService
    from streamwarden.jobs.review.store import ReviewStore
    from streamwarden.operators.review.routing import load_routing

    try:
        job = load_config(config)
        kafka = job.kafka.model_copy(update={"bootstrap_servers": bootstrap}) if bootstrap else job.kafka
        rules = load_routing(routing)
        store = ReviewStore.open(_db(db), labels_topic=job.topics.labels)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    topics = ReviewTopics(
        job.topics.actions,
        job.topics.labels,
        job.topics.features,
        appeals_topic or None,
        job.topics.statements,
    )
    service = ReviewService(
        store, rules, None if no_kafka else kafka, topics, host, port, group_id, policy=job.policy
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    url = service.start()
    typer.echo(f"review console: {url}  (store {store.engine.url.render_as_string(hide_password=True)})")
    unregister, metrics = None, None
    if metrics_port is not None:
        from streamwarden.jobs import observability
        from streamwarden.jobs.review.metrics import register

        def health() -> str | None:
            failed = [f"{where}: {failure!r}" for where, failure in service.errors]
            return "; ".join(failed) or ("stopped" if service.stop_event.is_set() else None)

        unregister = register(store, rules.queue_names())
        metrics = observability.serve(metrics_port, health)
        typer.echo(f"metrics on port {metrics.port}: /metrics, /healthz")
    if not no_kafka:
        typer.echo(
            f"consuming {topics.actions}, {topics.features}, {topics.appeals}; labels -> {topics.labels}"
        )
    try:
        while not stop.is_set() and not service.stop_event.is_set():
            time.sleep(0.2)
    finally:
        if metrics is not None:
            metrics.stop()
        if unregister is not None:
            unregister()
        service.stop()
        store.close()
    for where, failure in service.errors:
        typer.echo(f"error in the review {where}: {failure!r}", err=True)
    if service.errors:
        raise typer.Exit(1)


def migrate_cmd(db: DbOption = None) -> None:
    """Create or upgrade the review store's schema (Alembic migrations to the latest revision)."""
    from streamwarden.jobs.review.store import ReviewStore

    ReviewStore.open(_db(db)).close()
    typer.echo("review store schema is up to date")


def add_user_cmd(
    username: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="reviewer or admin.")] = "reviewer",
    password: Annotated[
        str | None,
        typer.Option(
            help="Password (prompted when not given; omit with --service for an API-key-only user)."
        ),
    ] = None,
    service: Annotated[bool, typer.Option("--service", help="A service account: no password.")] = False,
    db: DbOption = None,
) -> None:
    """Add a console user (argon2id-hashed password) or a service account."""
    from streamwarden.jobs.review.store import ReviewStore, StoreError

    if password is None and not service:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    store = ReviewStore.open(_db(db))
    try:
        store.add_user(username, None if service else password, role, actor="cli")
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        store.close()
    typer.echo(f"added {role} {username}")


def api_key_cmd(username: Annotated[str, typer.Argument(help="User name.")], db: DbOption = None) -> None:
    """Issue a new API key for a user (replaces the old one); printed once, only its hash is stored."""
    from streamwarden.jobs.review.store import ReviewStore, StoreError

    store = ReviewStore.open(_db(db))
    try:
        typer.echo(store.new_api_key(username, actor="cli"))
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        store.close()
