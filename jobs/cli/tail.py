"""Follow a topic and print its protobuf records: the engine of ``actions tail`` and ``deadletter tail``.

A tail uses ``assign()`` with a throwaway group id: it never joins a group, never commits, and never
moves the job's offsets.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from streamwarden.jobs.config import JobConfig
from streamwarden.jobs.kafka_io import make_consumer
from streamwarden.operators.errors import BrokerError

M = TypeVar("M", bound=Message)

JsonOpt = Annotated[
    bool, typer.Option("--json/--no-json", help="One JSON object a line (proto field names).")
]
FromBeginningOpt = Annotated[
    bool, typer.Option("--from-beginning/--from-end", help="Start at the oldest record, or at new ones.")
]
MaxOpt = Annotated[int | None, typer.Option("--max-messages", min=1, help="Stop after this many records.")]
IdleOpt = Annotated[
    float | None, typer.Option("--idle-timeout-s", min=0.0, help="Stop after this long without a record.")
]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def to_json(message: Message) -> str:
    """The canonical JSON form: proto3 JSON mapping, proto field names, defaults included."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def open_tail(job: JobConfig, topic: str, from_beginning: bool, timeout_s: float = 10.0) -> Consumer:
    """A consumer assigned to every partition of ``topic`` (``BrokerError`` when it is not there)."""
    consumer = make_consumer(
        job.kafka, f"streamwarden-tail-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": False}
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        consumer.close()
        raise BrokerError(
            f"cannot read the metadata of {topic!r} from {job.kafka.bootstrap_servers}: {exc}"
        ) from None
    info = md.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        consumer.close()
        why = info.error if info is not None and info.error is not None else "no partitions"
        raise BrokerError(f"topic {topic!r} is not available on {job.kafka.bootstrap_servers}: {why}")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in sorted(info.partitions)])
    return consumer


def records(
    consumer: Consumer,
    parse: Callable[[bytes], M],
    *,
    max_messages: int | None,
    idle_timeout_s: float | None,
    warn: Callable[[str], None],
) -> Iterator[tuple[Any, M]]:
    """``(message, parsed)`` until ``max_messages``, ``idle_timeout_s`` without a record, or Ctrl-C;
    a record that does not parse is reported through ``warn`` and skipped."""
    seen = 0
    last = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    warn(f"warning: {err}")
                continue
            last = time.monotonic()
            try:
                parsed = parse(msg.value() or b"")
            except DecodeError:
                warn(f"warning: {msg.topic()}[{msg.partition()}]@{msg.offset()} does not parse; skipped")
                continue
            seen += 1
            yield msg, parsed
    except KeyboardInterrupt:
        return
