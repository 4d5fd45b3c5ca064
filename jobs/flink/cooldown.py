"""Cooldown stage, keyed by subject: at most one action per (rule, subject, aligned window), with the
gate's versioned bytes in a ``ValueState[bytes]``. Actions of rules without a cooldown pass through
without touching state. Emits ``Row(subject key bytes, Action bytes)`` for the actions sink.

Expiry: an event-time timer at the state's ``expires_at_ms`` (rounded up to ``expiry_tick_ms``); when
the watermark passes it the state can no longer change a decision and is cleared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from pyflink.common import Row
from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_value_state
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.schemas import streamwarden_pb2 as pb


class CooldownFunction(KeyedProcessFunction):  # type: ignore[misc]
    """``Action bytes`` keyed by subject → ``Row(subject key bytes, Action bytes)`` for admitted ones."""

    def __init__(self, config: StagesConfig, *, expiry_tick_ms: int = 60_000) -> None:
        self._config = config
        self._tick_ms = expiry_tick_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        self._gate_state = bytes_value_state(runtime_context, "cooldown")
        self._counters = StageCounters(runtime_context, ("actions", "actions_suppressed"))

    def close(self) -> None:
        self._counters.flush()

    def process_element(self, payload: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        action = pb.Action.FromString(payload)
        stages = self._stages
        # a policy swap changes the rules' cooldowns; in process mode this operator's Stages is its own
        stages.maybe_reload(int(time.time() * 1000))
        if stages.gated(action):
            ok, state = stages.cooldown(self._gate_state.value(), action)
            if not ok:
                self._counters.inc("actions_suppressed")
                return
            if state is not None:
                self._gate_state.update(state)
                expires = stages.cooldown_gate.expires_at_ms(state)
                if expires is not None:
                    ctx.timer_service().register_event_time_timer(
                        -(-expires // self._tick_ms) * self._tick_ms
                    )
        self._counters.inc("actions")
        self._counters.inc_labelled(
            "actions_by_rule",
            rule=action.reasons[0] if action.reasons else "",
            verdict=pb.Action.Verdict.Name(action.verdict),
            mode=pb.Action.Mode.Name(action.mode),
        )
        yield Row(ctx.get_current_key().encode("utf-8"), payload)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        state = self._gate_state.value()
        if state is None:
            return
        expires = self._stages.cooldown_gate.expires_at_ms(state)
        if expires is None or expires <= timestamp:
            self._gate_state.clear()
        yield from ()
