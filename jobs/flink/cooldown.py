"""Cooldown stage, keyed by subject: at most one action per (rule, subject, aligned window), with the
gate's versioned bytes in a ``ValueState[bytes]``; and the targets' reputation
(``operators/policy/reputation.py``: touches wait in their target's state, a flagging action unwinds
them) in a second ``ValueState[bytes]`` (``reputation.encode_state``), read only for a touch or a
flagging action. Actions of rules without a cooldown pass through without touching state. Emits
``Row(subject key bytes, Action bytes)`` for the actions sink.

Expiry: an event-time timer at each state's expiry (rounded up to ``expiry_tick_ms``); when the
watermark passes it the state can no longer change a decision and is cleared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from pyflink.common import Row
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueState

from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_value_state
from streamwarden.operators.pipeline import Stages, StagesConfig, SubjectStep
from streamwarden.operators.policy.reputation import TargetState, decode_state, encode_state
from streamwarden.schemas import streamwarden_pb2 as pb


def step_rows(
    stages: Stages, key: str, payload: bytes, step: SubjectStep, counters: StageCounters
) -> list[Row]:
    """The rows one subject step emits, counted: the admitted input action as its bytes came (keyed by
    ``key``), then each action a flag or a touch unwound, keyed by its own subject."""
    if step.forgotten:
        counters.inc("reputation_forgotten_subjects", step.forgotten)
    if step.suppressed:
        counters.inc("actions_suppressed")
        return []
    rows: list[Row] = []
    for i, action in enumerate(step.actions):
        counters.inc("actions")
        counters.inc_labelled(
            "actions_by_rule",
            rule=action.reasons[0] if action.reasons else "",
            verdict=pb.Action.Verdict.Name(action.verdict),
            mode=pb.Action.Mode.Name(action.mode),
        )
        if i == 0 and step.admitted:
            rows.append(Row(key.encode("utf-8"), payload))
        else:
            rows.append(Row(stages.cooldown_key(action).encode("utf-8"), action.SerializeToString()))
    return rows


class _Slot:
    """A ``ValueState[bytes]`` as the subject stage's ``StateSlot``; ``on_put`` sees each new value
    (to register its expiry timer)."""

    def __init__(self, state: ValueState, on_put: Callable[[bytes], None]) -> None:
        self.state = state
        self.on_put = on_put

    def get(self) -> bytes | None:
        value: bytes | None = self.state.value()
        return value

    def put(self, value: bytes | None) -> None:
        if value is None:
            self.state.clear()
        else:
            self.state.update(value)
            self.on_put(value)


class _ReputationSlot:
    """The reputation ``ValueState[bytes]`` as a ``StateSlot[TargetState]``; ``on_put`` sees each new
    state before it is encoded (its expiry needs no second decode)."""

    def __init__(self, state: ValueState, on_put: Callable[[TargetState], None]) -> None:
        self.state = state
        self.on_put = on_put

    def get(self) -> TargetState | None:
        data: bytes | None = self.state.value()
        return None if data is None else decode_state(data)

    def put(self, value: TargetState | None) -> None:
        if value is None:
            self.state.clear()
        else:
            self.state.update(encode_state(value))
            self.on_put(value)


class CooldownFunction(KeyedProcessFunction):  # type: ignore[misc]
    """``Action bytes`` or a touch keyed by subject → ``Row(subject key bytes, Action bytes)`` for the
    admitted actions and the actions they (or a touch) unwound."""

    def __init__(self, config: StagesConfig, *, expiry_tick_ms: int = 60_000) -> None:
        self._config = config
        self._tick_ms = expiry_tick_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        self._gate_state = bytes_value_state(runtime_context, "cooldown")
        self._reputation_state = bytes_value_state(runtime_context, "reputation")
        self._counters = StageCounters(
            runtime_context, ("actions", "actions_suppressed", "reputation_forgotten_subjects")
        )
        self._ctx: KeyedProcessFunction.Context | None = None
        self._gate_slot = _Slot(self._gate_state, self._gate_timer)
        self._reputation_slot = _ReputationSlot(self._reputation_state, self._reputation_timer)

    def _timer_at(self, expires: int | None) -> None:
        if expires is not None and self._ctx is not None:
            self._ctx.timer_service().register_event_time_timer(-(-expires // self._tick_ms) * self._tick_ms)

    def _gate_timer(self, state: bytes) -> None:
        self._timer_at(self._stages.cooldown_gate.expires_at_ms(state))

    def _reputation_timer(self, state: TargetState) -> None:
        self._timer_at(self._stages.reputation.expires_at_ms(state))

    def close(self) -> None:
        self._counters.flush()

    def process_element(self, payload: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        key: str = ctx.get_current_key()
        stages = self._stages
        # a policy swap changes the rules' cooldowns; in process mode this operator's Stages is its own
        stages.maybe_reload(int(time.time() * 1000))
        self._ctx = ctx
        step = stages.subject_step(key, payload, self._gate_slot, self._reputation_slot)
        self._ctx = None
        yield from step_rows(stages, key, payload, step, self._counters)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        gate = self._gate_state.value()
        if gate is not None:
            expires = self._stages.cooldown_gate.expires_at_ms(gate)
            if expires is None or expires <= timestamp:
                self._gate_state.clear()
        reputation = self._reputation_state.value()
        if reputation is not None:
            expires = self._stages.reputation.expires_at_ms(decode_state(reputation))
            if expires is None or expires <= timestamp:
                self._reputation_state.clear()
        yield from ()
