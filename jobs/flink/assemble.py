"""Assembly stage, keyed by event id: the event's partials so far in a ``ValueState[bytes]``.

Input: groups of one event's partials (``jobs.flink.velocity.join_partials``) keyed by their event
id; output the ``FeatureVector`` once the event's last partial arrived (``Stages.assemble``), after
which the state is cleared. At parallelism 1 every group is a whole event: the vector comes out after
one state read that finds nothing, and nothing is written.

State layout v1 (``<Bq``: version, processing time of the first partial), then each partial received so
far as a u32 length and its bytes, in arrival order. Appending the incoming bytes is cheaper than
re-encoding the assembly state for every partial; a per-instance cache keeps the decoded
``AssemblyState`` while the event's partials arrive, and a state read without it (a new instance after
a restore) replays ``Stages.assemble`` over the logged partials from the recorded first arrival, which
rebuilds the same state. The state is written after every partial that does not complete its event:
a checkpoint may fall between two partials of one event, and the velocity stage will not send the
earlier ones again.

Never hang: the first partial of an event arms a processing-time timer at its arrival plus
``assembly_timeout_ms``; if the event is still pending then, its missing blocks are imputed
(``Stages.assembly_timeout``). A completed event's timer finds no state and does nothing.
An exception for one event makes it an ``OPERATOR_ERROR`` dead letter (``jobs/flink/guard.py``) and
clears its pending state, so its timer imputes nothing.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from streamwarden.jobs.flink.guard import OperatorErrors
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_value_state
from streamwarden.jobs.flink.velocity import decode_partial, join_partials, split_partials
from streamwarden.operators.features.assemble import FeatureVector
from streamwarden.operators.pipeline import AssemblyState, Stages, StagesConfig

PENDING_LAYOUT_VERSION = 1
_PENDING_HEADER = struct.Struct("<Bq")
_U32 = struct.Struct("<I")
_MISSING: Any = object()


def decode_pending(data: bytes) -> tuple[int, list[bytes]]:
    """``(first arrival ms, [partial bytes, ...])`` of a pending event's state bytes."""
    version, first_ms = _PENDING_HEADER.unpack_from(data, 0)
    if version != PENDING_LAYOUT_VERSION:
        raise ValueError(f"pending assembly layout v{version} is not v{PENDING_LAYOUT_VERSION}")
    return first_ms, split_partials(data, _PENDING_HEADER.size)


class AssembleFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Partial bytes → ``FeatureVector`` once every partial of the event arrived (or timed out).

    ``state_ttl_ms`` is a safety net: pending state is dropped that long after its last write even if
    its timer were lost (timers are checkpointed, so it should never be needed). None = 10 x timeout.
    """

    def __init__(
        self, config: StagesConfig, *, cache_events: int = 100_000, state_ttl_ms: int | None = None
    ) -> None:
        self._config = config
        self._cache_events = cache_events
        self._state_ttl_ms = state_ttl_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        ttl = self._state_ttl_ms if self._state_ttl_ms is not None else 10 * self._config.assembly_timeout_ms
        self._pending = bytes_value_state(runtime_context, "pending", ttl_ms=ttl)
        self._cache: dict[str, tuple[AssemblyState, bytes]] = {}
        """Per pending event: its state and its state bytes as last written."""
        self._counters = StageCounters(runtime_context, ("vectors", "imputed_vectors", "duplicate_partials"))
        self._errors = OperatorErrors("assemble", self._stages, self._counters)

    def close(self) -> None:
        self._counters.flush()

    def _read(self) -> tuple[AssemblyState, bytes] | None:
        """The current event's pending state from Flink state, rebuilt from its logged partials."""
        raw = self._pending.value()
        if raw is None:
            return None
        first_ms, partials = decode_pending(raw)
        state: AssemblyState | None = None
        for p in partials:
            _, state, _ = self._stages.assembly.add(state, decode_partial(p), first_ms)
        return (state, raw) if state is not None else None

    def process_element(self, group: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        try:
            out = list(self._add(group, ctx))
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            eid: str = ctx.get_current_key()
            self._cache.pop(eid, None)
            self._pending.clear()  # the event is dead: no timer may impute it later
            yield self._errors.output(eid, exc)
            return
        yield from out

    def _add(self, group: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[FeatureVector]:
        raws = split_partials(group)
        eid = decode_partial(raws[0])[0]
        if self._stages.config.inject_errors:
            self._stages.inject("assemble", eid)
        cache = self._cache
        cached = cache.pop(eid, _MISSING)
        if cached is _MISSING:
            cached = self._read()
        state, old = cached if cached is not None else (None, b"")
        stored = state is not None
        now_ms = int(time.time() * 1000)
        added: list[bytes] = []
        for raw in raws:
            vector, new, duplicate = self._stages.assembly.add(state, decode_partial(raw), now_ms)
            if vector is not None:
                if stored:
                    self._pending.clear()
                self._counters.inc("vectors")
                yield vector
                return
            if duplicate:
                self._counters.inc("duplicate_partials")
                continue
            state = new
            added.append(raw)
        assert state is not None
        if not added:  # only repeats
            if self._cache_events > 0 and cached is not None:
                cache[eid] = cached
            return
        if stored:
            blob = old + join_partials(added)
        else:
            blob = _PENDING_HEADER.pack(PENDING_LAYOUT_VERSION, state[3]) + join_partials(added)
            ctx.timer_service().register_processing_time_timer(self._stages.assembly_deadline_ms(state))
        self._pending.update(blob)
        if self._cache_events <= 0:  # the benchmark's naive baseline: read the state every time
            return
        if len(cache) >= self._cache_events:
            cache.pop(next(iter(cache)))
        cache[eid] = (state, blob)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[FeatureVector]:
        eid: str = ctx.get_current_key()
        cached = self._cache.pop(eid, _MISSING)
        if cached is _MISSING:
            cached = self._read()
        if cached is None:
            return
        state = cached[0]
        vector = self._stages.assembly_timeout(eid, state, max(timestamp, int(time.time() * 1000)))
        if vector is None:  # not due yet (clock skew): look again at the deadline
            self._cache[eid] = cached
            ctx.timer_service().register_processing_time_timer(self._stages.assembly_deadline_ms(state))
            return
        self._pending.clear()
        self._counters.inc("vectors")
        self._counters.inc("imputed_vectors")
        yield vector
