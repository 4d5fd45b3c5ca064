"""The Flink Kafka connector jars: fetched once from a pinned PyPI wheel into a cache outside git.

apache-flink 2.3.0 ships no Kafka connector. The wheel ``shigawire-apache-flink-libraries`` carries
``flink-connector-kafka.jar`` (4.0.1-2.0) and ``kafka-clients.jar`` (3.9.1), which work with Flink 2.3.
Installing that wheel would clash with Flink 2.3's own jars, so we download it (pinned version and
sha256), extract only those two jars and hand their paths to ``pipeline.jars`` / the cluster's lib/.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamwarden.operators.errors import StreamwardenError

WHEEL_NAME = "shigawire-apache-flink-libraries"
WHEEL_VERSION = "2.0.0.post1"
WHEEL_FILE = "shigawire_apache_flink_libraries-2.0.0.post1-py3-none-any.whl"
WHEEL_SHA256 = "aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd"

CACHE_ENV = "STREAMWARDEN_FLINK_JARS_DIR"
"""Overrides the jar cache directory (the jars land directly in it)."""
WHEEL_ENV = "STREAMWARDEN_FLINK_CONNECTOR_WHEEL"
"""Optional path of an already downloaded wheel (offline builds); its sha256 is still checked."""


@dataclass(frozen=True)
class PinnedJar:
    """One jar taken from the wheel, with the sha256 it must have."""

    member: str
    sha256: str

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


JARS: tuple[PinnedJar, ...] = (
    PinnedJar(
        "pyflink/lib/flink-connector-kafka.jar",
        "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
    ),
    PinnedJar(
        "pyflink/lib/kafka-clients.jar",
        "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
    ),
)


class ConnectorFetchError(StreamwardenError):
    """The connector wheel could not be downloaded, verified or unpacked."""


def cache_dir() -> Path:
    """Where the jars live: ``$STREAMWARDEN_FLINK_JARS_DIR`` or ``~/.cache/streamwarden/flink-jars/<version>``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "streamwarden" / "flink-jars" / WHEEL_VERSION


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jars_present(directory: Path) -> bool:
    return all(
        (directory / jar.file_name).is_file() and sha256_file(directory / jar.file_name) == jar.sha256
        for jar in JARS
    )


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock so concurrent fetches (pytest workers, parallel builds) do the work once."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download_wheel(into: Path) -> Path:
    """``pip download`` the pinned wheel (no deps, binary only) into ``into``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(into),
        f"{WHEEL_NAME}=={WHEEL_VERSION}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConnectorFetchError(
            f"pip download {WHEEL_NAME}=={WHEEL_VERSION} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    wheel = into / WHEEL_FILE
    if not wheel.is_file():
        raise ConnectorFetchError(f"pip download did not produce {WHEEL_FILE} in {into}")
    return wheel


def _extract(wheel: Path, directory: Path) -> None:
    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        raise ConnectorFetchError(f"{wheel}: sha256 {got} does not match the pinned {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        for jar in JARS:
            tmp = directory / f".{jar.file_name}.part"
            with archive.open(jar.member) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            got = sha256_file(tmp)
            if got != jar.sha256:
                tmp.unlink()
                raise ConnectorFetchError(
                    f"{wheel}!{jar.member}: sha256 {got} is not the pinned {jar.sha256}"
                )
            os.replace(tmp, directory / jar.file_name)


def ensure_connector_jars(directory: Path | None = None, wheel: Path | None = None) -> list[Path]:
    """Return the two connector jars in ``directory``, fetching and verifying them first if needed.

    Idempotent and safe to call concurrently. ``wheel`` (or ``$STREAMWARDEN_FLINK_CONNECTOR_WHEEL``)
    skips the download; the pinned sha256 is checked either way.
    """
    target = directory if directory is not None else cache_dir()
    paths = [target / jar.file_name for jar in JARS]
    if _jars_present(target):
        return paths
    with _locked(target):
        if _jars_present(target):  # another process finished while we waited for the lock
            return paths
        local = wheel or (Path(os.environ[WHEEL_ENV]) if os.environ.get(WHEEL_ENV) else None)
        if local is not None:
            _extract(local, target)
        else:
            with tempfile.TemporaryDirectory(prefix="sw-flink-wheel-", dir=target) as tmp:
                _extract(_download_wheel(Path(tmp)), target)
    return paths


def connector_jars() -> list[Path]:
    """The Kafka connector jars (``flink-connector-kafka.jar``, ``kafka-clients.jar``), fetched if needed."""
    return ensure_connector_jars()


def jar_urls(jars: list[Path] | None = None) -> list[str]:
    """``file://`` URLs for ``pipeline.jars``."""
    return [p.resolve().as_uri() for p in (jars if jars is not None else connector_jars())]
