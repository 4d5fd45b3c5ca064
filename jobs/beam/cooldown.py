"""Cooldown stage, keyed by subject: at most one action per (rule, subject, aligned window). Actions of
rules without a cooldown pass through without touching state. The same stage keeps the targets'
reputation (``operators/policy/reputation.py``): a touch waits in its target's state, a flagging action
unwinds the touches (``Stages.subject_step``). Emits ``(subject key, Action bytes)`` for the actions
sink: the admitted action, then the actions it or a touch unwound, each under its own subject.

Reputation states live in a second ``ExpiringStore`` beside the gates', dropped the same way; both count
in ``cooldown_live_keys``, ``cooldown_new_keys`` and ``cooldown_expired_keys``; subjects a target forgot
over an unwind rule's ``max_subjects`` count in ``reputation_forgotten_subjects``.

The gate's versioned bytes per subject live in one in-memory ``ExpiringStore`` per process, shared by
the DoFn's copies, for the reason the velocity stage's do (``jobs/beam/velocity.py``: the
DirectRunner's timers fire at bundle ends, so Beam keyed state could not expire): once the stage's
watermark passes the state's ``expires_at_ms`` (rounded up to ``expiry_tick_ms``, as on Flink) the subject is dropped; it can no
longer change a decision. Counters ``cooldown_new_keys`` and ``cooldown_expired_keys``, distribution
``cooldown_live_keys`` at each bundle's end.

The stage's watermark: the max event time of the actions it has seen minus the out-of-orderness, held
back (with ``gate_clocks``, the job's setting) to the decoders' lateness gate as it was when the
bundle started. Every action of this bundle comes from an event the gate admitted during it (the
DirectRunner runs all stages fused, and the scoring stage flushes at each bundle's end), so none is
behind that watermark by more than the allowed lateness: a subject dropped by it would have admitted
the action anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from streamwarden.jobs import observability
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.jobs.beam.shared_store import GateClocks, SharedHandle
from streamwarden.operators.expiring import EXPIRY_TICK_MS, NEVER, ExpiringStore, StoreSlot
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.operators.policy.reputation import TargetState
from streamwarden.schemas import streamwarden_pb2 as pb

KEYED = ReadModifyWriteStateSpec("keyed", BytesCoder())
"""Declared, never read or written: keeps the DoFn a keyed (stateful) one for the runner."""
_KEYED = beam.DoFn.StateParam(KEYED)


class CooldownKeys:
    """The cooldown stage's process-wide state: subjects' gate bytes, targets' reputation
    (``operators/policy/reputation.py``), the stage's clock, a lock."""

    def __init__(self, stages: Stages, tick_ms: int) -> None:
        self.store: ExpiringStore[bytes] = ExpiringStore(
            lambda state: stages.cooldown_gate.expires_at_ms(state), tick_ms
        )
        self.reputation: ExpiringStore[TargetState] = ExpiringStore(
            lambda state: stages.reputation.expires_at_ms(state), tick_ms
        )
        self.gate_slot = StoreSlot(self.store)
        self.reputation_slot = StoreSlot(self.reputation)
        self.out_of_orderness_ms = stages.out_of_orderness_ms
        self.max_seen_ms = -NEVER
        self.lock = threading.Lock()


class CooldownFn(beam.DoFn):
    """``(subject key, Action bytes)`` → ``(subject key bytes, Action bytes)`` for admitted actions."""

    def __init__(
        self,
        config: StagesConfig,
        *,
        expiry_tick_ms: int = EXPIRY_TICK_MS,
        gate_clocks: SharedHandle[GateClocks] | None = None,
    ) -> None:
        if expiry_tick_ms < 1:
            raise ValueError("expiry_tick_ms must be >= 1")
        self._config = config
        self._gate_clocks = gate_clocks
        self._tick_ms = expiry_tick_ms
        self._keys_handle: SharedHandle[CooldownKeys] = SharedHandle()
        self._live = Metrics.distribution(METRICS_NAMESPACE, "cooldown_live_keys")
        self._new = Metrics.counter(METRICS_NAMESPACE, "cooldown_new_keys")
        self._expired = Metrics.counter(METRICS_NAMESPACE, "cooldown_expired_keys")
        self._suppressed = Metrics.counter(METRICS_NAMESPACE, "actions_suppressed")
        self._forgotten = Metrics.counter(METRICS_NAMESPACE, "reputation_forgotten_subjects")
        self._latency = Metrics.distribution(METRICS_NAMESPACE, "event_to_action_ms")
        self._by_verdict: dict[int, Any] = {}

    def setup(self) -> None:
        self._stages = stages = Stages.shared(self._config)
        self._keys = self._keys_handle.acquire(lambda: CooldownKeys(stages, self._tick_ms))
        self._gate = self._gate_clocks.acquire(GateClocks) if self._gate_clocks is not None else None
        self._gate_ms = NEVER

    def start_bundle(self) -> None:
        gate_ms = self._gate.watermark_ms() if self._gate is not None else None
        self._gate_ms = NEVER if gate_ms is None else gate_ms

    def finish_bundle(self) -> None:
        self._live.update(len(self._keys.store) + len(self._keys.reputation))

    def process(self, element: tuple[str, bytes], keyed: Any = _KEYED) -> Iterator[tuple[bytes, bytes]]:
        key, payload = element
        observability.observe_records("cooldown", "in")
        stages = self._stages
        keys = self._keys
        with keys.lock:
            keys.gate_slot.key = keys.reputation_slot.key = key
            n_gates, n_targets = len(keys.store), len(keys.reputation)
            step = stages.subject_step(key, payload, keys.gate_slot, keys.reputation_slot)
            self._new.inc(max(0, len(keys.store) - n_gates) + max(0, len(keys.reputation) - n_targets))
            # the stage's clock: the newest event time among the actions and touches it has seen
            t = step.event_time_ms
            if t > keys.max_seen_ms:
                keys.max_seen_ms = t
                watermark_ms = min(keys.max_seen_ms - keys.out_of_orderness_ms, self._gate_ms)
                dropped = 0
                for store in (keys.store, keys.reputation):
                    if watermark_ms >= store.next_due_ms:
                        dropped += store.advance_to(watermark_ms)
                if dropped:
                    self._expired.inc(dropped)
        if step.forgotten:
            self._forgotten.inc(step.forgotten)
        if step.suppressed:
            self._suppressed.inc()
            observability.SUPPRESSED.inc()
            return
        now_ms = int(time.time() * 1000)
        for i, action in enumerate(step.actions):
            counter = self._by_verdict.get(action.verdict)
            if counter is None:
                name = pb.Action.Verdict.Name(action.verdict)
                counter = self._by_verdict[action.verdict] = Metrics.counter(
                    METRICS_NAMESPACE, f"actions.{name}"
                )
            counter.inc()
            self._latency.update(max(0, now_ms - action.event_time_ms))
            observability.observe_action(action, now_ms)
            observability.observe_records("cooldown", "out")
            if i == 0 and step.admitted:  # the input action itself: its bytes as they came
                yield key.encode(), payload
            else:  # an action a flag unwound: keyed by its own subject
                yield stages.cooldown_key(action).encode(), action.SerializeToString()
