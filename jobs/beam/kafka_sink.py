"""Kafka write for Beam in Python (confluent-kafka): a DoFn that produces ``(key, value)`` pairs to one topic.

The sinks of one process share one producer per Kafka connection and producer settings (created by
the first sink's ``setup``, closed after the last one's ``teardown``): the job's three or four sinks
then send in the same requests, and the first sink to flush at the end of a bundle waits for all of
them while the others find nothing left: one broker round trip per bundle instead of one per sink
(a flush took about 20 ms on the embedded broker). Each bundle ends with a ``flush``, and any message
that was not delivered (failed, or still queued at the flush timeout) fails the bundle with
``DeliveryError`` — so the runner retries it, or the pipeline stops and a restart replays from the
last committed source offsets. Nothing is swallowed. Because ``ReadFromKafka`` commits offsets in a
bundle finalizer (after this flush, when the two are fused into one stage), the read→write path is
at-least-once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection
from apache_beam.transforms.ptransform import PTransform
from confluent_kafka import KafkaError, Message, Producer

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import DeliveryError, make_producer

LOG = logging.getLogger("streamwarden.beam.kafka_sink")
METRICS_NAMESPACE = "kafka_sink"
_POLL_EVERY = 1_000
_MAX_REPORTED_FAILURES = 3


@dataclass
class _Shared:
    producer: Producer
    error_listeners: list[Callable[[KafkaError], None]] = field(default_factory=list)


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _share_key(kafka: KafkaConfig, producer_config: Mapping[str, Any]) -> str:
    return json.dumps([kafka.model_dump(mode="json"), dict(producer_config)], sort_keys=True, default=str)


def acquire_producer(
    kafka: KafkaConfig, producer_config: Mapping[str, Any], on_error: Callable[[KafkaError], None]
) -> Producer:
    """This process's producer for ``kafka`` and ``producer_config`` (created on first use);
    ``on_error`` hears its error callbacks until ``release_producer``."""
    key = _share_key(kafka, producer_config)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            listeners: list[Callable[[KafkaError], None]] = []

            def error_cb(err: KafkaError) -> None:
                for listener in list(listeners):
                    listener(err)

            shared = _SHARED[key] = _Shared(
                make_producer(kafka, error_cb=error_cb, **producer_config), listeners
            )
        shared.error_listeners.append(on_error)
        return shared.producer


def release_producer(
    kafka: KafkaConfig,
    producer_config: Mapping[str, Any],
    on_error: Callable[[KafkaError], None],
    flush_timeout_s: float,
) -> int:
    """Stop ``on_error`` hearing the shared producer; flush it, and drop it once nobody uses it.
    Returns the messages still queued after the flush."""
    key = _share_key(kafka, producer_config)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            return 0
        if on_error in shared.error_listeners:
            shared.error_listeners.remove(on_error)
        if not shared.error_listeners:
            del _SHARED[key]
    return int(shared.producer.flush(flush_timeout_s))


class _KafkaWriteFn(beam.DoFn):
    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        producer_config: Mapping[str, Any],
        flush_timeout_s: float,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._producer_config = dict(producer_config)
        self._flush_timeout_s = flush_timeout_s
        self._producer: Producer | None = None
        self._written = Metrics.counter(METRICS_NAMESPACE, f"{topic}.records_written")
        self._bytes = Metrics.counter(METRICS_NAMESPACE, f"{topic}.bytes_written")
        self._failed_counter = Metrics.counter(METRICS_NAMESPACE, f"{topic}.delivery_failures")
        self._flush_ms = Metrics.distribution(METRICS_NAMESPACE, f"{topic}.flush_ms")
        self._reset()

    def _reset(self) -> None:
        self._queued = 0
        self._queued_bytes = 0
        self._delivered = 0
        self._failed = 0
        self._failures: list[str] = []
        self._fatal: KafkaError | None = None

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        else:
            LOG.warning("producer error (librdkafka retries): %s", err)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered += 1
            return
        self._failed += 1
        if len(self._failures) < _MAX_REPORTED_FAILURES:
            self._failures.append(f"{msg.topic()}[{msg.partition()}] {err.name()}: {err.str()}")

    def setup(self) -> None:
        self._producer = acquire_producer(self._kafka, self._producer_config, self._on_error)
        self._reset()

    def start_bundle(self) -> None:
        self._reset()

    def process(self, element: tuple[bytes | None, bytes | None]) -> tuple[()]:
        key, value = element
        producer = self._producer
        assert producer is not None, "setup() not called"
        while True:
            try:
                producer.produce(self._topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: serve delivery reports, then retry
        self._queued += 1
        if value is not None:
            self._queued_bytes += len(value)
        if self._queued % _POLL_EVERY == 0:
            producer.poll(0)
        return ()  # outputs nothing (an empty iterable, so Beam does not warn about a missing one)

    def finish_bundle(self) -> None:
        producer = self._producer
        assert producer is not None, "setup() not called"
        started = time.monotonic()
        remaining = producer.flush(self._flush_timeout_s)
        self._flush_ms.update(int((time.monotonic() - started) * 1000))
        self._written.inc(self._delivered)
        self._bytes.inc(self._queued_bytes)
        problems: list[str] = []
        if self._fatal is not None:
            problems.append(f"fatal producer error: {self._fatal}")
        if self._failed:
            self._failed_counter.inc(self._failed)
            problems.append(f"{self._failed} message(s) not delivered ({'; '.join(self._failures)})")
        if remaining:
            self._failed_counter.inc(remaining)
            problems.append(f"{remaining} message(s) still queued after {self._flush_timeout_s:g} s")
        self._reset()
        if problems:
            raise DeliveryError(f"write to {self._topic!r} failed: " + "; ".join(problems))

    def teardown(self) -> None:
        if self._producer is not None:
            remaining = release_producer(
                self._kafka, self._producer_config, self._on_error, self._flush_timeout_s
            )
            if remaining:
                LOG.error("%d message(s) to %r still queued at teardown", remaining, self._topic)
            self._producer = None


class WriteToKafka(PTransform[PCollection[tuple[bytes | None, bytes | None]], PCollection[Any]]):
    """Write ``(key, value)`` byte pairs to ``topic``; each bundle is flushed and fails on any undelivered
    message. ``producer_config`` holds extra librdkafka properties (they win over the defaults of
    ``jobs.kafka_io.make_producer``: ``linger.ms=5``, ``acks=all``, idempotence).

    Metrics (namespace ``kafka_sink``): ``<topic>.records_written``, ``<topic>.bytes_written``,
    ``<topic>.delivery_failures``, ``<topic>.flush_ms``.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        *,
        producer_config: Mapping[str, Any] | None = None,
        flush_timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        self._kafka = kafka
        self._topic = topic
        self._producer_config = dict(producer_config or {})
        self._flush_timeout_s = flush_timeout_s

    def expand(self, pcoll: PCollection[tuple[bytes | None, bytes | None]]) -> PCollection[Any]:
        write = _KafkaWriteFn(self._kafka, self._topic, self._producer_config, self._flush_timeout_s)
        done: PCollection[Any] = pcoll | "Produce" >> beam.ParDo(write)
        return done
