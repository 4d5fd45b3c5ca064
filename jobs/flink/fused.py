"""The fused layout: the whole pipeline in one keyed Python operator (parallelism 1).

All Python operators of a TaskManager share one interpreter, and with five of them each state call
waits for the GIL (README, "Running on Flink"). Here one operator does everything, and it is called
once per batch of records, not once per record: ``RecordBatcher`` (Java, after the Kafka source) packs up to ``fused_batch`` records, or what arrived within ``fused_batch_ms``, into one
element under one key, and emits what it holds before every checkpoint barrier. For each batch the
operator runs what ``operators.pipeline.replay_actions`` runs, in the same order: decode, the
lateness gate, ``VelocityPipeline`` (the compiled core: fan-out, windows, assembly), scoring of the
batch's vectors in one ONNX run, the policy, the cooldown gate and reputation. So its actions equal
the replay's. With ``alerts`` it also runs the anomaly stage as ``operators.anomaly.replay`` does (every
decoded record before the lateness gate; every series flushed by Flink's final watermark at the end of a
bounded input), so its alerts equal the anomaly replay's.

State. The core, the cooldown gates and the targets' reputation live in process memory, the source
of truth while the job runs. The batch the batcher emits before a checkpoint barrier is flagged
(even if empty); after processing it the operator writes everything that changed since the last
flagged batch to one ``MapState[str, bytes]`` of the key with one ``put_all`` (window states
``v<core key>``, gates ``g<subject>``, targets ``t<target>``, the core's clock ``m``, anomaly series
``a<series id>`` and their clock ``n``) and removes what expired. So each checkpoint holds exactly
what memory held at its barrier, written once per checkpoint interval (a hot key once, not once per event), and the Kafka sinks commit the outputs of
the same records: exactly-once as in the staged layout. Between checkpoints the map lags memory;
only a restore reads it, and the first batch after one loads it back into memory.

Not for parallelism above 1: every key of every entity kind lives in this one subtask (the staged
layout, keyed by entity, is the one that scales out).
"""

from __future__ import annotations

import gc
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext

from streamwarden.jobs.flink.alerts import anomaly_spec
from streamwarden.jobs.flink.cooldown import step_rows
from streamwarden.jobs.flink.decide import features_tag, reload_files, report_versions
from streamwarden.jobs.flink.decode import RecordIntake
from streamwarden.jobs.flink.env import keyed_bytes_type
from streamwarden.jobs.flink.guard import OperatorErrors
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_map_state
from streamwarden.operators.anomaly.replay import END_OF_INPUT_WATERMARK_MS, AnomalyReplay, EmittedAlert
from streamwarden.operators.expiring import ExpiringStore, StoreSlot
from streamwarden.operators.features.assemble import FeatureVector
from streamwarden.operators.features.replay import GC_THRESHOLD, VelocityPipeline
from streamwarden.operators.pipeline import OPERATOR_STAGES, Stages, StagesConfig
from streamwarden.operators.policy.reputation import TargetState
from streamwarden.operators.policy.reputation import decode_state as decode_target
from streamwarden.operators.policy.reputation import encode_state as encode_target
from streamwarden.schemas import streamwarden_pb2 as pb

__all__ = ["FUSED_KEY", "FusedFunction", "alerts_tag"]

FUSED_KEY = "all"
"""The one key every record of the fused layout is keyed by."""

_COUNT = struct.Struct(">i")
_CLOCK = struct.Struct("<qq")
"""The core's clock (``m``): largest event time seen and next housekeeping time, so that a restored
core drops expired keys at the same events as the lost run (exact even for keys in HLL mode)."""
S = TypeVar("S")

_COUNTERS = (
    "records_in",
    "events",
    "dead_letters",
    "vectors",
    "late_partials",
    "score_batches",
    "scored_vectors",
    "decided_events",
    "events_with_late_partials",
    "actions",
    "actions_suppressed",
    "reputation_forgotten_subjects",
    "expired_keys",
    "restored_keys",
    "state_writes",
    "state_entries_written",
    "alerts",
    "anomaly_late_points",
)


def alerts_tag() -> OutputTag:
    """The fused operator's anomaly alerts: ``Row(fingerprint bytes, AnomalyAlert bytes)``."""
    return OutputTag("alerts", keyed_bytes_type())


FLAG_BARRIER = 1
"""Batch flags bit 0 (``RecordBatcher.FLAG_BARRIER``): a checkpoint barrier or the end of input follows."""


def split_batch(batch: bytes) -> tuple[list[bytes], int]:
    """The records and the flags of one ``RecordBatcher`` batch: a big-endian int32 count, a flags
    byte, then per record an int32 length and its bytes (``ValueError`` if the bytes do not hold
    exactly that)."""
    if len(batch) < 5:
        raise ValueError(f"a batch of {len(batch)} bytes has no header")
    (count,) = _COUNT.unpack_from(batch, 0)
    flags = batch[4]
    pos, end = 5, len(batch)
    out: list[bytes] = []
    unpack = _COUNT.unpack_from
    for _ in range(count):
        if pos + 4 > end:
            raise ValueError(f"batch of {count} records ends after {len(out)}")
        (n,) = unpack(batch, pos)
        pos += 4
        if n < 0 or pos + n > end:
            raise ValueError(f"batch record {len(out)} of length {n} overruns the batch")
        out.append(batch[pos : pos + n])
        pos += n
    if pos != end:
        raise ValueError(f"{end - pos} bytes after the last of {count} records")
    return out, flags


Dirty = dict[str, tuple[Callable[[Any], bytes], Any] | None]
"""Map key → (encoder, state object) changed since the last write to Flink state; None = delete."""


def _noter(dirty: Dirty, prefix: str, encode: Callable[[S], bytes]) -> Callable[[str, S | None], None]:
    """A ``StoreSlot.on_put`` (and, with None, an ``ExpiringStore.on_drop``) that notes each change in
    ``dirty`` for the next write to Flink state. Encoding waits for that write: a target put a hundred
    times between two barriers is encoded once, as it is then."""

    def note(key: str, state: S | None) -> None:
        dirty[prefix + key] = None if state is None else (encode, state)

    return note


def _same(value: bytes) -> bytes:
    return value


class FusedFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Record bytes (``RecordWithMetadataSchema``) keyed by ``FUSED_KEY`` → ``Row(subject key bytes,
    Action bytes)``; side outputs: dead letters (``dead_letter_tag``), feature records (``features_tag``, with
    ``write_features``) and anomaly alerts (``alerts_tag``, with ``alerts``: the anomaly stage runs here
    too, as its replay reference)."""

    def __init__(
        self,
        config: StagesConfig,
        *,
        topic: str,
        partitions: tuple[int, ...] = (),
        check_future: bool = True,
        write_features: bool = False,
        expiry_tick_ms: int = 60_000,
        alerts: bool = False,
        anomaly_spec: Path | None = None,
        fail_once_after: tuple[int, str] | None = None,
    ) -> None:
        self._config = config
        self._topic, self._partitions, self._check_future = topic, partitions, check_future
        self._write_features = write_features
        self._tick_ms = expiry_tick_ms
        self._alerts, self._anomaly_spec = alerts, anomaly_spec
        self._fail_once_after = fail_once_after

    # ---------------------------------------------------------------- set-up and restore

    def open(self, runtime_context: RuntimeContext) -> None:
        stages = self._stages = Stages.shared(self._config)
        _ = stages.scoring, stages.decider  # load models and policy now, not on the first event
        self._pipe = VelocityPipeline(
            stages.spec,
            out_of_orderness_ms=stages.out_of_orderness_ms,
            assembly_timeout_ms=stages.config.assembly_timeout_ms,
        )
        self._pipe.track_changes(True)
        self._state = bytes_map_state(runtime_context, "fused", Types.STRING())
        self._dirty: Dirty = {}
        dirty = self._dirty

        note_gate, note_target = _noter(dirty, "g", _same), _noter(dirty, "t", encode_target)
        gate_expiry = stages.cooldown_gate.expires_at_ms
        target_expiry = stages.reputation.expires_at_ms
        self._gates: ExpiringStore[bytes] = ExpiringStore(
            gate_expiry, self._tick_ms, lambda key: note_gate(key, None)
        )
        self._targets: ExpiringStore[TargetState] = ExpiringStore(
            target_expiry, self._tick_ms, lambda key: note_target(key, None)
        )
        self._gate_slot = StoreSlot(self._gates, on_put=note_gate)
        self._target_slot = StoreSlot(self._targets, on_put=note_target)
        self._loaded = False
        self._batches_since_barrier = 0
        self._features_tag = features_tag()
        counters = self._counters = StageCounters(runtime_context, _COUNTERS)
        self._anomaly: AnomalyReplay | None = None
        if self._alerts:  # the anomaly stage as its reference runs it: every series in this process
            spec = anomaly_spec(self._anomaly_spec)
            self._anomaly = AnomalyReplay(
                spec, out_of_orderness_ms=stages.out_of_orderness_ms, keep_emitted=False
            )
            self._anomaly.track_changes()
            self._alerts_tag = alerts_tag()
        self._intake = RecordIntake(  # at parallelism 1 this subtask reads every partition
            stages,
            counters,
            topic=self._topic,
            partitions=list(self._partitions),
            check_future=self._check_future,
            on_decoded=self._series_step if self._alerts else None,
            fail_once_after=self._fail_once_after,
        )
        self._end_timer = False
        self._errors = {s: OperatorErrors(s, stages, counters) for s in OPERATOR_STAGES}
        self._inject = bool(stages.config.inject_errors)
        self._latency = counters.histogram("event_to_decision_ms")
        report_versions(stages, counters)
        gc.freeze()  # the loaded modules, spec and models: out of the collector's way (replay.tuned_gc)
        gc.set_threshold(*GC_THRESHOLD)

    def close(self) -> None:
        self._counters.flush()

    def _load(self) -> None:
        """Take over what the state holds (after a restore; nothing on a fresh start)."""
        self._loaded = True
        pipe, restored = self._pipe, 0
        series: dict[str, bytes] = {}
        anomaly_clock: tuple[int, int] | None = None
        for key, value in self._state.items():
            tag = key[0]
            if tag == "v":
                pipe.load_state(key[1:].encode("utf-8"), value)
                restored += 1
            elif tag == "g":
                self._gates.put(key[1:], value)
            elif tag == "t":
                self._targets.put(key[1:], decode_target(value))
            elif key == "m":
                pipe.restore_clock(*_CLOCK.unpack(value))
            elif tag == "a":
                series[key[1:]] = value
            elif key == "n":
                anomaly_clock = _CLOCK.unpack(value)
        if self._anomaly is not None and anomaly_clock is not None:
            self._anomaly.restore(series, anomaly_clock)
        if restored:
            self._counters.inc("restored_keys", restored)

    # ---------------------------------------------------------------- per batch

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if not self._loaded:
            self._load()
        if self._anomaly is not None and not self._end_timer:  # fires at the end of a bounded input only
            self._end_timer = True
            ctx.timer_service().register_event_time_timer(END_OF_INPUT_WATERMARK_MS - 1)
        out: list[Any] = []
        vectors: list[FeatureVector] = []
        records, flags = split_batch(batch)
        # the failure test hook waits for a batch after the first past a barrier, so the failed attempt
        # has sent output in a transaction the failure aborts (a failure in that first batch would not)
        may_fail = self._fail_once_after is not None and self._batches_since_barrier > 0
        for data in records:
            vector = self._record(data, out, may_fail)
            if vector is not None:
                vectors.append(vector)
        if vectors:
            self._decide(vectors, out)
        if flags & FLAG_BARRIER:  # a checkpoint follows: it must hold what memory holds now
            self._write_through()
            self._batches_since_barrier = 0
        else:
            self._batches_since_barrier += 1
        yield from out

    def _write_through(self) -> None:
        """What changed since the last write (window states, gates, targets, the core's clock) to Flink
        state in one ``put_all``; expired keys are removed."""
        writes = self._take_core_changes()
        writes.update(self._take_subject_changes())
        pipe = self._pipe
        writes["m"] = _CLOCK.pack(pipe.max_seen_ms, pipe.next_housekeeping_ms)
        if self._anomaly is not None:
            changed, gone = self._anomaly.take_changes()
            for sid in gone:
                self._state.remove("a" + sid)
            writes.update({"a" + sid: data for sid, data in changed.items()})
            writes["n"] = _CLOCK.pack(*self._anomaly.clock)
        self._state.put_all(writes)
        self._counters.inc("state_writes")
        self._counters.inc("state_entries_written", len(writes))

    def _record(self, data: bytes, out: list[Any], may_fail: bool) -> FeatureVector | None:
        """Take one record in and run its event through the core: its vector, or None (its dead letter
        or nothing in ``out``)."""
        admitted = self._intake.admit(data, out, may_fail)
        if admitted is None:
            return None
        stages, eid = self._stages, admitted.event.event_id
        stage = "velocity"
        try:
            if self._inject:  # the test hook, as the replay applies it: the event updates no window
                stages.inject("velocity", eid)
            vector = self._pipe.process(admitted.event)
            if self._inject:
                stage = "assemble"
                stages.inject("assemble", eid)
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            out.append(self._errors[stage].output(eid, exc))
            return None
        self._counters.inc("vectors")
        if vector[3]:
            self._counters.inc("late_partials", bin(vector[3]).count("1"))
        return vector

    def _series_step(self, record: pb.Event | pb.DeadLetter, out: list[Any]) -> None:
        """The anomaly stage for one decoded record (before the lateness gate, as its reference)."""
        anomaly = self._anomaly
        assert anomaly is not None
        late = anomaly.result.late_points
        self._emit_alerts(anomaly.push_decoded(record), out)
        if anomaly.result.late_points != late:
            self._counters.inc("anomaly_late_points", anomaly.result.late_points - late)

    def _emit_alerts(self, emitted: list[EmittedAlert], out: list[Any]) -> None:
        for e in emitted:
            self._counters.inc("alerts")
            out.append(
                (self._alerts_tag, Row(e.alert.fingerprint.encode("utf-8"), e.alert.SerializeToString()))
            )

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        """The end of a bounded input (Flink's final watermark): every series closes, as the reference's
        end-of-input flush."""
        if not self._loaded:
            self._load()
        out: list[Any] = []
        if self._anomaly is not None:
            self._emit_alerts(self._anomaly.finish(flush=True), out)
        yield from out

    def _take_core_changes(self) -> dict[str, bytes]:
        """The core's changed window states as map entries; its expired keys leave the map here."""
        updated, removed = self._pipe.take_changes()
        for key in removed:
            self._state.remove("v" + key.decode("utf-8"))
        if removed:
            self._counters.inc("expired_keys", len(removed))
        return {"v" + key.decode("utf-8"): value for key, value in updated}

    def _decide(self, vectors: list[FeatureVector], out: list[Any]) -> None:
        """Score the batch's vectors, decide, and run each decision through the subject stage."""
        stages, counters = self._stages, self._counters
        reload_files(stages, counters, int(time.time() * 1000))
        watermark = self._intake.watermark_ms
        self._gates.advance_to(watermark)
        self._targets.advance_to(watermark)
        counters.inc("score_batches")
        counters.inc("scored_vectors", len(vectors))
        scored, failed = stages.score_each(vectors)
        for vector, exc in failed:
            out.append(self._errors["score"].output(vector[0], exc))
        now_ms = int(time.time() * 1000)
        gate_slot, target_slot = self._gate_slot, self._target_slot
        for vector, scores in scored:
            try:
                record = stages.feature_record(vector).SerializeToString() if self._write_features else b""
                keyed = stages.decide_keyed(vector, scores)
            except Exception as exc:  # one event must never stop the job: it becomes a dead letter
                out.append(self._errors["decide"].output(vector[0], exc))
                continue
            counters.inc("decided_events")
            facts = vector[4]
            if facts is not None:
                self._latency.update(max(0, now_ms - facts[1]))
            if vector[3]:
                counters.inc("events_with_late_partials")
            if self._write_features:
                out.append((self._features_tag, Row(vector[0].encode("utf-8"), record)))
            for key, payload in keyed:
                gate_slot.key = target_slot.key = key
                step = stages.subject_step(key, payload, gate_slot, target_slot)
                out.extend(step_rows(stages, key, payload, step, counters))

    def _take_subject_changes(self) -> dict[str, bytes]:
        """The subject stage's changed gates and targets as map entries; deleted ones leave the map."""
        dirty = self._dirty
        writes: dict[str, bytes] = {}
        for key, value in dirty.items():
            if value is None:
                self._state.remove(key)
            else:
                encode, state = value
                writes[key] = encode(state)
        dirty.clear()
        return writes
