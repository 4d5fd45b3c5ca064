"""The Flink job's Java side (``jobs/flink/java``), built with Maven into a cache outside git.

One ``mvn package`` of ``jobs/flink/java/pom.xml`` makes:

* ``streamwarden-flink-records.jar``: ``RecordWithMetadataSchema``, a ``KafkaRecordDeserializationSchema``
  that passes every record on as one ``byte[]`` (a fixed header with partition, offset, timestamp and key
  length, the key, the value; split by ``jobs/flink/decode.py: split_record``). PyFlink 2.3 only offers
  value-only deserializers, so without it a dead letter could not say where its record came from.
  And ``KeyedBytesRecordSchema``, the sinks' ``Row(key, value)`` serializer that leaves the record
  timestamp to the producer. And ``RecordBatcher``, the operator that packs records into batches under
  one key for the fused layout's Python operator (``jobs/flink/fused.py``).
* ``connector/flink-connector-kafka.jar`` and ``connector/kafka-clients.jar`` from Maven Central (their
  sha256 pins live in ``jobs/flink/connector.py``).

``ensure_java_build`` runs Maven once per content of ``jobs/flink/java`` (pom and sources hashed), with a
private local repository, and reuses the output after that; it is called at job start (and by
``streamwarden flink jars``). The first build downloads Maven's plugins and the jars (~45 MB, ~40 s).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from streamwarden.operators.errors import StreamwardenError

__all__ = [
    "BATCHER_CLASS",
    "CONNECTOR_DIR",
    "JAR_NAME",
    "KEYED_SCHEMA_CLASS",
    "SCHEMA_CLASS",
    "SOURCE_DIR",
    "JavaBuildError",
    "ensure_java_build",
    "ensure_record_jar",
    "source_digest",
]

SOURCE_DIR = Path(__file__).resolve().parent / "java"
JAR_NAME = "streamwarden-flink-records.jar"
CONNECTOR_DIR = "connector"
SCHEMA_CLASS = "streamwarden.flink.RecordWithMetadataSchema"
KEYED_SCHEMA_CLASS = "streamwarden.flink.KeyedBytesRecordSchema"
BATCHER_CLASS = "streamwarden.flink.RecordBatcher"
CACHE_ENV = "STREAMWARDEN_FLINK_JAVA_CACHE"
"""Overrides the build cache (``~/.cache/streamwarden/flink-java``)."""
_DONE = ".complete"


class JavaBuildError(StreamwardenError):
    """The job's Java side could not be built."""


def cache_root() -> Path:
    """``$STREAMWARDEN_FLINK_JAVA_CACHE`` or ``~/.cache/streamwarden/flink-java``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "streamwarden" / "flink-java"


def source_digest(source_dir: Path = SOURCE_DIR) -> str:
    """sha256 over the pom and every source file (relative path and bytes): a change rebuilds."""
    digest = hashlib.sha256()
    files = [source_dir / "pom.xml", *sorted((source_dir / "src").rglob("*.java"))]
    for path in files:
        digest.update(str(path.relative_to(source_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_java_build(source_dir: Path = SOURCE_DIR, cache: Path | None = None, *, mvn: str = "mvn") -> Path:
    """The build output directory (``JAR_NAME`` and ``connector/*.jar``), building it first if this
    content of ``source_dir`` was never built. Safe to call concurrently (a lock; the output is renamed
    into place, so a half-built directory is never seen)."""
    root = cache if cache is not None else cache_root()
    out = root / source_digest(source_dir)[:16]
    if (out / _DONE).is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / _DONE).is_file():
            _build(source_dir, root, out, mvn)
    return out


def ensure_record_jar() -> Path:
    """The jar of ``RecordWithMetadataSchema`` (built if needed)."""
    return ensure_java_build() / JAR_NAME


def _build(source_dir: Path, root: Path, out: Path, mvn: str) -> None:
    if shutil.which(mvn) is None:
        raise JavaBuildError(
            f"{mvn} not found: Maven and a JDK build {source_dir} (make setup installs them)"
        )
    work = root / f"build.tmp.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(source_dir / "pom.xml"),
        f"-Dmaven.repo.local={root / 'm2'}",
        f"-Dsw.build.dir={work}",
        "package",
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    built = [work / JAR_NAME, *sorted((work / CONNECTOR_DIR).glob("*.jar"))]
    if proc.returncode != 0 or not built[0].is_file() or len(built) < 3:
        shutil.rmtree(work, ignore_errors=True)
        log = proc.stdout.decode(errors="replace")[-4000:]
        raise JavaBuildError(f"mvn package of {source_dir} failed ({proc.returncode}):\n{log}")
    staged = root / f"{out.name}.tmp.{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    (staged / CONNECTOR_DIR).mkdir(parents=True)
    for jar in built:
        shutil.copyfile(jar, staged / jar.relative_to(work))
    (staged / _DONE).write_text("ok\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staged, out)
    shutil.rmtree(work, ignore_errors=True)
