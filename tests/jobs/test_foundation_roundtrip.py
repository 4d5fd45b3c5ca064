"""The foundation round trip: ~100k generated records (about 1 % malformed) produced to the real embedded
broker, consumed back by a consumer group, decoded: every record is either an ``Event`` or a ``DeadLetter``
of the kind the generator intended, nothing lost, nothing doubled.

The reader stops on the count it expects, then keeps polling a little to catch extra records; it never
asks the broker for the end offset (tansu reports the last batch's base offset, see docs/architecture.md).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import pytest
from confluent_kafka import TopicPartition

from streamwarden.jobs.cli.generate import KafkaSink, run_generate
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import BatchConsumer
from streamwarden.operators.traffic import MALFORMED_KINDS, TrafficRecord, TrafficSpec, iter_traffic
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef, decode_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Topics = Callable[..., list[str]]

PARTITIONS = 3
#: The default ten minutes with a busier organic crowd: about 103k records, every scenario, 1 % malformed.
SPEC = TrafficSpec.model_validate({"seed": 7, "organic_events_per_s": 150.0, "malformed_fraction": 0.01})
#: Keep reading this long after the expected count arrived, to catch duplicates or strays.
GRACE_S = 1.5
MAX_CONSUME_S = 60.0


class Read(NamedTuple):
    """One consumed record and what the decoder made of it."""

    value: bytes
    partition: int
    offset: int
    decoded: pb.Event | pb.DeadLetter


def _consume_and_decode(
    cfg: KafkaConfig, topic: str, expected: int, now_ms: int
) -> tuple[list[Read], dict[int, int]]:
    """Read ``topic`` with a fresh consumer group until ``expected`` records plus a grace period; decode each
    record and commit each batch. Returns the reads and the group's committed offset per partition."""
    reads: list[Read] = []
    group = f"roundtrip-{uuid.uuid4().hex[:10]}"
    with BatchConsumer.subscribe(cfg, group, [topic], max_batch=10_000, timeout_s=0.2) as consumer:
        deadline = time.monotonic() + MAX_CONSUME_S
        grace_until: float | None = None
        while time.monotonic() < (grace_until or deadline):
            batch = consumer.poll()
            for msg in batch:
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                value = msg.value() or b""
                decoded = decode_event(value, SourceRef(topic, partition, offset), now_ms=now_ms)
                reads.append(Read(value, partition, offset, decoded))
            if batch:
                consumer.commit(batch)
            if grace_until is None and len(reads) >= expected:
                grace_until = time.monotonic() + GRACE_S
        assert len(reads) >= expected, f"only {len(reads)} of {expected} records after {MAX_CONSUME_S:g} s"
        committed = consumer.consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
        )
    return reads, {tp.partition: tp.offset for tp in committed}


def test_100k_generated_records_round_trip_through_the_broker_exactly(
    kafka_config: KafkaConfig, kafka_topics: Topics
) -> None:
    records: list[TrafficRecord] = list(iter_traffic(SPEC))
    produced = len(records)
    by_payload = {r.payload: r for r in records}
    mal_kinds = Counter(r.malformed for r in records if r.malformed is not None)
    # Preconditions on the input, so the checks below mean something.
    assert 95_000 <= produced <= 115_000
    assert len(by_payload) == produced, "payloads must be unique to match reads to records"
    assert 0.005 <= sum(mal_kinds.values()) / produced <= 0.02
    assert set(mal_kinds) == set(MALFORMED_KINDS)

    (topic,) = kafka_topics("events", partitions=PARTITIONS)
    sink = KafkaSink(kafka_config, topic)
    stats = run_generate(SPEC, sink, records=records)  # flushes; raises if any delivery failed
    assert stats.records == produced == sink.producer.delivered
    assert stats.malformed == sum(mal_kinds.values())

    now_ms = SPEC.end_ms + SPEC.max_late_ms  # a fixed decoder clock just past the run
    reads, committed = _consume_and_decode(kafka_config, topic, produced, now_ms)

    # Nothing lost, nothing doubled: decoded + dead-lettered == produced, same payload multiset.
    events = [r for r in reads if isinstance(r.decoded, pb.Event)]
    dead = [r for r in reads if isinstance(r.decoded, pb.DeadLetter)]
    n_events, n_dead, n_read = len(events), len(dead), len(reads)
    assert n_events + n_dead == n_read == produced
    assert Counter(r.value for r in reads) == Counter(r.payload for r in records)
    assert len({(r.partition, r.offset) for r in reads}) == produced
    assert {r.partition for r in reads} == set(range(PARTITIONS))
    # The group committed just past the last record it read in every partition.
    last = {p: max(r.offset for r in reads if r.partition == p) for p in range(PARTITIONS)}
    assert committed == {p: o + 1 for p, o in last.items()}

    # Each malformed record became a DeadLetter of exactly its kind, pointing back at where it was read.
    letters = [r.decoded for r in dead if isinstance(r.decoded, pb.DeadLetter)]
    assert Counter(pb.DeadLetter.ErrorKind.Name(d.error_kind) for d in letters) == mal_kinds
    for read in dead:
        letter = read.decoded
        assert isinstance(letter, pb.DeadLetter)
        want = by_payload[read.value].malformed
        assert want is not None, f"valid record dead-lettered: {letter.message}"
        assert pb.DeadLetter.ErrorKind.Name(letter.error_kind) == want, letter.message
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
            topic,
            read.partition,
            read.offset,
        )
        assert letter.original == read.value
        assert letter.message
        assert letter.time_ms == now_ms

    # Every valid record decoded to the event the generator meant, losing nothing.
    for read in events:
        event = read.decoded
        assert isinstance(event, pb.Event)
        record = by_payload[read.value]
        assert record.malformed is None
        assert event.event_time_ms == record.event_time_ms
        assert event.actor.account_id == record.account_id
        assert event.SerializeToString() == read.value
