"""Cooldown stage, keyed by subject: at most one action per (rule, subject, aligned window), with the
gate's versioned bytes in a ``ReadModifyWriteState``. Actions of rules without a cooldown pass through
without touching state. Emits ``(subject key, Action bytes)`` for the actions sink."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from streamwarden.jobs import observability
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.schemas import streamwarden_pb2 as pb

GATE = ReadModifyWriteStateSpec("cooldown", BytesCoder())
_GATE = beam.DoFn.StateParam(GATE)


class CooldownFn(beam.DoFn):
    """``(subject key, Action bytes)`` → ``(subject key bytes, Action bytes)`` for admitted actions."""

    def __init__(self, config: StagesConfig) -> None:
        self._config = config
        self._suppressed = Metrics.counter(METRICS_NAMESPACE, "actions_suppressed")
        self._latency = Metrics.distribution(METRICS_NAMESPACE, "event_to_action_ms")
        self._by_verdict: dict[int, Any] = {}

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)

    def process(self, element: tuple[str, bytes], gate: Any = _GATE) -> Iterator[tuple[bytes, bytes]]:
        key, payload = element
        observability.observe_records("cooldown", "in")
        action = pb.Action.FromString(payload)
        stages = self._stages
        if stages.gated(action):
            ok, state = stages.cooldown(gate.read(), action)
            if not ok:
                self._suppressed.inc()
                observability.SUPPRESSED.inc()
                return
            if state is not None:
                gate.write(state)
        counter = self._by_verdict.get(action.verdict)
        if counter is None:
            name = pb.Action.Verdict.Name(action.verdict)
            counter = self._by_verdict[action.verdict] = Metrics.counter(METRICS_NAMESPACE, f"actions.{name}")
        counter.inc()
        now_ms = int(time.time() * 1000)
        self._latency.update(max(0, now_ms - action.event_time_ms))
        observability.observe_action(action, now_ms)
        observability.observe_records("cooldown", "out")
        yield key.encode(), payload
