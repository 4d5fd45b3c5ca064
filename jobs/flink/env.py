"""Build the PyFlink execution environment, Kafka source and Kafka sink the streamwarden way.

Three things here are not obvious from the PyFlink docs and were verified on this machine:

* the Kafka connector is not in apache-flink 2.3: its jars come from :mod:`jobs.flink.connector`
  and are passed through ``pipeline.jars``;
* PyFlink's ``KafkaOffsetsInitializer.committed_offsets`` and ``.offsets`` name the *shaded* Kafka
  classes and fail with the thin connector, so those initializers are built through the gateway;
* raw bytes travel as ``Types.PRIMITIVE_ARRAY(Types.BYTE())`` with Flink's own ``ByteArraySchema``
  (source and value-only sink) and ``RowFieldExtractorSchema`` (keyed sink: ``Row(key, value)``);
  keyed state of bytes needs :mod:`jobs.flink.state` in thread mode.
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import streamwarden
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.flink.connector import connector_jars, jar_urls
from streamwarden.jobs.flink.record_jar import KEYED_SCHEMA_CLASS, SCHEMA_CLASS, ensure_record_jar
from streamwarden.operators.errors import ConfigError

if TYPE_CHECKING:
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import KafkaSink, KafkaSource

REPO_ROOT = Path(streamwarden.__file__).resolve().parents[1]
"""The directory that holds the ``streamwarden`` package (the repository, or site-packages)."""

ExecutionMode = Literal["thread", "process"]
StartFrom = Literal["committed", "earliest", "latest"]
Guarantee = Literal["exactly_once", "at_least_once", "none"]


class FlinkConfig(BaseModel):
    """How the Flink job executes: Python runtime, state backend, checkpoints, restore path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    execution_mode: ExecutionMode = Field(
        "thread",
        description="python.execution-mode: 'thread' runs Python in the TaskManager JVM (PEMJA, ~10x faster "
        "keyed state); 'process' runs a separate Python worker over gRPC.",
    )
    parallelism: int = Field(1, ge=1, description="Default operator parallelism.")
    max_parallelism: int = Field(
        128, ge=1, description="Key-group count; fixed for the life of the state (savepoints depend on it)."
    )
    bundle_size: int = Field(
        10_000, ge=1, description="python.fn-execution.bundle.size: elements per Python bundle."
    )
    bundle_time_ms: int = Field(
        100, ge=1, description="python.fn-execution.bundle.time: max wait before a partial bundle is flushed."
    )
    state_cache_size: int = Field(
        10_000, ge=0, description="python.state.cache-size: keyed-state entries cached on the Python side."
    )
    state_backend: Literal["rocksdb", "hashmap"] = Field("rocksdb", description="state.backend.type.")
    checkpoint_dir: str | None = Field(
        None,
        description="execution.checkpointing.dir URI (file:///..., s3://...); None = "
        "file://<tmp>/streamwarden-checkpoints.",
    )
    checkpoint_interval_ms: int = Field(
        1_000,
        ge=0,
        description="execution.checkpointing.interval; 0 disables checkpoints (then EXACTLY_ONCE never commits).",
    )
    checkpoint_timeout_ms: int = Field(60_000, ge=1, description="execution.checkpointing.timeout.")
    min_pause_between_checkpoints_ms: int = Field(
        0, ge=0, description="execution.checkpointing.min-pause between the end of one and start of the next."
    )
    retain_checkpoints: bool = Field(
        True,
        description="Keep the latest checkpoint when the job is cancelled (RETAIN_ON_CANCELLATION), so it can "
        "be restored like a savepoint.",
    )
    restore_path: str | None = Field(
        None, description="execution.state-recovery.path: a savepoint or retained checkpoint to start from."
    )
    python_executable: str | None = Field(
        None, description="Python for workers and client (python.executable); None = this interpreter."
    )
    extra_pythonpath: tuple[str, ...] = Field(
        (), description="More entries for python.pythonpath (thread mode), after site-packages and the repo."
    )
    ship_connector_jars: bool = Field(
        True,
        description="Add the Kafka connector jars and the job's own jar (job_jars()) to pipeline.jars. "
        "Set False when the cluster already has them in lib/ (the Docker image, LocalFlinkCluster): one "
        "copy, loaded parent-first.",
    )
    extra: dict[str, str] = Field(
        default_factory=dict, description="Any other Flink configuration key, applied last, unchanged."
    )


def job_jars() -> list[Path]:
    """Every jar the job needs besides Flink: the Kafka connector's two and the job's own
    (``RecordWithMetadataSchema``), fetched or built into their caches if needed."""
    return [*connector_jars(), ensure_record_jar()]


def default_checkpoint_dir() -> str:
    import tempfile

    return (Path(tempfile.gettempdir()) / "streamwarden-checkpoints").as_uri()


def default_log_dir() -> Path:
    import tempfile

    path = Path(tempfile.gettempdir()) / "streamwarden-flink-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _local_logging() -> None:
    """Point a locally launched gateway JVM (MiniCluster) at a sane log file.

    By default it logs into ``pyflink/log`` inside site-packages, with ``append = false``: the file is
    truncated when log4j re-initialises mid-run and the start of the log is lost. Use our log dir and an
    appending copy of PyFlink's ``log4j-cli.properties``. No effect under ``flink run`` (gateway exists).
    """
    log_dir = Path(os.environ.setdefault("FLINK_LOG_DIR", str(default_log_dir())))
    if "LOG4J_PROPERTIES" in os.environ:
        return
    import pyflink

    source = Path(pyflink.__file__).resolve().parent / "conf" / "log4j-cli.properties"
    try:
        text = source.read_text(encoding="utf-8")
        log_dir.mkdir(parents=True, exist_ok=True)
        target = log_dir / "log4j-cli-append.properties"
        target.write_text(
            text.replace("appender.file.append = false", "appender.file.append = true"), "utf-8"
        )
    except OSError:
        return
    os.environ["LOG4J_PROPERTIES"] = str(target)


def python_path_entries(extra: tuple[str, ...] = ()) -> list[str]:
    """What thread mode's embedded interpreter needs on its path: site-packages and the repo root.

    The editable install's ``.pth`` finder is not run for ``PYTHONPATH`` entries, so the repo root
    has to be listed explicitly.
    """
    entries = [*site.getsitepackages(), str(REPO_ROOT), *extra]
    seen: dict[str, None] = {}
    for entry in entries:
        seen.setdefault(entry, None)
    return list(seen)


def flink_settings(cfg: FlinkConfig, jars: list[Path] | None = None) -> dict[str, str]:
    """The Flink configuration keys for ``cfg`` as plain strings (pure apart from reading the jar cache)."""
    python = cfg.python_executable or sys.executable
    settings: dict[str, str] = {
        "parallelism.default": str(cfg.parallelism),
        "pipeline.max-parallelism": str(cfg.max_parallelism),
        "python.executable": python,
        "python.client.executable": python,
        "python.execution-mode": cfg.execution_mode,
        "python.fn-execution.bundle.size": str(cfg.bundle_size),
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        "python.state.cache-size": str(cfg.state_cache_size),
        "state.backend.type": cfg.state_backend,
        "execution.checkpointing.dir": cfg.checkpoint_dir or default_checkpoint_dir(),
        "execution.checkpointing.timeout": f"{cfg.checkpoint_timeout_ms} ms",
        "execution.checkpointing.min-pause": f"{cfg.min_pause_between_checkpoints_ms} ms",
        "execution.checkpointing.externalized-checkpoint-retention": (
            "RETAIN_ON_CANCELLATION" if cfg.retain_checkpoints else "DELETE_ON_CANCELLATION"
        ),
    }
    if cfg.ship_connector_jars:
        settings["pipeline.jars"] = ";".join(jar_urls(jars if jars is not None else job_jars()))
    if cfg.execution_mode == "thread":
        settings["python.pythonpath"] = os.pathsep.join(python_path_entries(cfg.extra_pythonpath))
    if cfg.checkpoint_interval_ms > 0:
        settings["execution.checkpointing.interval"] = f"{cfg.checkpoint_interval_ms} ms"
    if cfg.restore_path:
        settings["execution.state-recovery.path"] = cfg.restore_path
    settings.update(cfg.extra)
    return settings


def to_configuration(settings: Mapping[str, str]) -> Configuration:
    from pyflink.common import Configuration

    conf = Configuration()
    for key, value in settings.items():
        conf.set_string(key, value)
    return conf


def create_env(cfg: FlinkConfig | None = None, jars: list[Path] | None = None) -> StreamExecutionEnvironment:
    """A ``StreamExecutionEnvironment`` with the connector jars, Python runtime, state and checkpoints set.

    Run as ``python job.py`` this is a local MiniCluster; under ``flink run`` the settings are stacked
    on the cluster's config.yaml.
    """
    from pyflink.datastream import StreamExecutionEnvironment

    cfg = cfg or FlinkConfig()  # type: ignore[call-arg]
    _local_logging()
    env = StreamExecutionEnvironment.get_execution_environment(to_configuration(flink_settings(cfg, jars)))
    env.set_parallelism(cfg.parallelism)
    return env


# --- Kafka -------------------------------------------------------------------------------------------

_SCRAM_OR_PLAIN = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
# librdkafka names whose Java client spelling differs; everything else passes through unchanged.
_RENAMED = {
    "queue.buffering.max.ms": "linger.ms",
    "message.max.bytes": "max.request.size",
    "socket.timeout.ms": "request.timeout.ms",
    "fetch.wait.max.ms": "fetch.max.wait.ms",
}
_LIBRDKAFKA_ONLY = frozenset(
    {
        "enable.partition.eof",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "batch.num.messages",
    }
)


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def java_kafka_properties(kafka: KafkaConfig) -> dict[str, str]:
    """``KafkaConfig.client_config()`` (librdkafka names) translated to the Java client's keys.

    SASL user/password become ``sasl.jaas.config``; PEM file locations become the Java PEM
    truststore/keystore settings (the certificate and key are read from disk where the job is built).
    """
    conf = {k: str(v) for k, v in kafka.client_config().items()}
    out: dict[str, str] = {}
    user, password = conf.pop("sasl.username", None), conf.pop("sasl.password", None)
    ca = conf.pop("ssl.ca.location", None)
    cert, key = conf.pop("ssl.certificate.location", None), conf.pop("ssl.key.location", None)
    for name, value in conf.items():
        if name in _LIBRDKAFKA_ONLY:
            continue
        out[_RENAMED.get(name, name)] = value
    if user is not None:
        mechanism = conf.get("sasl.mechanism", "PLAIN")
        module = _SCRAM_OR_PLAIN.get(mechanism)
        if module is None:
            raise ConfigError(
                f"kafka.sasl_mechanism: {mechanism} has no user/password JAAS module; "
                "set kafka.extra['sasl.jaas.config'] for the Java client instead"
            )
        out["sasl.jaas.config"] = (
            f'{module} required username="{_jaas_quote(user)}" password="{_jaas_quote(password or "")}";'
        )
    if ca is not None:
        out["ssl.truststore.type"] = "PEM"
        out["ssl.truststore.location"] = ca
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise ConfigError(
                "kafka.ssl_certificate_location and kafka.ssl_key_location must be set together"
            )
        try:
            out["ssl.keystore.type"] = "PEM"
            out["ssl.keystore.certificate.chain"] = Path(cert).read_text(encoding="ascii")
            out["ssl.keystore.key"] = Path(key).read_text(encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"kafka.ssl_*_location: cannot read {exc.filename}: {exc.strerror}") from exc
    return out


def bytes_type() -> Any:
    """The PyFlink type of a raw Kafka value: Java ``byte[]`` on the wire, Python ``bytes`` in functions."""
    from pyflink.common.typeinfo import Types

    return Types.PRIMITIVE_ARRAY(Types.BYTE())


def keyed_bytes_type() -> Any:
    """``Row(key: bytes, value: bytes)``: the element type :func:`kafka_bytes_sink` expects when keyed."""
    from pyflink.common.typeinfo import Types

    return Types.ROW_NAMED(["key", "value"], [bytes_type(), bytes_type()])


def _committed_or_earliest() -> Any:
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    j_init = jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
    earliest = jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST
    return KafkaOffsetsInitializer(j_init.committedOffsets(earliest))


def _explicit_offsets(offsets: Mapping[tuple[str, int], int]) -> Any:
    """``OffsetsInitializer.offsets`` built in Java: PyFlink's wrapper names the shaded TopicPartition."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import get_java_class

    jvm = get_gateway().jvm
    # py4j turns a Java Long back into a Python int; this wrapper stores the values as Long.
    j_offsets = jvm.org.apache.flink.python.util.HashMapWrapper(None, get_java_class(jvm.java.lang.Long))
    for (topic, partition), offset in offsets.items():
        j_offsets.put(jvm.org.apache.kafka.common.TopicPartition(topic, partition), offset)
    j_init = jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
    return KafkaOffsetsInitializer(j_init.offsets(j_offsets.asMap()))


def _java_class(jvm: Any, name: str) -> Any:
    """One of the job's own Java classes through the gateway, or a clear error when its jar is missing."""
    from py4j.java_gateway import JavaClass  # type: ignore[import-untyped]

    found = jvm
    for part in name.split("."):
        found = getattr(found, part)
    if not isinstance(found, JavaClass):
        raise ConfigError(
            f"{name} is not on the class path: ship job_jars() in pipeline.jars or put its jar "
            "(streamwarden flink jars --dest DIR) in the cluster's lib/"
        )
    return found


def kafka_bytes_source(
    kafka: KafkaConfig,
    topics: list[str] | str,
    group_id: str,
    *,
    start_from: StartFrom = "committed",
    stop_at: Mapping[tuple[str, int], int] | None = None,
    client_id_prefix: str | None = None,
    partition_discovery_ms: int | None = 60_000,
    properties: Mapping[str, str] | None = None,
    with_metadata: bool = False,
) -> KafkaSource:
    """A ``KafkaSource`` of raw record values (use with ``env.from_source(..., type_info=bytes_type())``).

    ``with_metadata``: each element is the whole record as ``RecordWithMetadataSchema`` lays it out
    (partition, offset, timestamp, key, value; ``jobs/flink/decode.py: split_record``); needs the jar
    of ``jobs/flink/record_jar.py`` on the class path (``job_jars()`` includes it).

    ``start_from='committed'`` resumes from the group's committed offsets and falls back to the earliest
    offset for partitions without one (offsets are committed on every completed checkpoint; on restore
    Flink uses the checkpointed offsets, not these). ``stop_at`` makes the source bounded: it ends each
    ``(topic, partition)`` before the given offset (explicit offsets, not "latest": some brokers report a
    high watermark short of the real end).
    """
    from pyflink.common.serialization import DeserializationSchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    starts = {
        "committed": _committed_or_earliest,
        "earliest": KafkaOffsetsInitializer.earliest,
        "latest": KafkaOffsetsInitializer.latest,
    }
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka.bootstrap_servers)
        .set_topics(*([topics] if isinstance(topics, str) else topics))
        .set_group_id(group_id)
        .set_starting_offsets(starts[start_from]())
    )
    if with_metadata:
        # PyFlink's builder has no set_deserializer: hand the Java builder the job's own schema.
        builder._j_builder.setDeserializer(_java_class(jvm, SCHEMA_CLASS)())
    else:
        builder.set_value_only_deserializer(
            DeserializationSchema(jvm.org.apache.flink.api.common.serialization.ByteArraySchema())
        )
    props = java_kafka_properties(kafka)
    props.pop("bootstrap.servers", None)
    if partition_discovery_ms is not None:
        props["partition.discovery.interval.ms"] = str(partition_discovery_ms)
    props.update(properties or {})
    builder.set_properties(props)
    if client_id_prefix:
        builder.set_client_id_prefix(client_id_prefix)
    if stop_at is not None:
        builder.set_bounded(_explicit_offsets(stop_at))
    return builder.build()


def kafka_bytes_sink(
    kafka: KafkaConfig,
    topic: str,
    *,
    guarantee: Guarantee = "exactly_once",
    transactional_id_prefix: str = "streamwarden",
    transaction_timeout_ms: int = 600_000,
    keyed: bool = False,
    properties: Mapping[str, str] | None = None,
) -> KafkaSink:
    """A ``KafkaSink`` writing raw bytes to ``topic``.

    Elements are ``bytes`` (``bytes_type()``) or, with ``keyed=True``, ``Row(key, value)``
    (``keyed_bytes_type()``; an empty/None key is written as an empty key) through the job's
    ``KeyedBytesRecordSchema``, which leaves the record timestamp to the producer (write time): the
    elements' Flink timestamps are event times, and a broker rejects a batch holding a timestamp outside
    its ``log.message.timestamp.*.max.ms`` window, which would fail the sink on every retry. ``exactly_once`` writes in
    Kafka transactions committed on each checkpoint: readers must use ``isolation.level=read_committed``
    and see output only after a checkpoint; ``transactional_id_prefix`` must be unique per job and stable
    across restarts; ``transaction_timeout_ms`` must stay below the broker's ``transaction.max.timeout.ms``
    (15 min by default; Flink's own default of 1 h is rejected by stock brokers).
    """
    from pyflink.common.serialization import SerializationSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    builder = KafkaSink.builder().set_bootstrap_servers(kafka.bootstrap_servers)
    if keyed:
        # the job's own schema: no record timestamp (the connector's would pass the event time on)
        builder._j_builder.setRecordSerializer(_java_class(jvm, KEYED_SCHEMA_CLASS)(topic))
    else:
        schemas = jvm.org.apache.flink.api.common.serialization
        record = KafkaRecordSerializationSchema.builder().set_topic(topic)
        record = record.set_value_serialization_schema(SerializationSchema(schemas.ByteArraySchema()))
        builder.set_record_serializer(record.build())
    builder.set_delivery_guarantee(DeliveryGuarantee[guarantee.upper()])
    props = java_kafka_properties(kafka)
    props.pop("bootstrap.servers", None)
    if guarantee == "exactly_once":
        if not transactional_id_prefix:
            raise ConfigError("transactional_id_prefix must be set for exactly_once")
        builder.set_transactional_id_prefix(transactional_id_prefix)
        props["transaction.timeout.ms"] = str(transaction_timeout_ms)
    props.update(properties or {})
    for key, value in props.items():
        builder.set_property(key, value)
    return builder.build()
