"""Kafka I/O shared by every job and tool: client factories built from ``KafkaConfig``, an at-least-once
batch consumer with explicit synchronous commits, a producer that surfaces delivery failures, and a bounded
topic reader that never trusts the broker's reported end offset (tansu reports the last batch's base offset).

Client overrides are librdkafka property names, either with dots (``**{"linger.ms": 0}``) or with the dots
written as underscores (``linger_ms=0``, as confluent-kafka's own keyword form does); the wrapper's own
keys (``error_cb``, ``logger``, ...) keep their underscores.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamwarden.jobs.config import KafkaConfig
from streamwarden.operators.errors import BrokerError

LOG = logging.getLogger("streamwarden.kafka")

#: Group timeouts of the embedded profile: tansu completes a subscribe-join after about half the session
#: timeout, so librdkafka's 45 s default would mean ~23 s of nothing (see docs/architecture.md, "Engine facts").
EMBEDDED_SESSION_TIMEOUT_MS = 2_000
EMBEDDED_HEARTBEAT_INTERVAL_MS = 300
#: tansu holds a fetch for the full fetch.wait.max.ms: librdkafka's 500 ms default means ~200 ms from
#: produce to consume; 50 ms gives a few ms at ~1 % broker CPU per idle consumer.
EMBEDDED_FETCH_WAIT_MAX_MS = 50

#: Producer defaults: small linger for low latency, full acknowledgement, idempotence (verified with tansu).
PRODUCER_DEFAULTS: Mapping[str, Any] = {"linger.ms": 5, "acks": "all", "enable.idempotence": True}


class DeliveryError(BrokerError):
    """At least one produced message was not delivered (failed, or still queued when flush timed out)."""


class CommitError(BrokerError):
    """A synchronous offset commit failed; the uncommitted records will be delivered again."""


def embedded_kafka_config(bootstrap: str) -> KafkaConfig:
    """The ``KafkaConfig`` for the embedded broker: plaintext, short group timeouts for a fast join, and a
    short fetch wait (tansu answers a fetch only when its wait expires, even if data arrived meanwhile)."""
    return KafkaConfig(  # type: ignore[call-arg]
        bootstrap_servers=bootstrap,
        session_timeout_ms=EMBEDDED_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=EMBEDDED_HEARTBEAT_INTERVAL_MS,
        extra={"fetch.wait.max.ms": str(EMBEDDED_FETCH_WAIT_MAX_MS)},
    )


#: Client settings that belong to the Python wrapper (callbacks, logger): their underscores are real.
_PYTHON_KEYS = frozenset(
    {"error_cb", "throttle_cb", "stats_cb", "oauth_cb", "on_delivery", "on_commit", "logger"}
)


def _librdkafka_props(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides with ``linger_ms``-style keys spelled the librdkafka way (``linger.ms``)."""
    return {k if k in _PYTHON_KEYS else k.replace("_", "."): v for k, v in overrides.items()}


#: Role-specific librdkafka properties: ``cfg.extra`` is shared by every client, so each client drops the
#: other roles' properties instead of warning about them (explicit overrides are passed through as given).
_CONSUMER_ONLY = frozenset(
    {
        "group.id", "group.instance.id", "group.protocol", "partition.assignment.strategy",
        "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
        "auto.commit.interval.ms", "enable.auto.offset.store", "auto.offset.reset", "isolation.level",
        "enable.partition.eof", "check.crcs", "queued.min.messages", "queued.max.messages.kbytes",
        "fetch.wait.max.ms", "fetch.queue.backoff.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes",
        "fetch.max.bytes", "fetch.min.bytes", "fetch.error.backoff.ms",
    }
)  # fmt: skip
_PRODUCER_ONLY = frozenset(
    {
        "transactional.id", "transaction.timeout.ms", "enable.idempotence", "enable.gapless.guarantee",
        "queue.buffering.max.messages", "queue.buffering.max.kbytes", "queue.buffering.max.ms", "linger.ms",
        "message.send.max.retries", "retries", "retry.backoff.ms", "compression.codec", "compression.type",
        "compression.level", "batch.num.messages", "batch.size", "delivery.report.only.error",
        "request.required.acks", "acks", "request.timeout.ms", "message.timeout.ms", "delivery.timeout.ms",
        "partitioner", "sticky.partitioning.linger.ms",
    }
)  # fmt: skip


def _client_conf(
    cfg: KafkaConfig, foreign: frozenset[str], defaults: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    conf: dict[str, Any] = {"logger": LOG}
    conf.update(defaults)
    conf.update({k: v for k, v in cfg.client_config().items() if k not in foreign})
    conf.update(_librdkafka_props(overrides))
    return conf


def make_producer(cfg: KafkaConfig, **overrides: Any) -> Producer:
    """A producer with ``PRODUCER_DEFAULTS``; ``cfg.extra`` and then ``overrides`` win over the defaults."""
    return Producer(_client_conf(cfg, _CONSUMER_ONLY, PRODUCER_DEFAULTS, overrides))


def make_consumer(cfg: KafkaConfig, group_id: str, **overrides: Any) -> Consumer:
    """A consumer for at-least-once processing: no auto-commit (commit with ``commit_batch``), read from the
    earliest offset when the group has none, group timeouts from ``cfg``."""
    defaults = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
    }
    return Consumer(_client_conf(cfg, _PRODUCER_ONLY, defaults, overrides))


def make_admin(cfg: KafkaConfig, **overrides: Any) -> AdminClient:
    """An admin client for ``cfg``."""
    return AdminClient(_client_conf(cfg, _CONSUMER_ONLY | _PRODUCER_ONLY, {}, overrides))


def _visible_partitions(md: Any, names: Iterable[str]) -> dict[str, int]:
    """Partition counts (from a ``ClusterMetadata``) of the topics in ``names`` that metadata shows without error."""
    out: dict[str, int] = {}
    for name in names:
        topic = md.topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            out[name] = len(topic.partitions)
    return out


def ensure_topics(
    cfg: KafkaConfig,
    names: Sequence[str],
    partitions: int = 1,
    *,
    replication_factor: int = -1,
    timeout_s: float = 15.0,
) -> dict[str, int]:
    """Create the missing topics of ``names`` and wait until all are visible in metadata.

    Idempotent: existing topics are left as they are (their partition count is not changed). Returns the
    partition count of every topic in ``names``. ``replication_factor=-1`` means the broker's default.
    """
    if partitions < 1:
        raise BrokerError(f"ensure_topics: partitions must be >= 1, got {partitions}")
    wanted = list(dict.fromkeys(names))
    if not wanted or any(not n for n in wanted):
        raise BrokerError(f"ensure_topics: topic names must be non-empty, got {list(names)!r}")
    deadline = time.monotonic() + timeout_s
    admin = make_admin(cfg)
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics on {cfg.bootstrap_servers}: {exc}") from exc
    missing = [n for n in wanted if n not in _visible_partitions(md, wanted)]
    if missing:
        new = [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing]
        futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise BrokerError(f"cannot create topic {name!r} on {cfg.bootstrap_servers}: {exc}") from exc
            except TimeoutError as exc:
                raise BrokerError(f"creating topic {name!r} on {cfg.bootstrap_servers} timed out") from exc
    while True:
        try:
            md = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
            visible = _visible_partitions(md, wanted)
        except KafkaException:
            visible = {}
        if len(visible) == len(wanted):
            return {n: visible[n] for n in wanted}
        if time.monotonic() >= deadline:
            absent = sorted(set(wanted) - set(visible))
            raise BrokerError(f"topics {absent} not visible on {cfg.bootstrap_servers} after {timeout_s:g} s")
        time.sleep(0.05)


# ---------------------------------------------------------------- consuming, at least once


def poll_batch(consumer: Consumer, *, max_batch: int = 500, timeout_s: float = 0.5) -> list[Message]:
    """Up to ``max_batch`` data messages: waits at most ``timeout_s`` for the first, then takes what is
    already buffered without waiting (so a quiet topic costs latency, never a full batch's wait).

    Error events are not data: end-of-partition is skipped, transient errors are logged (librdkafka
    retries them), a fatal error raises ``BrokerError``.
    """
    # poll() returns as soon as one message is there; consume() would wait out its whole timeout for a
    # short batch. What is already buffered comes along without waiting.
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    msgs = [first, *consumer.consume(num_messages=max_batch - 1, timeout=0)] if max_batch > 1 else [first]
    batch: list[Message] = []
    for msg in msgs:
        err = msg.error()
        if err is None:
            batch.append(msg)
        elif err.code() == KafkaError._PARTITION_EOF:
            continue
        elif err.fatal():
            raise BrokerError(f"fatal consumer error: {err}")
        else:
            LOG.warning("consumer error (librdkafka retries): %s", err)
    return batch


def consume_batches(
    consumer: Consumer,
    *,
    max_batch: int = 500,
    timeout_s: float = 0.5,
    stop: threading.Event | None = None,
    yield_empty: bool = False,
) -> Iterator[list[Message]]:
    """Yield batches of data messages until ``stop`` is set (forever without one).

    With ``yield_empty`` an empty list is yielded after each idle ``timeout_s``, so the caller can do
    time-driven work (watermarks, timers) while the input is quiet.
    """
    while stop is None or not stop.is_set():
        batch = poll_batch(consumer, max_batch=max_batch, timeout_s=timeout_s)
        if batch or yield_empty:
            yield batch


def next_offsets(batch: Iterable[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``batch``: per (topic, partition), the highest offset seen plus one."""
    nxt: dict[tuple[str, int], int] = {}
    for msg in batch:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            continue
        key = (topic, partition)
        nxt[key] = max(nxt.get(key, 0), offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in sorted(nxt.items())]


def commit_batch(consumer: Consumer, batch: Iterable[Message]) -> list[TopicPartition]:
    """Commit, synchronously and explicitly, the offsets just past ``batch``; returns what was committed.

    Call only after every record of the batch has been fully handled (its outputs flushed): that is what
    makes the pipeline at-least-once. Raises ``CommitError`` if the broker refused any partition.
    """
    offsets = next_offsets(batch)
    if not offsets:
        return []
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        raise CommitError(f"commit of {_fmt_offsets(offsets)} failed: {exc}") from exc
    failed = [tp for tp in result or [] if tp.error is not None]
    if failed:
        detail = ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed)
        raise CommitError(f"commit refused for {detail}")
    return offsets


def _fmt_offsets(offsets: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)


class BatchConsumer:
    """A subscribed consumer read in batches and committed per batch (at-least-once)."""

    def __init__(self, consumer: Consumer, *, max_batch: int = 500, timeout_s: float = 0.5) -> None:
        self.consumer = consumer
        self.max_batch = max_batch
        self.timeout_s = timeout_s

    @classmethod
    def subscribe(
        cls,
        cfg: KafkaConfig,
        group_id: str,
        topics: Sequence[str],
        *,
        max_batch: int = 500,
        timeout_s: float = 0.5,
        **overrides: Any,
    ) -> BatchConsumer:
        """A ``make_consumer`` consumer subscribed to ``topics`` (the group join completes on first polls)."""
        consumer = make_consumer(cfg, group_id, **overrides)
        consumer.subscribe(list(topics))
        return cls(consumer, max_batch=max_batch, timeout_s=timeout_s)

    def poll(self) -> list[Message]:
        """One batch, possibly empty."""
        return poll_batch(self.consumer, max_batch=self.max_batch, timeout_s=self.timeout_s)

    def batches(
        self, stop: threading.Event | None = None, *, yield_empty: bool = False
    ) -> Iterator[list[Message]]:
        """Batches until ``stop`` is set; see ``consume_batches``."""
        return consume_batches(
            self.consumer,
            max_batch=self.max_batch,
            timeout_s=self.timeout_s,
            stop=stop,
            yield_empty=yield_empty,
        )

    def commit(self, batch: Iterable[Message]) -> list[TopicPartition]:
        """Commit the offsets just past ``batch``; see ``commit_batch``."""
        return commit_batch(self.consumer, batch)

    def close(self) -> None:
        """Leave the group; nothing is committed implicitly."""
        self.consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------- bounded reads for tests and tools


class Record(NamedTuple):
    """One consumed Kafka record, detached from the client (a tuple: cheap to build by the million)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @classmethod
    def from_message(cls, msg: Message) -> Record:
        ts_type, ts = msg.timestamp()
        headers = msg.headers()
        return cls(
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            msg.key(),
            msg.value(),
            ts if ts_type != TIMESTAMP_NOT_AVAILABLE else None,
            _header_tuples(headers) if headers else (),
        )


def _header_tuples(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    return tuple((k, v.encode() if isinstance(v, str) else v) for k, v in items)


def drain(
    cfg: KafkaConfig,
    topic: str,
    *,
    expected_count: int | None = None,
    idle_timeout_s: float = 2.0,
    max_wait_s: float = 60.0,
) -> list[Record]:
    """Read ``topic`` from the beginning of every partition (``assign()``, no group join, no commit).

    Stops once ``expected_count`` records were seen, or no new record arrived for ``idle_timeout_s``, or
    after ``max_wait_s`` in total; the caller compares what it got with what it expected. Records come in
    per-partition offset order; partitions interleave. The reported end offset is never used (tansu's is
    the base offset of the last batch, which would lose the tail).
    """
    consumer = make_consumer(cfg, f"streamwarden-drain-{uuid.uuid4().hex}", **{"enable.partition.eof": False})
    try:
        try:
            md = consumer.list_topics(topic, timeout=min(max_wait_s, 10.0))
        except KafkaException as exc:
            raise BrokerError(
                f"drain: cannot read metadata of {topic!r} on {cfg.bootstrap_servers}: {exc}"
            ) from exc
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            why = meta.error if meta is not None and meta.error is not None else "unknown topic"
            raise BrokerError(f"drain: topic {topic!r} not available on {cfg.bootstrap_servers}: {why}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
        records: list[Record] = []
        start = last_progress = time.monotonic()
        while True:
            now = time.monotonic()
            if expected_count is not None and len(records) >= expected_count:
                break
            if now - last_progress >= idle_timeout_s or now - start >= max_wait_s:
                break
            wait_s = min(0.2, idle_timeout_s - (now - last_progress), max_wait_s - (now - start))
            batch = poll_batch(consumer, max_batch=10_000, timeout_s=max(0.01, wait_s))
            if batch:
                records.extend(Record.from_message(m) for m in batch)
                last_progress = time.monotonic()
        return records
    finally:
        consumer.close()


# ---------------------------------------------------------------- producing with delivery checks


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A message the producer gave up on."""

    topic: str | None
    partition: int | None
    error: str


class CheckedProducer:
    """A producer that counts deliveries and records failures; ``flush`` raises ``DeliveryError`` if any
    message failed or is still queued, so lost output is never silent."""

    def __init__(self, producer: Producer, *, max_recorded_failures: int = 100) -> None:
        self.producer = producer
        self.delivered = 0
        self.failed = 0
        self.failures: list[DeliveryFailure] = []
        self.fatal_error: KafkaError | None = None
        self._max_recorded = max_recorded_failures

    @classmethod
    def create(cls, cfg: KafkaConfig, **overrides: Any) -> CheckedProducer:
        """A ``make_producer`` producer whose fatal client errors (e.g. idempotence violations) are kept."""
        holder: list[CheckedProducer] = []

        def on_error(err: KafkaError) -> None:
            if err.fatal() and holder:
                holder[0].fatal_error = err
            else:
                LOG.warning("producer error: %s", err)

        checked = cls(make_producer(cfg, error_cb=on_error, **overrides))
        holder.append(checked)
        return checked

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if len(self.failures) < self._max_recorded:
            self.failures.append(DeliveryFailure(msg.topic(), msg.partition(), f"{err.name()}: {err.str()}"))

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one message; blocks (serving delivery reports) while the local queue is full."""
        if self.fatal_error is not None:
            raise DeliveryError(f"producer failed fatally: {self.fatal_error}")
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if key is not None:
            kwargs["key"] = key
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = list(headers)
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self.producer.produce(topic, value, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self.producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued message; returns the total delivered so far.

        Raises ``DeliveryError`` naming the first failures if any message failed since the last flush, or if
        messages are still queued after ``timeout_s``. The failures are cleared once reported.
        """
        remaining = self.producer.flush(timeout_s)
        problems: list[str] = []
        if self.fatal_error is not None:
            problems.append(f"fatal producer error: {self.fatal_error}")
        if self.failed:
            shown = "; ".join(f"{f.topic}[{f.partition}] {f.error}" for f in self.failures[:3])
            problems.append(f"{self.failed} message(s) not delivered ({shown})")
        if remaining:
            problems.append(f"{remaining} message(s) still queued after {timeout_s:g} s")
        if problems:
            self.failed = 0
            self.failures.clear()
            raise DeliveryError("; ".join(problems))
        return self.delivered

    def __len__(self) -> int:
        return len(self.producer)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.flush()


def create_local_topics(bootstrap_servers: str, names: Sequence[str], partitions: int = 1) -> dict[str, int]:
    """``ensure_topics`` on a local single-node broker (replication factor 1)."""
    return ensure_topics(embedded_kafka_config(bootstrap_servers), names, partitions, replication_factor=1)
