"""Shared fixtures: one embedded broker per test session, isolated topics per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaException
from hypothesis import settings

from deploy.broker import EmbeddedBroker
from jobs.config import KafkaConfig
from jobs.kafka_io import make_admin

# Shared 2-core machines are noisy: a per-example deadline would only measure the neighbours.
settings.register_profile("streamwarden", deadline=None)
settings.load_profile("streamwarden")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite golden expected-output files instead of comparing against them.",
    )


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A started embedded broker (tansu, in memory), stopped at the end of the session."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as started:
        yield started


@pytest.fixture
def kafka_config(broker: EmbeddedBroker) -> KafkaConfig:
    """The embedded-profile ``KafkaConfig`` (short group timeouts) for the session broker."""
    return broker.kafka_config()


@pytest.fixture
def kafka_topics(broker: EmbeddedBroker) -> Iterator[Callable[..., list[str]]]:
    """Factory: ``[events, actions] = kafka_topics("events", "actions", partitions=3)`` creates topics with a
    unique suffix, so tests never see each other's records; they are deleted after the test."""
    created: list[str] = []

    def make(*bases: str, partitions: int = 1) -> list[str]:
        names = [f"{base}-{uuid.uuid4().hex[:10]}" for base in bases]
        broker.create_topics(names, partitions)
        created.extend(names)
        return names

    yield make
    if created and broker.is_running():
        futures = make_admin(broker.kafka_config()).delete_topics(created, operation_timeout=5)
        for future in futures.values():
            with contextlib.suppress(KafkaException, TimeoutError):
                future.result(timeout=5)
