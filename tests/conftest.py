"""Shared fixtures: one real Apache Kafka broker (KRaft, from Maven Central) per test session, isolated
topics per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import KafkaException
from hypothesis import settings

from streamwarden.deploy.kraft import KRaftBroker, ensure_kafka_lib
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config, make_admin
from streamwarden.operators.anomaly import DEFAULT_SPEC_PATH as DEFAULT_ANOMALY_SPEC_PATH

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
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KRaftBroker]:
    """A started single-node Apache Kafka broker (KRaft), stopped at the end of the session."""
    with KRaftBroker(ensure_kafka_lib(), tmp_path_factory.mktemp("kafka")) as started:
        yield started


@pytest.fixture
def kafka_config(broker: KRaftBroker) -> KafkaConfig:
    """The embedded-profile ``KafkaConfig`` (short group timeouts) for the session broker."""
    return embedded_kafka_config(broker.bootstrap_servers)


@pytest.fixture
def kafka_topics(broker: KRaftBroker) -> Iterator[Callable[..., list[str]]]:
    """Factory: ``[events, actions] = kafka_topics("events", "actions", partitions=3)`` creates topics with a
    unique suffix, so tests never see each other's records; they are deleted after the test."""
    created: list[str] = []

    def make(*bases: str, partitions: int = 1) -> list[str]:
        names = [f"{base}-{uuid.uuid4().hex[:10]}" for base in bases]
        create_local_topics(broker.bootstrap_servers, names, partitions)
        created.extend(names)
        return names

    yield make
    if created and broker.is_running():
        futures = make_admin(embedded_kafka_config(broker.bootstrap_servers)).delete_topics(
            created, operation_timeout=5
        )
        for future in futures.values():
            with contextlib.suppress(KafkaException, TimeoutError):
                future.result(timeout=5)


@pytest.fixture(scope="session")
def fast_anomaly_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped anomaly metrics with 5-s buckets and a short warm-up, so two minutes of generated
    traffic produce alerts (engine tests compare them with the offline alert replay)."""
    data: Any = yaml.safe_load(DEFAULT_ANOMALY_SPEC_PATH.read_text(encoding="utf-8"))
    data["defaults"].update({"bucket_ms": 5_000, "allowed_lateness_ms": 2_000, "idle_expiry_ms": 20_000})
    # The shipped default is an ensemble whose members need hours (seasonal: days); a robust_z member
    # with a 4-bucket warm-up alerts within the run.
    data["defaults"]["detector"].update(
        {
            "members": ["robust_z"],
            "combine": "max",
            "threshold": 0.4,
            "robust_z": {"window_buckets": 15, "warmup_buckets": 4, "threshold": 0.4},
        }
    )
    data["defaults"]["lifecycle"]["cooldown_buckets"] = 2
    for m in data["metrics"]:
        for k in ("bucket_ms", "allowed_lateness_ms", "idle_expiry_ms"):
            m.pop(k, None)
        det = m.get("detector")
        if det is not None:
            det.pop("window_buckets", None)
            det.pop("warmup_buckets", None)
            det.pop("robust_z", None)
            det["min_abs_delta"] = 2
    path = tmp_path_factory.mktemp("anomaly") / "fast_metrics.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
