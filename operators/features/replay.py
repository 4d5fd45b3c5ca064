"""Offline replay: events → fan-out → window state → assembly in one process, the engines' reference.

Processing contract (the engine bindings follow it, so replay output equals engine output):

1. Events are taken in the given order, which is their *arrival* order (not re-sorted by event time).
   Each valid event is fanned out (``FanOut``); its event-level partial and one partial per key go to
   the assembler.
2. Each key's ``KeyState.on_event`` decides lateness from the key's own high-water mark (see
   ``window.py``), so the outputs depend only on the per-key arrival order of the events.
3. The watermark is ``max event time seen - out_of_orderness_ms``. ``advance_to(watermark)`` drops keys
   whose ``expiry_ms()`` has passed; by construction this changes no output for events within
   ``allowed_lateness_ms`` of the watermark, so engines may expire later (e.g. on timers) and agree.
4. The assembler emits each event's vector once its last partial arrives; in replay all partials of an
   event are in hand while processing it (``Assembler.complete``, the same vector ``Assembler.add``
   gives on the last partial), so vectors come out in input order and nothing is imputed.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamwarden.operators.features._core import Batch
from streamwarden.operators.features.assemble import FeatureVector, VectorLayout
from streamwarden.operators.features.fanout import EntityKey, EventFacts, FanOut
from streamwarden.operators.features.spec import FeatureSpec
from streamwarden.operators.features.window import KeyState, KindPlan, PartialFeatures, compile_plans
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event, read_delimited

GC_THRESHOLD = (100_000, 20, 100)
"""Collector thresholds for a process holding many live keys (see ``tuned_gc``)."""

EXPIRY_TICK_MS = 60_000
"""Granularity of the store's expiry index: keys are checked once their expiry tick has passed."""


@contextmanager
def tuned_gc(threshold: tuple[int, int, int] = GC_THRESHOLD) -> Iterator[None]:
    """Run a long stream with fewer collector passes; restores the previous setting on exit.

    Each new key allocates a few containers, so with ~100k live keys CPython's default thresholds
    (700, 10, 10) run young collections every few hundred events and full ones that traverse every
    live state, which cost 15-35 % of the engine's time. ``gc.freeze()`` moves what exists at start-up
    (modules, spec, plans) out of the collector's way and the higher thresholds make passes rare; the
    state holds no reference cycles, so nothing is kept alive longer. Engine workers (Beam DoFn
    ``setup``, Flink ``open``) should do the same once after loading: ``gc.freeze()`` then
    ``gc.set_threshold(*GC_THRESHOLD)``.
    """
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*threshold)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


class VelocityStore:
    """Keyed ``KeyState`` objects with watermark-driven expiry over a Python dict: the per-key path as
    the engines use it (``on_event`` / ``encode_state`` / ``expiry_ms``), for tests and tools that
    want the live states. ``VelocityPipeline`` runs the same logic inside the core."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.plans: dict[int, KindPlan] = compile_plans(spec)
        self.states: dict[EntityKey, KeyState] = {}
        self._ticks: dict[int, list[EntityKey]] = {}
        self._tick_heap: list[int] = []
        self.late_events = 0
        self.expired_keys = 0
        self.max_keys = 0

    def on_event(self, key: EntityKey, facts: EventFacts) -> PartialFeatures:
        """Route ``facts`` to ``key``'s state (created on first use) and return its partial."""
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = KeyState(self.plans[key[0]])
            if len(self.states) > self.max_keys:
                self.max_keys = len(self.states)
        p = st.on_event(facts)
        if p[3]:
            self.late_events += 1
        tick = (st.high_ms + st.plan.span_ms) // EXPIRY_TICK_MS
        if st.tick != tick:
            st.tick = tick
            keys = self._ticks.get(tick)
            if keys is None:
                self._ticks[tick] = [key]
                heapq.heappush(self._tick_heap, tick)
            else:
                keys.append(key)
        return p

    def on_events(self, keys: list[EntityKey], facts: EventFacts) -> list[PartialFeatures]:
        """``[on_event(key, facts) for key in keys]`` in one call (the per-event path of the pipeline)."""
        states = self.states
        out: list[PartialFeatures] = []
        for key in keys:
            st = states.get(key)
            if st is None:
                st = states[key] = KeyState(self.plans[key[0]])
                if len(states) > self.max_keys:
                    self.max_keys = len(states)
            p = st.on_event(facts)
            out.append(p)
            if p[3]:
                self.late_events += 1
            tick = (st.high_ms + st.plan.span_ms) // EXPIRY_TICK_MS
            if st.tick != tick:
                st.tick = tick
                tick_keys = self._ticks.get(tick)
                if tick_keys is None:
                    self._ticks[tick] = [key]
                    heapq.heappush(self._tick_heap, tick)
                else:
                    tick_keys.append(key)
        return out

    def advance_to(self, watermark_ms: int) -> int:
        """Drop every key whose expiry is at or before ``watermark_ms``; return how many."""
        dropped = 0
        heap = self._tick_heap
        while heap and heap[0] * EXPIRY_TICK_MS <= watermark_ms:
            tick = heap[0]
            whole = (tick + 1) * EXPIRY_TICK_MS - 1 <= watermark_ms
            keys = self._ticks.pop(tick) if whole else self._ticks[tick]
            kept: list[EntityKey] = []
            for key in keys:
                st = self.states.get(key)
                if st is None or st.tick != tick:
                    continue
                if st.expiry_ms() <= watermark_ms:
                    del self.states[key]
                    dropped += 1
                else:
                    kept.append(key)
            if whole:
                heapq.heappop(heap)
            else:
                self._ticks[tick] = kept
                break
        self.expired_keys += dropped
        return dropped

    @property
    def next_expiry_ms(self) -> int:
        """Lowest watermark at which ``advance_to`` may drop something (a cheap pre-check)."""
        return self._tick_heap[0] * EXPIRY_TICK_MS if self._tick_heap else 1 << 62


@dataclass
class ReplayStats:
    """Counters of one replay run."""

    events: int = 0
    dead_letters: int = 0
    late_partials: int = 0
    expired_keys: int = 0
    max_keys: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)


class VelocityPipeline:
    """Fan-out, window state and assembly for one stream, in one process: the core's batch engine
    (``_core.Batch``) keeps the keyed window state, expires it by the observed watermark and assembles
    each vector; Python only extracts the facts of each event (``FanOut``)."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        out_of_orderness_ms: int | None = None,
        assembly_timeout_ms: int = 10_000,
    ) -> None:
        if assembly_timeout_ms <= 0:
            raise ValueError("assembly_timeout_ms must be positive")
        self.spec = spec
        self.fanout = FanOut(spec)
        plans = compile_plans(spec)
        self.layout = VectorLayout(spec, plans)
        self.out_of_orderness_ms = (
            spec.allowed_lateness_ms if out_of_orderness_ms is None else out_of_orderness_ms
        )
        self.core = Batch(
            [plans[k] for k in self.layout.kinds],
            [list(route) for route in self.fanout.routes],
            [v for block in self.layout.defaults for v in block],
            self.out_of_orderness_ms,
            min(EXPIRY_TICK_MS, assembly_timeout_ms),
        )
        self.width = self.core.width

    def process(self, event: pb.Event) -> FeatureVector:
        """Run one decoded event through the pipeline and return its vector."""
        facts = self.fanout(event)[0]
        values, late = self.core.process(facts)
        return FeatureVector(facts[0], values, (), late, facts)

    def process_facts(
        self, facts: list[EventFacts]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """The batch path: the vectors of many events' facts (arrival order) as one ``(len(facts),
        width)`` array, and per row the late mask (bit k: the entity of kind k saw it as late)."""
        values, late = self.core.run(facts)
        rows = np.frombuffer(values, dtype="<f8").reshape(len(facts), self.width)
        return rows, np.frombuffer(late, dtype="<u8")

    def process_events(
        self, events: list[pb.Event]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """The batch path from decoded events, fastest: the core reads each event's facts itself (as
        ``FanOut`` does) and no Python object is made per event. Same output as ``process_facts``."""
        for ev in events:
            if type(ev) is not pb.Event:
                raise TypeError(f"process_events takes decoded Event messages, got {type(ev).__name__}")
        values, late = self.core.run_events(events)
        rows = np.frombuffer(values, dtype="<f8").reshape(len(events), self.width)
        return rows, np.frombuffer(late, dtype="<u8")

    def process_batch(
        self, events: Iterable[pb.Event]
    ) -> tuple[list[EventFacts], npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """``process_facts`` over decoded events: (facts, vectors, late masks)."""
        fan = self.fanout
        facts = [fan(ev)[0] for ev in events]
        rows, late = self.process_facts(facts)
        return facts, rows, late

    # Write-through state for an engine that keeps the core in its own memory (e.g. a Flink operator
    # holding one ``Batch`` per subtask): it mirrors the core's keyed state into its own keyed store
    # (MapState) as it changes, and after a failure rebuilds the core from that store.

    def track_changes(self, on: bool = True) -> None:
        """Start (or stop) recording changed and dropped keys for ``take_changes``, so an engine can write
        the core's state through to its own keyed store. Off by default: replay pays one bool check."""
        self.core.track_changes(on)

    def take_changes(self) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """``(updated, removed)`` since the last call: ``(key, state bytes)`` to put and keys to delete in
        the engine's store (key: kind byte + entity id UTF-8; bytes: ``state_codec`` layout v2). The lists
        are disjoint, so their order of application does not matter; apply each call's in full."""
        return self.core.take_changes()

    def load_state(self, key: bytes, data: bytes) -> None:
        """Restore one key from the engine's store after a failure (``ValueError`` on bytes of another
        spec or a kind without a plan); with ``restore_clock``, in either order."""
        self.core.load(key, data)

    def restore_clock(self, max_seen_ms: int, next_housekeeping_ms: int | None = None) -> None:
        """Restore the largest event time seen (the watermark's base, which the engine checkpoints beside
        the keys), so lateness and expiry go on as before the failure. Checkpoint and pass
        ``next_housekeeping_ms`` too for a bit-exact continuation: keys are then dropped at the same
        events as in the lost run. Without it the first event past ``max_seen_ms`` runs housekeeping,
        and an expired key whose distinct counts had switched to HLL can be dropped at a different
        event than in the lost run, which changes its next values."""
        self.core.restore_clock(max_seen_ms, next_housekeeping_ms)

    @property
    def next_housekeeping_ms(self) -> int:
        """Event time from which an event runs housekeeping (checkpoint it with ``max_seen_ms``)."""
        return self.core.next_housekeeping_ms

    @property
    def max_seen_ms(self) -> int:
        """Largest event time seen (``NO_TIME`` before the first event)."""
        return self.core.max_seen_ms

    @property
    def watermark_ms(self) -> int:
        """Max event time seen minus the allowed out-of-orderness."""
        return self.core.max_seen_ms - self.out_of_orderness_ms

    @property
    def late_partials(self) -> int:
        """Key updates that were late for their key (not applied)."""
        return self.core.late_partials

    @property
    def expired_keys(self) -> int:
        return self.core.expired_keys

    @property
    def max_keys(self) -> int:
        return self.core.max_keys

    @property
    def live_keys(self) -> int:
        return self.core.live_keys


def iter_event_file(path: Path) -> Iterator[pb.Event | pb.DeadLetter]:
    """Decode a length-delimited event file (``schemas.codec.write_delimited``) record by record."""
    with path.open("rb") as stream:
        for i, raw in enumerate(read_delimited(stream)):
            from streamwarden.schemas.codec import SourceRef

            yield decode_event(raw, SourceRef(topic=str(path), partition=0, offset=i))


def replay(
    events: Iterable[pb.Event | pb.DeadLetter | bytes] | Path,
    spec: FeatureSpec,
    *,
    out_of_orderness_ms: int | None = None,
) -> tuple[list[FeatureVector], ReplayStats]:
    """Feature vectors of a recorded stream, in arrival order, plus run counters.

    ``events`` is a file path (length-delimited ``Event`` records) or an iterable of decoded events,
    dead letters or raw bytes (decoded here; undecodable ones are counted, never raised).
    """
    source: Iterable[pb.Event | pb.DeadLetter | bytes] = (
        iter_event_file(events) if isinstance(events, Path) else events
    )
    pipe = VelocityPipeline(spec, out_of_orderness_ms=out_of_orderness_ms)
    stats = ReplayStats()
    vectors: list[FeatureVector] = []
    process = pipe.process
    with tuned_gc():
        for item in source:
            ev = decode_event(item) if isinstance(item, bytes) else item
            if isinstance(ev, pb.DeadLetter):
                stats.dead_letters += 1
                kind = pb.DeadLetter.ErrorKind.Name(ev.error_kind)
                stats.dead_letter_kinds[kind] = stats.dead_letter_kinds.get(kind, 0) + 1
                continue
            vectors.append(process(ev))
            stats.events += 1
    stats.late_partials = pipe.late_partials
    stats.expired_keys = pipe.expired_keys
    stats.max_keys = pipe.max_keys
    return vectors, stats
