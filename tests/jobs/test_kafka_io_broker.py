"""Kafka I/O against the real embedded broker: produce/drain, at-least-once commits, delivery failures."""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Message, TopicPartition

from streamwarden.deploy.broker import free_port
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import (
    EMBEDDED_FETCH_WAIT_MAX_MS,
    EMBEDDED_HEARTBEAT_INTERVAL_MS,
    EMBEDDED_SESSION_TIMEOUT_MS,
    BatchConsumer,
    CheckedProducer,
    DeliveryError,
    drain,
    embedded_kafka_config,
    ensure_topics,
    make_consumer,
    make_producer,
    next_offsets,
    poll_batch,
)
from streamwarden.operators.errors import BrokerError

Topics = Callable[..., list[str]]


def test_embedded_config_has_short_group_timeouts() -> None:
    cfg = embedded_kafka_config("127.0.0.1:1234")
    assert cfg.bootstrap_servers == "127.0.0.1:1234"
    assert (cfg.session_timeout_ms, cfg.heartbeat_interval_ms) == (
        EMBEDDED_SESSION_TIMEOUT_MS,
        EMBEDDED_HEARTBEAT_INTERVAL_MS,
    )
    assert cfg.heartbeat_interval_ms * 3 <= cfg.session_timeout_ms
    assert cfg.client_config()["fetch.wait.max.ms"] == str(EMBEDDED_FETCH_WAIT_MAX_MS)


def test_shared_extra_properties_go_only_to_the_clients_that_know_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = embedded_kafka_config(f"127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="streamwarden.kafka"):
        producer = make_producer(cfg, message_timeout_ms=100)
        producer.poll(0.2)  # librdkafka's log lines reach Python logging on poll
    assert not [r for r in caplog.records if "consumer property" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamwarden.kafka"):
        producer = make_producer(cfg, message_timeout_ms=100, fetch_wait_max_ms=10)
        producer.poll(0.2)
    assert [r for r in caplog.records if "fetch.wait.max.ms is a consumer property" in r.getMessage()]


def test_next_offsets_is_highest_offset_plus_one_per_partition() -> None:
    batch = [
        Message(topic="t", partition=1, offset=7),
        Message(topic="t", partition=0, offset=3),
        Message(topic="t", partition=1, offset=5),
        Message(topic="u", partition=0, offset=0),
    ]
    got = [(tp.topic, tp.partition, tp.offset) for tp in next_offsets(batch)]
    assert got == [("t", 0, 4), ("t", 1, 8), ("u", 0, 1)]
    assert next_offsets([]) == []


def _produce(cfg: KafkaConfig, topic: str, payloads: list[bytes], **overrides: object) -> int:
    with CheckedProducer.create(cfg, **overrides) as producer:
        for i, payload in enumerate(payloads):
            producer.produce(topic, payload, key=str(i % 17).encode())
    return producer.delivered


@pytest.mark.integration
def test_produce_to_three_partitions_and_drain_everything_back(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    [topic] = kafka_topics("io-roundtrip", partitions=3)
    payloads = [f"event-{i}".encode() for i in range(3_000)]
    assert _produce(kafka_config, topic, payloads) == len(payloads)

    records = drain(kafka_config, topic, expected_count=len(payloads), idle_timeout_s=5)
    assert len(records) == len(payloads)
    assert {r.value for r in records} == set(payloads)
    per_partition = Counter(r.partition for r in records)
    assert set(per_partition) == {0, 1, 2}
    for p in per_partition:
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == list(range(len(offsets)))

    # Without an expected count, drain stops after the idle timeout and still sees the tail.
    t0 = time.monotonic()
    idle_records = drain(kafka_config, topic, idle_timeout_s=0.5)
    assert len(idle_records) == len(payloads)
    assert time.monotonic() - t0 < 5


@pytest.mark.integration
def test_drain_unknown_topic_is_a_clear_error(kafka_config: KafkaConfig) -> None:
    with pytest.raises(BrokerError, match="not available"):
        drain(kafka_config, f"no-such-topic-{uuid.uuid4().hex}", idle_timeout_s=0.5)


@pytest.mark.integration
def test_ensure_topics_is_idempotent(kafka_config: KafkaConfig, kafka_topics: Topics) -> None:
    [existing] = kafka_topics("io-existing", partitions=2)
    fresh = f"io-fresh-{uuid.uuid4().hex[:10]}"
    assert ensure_topics(kafka_config, [existing, fresh], partitions=4) == {existing: 2, fresh: 4}
    assert ensure_topics(kafka_config, [fresh], partitions=1) == {fresh: 4}


def _poll_until(consumer: BatchConsumer, deadline_s: float) -> list[Message]:
    """The first non-empty batch within ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        batch = consumer.poll()
        if batch:
            return batch
    raise AssertionError(f"no records within {deadline_s} s")


@pytest.mark.integration
def test_group_resumes_after_committed_offsets_and_redelivers_the_rest(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    [topic] = kafka_topics("io-group", partitions=3)
    payloads = [f"m-{i}".encode() for i in range(60)]
    _produce(kafka_config, topic, payloads)
    group = f"io-group-{uuid.uuid4().hex[:8]}"

    first = BatchConsumer.subscribe(kafka_config, group, [topic], max_batch=7, timeout_s=0.2)
    t0 = time.monotonic()
    committed_batch = _poll_until(first, 20)
    join_s = time.monotonic() - t0
    print(f"\ngroup subscribe -> first batch (embedded profile, session 2000 ms): {join_s:.2f} s")
    committed = first.commit(committed_batch)
    uncommitted_batch = _poll_until(first, 5)  # handled, but "crashed" before its commit
    first.close()

    assert join_s < 10, "the embedded profile should join in about a second"
    assert committed == next_offsets(committed_batch)
    done = {m.value() for m in committed_batch}
    redelivery_expected = {m.value() for m in uncommitted_batch}

    second = BatchConsumer.subscribe(kafka_config, group, [topic], max_batch=500, timeout_s=0.2)
    try:
        stored = second.consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=5)
        by_partition = {tp.partition: tp.offset for tp in committed}
        assert {tp.partition: tp.offset for tp in stored if tp.partition in by_partition} == by_partition
        seen: list[bytes | None] = []
        end = time.monotonic() + 20
        while len(seen) < len(payloads) - len(done) and time.monotonic() < end:
            seen.extend(m.value() for m in second.poll())
    finally:
        second.close()

    assert done | set(seen) == set(payloads), "records lost between commit and resume"
    assert not done & set(seen), "the new consumer re-read records whose offsets were committed"
    assert redelivery_expected <= set(seen), "uncommitted records were not redelivered"
    assert len(seen) == len(set(seen))


@pytest.mark.integration
def test_plain_consumer_assign_reads_without_group_join(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    [topic] = kafka_topics("io-assign", partitions=1)
    _produce(kafka_config, topic, [b"a", b"b", b"c"])
    consumer = make_consumer(kafka_config, f"g-{uuid.uuid4().hex[:8]}")
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        t0 = time.monotonic()
        got: list[bytes | None] = []
        while len(got) < 3 and time.monotonic() - t0 < 10:
            got.extend(m.value() for m in poll_batch(consumer, max_batch=10, timeout_s=0.2))
        assert got == [b"a", b"b", b"c"]
        assert time.monotonic() - t0 < 1.0, "assign() must not wait for a group join"
    finally:
        consumer.close()


def test_producer_to_unreachable_bootstrap_fails_clearly_in_bounded_time() -> None:
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")  # type: ignore[call-arg]
    producer = CheckedProducer.create(cfg, message_timeout_ms=1_500)
    t0 = time.monotonic()
    for i in range(5):
        producer.produce("events", f"x{i}".encode())
    with pytest.raises(DeliveryError, match=r"5 message\(s\) not delivered") as excinfo:
        producer.flush(timeout_s=10)
    elapsed_s = time.monotonic() - t0
    assert elapsed_s < 6, f"delivery failure took {elapsed_s:.1f} s"
    assert "_MSG_TIMED_OUT" in str(excinfo.value) or "TRANSPORT" in str(excinfo.value)
    assert producer.delivered == 0
    # Failures are reported once; a flush with nothing pending then succeeds.
    assert producer.flush(timeout_s=1) == 0


@pytest.mark.integration
def test_embedded_profile_consume_latency_is_milliseconds(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    """tansu answers a fetch only when fetch.wait.max.ms expires: the embedded profile keeps that short."""
    [topic] = kafka_topics("io-latency", partitions=1)
    producer = make_producer(kafka_config, linger_ms=0)
    consumer = make_consumer(kafka_config, f"g-{uuid.uuid4().hex[:8]}")
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        poll_batch(consumer, timeout_s=0.3)
        latencies_ms = []
        for i in range(8):
            producer.produce(topic, f"x{i}".encode())
            assert producer.flush(5) == 0
            t0 = time.monotonic()
            while not poll_batch(consumer, timeout_s=0.5):
                assert time.monotonic() - t0 < 5
            latencies_ms.append((time.monotonic() - t0) * 1000)
            time.sleep(0.03)
    finally:
        consumer.close()
    median_ms = statistics.median(latencies_ms)
    print(
        f"\nacked -> consumed latency, embedded profile: median {median_ms:.1f} ms, max {max(latencies_ms):.1f} ms"
    )
    assert median_ms < 150  # librdkafka's default fetch wait (500 ms) gives ~200 ms here
