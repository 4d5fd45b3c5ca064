"""``streamwarden broker``: the embedded Kafka-compatible broker in the foreground; and the broker
that benchmarks and checks use when none is given."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Annotated

import typer

from streamwarden.deploy.broker import EmbeddedBroker
from streamwarden.jobs.config import KafkaConfig, TopicsConfig
from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config, ensure_topics
from streamwarden.operators.errors import BrokerError

DEFAULT_TOPICS: tuple[str, ...] = tuple(TopicsConfig().model_dump().values())  # type: ignore[call-arg]

CreateTopics = Callable[[Sequence[str], int], object]


@contextlib.contextmanager
def broker_or_external(bootstrap_servers: str | None) -> Iterator[tuple[KafkaConfig, CreateTopics]]:
    """For benchmarks and checks: the given Kafka (embedded client profile) or, when ``None``, a fresh
    embedded broker for the duration of the block; yields its config and a topic creator."""
    if bootstrap_servers:
        kafka = embedded_kafka_config(bootstrap_servers)

        def create(names: Sequence[str], partitions: int) -> object:
            return ensure_topics(kafka, names, partitions, replication_factor=1)

        yield kafka, create
        return
    with EmbeddedBroker() as broker:
        yield embedded_kafka_config(broker.bootstrap_servers), broker_topic_creator(broker.bootstrap_servers)


def run_foreground_cmd(
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 to listen on; default: a free port.")
    ] = None,
    topics: Annotated[str, typer.Option(help="Comma-separated topics to create at start.")] = ",".join(
        DEFAULT_TOPICS
    ),
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of each created topic.")] = 3,
) -> None:
    """Run the embedded Kafka-compatible broker (tansu, in memory) until Ctrl-C or SIGTERM."""
    names = [t.strip() for t in topics.split(",") if t.strip()]
    stop_requested = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    broker = EmbeddedBroker(port)
    try:
        broker.start()
        created = create_local_topics(broker.bootstrap_servers, names, partitions) if names else {}
        typer.echo(
            f"broker ready on {broker.bootstrap_servers} in {broker.startup_s or 0:.2f} s (pid {broker.pid})"
        )
        typer.echo(f"log: {broker.log_path}")
        if created:
            typer.echo("topics: " + ", ".join(f"{n} ({p} partitions)" for n, p in created.items()))
        typer.echo(f"export STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
        typer.echo("data lives in memory only; Ctrl-C to stop")
        sys.stdout.flush()
        while not stop_requested.wait(0.5):
            if not broker.is_running():
                typer.echo(
                    f"the broker exited unexpectedly; log {broker.log_path}:\n{broker.log_tail()}", err=True
                )
                raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        broker.stop()
        signal.signal(signal.SIGTERM, previous)
    typer.echo("broker stopped")


def broker_topic_creator(bootstrap_servers: str) -> CreateTopics:
    """A ``CreateTopics`` for a local single-node broker."""

    def create(names: Sequence[str], partitions: int) -> object:
        return create_local_topics(bootstrap_servers, names, partitions)

    return create
