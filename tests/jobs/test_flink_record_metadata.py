"""The Flink job's own Java classes, built by Maven from ``jobs/flink/java``: ``RecordWithMetadataSchema``'s
``byte[]`` layout is what ``jobs/flink/decode.py: split_record`` reads, ``KeyedBytesRecordSchema`` writes no
record timestamp, and the decode stage's idea
of which partitions its subtask reads is the Kafka connector's (checked against the JVM)."""

from __future__ import annotations

import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwarden.jobs.flink.decode import java_split_owner, record_with_metadata, split_record
from streamwarden.jobs.flink.record_jar import (
    BATCHER_CLASS,
    JAR_NAME,
    KEYED_SCHEMA_CLASS,
    SCHEMA_CLASS,
    ensure_record_jar,
    source_digest,
)

_optional_bytes = st.one_of(st.none(), st.binary(max_size=300))


@given(
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    _optional_bytes,
    _optional_bytes,
)
def test_split_record_inverts_the_layout(
    partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None
) -> None:
    rec = split_record(record_with_metadata(partition, offset, timestamp_ms, key, value))
    assert rec == (partition, offset, timestamp_ms, key, value)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than"),
        (b"\x01" * 10, "shorter than"),
        (b"\x02" + record_with_metadata(0, 0, 0, b"k", b"v")[1:], "layout v2"),
        (record_with_metadata(0, 0, 0, b"key", b"")[:-2], "key length 3"),
    ],
)
def test_split_record_rejects_other_layouts(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_record(data)


def test_the_jar_is_built_once_per_source_content() -> None:
    jar = ensure_record_jar()
    assert jar.name == JAR_NAME and jar.parent.name == source_digest()[:16]
    with zipfile.ZipFile(jar) as archive:
        classes = [n for n in archive.namelist() if n.endswith(".class")]
    ours = sorted(c.replace(".", "/") + ".class" for c in (SCHEMA_CLASS, KEYED_SCHEMA_CLASS, BATCHER_CLASS))
    assert sorted(classes) == ours  # only ours: the rest is provided at run time
    assert ensure_record_jar() == jar


@pytest.mark.engine
def test_java_schema_and_split_owner_agree_with_python() -> None:
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    from streamwarden.jobs.flink.env import job_jars

    gateway = get_gateway()
    add_jars_to_context_class_loader([p.as_uri() for p in job_jars()])
    jvm = gateway.jvm
    kafka = jvm.org.apache.kafka
    records = [
        ("events", 3, 2**40 + 7, 1_735_689_600_000, b"acct-1", b"\x0a\x03abc"),
        ("events", 0, 0, -1, None, b"v"),
        ("events", 2**31 - 1, 5, 0, b"", None),
        ("events", 1, 9, 42, None, None),
    ]
    got = jvm.java.util.ArrayList()
    collector = jvm.org.apache.flink.api.common.functions.util.ListCollector(got)
    schema = jvm.streamwarden.flink.RecordWithMetadataSchema()
    for topic, partition, offset, ts, key, value in records:
        record = kafka.clients.consumer.ConsumerRecord(
            topic,
            partition,
            offset,
            ts,
            kafka.common.record.TimestampType.CREATE_TIME,
            -1,
            -1,
            key,
            value,
            kafka.common.header.internals.RecordHeaders(),
            jvm.java.util.Optional.empty(),
        )
        schema.deserialize(record, collector)
    assert [bytes(b) for b in got] == [record_with_metadata(*r[1:]) for r in records]
    assert [split_record(bytes(b)) for b in got] == [r[1:] for r in records]

    # the sinks' serializer drops the element's (event-time) timestamp: the producer stamps write time
    sink_schema = jvm.streamwarden.flink.KeyedBytesRecordSchema("out")
    row = jvm.org.apache.flink.types.Row(2)
    row.setField(0, b"k")
    row.setField(1, b"value")
    produced = sink_schema.serialize(row, None, jvm.java.lang.Long(2**62))
    assert (produced.topic(), produced.partition(), produced.timestamp()) == ("out", None, None)
    assert (bytes(produced.key()), bytes(produced.value())) == (b"k", b"value")

    # KafkaSourceEnumerator.getSplitOwner is package-private: call it by reflection
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    enumerator = jvm.java.lang.Class.forName(
        "org.apache.flink.connector.kafka.source.enumerator.KafkaSourceEnumerator", True, loader
    )
    arg_types = gateway.new_array(jvm.java.lang.Class, 2)
    arg_types[0] = jvm.java.lang.Class.forName("org.apache.kafka.common.TopicPartition", True, loader)
    arg_types[1] = jvm.java.lang.Integer.TYPE
    owner = enumerator.getDeclaredMethod("getSplitOwner", arg_types)
    owner.setAccessible(True)
    mismatches = []
    for topic in ("events", "events-0a1b2c3d4e", "é✓-topic", "polygenelubricants"):
        for readers in (1, 2, 3, 7):
            for partition in range(12):
                args = gateway.new_array(jvm.java.lang.Object, 2)
                args[0] = kafka.common.TopicPartition(topic, partition)
                args[1] = jvm.java.lang.Integer(readers)
                want = int(owner.invoke(None, args))
                if java_split_owner(topic, partition, readers) != want:
                    mismatches.append((topic, readers, partition, want))
    assert not mismatches, mismatches[:5]
