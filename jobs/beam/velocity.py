"""Velocity stage, keyed by entity: the keys' sliding-window states in one in-memory store per process,
expired by the watermark as the Flink stage expires them.

Where the state lives: a ``KeyStateStore`` (``operators/expiring.py``: ``KeyState`` objects by key,
indexed by expiry tick), shared by every copy of this DoFn in the process (``SharedHandle``), not in
Beam keyed state. On the DirectRunner Beam keyed state is in memory too (lost on restart either way),
but it cannot expire: the runner fires event-time timers at the end of every bundle, not at the
watermark (5,500 of 6,000 timers fired early, measured), so a timer cannot tell that a key is done,
and a key never seen again kept its state until the job stopped. The DoFn still declares one (unused)
keyed state, so runners keep treating it as keyed: each key's elements in order, on one worker. The
store is locked per element (runners that call the DoFn from several threads; uncontended on the
job's one-worker DirectRunner).

Expiry: the stage's watermark is the max event time of its input minus the out-of-orderness
(``EventClock.observe``), held back to the decoders' lateness gate (``gate_clocks``, the job's
setting: the minimum over partitions, so a backlog read one partition after another does not expire
the keys of the partition behind). Once it passes a key's ``expiry_ms()`` (rounded up to
``expiry_tick_ms``, as on Flink) the key is dropped, whether or not it is seen again; a state found
past its expiry when its key is seen again is dropped then. Events here passed the lateness gate, so
neither changes any output. Metrics: counters ``new_keys`` and ``expired_keys`` (live keys: their
difference), distributions ``live_keys`` and ``max_live_keys`` (the peak so far) at each bundle's
end (not gauges: the DirectRunner reports a gauge's first bundle's value).

Operator errors (``jobs/beam/guard.py``): an exception while one route of an event is handled makes
the event an ``OPERATOR_ERROR`` dead letter (one per event) and the job goes on. The key's state is
not replaced (``store.put`` comes after the update; ``KeyState.on_event`` checks the facts before it
changes anything, so an exception from it leaves the state as it was); the event's partials joined so
far in the bundle are dropped and its later routes in the bundle are skipped (their keys are not
updated), so the event yields no vector. On the DirectRunner all routes of an event are in one bundle;
a route of a failed event in a later bundle would be applied and its event imputed by the assembly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import WindowedValue

from streamwarden.jobs.beam.assemble import AssemblyInput, BundleJoin
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE, WithEventPartial
from streamwarden.jobs.beam.guard import OperatorErrors
from streamwarden.jobs.beam.shared_store import GateClocks, SharedHandle
from streamwarden.operators.expiring import EXPIRY_TICK_MS, KeyStateStore
from streamwarden.operators.features.assemble import event_partial
from streamwarden.operators.features.fanout import EventFacts
from streamwarden.operators.features.window import PartialFeatures
from streamwarden.operators.pipeline import EVENT_KIND, KEY_SEP, EventClock, Stages, StagesConfig

_EVENT_ROUTE = f"{EVENT_KIND}{KEY_SEP}"

KEYED = ReadModifyWriteStateSpec("keyed", BytesCoder())
"""Declared, never read or written: keeps the DoFn a keyed (stateful) one for the runner."""
_KEYED = beam.DoFn.StateParam(KEYED)


class VelocityKeys:
    """The velocity stage's process-wide state: the key store, the stage's event clock, a lock."""

    def __init__(self, stages: Stages, tick_ms: int) -> None:
        self.store = KeyStateStore(tick_ms)
        self.clock: EventClock = stages.event_clock()
        self.lock = threading.Lock()
        self.instances = 0
        """Copies of the DoFn set up on this store (1 on the job's one-worker DirectRunner)."""


class VelocityFn(beam.DoFn):
    """``(entity key, facts | WithEventPartial)`` → partials via ``Stages.velocity_object`` on the key's
    state (plus the event-level partial for a ``WithEventPartial``); the event-level route
    (``"0|<event id>"``) keeps no state.

    With ``join_in_bundle`` (the job's setting) the partials go through a ``BundleJoin``, as the Flink
    velocity stage groups them: out come ``(event id, FeatureVector)`` for events complete within the
    bundle and, at its end, ``(event id, (partial, ...))`` for the rest, both for ``AssembleFn``.
    Without it, ``(event id, PartialFeatures)`` per partial. ``expiry_tick_ms``, ``gate_clocks``: see the
    module."""

    def __init__(
        self,
        config: StagesConfig,
        *,
        join_in_bundle: bool = False,
        expiry_tick_ms: int = EXPIRY_TICK_MS,
        gate_clocks: SharedHandle[GateClocks] | None = None,
    ) -> None:
        if expiry_tick_ms < 1:
            raise ValueError("expiry_tick_ms must be >= 1")
        self._config = config
        self._gate_clocks = gate_clocks
        self._join_in_bundle = join_in_bundle
        self._tick_ms = expiry_tick_ms
        self._keys_handle: SharedHandle[VelocityKeys] = SharedHandle()
        self._late = Metrics.counter(METRICS_NAMESPACE, "late_partials")
        self._expired = Metrics.counter(METRICS_NAMESPACE, "expired_keys")
        self._new = Metrics.counter(METRICS_NAMESPACE, "new_keys")
        self._live = Metrics.distribution(METRICS_NAMESPACE, "live_keys")
        self._max_live = Metrics.distribution(METRICS_NAMESPACE, "max_live_keys")
        self._instances = Metrics.distribution(METRICS_NAMESPACE, "velocity_instances")
        self._errors = OperatorErrors("velocity")

    def setup(self) -> None:
        self._stages = stages = Stages.shared(self._config)
        self._keys = self._keys_handle.acquire(lambda: VelocityKeys(stages, self._tick_ms))
        with self._keys.lock:
            self._keys.instances += 1
        self._gate = self._gate_clocks.acquire(GateClocks) if self._gate_clocks is not None else None
        self._join = BundleJoin(self._stages) if self._join_in_bundle else None
        self._failed: set[str] = set()

    def start_bundle(self) -> None:
        self._failed = set()
        if self._join is not None:
            self._join.clear()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        self._live.update(len(self._keys.store))
        self._max_live.update(self._keys.store.max_keys)
        self._instances.update(self._keys.instances)
        if self._join is not None:
            yield from self._join.leftovers()

    def process(
        self,
        element: tuple[str, EventFacts | WithEventPartial],
        ts: Any = beam.DoFn.TimestampParam,
        win: Any = beam.DoFn.WindowParam,
        keyed: Any = _KEYED,
    ) -> Iterator[Any]:
        key, value = element
        failed = self._failed
        if failed and (value.facts if type(value) is WithEventPartial else value)[0] in failed:
            return  # a failed event's later routes: skipped
        join = self._join
        out: list[tuple[str, AssemblyInput]] = []
        try:
            for partial in self._partials(key, value):
                if join is None:
                    out.append((partial[0], partial))
                else:
                    joined = join.add(partial, ts, win)
                    if joined is not None:
                        out.append(joined)
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            eid = str((value.facts if type(value) is WithEventPartial else value)[0])
            failed.add(eid)
            if join is not None:
                join.discard(eid)
            yield self._errors.output(self._stages, eid, exc)
            return
        yield from out

    def _partials(self, key: str, value: EventFacts | WithEventPartial) -> list[PartialFeatures]:
        out: list[PartialFeatures] = []
        facts: EventFacts
        if type(value) is WithEventPartial:
            facts = value.facts
            out.append(event_partial(facts))
        else:
            facts = value  # type: ignore[assignment]  # type() is, not isinstance: mypy cannot narrow it
        if key.startswith(_EVENT_ROUTE):
            partial, _, _ = self._stages.velocity_object(None, key, facts)
            out.append(partial)
            return out
        keys = self._keys
        store = keys.store
        with keys.lock:
            watermark_ms = keys.clock.observe(facts[1])
            if self._gate is not None:
                gate_ms = self._gate.watermark_ms()
                if gate_ms is not None and gate_ms < watermark_ms:
                    watermark_ms = gate_ms
            if watermark_ms >= store.next_due_ms:
                dropped = store.advance_to(watermark_ms)
                if dropped:
                    self._expired.inc(dropped)
            existing = store.get(key)
            partial, state, expired = self._stages.velocity_object(existing, key, facts, watermark_ms)
            assert state is not None  # an entity route always has a state
            store.put(key, state)
        if expired:
            self._expired.inc()
        if existing is None or expired:
            self._new.inc()
        if partial[3]:
            self._late.inc()
        out.append(partial)
        return out
