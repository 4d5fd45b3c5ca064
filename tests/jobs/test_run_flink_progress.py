"""``streamwarden run --engine flink`` prints a progress line from the broker (the job's counters live in
the JVM): the input records the job's group committed since the start, its consumer lag, and how far the
actions and dead-letter topics grew. Checked against a real broker with a group that commits as Flink
does on a checkpoint."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition

from streamwarden.jobs.cli.run import FlinkProgress
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.kafka_io import make_consumer, make_producer

pytestmark = [pytest.mark.integration]

Topics = Callable[..., list[str]]


def test_the_progress_line_follows_commits_and_output_topics(
    kafka_config: KafkaConfig, kafka_topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    events, actions, dead, features = kafka_topics(
        "events", "actions", "deadletter", "features", partitions=1
    )
    topics = TopicsConfig(events=events, actions=actions, deadletter=dead, features=features)  # type: ignore[call-arg]
    job = JobConfig(kafka=kafka_config, topics=topics, group_id=f"g-{uuid.uuid4().hex[:8]}")  # type: ignore[call-arg]
    producer = make_producer(kafka_config)
    for i in range(50):
        producer.produce(events, f"e{i}".encode())
    producer.produce(actions, b"before the start")  # not counted: the line shows growth since the start
    assert producer.flush(10) == 0

    progress = FlinkProgress(job, interval_s=0.3).start()
    time.sleep(1.0)
    committer = make_consumer(kafka_config, job.group_id)
    committer.commit(offsets=[TopicPartition(events, 0, 30)], asynchronous=False)  # a checkpoint's commit
    committer.close()
    for _ in range(4):
        producer.produce(actions, b"a")
    producer.produce(dead, b"d")
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 15
    lines: list[str] = []
    pattern = (
        "flink: 30 records committed by checkpoints, consumer lag 20, actions topic +4, dead-letter topic +1"
    )
    while time.monotonic() < deadline and not any(pattern in line for line in lines):
        time.sleep(0.3)
        lines += capsys.readouterr().err.splitlines()
    progress.stop()
    assert any(pattern in line for line in lines), lines
    # before the commit: nothing committed yet, the whole input is lag
    assert re.search(
        r"flink: 0 records committed by checkpoints, consumer lag 50, actions topic \+0", lines[0]
    )
