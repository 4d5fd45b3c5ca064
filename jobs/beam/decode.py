"""Decode and fan out (not keyed): Kafka records → entity routes for the velocity stage; bad records and
events behind the lateness gate → the dead-letter output.

Outputs: main ``(key, EventFacts)`` — one per entity key the event names plus the event-level route
``"0|<event id>"`` (so every partial reaches the assembly through one stage, without a Flatten that
the DirectRunner would execute outside the fused stage); ``DEAD_LETTERS``: ``(key, DeadLetter bytes)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput

from streamwarden.jobs import observability
from streamwarden.jobs.beam.kafka_source import KafkaRecord, assigned_partitions
from streamwarden.jobs.beam.shared_store import GateClocks, SharedHandle
from streamwarden.operators.features.fanout import EventFacts
from streamwarden.operators.pipeline import EventClock, Stages, StagesConfig, dead_letter_reason
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef

METRICS_NAMESPACE = "streamwarden"
DEAD_LETTERS = "dead_letters"


class WithEventPartial(NamedTuple):
    """An entity route's value that also carries its event's event-level partial (no state): the
    decoder wraps the facts of each event's first entity route in it, so the event-level partial needs
    no keyed element of its own."""

    facts: EventFacts


class DecodeFn(beam.DoFn):
    """``Stages.decode`` → lateness gate (observed watermark of this instance) → ``Stages.fan_out``.

    ``check_future`` uses the wall clock for the future-time check (off for recorded replays); with
    ``gate_clocks`` the gate's clock is published there for the keyed stages' expiry.
    """

    def __init__(
        self,
        config: StagesConfig,
        *,
        check_future: bool = True,
        gate_clocks: SharedHandle[GateClocks] | None = None,
    ) -> None:
        self._config = config
        self._check_future = check_future
        self._gate_clocks = gate_clocks
        self._records = Metrics.counter(METRICS_NAMESPACE, "records_in")
        self._events = Metrics.counter(METRICS_NAMESPACE, "events")
        self._dead = Metrics.counter(METRICS_NAMESPACE, "dead_letters")
        # Wall time at the start and end of every bundle that had records: min..max is the time the job
        # spent processing, without start-up (what a throughput figure should divide by).
        self._active = Metrics.distribution(METRICS_NAMESPACE, "active_wall_ms")
        self._by_reason: dict[str, Any] = {}

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        self._clock: EventClock = self._stages.event_clock()
        self._topics_assigned: set[str] = set()
        self._published: GateClocks | None = None
        if self._gate_clocks is not None:
            self._published = self._gate_clocks.acquire(GateClocks)
            self._published.add(self._clock)

    def teardown(self) -> None:
        if self._published is not None:
            self._published.remove(self._clock)

    def start_bundle(self) -> None:
        self._bundle_started_ms = 0

    def finish_bundle(self) -> None:
        if self._bundle_started_ms:
            self._active.update(self._bundle_started_ms)
            self._active.update(int(time.time() * 1000))

    def _dead_letter(self, letter: pb.DeadLetter, key: bytes | None) -> TaggedOutput:
        reason = dead_letter_reason(letter)
        counter = self._by_reason.get(reason)
        if counter is None:
            counter = self._by_reason[reason] = Metrics.counter(METRICS_NAMESPACE, f"dead_letters.{reason}")
        counter.inc()
        self._dead.inc()
        observability.observe_dead_letter(reason)
        return TaggedOutput(DEAD_LETTERS, (key, letter.SerializeToString()))

    def process(self, rec: KafkaRecord) -> Iterator[Any]:
        self._records.inc()
        observability.observe_records("decode", "in")
        if not self._bundle_started_ms:
            self._bundle_started_ms = int(time.time() * 1000)
        wall_ms = int(time.time() * 1000)
        now_ms = wall_ms if self._check_future else None
        source = SourceRef(rec.topic, rec.partition, rec.offset)
        stages = self._stages
        out = stages.decode(rec.value, source, now_ms)
        if isinstance(out, pb.DeadLetter):
            yield self._dead_letter(out, rec.key)
            return
        clock = self._clock
        if rec.topic not in self._topics_assigned:
            self._topics_assigned.add(rec.topic)
            clock.assign(assigned_partitions(rec.topic), wall_ms)
        if not clock.admit(out.event_time_ms, rec.partition, wall_ms):
            late = stages.late_letter(rec.value, source, out, clock.watermark_ms, now_ms)
            yield self._dead_letter(late, rec.key)
            return
        self._events.inc()
        observability.observe_records("decode", "out")
        observability.observe_watermark(clock.watermark_ms, wall_ms)
        try:
            fanned = stages.fan_out(out)
        except Exception as exc:  # one record must never stop the job: it becomes a dead letter
            yield self._dead_letter(stages.operator_error(rec.value, source, "fan_out", exc, now_ms), rec.key)
            return
        facts: EventFacts = fanned.facts
        keys = fanned.keys
        if not keys:
            yield fanned.event_key, facts
            return
        yield keys[0], WithEventPartial(facts)
        for key in keys[1:]:
            yield key, facts
