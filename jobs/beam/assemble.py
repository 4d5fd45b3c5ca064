"""Assembly stage: a join within the bundle, then the join keyed by event id for what is left.

``BundleJoin`` (no state; run inside ``VelocityFn``, or as ``JoinInBundleFn``) is the assembly's
combiner lifting: it joins the partials of each event that arrive within one bundle in a dict and
passes the complete vector on at once; at the end of the
bundle it passes every still-incomplete event on as one element with its partials. On the DirectRunner
every partial of an event arrives while the record that carries it is processed (all stages are fused
into one), so nearly every event is complete there and the keyed stage touches no state for it; on
runners where an event's partials come from different workers or bundles the keyed stage joins them.

``AssembleFn`` (keyed by event id) passes complete vectors through; otherwise it keeps the event's
partials so far in a ``ReadModifyWriteState``: the vector is emitted when the last partial arrives
(``KeyedAssembly.add``), and the state cleared.
Never hang: the first partial of an event arms an event-time timer at the event's time plus
``assembly_timeout_ms``; if it fires while the event is still pending, the missing blocks are imputed
(``KeyedAssembly.timeout``) and the vector emitted. An exception for one event makes it an
``OPERATOR_ERROR`` dead letter (``jobs/beam/guard.py``) and clears its pending state (no vector). On the DirectRunner every partial of an event
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
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from streamwarden.jobs.beam.coders import StateBytesCoder
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.jobs.beam.guard import OperatorErrors
from streamwarden.operators.features.assemble import FeatureVector
from streamwarden.operators.features.window import PartialFeatures
from streamwarden.operators.pipeline import (
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


AssemblyInput = FeatureVector | PartialFeatures | tuple[PartialFeatures, ...]
"""What ``AssembleFn`` takes under an event id: a vector joined upstream, one partial, or several."""


class BundleJoin:
    """The join of one bundle's partials by event id (no state): ``add`` returns ``(event id, vector)``
    once an event's partials are all in; ``leftovers`` yields the incomplete events at the bundle's end
    as ``(event id, (partial, ...))`` windowed values for the keyed ``AssembleFn``."""

    def __init__(self, stages: Stages) -> None:
        self._assembly = stages.assembly
        self._joined = Metrics.counter(METRICS_NAMESPACE, "joined_in_bundle")
        self._passed_on = Metrics.counter(METRICS_NAMESPACE, "partials_passed_on")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_partials")
        self._open: dict[str, tuple[AssemblyState, list[PartialFeatures], Timestamp, BoundedWindow]] = {}

    def add(
        self, partial: PartialFeatures, ts: Timestamp, window: BoundedWindow
    ) -> tuple[str, FeatureVector] | None:
        eid = partial[0]
        entry = self._open.get(eid)
        vector, new, duplicate = self._assembly.add(entry[0] if entry else None, partial, 0)
        if vector is not None:
            if entry is not None:
                del self._open[eid]
            self._joined.inc()
            return eid, vector
        if duplicate:
            self._duplicates.inc()
        elif entry is None:
            assert new is not None
            self._open[eid] = (new, [partial], ts, window)
        else:
            assert new is not None
            entry[1].append(partial)
            self._open[eid] = (new, entry[1], entry[2], entry[3])
        return None

    def discard(self, event_id: str) -> None:
        """Forget an event's partials joined so far (the event failed)."""
        self._open.pop(event_id, None)

    def clear(self) -> None:
        """Forget what a bundle left (a new bundle, also after a failed one)."""
        self._open = {}

    def leftovers(self) -> Iterator[WindowedValue]:
        for eid, (_, partials, ts, window) in self._open.items():
            self._passed_on.inc(len(partials))
            yield WindowedValue((eid, tuple(partials)), ts, (window,))
        self._open = {}


class JoinInBundleFn(beam.DoFn):
    """``(event id, PartialFeatures)`` → ``(event id, FeatureVector)`` as soon as the event's partials
    are all in (within this bundle), else at the bundle's end ``(event id, (partial, ...))``. The job
    does this inside ``VelocityFn``; this DoFn is the same join for partials from elsewhere."""

    def __init__(self, config: StagesConfig) -> None:
        self._config = config

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        self._join = BundleJoin(self._stages)

    def start_bundle(self) -> None:
        self._join.clear()

    def process(
        self,
        element: tuple[str, PartialFeatures],
        ts: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterator[tuple[str, AssemblyInput]]:
        joined = self._join.add(element[1], ts, window)
        if joined is not None:
            yield joined

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._join.leftovers()


class AssembleFn(beam.DoFn):
    """``(event id, AssemblyInput)`` → ``FeatureVector`` once every partial of the event arrived."""

    def __init__(self, config: StagesConfig, *, arm_timers: bool = True) -> None:
        self._config = config
        self._arm_timers = arm_timers
        self._vectors = Metrics.counter(METRICS_NAMESPACE, "vectors")
        self._imputed = Metrics.counter(METRICS_NAMESPACE, "imputed_vectors")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_partials")
        self._errors = OperatorErrors("assemble")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        self._timeout_ms = self._config.assembly_timeout_ms

    def process(
        self,
        element: tuple[str, AssemblyInput],
        ts: Any = beam.DoFn.TimestampParam,
        pending: Any = _PENDING,
        timeout: Any = _TIMEOUT,
    ) -> Iterator[Any]:
        try:
            out = list(self._add(element, ts, pending, timeout))
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            pending.clear()  # the event is dead: no timer may impute it later
            yield self._errors.output(self._stages, element[0], exc)
            return
        yield from out

    def _add(
        self, element: tuple[str, AssemblyInput], ts: Any, pending: Any, timeout: Any
    ) -> Iterator[FeatureVector]:
        eid, value = element
        stages = self._stages
        stages.inject("assemble", eid)
        if isinstance(value, FeatureVector):  # joined within a bundle: no state to touch
            self._vectors.inc()
            yield value
            return
        partials = (value,) if isinstance(value, PartialFeatures) else value
        state: AssemblyState | None = pending.read()
        first = state is None
        now_ms = int(time.time() * 1000)
        for partial in partials:
            vector, new, duplicate = self._stages.assembly.add(state, partial, now_ms)
            if vector is not None:
                if not first:
                    pending.clear()
                self._vectors.inc()
                yield vector
                return
            if duplicate:
                self._duplicates.inc()
                continue
            state = new
        if state is None:
            return
        pending.write(state)
        if first and self._arm_timers:
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
