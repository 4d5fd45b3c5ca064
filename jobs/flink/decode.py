"""Decode and fan out (not keyed): Kafka records → entity routes for the velocity stage; bad records and
events behind the lateness gate → the dead-letter side output.

Main output: ``(Row(route key, route_value(...)), event time ms)`` per entity key the event names; the
job turns the second field into the record's Flink timestamp. The event's first route also carries
the event-level partial (so every partial reaches the assembly through the velocity stage, as in the
Beam job, without an element of its own; an event without entity keys gets the route
``"0|<event id>"``). Each route says how many of its event's routes go to the same velocity subtask
(``jobs/flink/keygroups.py``), so that subtask passes the event's partials on as one element.
Side output ``dead_letter_tag()``: ``Row(Kafka key, DeadLetter bytes)``.

With ``alerts``, side output ``points_tag()``: the anomaly stage's series points of every decoded
record (``jobs/flink/alerts.py``).

Input: one ``byte[]`` per Kafka record from the job's ``RecordWithMetadataSchema`` (``jobs/flink/java``,
built by ``jobs/flink/record_jar.py``): partition, offset, timestamp and key in a fixed header, then the
value (``split_record``). So dead letters name the record's partition and offset and carry its key, and
the lateness gate runs per partition (``EventClock``): a backlog read one partition after the other is
not misread as late. No single record can stop the job: an exception while handling one record makes
it an ``OPERATOR_ERROR`` dead letter (the exception type and message), as in ``jobs/beam/decode.py``.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pyflink.common import Row
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from streamwarden.jobs.flink.alerts import SeriesPoints
from streamwarden.jobs.flink.env import keyed_bytes_type
from streamwarden.jobs.flink.keygroups import java_string_hash, subtask_of
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.operators.features.facts_codec import encode_facts
from streamwarden.operators.pipeline import EventClock, Stages, StagesConfig, dead_letter_reason
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef

# ---------------------------------------------------------------- facts codec
# (``operators.features.facts_codec``: the same bytes in the assembly state and the velocity log)

_ROUTE_HEADER = struct.Struct("<HBB")
ROUTE_CARRIES_EVENT = 1
"""Route flag: the velocity stage also emits the event-level partial for this route."""


class Route(NamedTuple):
    key: str
    facts: bytes
    local_routes: int
    """How many of the event's routes (this one included) go to the same velocity subtask."""
    flags: int


def route_value(key: str, facts: bytes, local_routes: int = 1, flags: int = 0) -> bytes:
    """What the decode stage sends to the velocity stage for one route: ``<HBB`` (key length, routes
    of the event on the same velocity subtask, flags), the key, then the facts bytes (the key travels
    in the value, so the velocity stage need not ask Flink for it)."""
    raw = key.encode("utf-8")
    return _ROUTE_HEADER.pack(len(raw), local_routes, flags) + raw + facts


def split_route_value(value: bytes) -> Route:
    """Inverse of ``route_value``."""
    n, local_routes, flags = _ROUTE_HEADER.unpack_from(value, 0)
    pos = _ROUTE_HEADER.size
    return Route(value[pos : pos + n].decode("utf-8"), value[pos + n :], local_routes, flags)


# ---------------------------------------------------------------- Kafka record with metadata

RECORD_LAYOUT_VERSION = 1
_RECORD_HEADER = struct.Struct(">BBiqqi")
_NULL_KEY, _NULL_VALUE = 1, 2


class SourceRecord(NamedTuple):
    """One Kafka record as ``RecordWithMetadataSchema`` hands it over."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def record_with_metadata(
    partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None
) -> bytes:
    """What ``RecordWithMetadataSchema.deserialize`` emits (``>BBiqqi`` header: layout version, flags
    (1 = null key, 2 = null value), partition, offset, timestamp, key length; the key; the value).
    Python's twin of the Java class, for tests."""
    flags = (_NULL_KEY if key is None else 0) | (_NULL_VALUE if value is None else 0)
    k = key or b""
    head = _RECORD_HEADER.pack(RECORD_LAYOUT_VERSION, flags, partition, offset, timestamp_ms, len(k))
    return head + k + (value or b"")


def split_record(data: bytes) -> SourceRecord:
    """Inverse of ``record_with_metadata``; ``ValueError`` on another layout or a short buffer."""
    if len(data) < _RECORD_HEADER.size:
        raise ValueError(f"record of {len(data)} bytes is shorter than its {_RECORD_HEADER.size}-byte header")
    version, flags, partition, offset, timestamp_ms, n = _RECORD_HEADER.unpack_from(data, 0)
    if version != RECORD_LAYOUT_VERSION:
        raise ValueError(f"record layout v{version} is not v{RECORD_LAYOUT_VERSION}")
    pos = _RECORD_HEADER.size
    if n < 0 or pos + n > len(data):
        raise ValueError(f"record key length {n} exceeds the {len(data) - pos} bytes after the header")
    key = None if flags & _NULL_KEY else data[pos : pos + n]
    value = None if flags & _NULL_VALUE else data[pos + n :]
    return SourceRecord(partition, offset, timestamp_ms, key, value)


def java_split_owner(topic: str, partition: int, readers: int) -> int:
    """The source reader (subtask) the Kafka connector assigns ``partition`` of ``topic`` to
    (``KafkaSourceEnumerator.getSplitOwner``: ``((topic.hashCode() * 31) & 0x7FFFFFFF) % readers``,
    plus the partition, modulo the readers)."""
    start = ((java_string_hash(topic) * 31) & 0x7FFFFFFF) % readers
    return (start + partition) % readers


def subtask_index_of(runtime_context: RuntimeContext) -> tuple[int, int]:
    """``(index of this subtask, parallelism)``, from the task info on Flink 2's thread mode (see
    ``jobs/flink/velocity.py: parallelism_of``)."""
    java_ctx = getattr(runtime_context, "_runtime_context", None)
    if java_ctx is not None and hasattr(java_ctx, "getTaskInfo"):
        info = java_ctx.getTaskInfo()
        return int(info.getIndexOfThisSubtask()), int(info.getNumberOfParallelSubtasks())
    return runtime_context.get_index_of_this_subtask(), runtime_context.get_number_of_parallel_subtasks()


def points_tag() -> OutputTag:
    """The side output of anomaly series points: ``(Row(series id, point bytes), Flink timestamp)``."""
    from pyflink.common.typeinfo import Types

    from streamwarden.jobs.flink.env import bytes_type

    return OutputTag("series-points", Types.TUPLE([Types.ROW([Types.STRING(), bytes_type()]), Types.LONG()]))


def dead_letter_tag() -> OutputTag:
    """The side output of undecodable and late records: ``Row(key bytes, DeadLetter bytes)``."""
    return OutputTag("dead-letters", keyed_bytes_type())


class InjectedFailure(RuntimeError):
    """Raised once by the test-only failure hook (``fail_once_after``)."""


def maybe_fail_once(records: int, fail_once_after: tuple[int, str]) -> None:
    """The test hook ``fail_once_after = (n, marker path)``: at the ``n``-th record (or the first a
    caller lets fail after it), while the marker file does not exist, create it and fail the job (once)."""
    after, marker = fail_once_after
    if records >= after and not os.path.exists(marker):
        with open(marker, "x", encoding="utf-8") as handle:
            handle.write(f"failed after {after} records\n")
        raise InjectedFailure(f"injected failure after {after} records (marker {marker})")


class Admitted(NamedTuple):
    """A record the lateness gate admitted: the record, where it came from and its event."""

    record: SourceRecord
    source: SourceRef
    event: pb.Event
    now_ms: int | None
    """Wall clock for the decoder's future-time check (None: off), for later dead letters."""


class RecordIntake:
    """What both layouts do first with a Kafka record (``DecodeFunction``, ``fused.FusedFunction``):
    ``split_record``, decode, the anomaly series points of every decoded record, and the per-partition
    lateness gate; bad and late records become dead letters in ``out``, counted (``records_in``,
    ``events``, ``dead_letters`` and ``dead_letters.<reason>``). An exception while handling a record
    replaces what it had added to ``out`` with an ``OPERATOR_ERROR`` dead letter naming the step.

    ``partitions``: the events topic's partitions this subtask reads (its clock holds the watermark
    back until each one's first record). ``on_decoded(record, out)``: sees every decoded record (event
    or dead letter) before the lateness gate and may add outputs (the anomaly series of both layouts).
    ``fail_once_after``: the failure test hook."""

    def __init__(
        self,
        stages: Stages,
        counters: StageCounters,
        *,
        topic: str,
        partitions: list[int],
        check_future: bool,
        on_decoded: Callable[[pb.Event | pb.DeadLetter, list[Any]], None] | None = None,
        fail_once_after: tuple[int, str] | None = None,
    ) -> None:
        self._stages, self._counters = stages, counters
        self._topic, self._partitions, self._check_future = topic, partitions, check_future
        self._on_decoded, self._fail_once_after = on_decoded, fail_once_after
        self._clock: EventClock = stages.event_clock()
        self._assigned = False
        self._stage = ""
        self._dead_tag = dead_letter_tag()
        self.records = 0

    @property
    def watermark_ms(self) -> int:
        """The lateness gate's watermark (the subject stage's expiry clock in the fused layout)."""
        return self._clock.watermark_ms

    def admit(self, data: bytes, out: list[Any], may_fail: bool = True) -> Admitted | None:
        """The record's event if the gate admits it, else None (its dead letter, if any, in ``out``).
        ``may_fail``: whether the failure test hook may fire at this record."""
        self.records += 1
        self._counters.inc("records_in")
        if may_fail and self._fail_once_after is not None:
            maybe_fail_once(self.records, self._fail_once_after)
        wall_ms = int(time.time() * 1000)
        now_ms = wall_ms if self._check_future else None
        try:
            rec = split_record(data)
        except Exception as exc:  # not from RecordWithMetadataSchema: still one record, not the job
            letter = self._stages.operator_error(
                data, SourceRef(self._topic, -1, -1), "split_record", exc, now_ms
            )
            out.append(self.dead_letter(letter, None))
            return None
        source = SourceRef(self._topic, rec.partition, rec.offset)
        mark = len(out)
        try:
            event = self._gate(rec, source, wall_ms, now_ms, out)
        except Exception as exc:  # one record must never stop the job: it becomes a dead letter
            del out[mark:]
            out.append(
                self.dead_letter(
                    self._stages.operator_error(rec.value, source, self._stage, exc, now_ms), rec.key
                )
            )
            return None
        if event is None:
            return None
        self._counters.inc("events")
        return Admitted(rec, source, event, now_ms)

    def error(self, admitted: Admitted, stage: str, exc: Exception) -> tuple[OutputTag, Row]:
        """The ``OPERATOR_ERROR`` dead letter of an admitted record that failed in a later ``stage``."""
        rec = admitted.record
        letter = self._stages.operator_error(rec.value, admitted.source, stage, exc, admitted.now_ms)
        return self.dead_letter(letter, rec.key)

    def dead_letter(self, letter: pb.DeadLetter, key: bytes | None) -> tuple[OutputTag, Row]:
        self._counters.inc("dead_letters")
        self._counters.inc_named(f"dead_letters.{dead_letter_reason(letter)}")
        return self._dead_tag, Row(key or b"", letter.SerializeToString())

    def _gate(
        self, rec: SourceRecord, source: SourceRef, wall_ms: int, now_ms: int | None, out: list[Any]
    ) -> pb.Event | None:
        stages = self._stages
        self._stage = "decode"
        decoded = stages.decode(rec.value, source, now_ms)
        if self._on_decoded is not None:  # every decoded record, before the lateness gate (as the reference)
            self._stage = "points"
            self._on_decoded(decoded, out)
        if isinstance(decoded, pb.DeadLetter):
            out.append(self.dead_letter(decoded, rec.key))
            return None
        self._stage = "lateness"
        clock = self._clock
        if not self._assigned:
            self._assigned = True
            clock.assign(self._partitions, wall_ms)
        if not clock.admit(decoded.event_time_ms, rec.partition, wall_ms):
            late = stages.late_letter(rec.value, source, decoded, clock.watermark_ms, now_ms)
            out.append(self.dead_letter(late, rec.key))
            return None
        return decoded


class DecodeFunction(ProcessFunction):  # type: ignore[misc]
    """``RecordIntake`` (split, decode, lateness gate per partition of this instance) →
    ``Stages.fan_out``; any exception for one record → an ``OPERATOR_ERROR`` dead letter.

    ``partitions``: the events topic's partitions when the job was built; this instance assigns its
    clock the ones the Kafka source gives its subtask, so each holds the watermark back until its first
    record (a partition added later joins with its first record). ``check_future`` applies the
    decoder's wall-clock future-time check (off for recorded replays). ``velocity_subtasks =
    (parallelism, max parallelism)`` of the velocity stage (default: one subtask). ``fail_once_after =
    (n, marker path)`` is a test hook: the instance that reads its ``n``-th record while the marker file
    does not exist creates it and fails the job, once.
    """

    def __init__(
        self,
        config: StagesConfig,
        *,
        topic: str,
        partitions: tuple[int, ...] = (),
        check_future: bool = True,
        fail_once_after: tuple[int, str] | None = None,
        alerts: bool = False,
        anomaly_spec: Path | None = None,
        velocity_subtasks: tuple[int, int] = (1, 1),
    ) -> None:
        self._config = config
        self._velocity_subtasks = velocity_subtasks
        self._alerts = alerts
        self._anomaly_spec = anomaly_spec
        self._topic = topic
        self._partitions = partitions
        self._check_future = check_future
        self._fail_once_after = fail_once_after

    def open(self, runtime_context: RuntimeContext) -> None:
        stages = self._stages = Stages.shared(self._config)
        index, readers = subtask_index_of(runtime_context)
        own = [p for p in self._partitions if java_split_owner(self._topic, p, readers) == index]
        self._subtask_of: dict[str, int] = {}
        self._counters = StageCounters(runtime_context, ("records_in", "events", "dead_letters"))
        self._intake = RecordIntake(
            stages,
            self._counters,
            topic=self._topic,
            partitions=own,
            check_future=self._check_future,
            on_decoded=self._points_out(stages) if self._alerts else None,
            fail_once_after=self._fail_once_after,
        )

    def _points_out(self, stages: Stages) -> Callable[[pb.Event | pb.DeadLetter, list[Any]], None]:
        """The series points of a decoded record, to ``points_tag()`` for the anomaly stage."""
        points, tag = SeriesPoints(self._anomaly_spec, stages.out_of_orderness_ms), points_tag()

        def emit(record: pb.Event | pb.DeadLetter, out: list[Any]) -> None:
            for item in points.of(record):
                out.append((tag, (Row(*item), points.max_event_ms)))

        return emit

    def close(self) -> None:
        self._counters.flush()

    def process_element(self, data: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        out: list[Any] = []
        admitted = self._intake.admit(data, out)
        if admitted is not None:
            try:
                self._fan_out(admitted.event, out)
            except Exception as exc:  # one record must never stop the job: it becomes a dead letter
                out = [self._intake.error(admitted, "fan_out", exc)]
        yield from out

    def _fan_out(self, event: pb.Event, out: list[Any]) -> None:
        fanned = self._stages.fan_out(event)
        t = event.event_time_ms
        facts = encode_facts(fanned.facts)
        keys = fanned.keys
        if not keys:
            out.append((Row(fanned.event_key, route_value(fanned.event_key, facts)), t))
            return
        # Routes of this event on each route's velocity subtask (all of them at parallelism 1).
        if self._velocity_subtasks[0] == 1:
            local = [len(keys)] * len(keys)
        else:
            subtasks = [self._subtask(route) for route in keys]
            local = [subtasks.count(s) for s in subtasks]
        for i, route in enumerate(keys):
            value = route_value(route, facts, local[i], ROUTE_CARRIES_EVENT if i == 0 else 0)
            out.append((Row(route, value), t))

    def _subtask(self, key: str) -> int:
        cache = self._subtask_of
        subtask = cache.get(key)
        if subtask is None:
            if len(cache) >= 1_000_000:
                cache.clear()
            subtask = cache[key] = subtask_of(key, *self._velocity_subtasks)
        return subtask
