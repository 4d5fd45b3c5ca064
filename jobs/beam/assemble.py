"""Assembly stage, keyed by event id: the event's partials so far in a ``ReadModifyWriteState``.

The vector is emitted when the last partial arrives (``Stages.assemble``), and the state cleared.
Never hang: the first partial of an event arms an event-time timer at the event's time plus
``assembly_timeout_ms``; if it fires while the event is still pending, the missing blocks are imputed
(``KeyedAssembly.timeout``) and the vector emitted. On the DirectRunner every partial of an event
arrives while the record that carries it is processed (all stages are fused into one), so the timer —
which that runner fires at the end of each bundle — finds nothing pending; on runners with real
watermarks it fires once the watermark passes the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from jobs.beam.coders import StateBytesCoder
from jobs.beam.decode import METRICS_NAMESPACE
from operators.features.assemble import FeatureVector
from operators.features.window import PartialFeatures
from operators.pipeline import (
    AssemblyState,
    Stages,
    StagesConfig,
    decode_assembly_state,
    encode_assembly_state,
)


class AssemblyStateCoder(StateBytesCoder):
    """A pending event's ``AssemblyState`` ↔ its versioned bytes (``encode_assembly_state``)."""

    def encode(self, value: AssemblyState) -> bytes:
        return encode_assembly_state(value)

    def decode(self, encoded: bytes) -> AssemblyState:
        return decode_assembly_state(encoded)


PENDING = ReadModifyWriteStateSpec("pending", AssemblyStateCoder())
TIMEOUT = TimerSpec("timeout", TimeDomain.WATERMARK)
_PENDING = beam.DoFn.StateParam(PENDING)
_TIMEOUT = beam.DoFn.TimerParam(TIMEOUT)


class AssembleFn(beam.DoFn):  # type: ignore[misc]
    """``(event id, PartialFeatures)`` → ``FeatureVector`` once every partial of the event arrived."""

    def __init__(self, config: StagesConfig, *, arm_timers: bool = True) -> None:
        self._config = config
        self._arm_timers = arm_timers
        self._vectors = Metrics.counter(METRICS_NAMESPACE, "vectors")
        self._imputed = Metrics.counter(METRICS_NAMESPACE, "imputed_vectors")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_partials")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        self._timeout_ms = self._config.assembly_timeout_ms

    def process(
        self,
        element: tuple[str, PartialFeatures],
        ts: Any = beam.DoFn.TimestampParam,
        pending: Any = _PENDING,
        timeout: Any = _TIMEOUT,
    ) -> Iterator[FeatureVector]:
        _, partial = element
        state: AssemblyState | None = pending.read()
        now_ms = int(time.time() * 1000)
        vector, new, duplicate = self._stages.assembly.add(state, partial, now_ms)
        if vector is not None:
            if state is not None:
                pending.clear()
            self._vectors.inc()
            yield vector
            return
        if duplicate:
            self._duplicates.inc()
            return
        pending.write(new)
        if state is None and self._arm_timers:
            timeout.set(Timestamp(micros=(ts.micros // 1000 + self._timeout_ms) * 1000))

    @on_timer(TIMEOUT)
    def on_timeout(self, key: Any = beam.DoFn.KeyParam, pending: Any = _PENDING) -> Iterator[FeatureVector]:
        state: AssemblyState | None = pending.read()
        if state is None:
            return
        vector = self._stages.assembly.timeout(key, state)
        pending.clear()
        self._vectors.inc()
        self._imputed.inc()
        yield vector
