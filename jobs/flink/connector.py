"""The Flink Kafka connector jars: built by Maven from ``jobs/flink/java/pom.xml`` into a cache outside
git (``jobs/flink/record_jar.py``) and checked against sha256 pins here.

apache-flink 2.3.0 ships no Kafka connector. ``flink-connector-kafka`` 5.0.0-2.2 with its
``kafka-clients`` 4.2.0 come from Maven Central. Not 4.0.1-2.0 (earlier taken from a PyPI wheel): its
exactly-once writer rethrows the ``TransactionAbortedException`` of its own in-flight sends while it is
closed after a failure, which Flink treats as fatal, so every job failover killed the TaskManager
(FLINK-38790, fixed in 5.0.0).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from streamwarden.jobs.flink.record_jar import CONNECTOR_DIR, ensure_java_build
from streamwarden.operators.errors import StreamwardenError

CONNECTOR_VERSION = "5.0.0-2.2"
KAFKA_CLIENTS_VERSION = "4.2.0"


@dataclass(frozen=True)
class PinnedJar:
    """One connector jar with the sha256 it must have."""

    file_name: str
    sha256: str


JARS: tuple[PinnedJar, ...] = (
    PinnedJar(
        "flink-connector-kafka.jar", "6bb63f7b09930d99745325393b481c092b0c26d626e738b7a1fd6fd8d7d4f1da"
    ),
    PinnedJar("kafka-clients.jar", "bcf39f152c5553c2501a491fc4a73c5b0330741e8eed96a481323b8ee89738af"),
)


class ConnectorFetchError(StreamwardenError):
    """The connector jars could not be built or do not match their pins."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_jars(directory: Path) -> list[Path]:
    """The pinned jars in ``directory``; ``ConnectorFetchError`` if one is missing or differs."""
    paths = []
    for jar in JARS:
        path = directory / jar.file_name
        if not path.is_file():
            raise ConnectorFetchError(f"{path} is missing")
        got = sha256_file(path)
        if got != jar.sha256:
            raise ConnectorFetchError(f"{path}: sha256 {got} is not the pinned {jar.sha256}")
        paths.append(path)
    return paths


def ensure_connector_jars(directory: Path | None = None, *, built: Path | None = None) -> list[Path]:
    """The two connector jars, built (Maven) and verified first if needed; with ``directory``, copies
    of them there (e.g. a cluster's ``lib/``). ``built``: a build output to use instead of the cache's."""
    source = verify_jars((built if built is not None else ensure_java_build()) / CONNECTOR_DIR)
    if directory is None:
        return source
    directory.mkdir(parents=True, exist_ok=True)
    for path in source:
        tmp = directory / f".{path.name}.part"
        shutil.copyfile(path, tmp)
        os.replace(tmp, directory / path.name)
    return verify_jars(directory)


def connector_jars() -> list[Path]:
    """The Kafka connector jars (``flink-connector-kafka.jar``, ``kafka-clients.jar``), built if needed."""
    return ensure_connector_jars()


def jar_urls(jars: list[Path] | None = None) -> list[str]:
    """``file://`` URLs for ``pipeline.jars``."""
    return [p.resolve().as_uri() for p in (jars if jars is not None else connector_jars())]
