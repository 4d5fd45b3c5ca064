"""Beam Kafka read/write on the DirectRunner against the real embedded broker.

Each test runs real pipelines (FnApiRunner) on real topics; nothing is mocked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult
from apache_beam.testing.util import assert_that, equal_to
from confluent_kafka import TopicPartition

from streamwarden.deploy.broker import free_port
from streamwarden.jobs.beam.kafka_sink import WriteToKafka
from streamwarden.jobs.beam.kafka_source import (
    KafkaRecord,
    ReadDelimitedFile,
    ReadFromKafka,
    ReadOptions,
    clear_stop,
    event_time_from_event,
    request_stop,
)
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import DeliveryError, drain, make_consumer, make_producer
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SCHEMA_VERSION, write_delimited

pytestmark = [pytest.mark.engine]

PARTITIONS = 3
EVENT_BASE_MS = 1_700_000_000_000
KAFKA_BASE_MS = 1_750_000_000_000  # Kafka timestamps differ from event times on purpose

Topics = Callable[..., list[str]]


@pytest.fixture
def topics(kafka_topics: Topics) -> Topics:
    """``topics("a", "b")``: fresh topics with ``PARTITIONS`` partitions each."""
    return lambda *names: kafka_topics(*names, partitions=PARTITIONS)


def _event(i: int) -> pb.Event:
    return pb.Event(
        event_id=f"e{i:06d}",
        event_time_ms=EVENT_BASE_MS + 7 * i,
        type=pb.Event.LOGIN,
        schema_version=SCHEMA_VERSION,
    )


def _produce_events(cfg: KafkaConfig, topic: str, n: int) -> dict[bytes, tuple[int, int]]:
    """``n`` events round-robin over the partitions; returns key -> (partition, offset) as delivered."""
    delivered: dict[bytes, tuple[int, int]] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered[msg.key()] = (msg.partition(), msg.offset())

    producer = make_producer(cfg)
    for i in range(n):
        event = _event(i)
        producer.produce(
            topic,
            event.SerializeToString(),
            event.event_id.encode(),
            partition=i % PARTITIONS,
            timestamp=KAFKA_BASE_MS + i,
            on_delivery=on_delivery,
        )
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert len(delivered) == n
    return delivered


class _Annotate(beam.DoFn):  # type: ignore[misc]
    """The trivial transform between read and write: key unchanged, value prefixed with the element's
    Beam timestamp and source coordinates, so the output topic shows what the source produced."""

    def process(self, rec: KafkaRecord, ts: Any = beam.DoFn.TimestampParam) -> Iterator[tuple[bytes, bytes]]:
        header = b"%d|%d|%d|" % (ts.micros // 1000, rec.partition, rec.offset)
        yield rec.key, header + (rec.value or b"")


class _FailAfter(beam.DoFn):  # type: ignore[misc]
    """Passes elements through, then raises on the ``limit``-th one: a crash in the middle of a bundle."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    def setup(self) -> None:
        self._seen = 0

    def process(self, element: tuple[bytes, bytes]) -> Iterator[tuple[bytes, bytes]]:
        self._seen += 1
        if self._seen >= self._limit:
            raise RuntimeError(f"simulated crash at element {self._seen}")
        yield element


def _run_read_write(
    cfg: KafkaConfig,
    src: str,
    dst: str,
    group: str,
    options: ReadOptions,
    *,
    fail_after: int | None = None,
) -> PipelineResult:
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    records = pipeline | "Read" >> ReadFromKafka(
        cfg, src, group, options=options, event_time_fn=event_time_from_event
    )
    annotated = records | "Annotate" >> beam.ParDo(_Annotate())
    if fail_after is not None:
        annotated = annotated | "Crash" >> beam.ParDo(_FailAfter(fail_after))
    annotated | "Write" >> WriteToKafka(cfg, dst)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def _counter(result: PipelineResult, namespace: str, name: str) -> int:
    found = [
        c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == namespace and c.key.metric.name == name
    ]
    return int(sum(found))


def _committed(cfg: KafkaConfig, topic: str, group: str) -> dict[int, int]:
    consumer = make_consumer(cfg, group)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def _parse(value: bytes) -> tuple[int, int, int, pb.Event]:
    ts_ms, partition, offset, payload = value.split(b"|", 3)
    event = pb.Event()
    event.ParseFromString(payload)
    return int(ts_ms), int(partition), int(offset), event


@pytest.mark.integration
def test_read_transform_write_delivers_every_event_with_its_event_time(
    kafka_config: KafkaConfig, topics: Topics
) -> None:
    n = 3_000
    src, dst = topics("beam-src", "beam-dst")
    sent = _produce_events(kafka_config, src, n)
    group = f"g-{uuid.uuid4().hex[:8]}"
    options = ReadOptions(max_records=n, idle_timeout_s=15, bundle_max_records=500)  # type: ignore[call-arg]

    result = _run_read_write(kafka_config, src, dst, group, options)

    out = drain(kafka_config, dst, expected_count=n, idle_timeout_s=5)
    assert len(out) == n
    by_key = {r.key: r for r in out}
    assert set(by_key) == set(sent)
    for key, rec in by_key.items():
        assert rec.value is not None
        ts_ms, partition, offset, event = _parse(rec.value)
        assert (partition, offset) == sent[key]
        assert event.event_id.encode() == key
        assert ts_ms == event.event_time_ms  # the element timestamp is the event time, not Kafka's
    assert _counter(result, "kafka_source", "records_read") == n
    assert _counter(result, "kafka_sink", f"{dst}.records_written") == n
    # offsets committed after the bundles completed: exactly one past the last record of each partition
    ends = {p: max(off for part, off in sent.values() if part == p) + 1 for p in range(PARTITIONS)}
    assert _committed(kafka_config, src, group) == ends
    # watermark = min over partitions of their max event time (all partitions active at the end)
    maxima = [max(EVENT_BASE_MS + 7 * i for i in range(n) if i % PARTITIONS == p) for p in range(PARTITIONS)]
    wm = [
        d.committed.max
        for d in result.metrics().query()["distributions"]
        if d.key.metric.name == "watermark_ms"
    ]
    assert wm == [min(maxima)]


@pytest.mark.integration
def test_restart_with_the_same_group_reads_the_rest_exactly_once(
    kafka_config: KafkaConfig, topics: Topics
) -> None:
    n, first = 3_000, 1_000
    src, dst = topics("beam-restart-src", "beam-restart-dst")
    sent = _produce_events(kafka_config, src, n)
    group = f"g-{uuid.uuid4().hex[:8]}"

    run1 = _run_read_write(
        kafka_config,
        src,
        dst,
        group,
        ReadOptions(max_records=first, bundle_max_records=300),  # type: ignore[call-arg]
    )
    assert _counter(run1, "kafka_source", "records_read") == first
    # the last bundle was committed too (partitions not read yet have no committed offset: -1001)
    assert sum(max(0, off) for off in _committed(kafka_config, src, group).values()) == first

    run2 = _run_read_write(
        kafka_config,
        src,
        dst,
        group,
        ReadOptions(idle_timeout_s=1, bundle_max_records=300),  # type: ignore[call-arg]
    )
    assert _counter(run2, "kafka_source", "records_read") == n - first

    out = drain(kafka_config, dst, expected_count=n, idle_timeout_s=5)
    keys = [r.key for r in out]
    assert set(keys) == set(sent)  # nothing lost
    assert len(keys) == n  # and, with clean stops, nothing read twice


@pytest.mark.integration
def test_a_crash_mid_bundle_is_replayed_on_restart(kafka_config: KafkaConfig, topics: Topics) -> None:
    n, crash_at = 2_000, 1_100
    src, dst = topics("beam-crash-src", "beam-crash-dst")
    sent = _produce_events(kafka_config, src, n)
    group = f"g-{uuid.uuid4().hex[:8]}"
    options = ReadOptions(idle_timeout_s=1, bundle_max_records=400)  # type: ignore[call-arg]

    with pytest.raises(Exception, match="simulated crash"):
        _run_read_write(kafka_config, src, dst, group, options, fail_after=crash_at)
    committed = sum(max(0, off) for off in _committed(kafka_config, src, group).values())
    # the completed bundles were committed, the one that crashed was not
    assert 0 < committed < crash_at
    written_before = [r.key for r in drain(kafka_config, dst, idle_timeout_s=1)]
    assert committed <= len(set(written_before))

    run2 = _run_read_write(kafka_config, src, dst, group, options)
    # the restart reads from the committed offsets: the crashed bundle again, then the rest
    assert _counter(run2, "kafka_source", "records_read") == n - committed
    # what was written before the crash beyond the commit is in the topic twice: wait for all of it, not
    # for n records (those would be reached before every distinct key is read)
    total = len(written_before) + n - committed
    out = drain(kafka_config, dst, expected_count=total, idle_timeout_s=5)
    keys = {r.key for r in out}
    assert keys == set(sent)  # at-least-once: the crashed bundle was read again


@pytest.mark.integration
def test_bounded_offset_ranges_read_exactly_those_records(kafka_config: KafkaConfig, topics: Topics) -> None:
    (src,) = topics("beam-bounded")
    sent = _produce_events(kafka_config, src, 300)  # 100 per partition, offsets 0..99
    assert {off for _, off in sent.values()} == set(range(100))
    ranges = {0: (10, 60), 1: (0, 100), 2: (99, 100)}
    expected = [(p, off) for p, (a, b) in ranges.items() for off in range(a, b)]

    started = time.monotonic()
    with beam.Pipeline() as pipeline:
        coords = (
            pipeline
            | ReadFromKafka(
                kafka_config,
                src,
                f"g-{uuid.uuid4().hex[:8]}",
                offset_ranges=ranges,
                options=ReadOptions(idle_timeout_s=20),  # type: ignore[call-arg]
            )
            | beam.Map(lambda r: (r.partition, r.offset))
        )
        assert_that(coords, equal_to(expected))
    # it stopped because every range was read, not because of the idle timeout
    assert time.monotonic() - started < 15


def test_delivery_failures_fail_the_bundle() -> None:
    nowhere = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")  # type: ignore[call-arg]
    pipeline = beam.Pipeline()
    _ = (
        pipeline
        | beam.Create([(b"k1", b"v1"), (b"k2", b"v2")])
        | WriteToKafka(nowhere, "nowhere", producer_config={"message.timeout.ms": 1_000}, flush_timeout_s=10)
    )
    with pytest.raises(DeliveryError, match=r"2 message\(s\) not delivered"):
        pipeline.run().wait_until_finish()


def test_delimited_file_replay_uses_event_times(tmp_path: Path) -> None:
    path = tmp_path / "events.bin"
    events = [_event(i) for i in range(50)]
    with path.open("wb") as f:
        write_delimited(f, [e.SerializeToString() for e in events] + [b"not an event"])
    expected = [(i, e.event_time_ms) for i, e in enumerate(events)] + [(50, 0)]
    with beam.Pipeline() as pipeline:
        got = (
            pipeline
            | ReadDelimitedFile(path)
            | beam.Map(lambda r, ts=beam.DoFn.TimestampParam: (r.offset, ts.micros // 1000))
        )
        assert_that(got, equal_to(expected))


def test_parallel_direct_runner_is_rejected() -> None:
    cfg = KafkaConfig()  # type: ignore[call-arg]
    pipeline = beam.Pipeline(options=PipelineOptions(["--direct_num_workers=2"]))
    with pytest.raises(ValueError, match="direct_num_workers=1"):
        _ = pipeline | ReadFromKafka(cfg, "events", "g")


@pytest.mark.integration
def test_read_write_throughput(kafka_config: KafkaConfig, topics: Topics) -> None:
    """Events/s through read -> trivial DoFn -> write; printed for the report, with a loose floor that only
    catches a pathological regression (e.g. one-record bundles)."""
    n = 20_000
    src, dst = topics("beam-tput-src", "beam-tput-dst")
    _produce_events(kafka_config, src, n)
    started = time.monotonic()
    result = _run_read_write(
        kafka_config,
        src,
        dst,
        f"g-{uuid.uuid4().hex[:8]}",
        ReadOptions(max_records=n),  # type: ignore[call-arg]
    )
    elapsed_s = time.monotonic() - started
    assert _counter(result, "kafka_sink", f"{dst}.records_written") == n
    rate = n / elapsed_s
    print(f"\nread->write {n} events in {elapsed_s:.2f} s (incl. start-up): {rate:,.0f} events/s")
    assert rate > 1_000


@pytest.mark.integration
def test_an_unbounded_read_stops_on_request_and_commits_what_it_wrote(
    kafka_config: KafkaConfig, topics: Topics
) -> None:
    n = 1_500
    src, dst = topics("beam-stop-src", "beam-stop-dst")
    _produce_events(kafka_config, src, n)
    group = f"g-{uuid.uuid4().hex[:8]}"
    token = f"stop-{uuid.uuid4().hex}"
    failures: list[BaseException] = []

    def run() -> None:
        try:
            _run_read_write(kafka_config, src, dst, group, ReadOptions(stop_token=token))  # type: ignore[call-arg]
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        out = drain(kafka_config, dst, expected_count=n, idle_timeout_s=10, max_wait_s=30)
        assert len(out) == n
        assert worker.is_alive()  # no stop condition but the token: still polling
    finally:
        request_stop(token)
        worker.join(timeout=20)
        clear_stop(token)
    assert not worker.is_alive() and not failures
    assert sum(_committed(kafka_config, src, group).values()) == n
