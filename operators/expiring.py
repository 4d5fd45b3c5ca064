"""Keyed state in a dict, dropped once the watermark passes each key's expiry (engine-free).

For an engine that keeps keyed state in its own memory instead of the runner's (the Beam DirectRunner
job: its event-time timers fire at the end of every bundle, not at the watermark, so they cannot
expire keys). Each key is indexed under its *expiry tick*: its expiry rounded up to ``tick_ms``, as
the Flink stages round their expiry timers (``expiry_tick_ms``). ``advance_to(watermark)`` visits only
the keys of the ticks the watermark has passed: a key whose expiry moved on since it was indexed is
indexed again under its new tick, any other is dropped. ``put`` after a change re-indexes the key only
when its tick changes, so a busy key costs one index entry per tick, not one per update.

Dropping is exact when the caller's expiry is (``KeyState.expiry_ms``, ``CooldownGate.expires_at_ms``):
a state at or past its expiry can no longer change any output for an event the lateness gate admits.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Generic, TypeVar

from streamwarden.operators.features.window import KeyState

V = TypeVar("V")

EXPIRY_TICK_MS = 60_000
"""Default granularity of the expiry index (the Flink stages' default ``expiry_tick_ms``)."""

NEVER = 1 << 62


class ExpiringStore(Generic[V]):
    """``key → value`` with watermark-driven expiry; ``expiry_of(value)`` is the watermark at or after
    which the value can be dropped (``None``: at once). Not thread-safe."""

    def __init__(
        self,
        expiry_of: Callable[[V], int | None],
        tick_ms: int = EXPIRY_TICK_MS,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        """``on_drop(key)`` is called for each key ``advance_to`` drops (e.g. to delete a copy of the
        value an engine keeps in its own state)."""
        if tick_ms < 1:
            raise ValueError("tick_ms must be >= 1")
        self.values: dict[str, V] = {}
        self._on_drop = on_drop
        self.tick_ms = tick_ms
        self.expired_keys = 0
        self.max_keys = 0
        self._expiry_of = expiry_of
        self._ticks: dict[int, list[str]] = {}
        self._heap: list[int] = []
        self._key_tick: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.values)

    def get(self, key: str) -> V | None:
        return self.values.get(key)

    def put(self, key: str, value: V) -> None:
        """Store ``value`` (new, or changed in place) under ``key`` and index it by its expiry."""
        values = self.values
        old = values.get(key)
        tick = self._tick_of(value)
        if old is not value:  # a new key, or a new object under it: index it whatever it holds
            values[key] = value
            if old is None and len(values) > self.max_keys:
                self.max_keys = len(values)
            self._index(key, value, tick)
        elif self._indexed(key, value) != tick:
            self._index(key, value, tick)

    def pop(self, key: str) -> V | None:
        self._forget(key)
        return self.values.pop(key, None)

    @property
    def next_due_ms(self) -> int:
        """The lowest watermark at which ``advance_to`` may drop something (a cheap pre-check)."""
        return self._heap[0] * self.tick_ms if self._heap else NEVER

    def advance_to(self, watermark_ms: int) -> int:
        """Drop every key whose expiry is at or before ``watermark_ms``; return how many."""
        heap, ticks, values, tick_ms = self._heap, self._ticks, self.values, self.tick_ms
        dropped = 0
        while heap and heap[0] * tick_ms <= watermark_ms:
            tick = heapq.heappop(heap)
            for key in ticks.pop(tick, ()):
                value = values.get(key)
                if value is None or self._indexed(key, value) != tick:
                    continue  # dropped already, or indexed again under a later tick
                expiry = self._expiry_of(value)
                if expiry is None or expiry <= watermark_ms:
                    del values[key]
                    self._forget(key)
                    dropped += 1
                    if self._on_drop is not None:
                        self._on_drop(key)
                else:
                    self._index(key, value, self._tick_of(value))
        self.expired_keys += dropped
        return dropped

    def _tick_of(self, value: V) -> int:
        expiry = self._expiry_of(value)
        if expiry is None:
            return -NEVER
        return -(-expiry // self.tick_ms)

    def _index(self, key: str, value: V, tick: int) -> None:
        self._set_indexed(key, value, tick)
        keys = self._ticks.get(tick)
        if keys is None:
            self._ticks[tick] = [key]
            heapq.heappush(self._heap, tick)
        else:
            keys.append(key)

    # where a key's current tick is kept: a side dict here; KeyStateStore keeps it in the state itself

    def _indexed(self, key: str, value: V) -> int | None:
        return self._key_tick.get(key)

    def _set_indexed(self, key: str, value: V, tick: int) -> None:
        self._key_tick[key] = tick

    def _forget(self, key: str) -> None:
        self._key_tick.pop(key, None)


class KeyStateStore(ExpiringStore[KeyState]):
    """Window states by entity key (``KeyState.expiry_ms``); the indexed tick lives in ``KeyState.tick``
    (no side dict: about 100 B less per live key)."""

    def __init__(self, tick_ms: int = EXPIRY_TICK_MS) -> None:
        super().__init__(KeyState.expiry_ms, tick_ms)

    def _indexed(self, key: str, value: KeyState) -> int | None:
        return value.tick

    def _set_indexed(self, key: str, value: KeyState, tick: int) -> None:
        value.tick = tick

    def _forget(self, key: str) -> None:
        pass


class StoreSlot(Generic[V]):
    """One key of an ``ExpiringStore`` as a ``pipeline.StateSlot`` (the subject stage's state on an
    engine that keeps keyed state in process memory); ``put(None)`` drops the key. ``on_put(key,
    state)``, if given, hears every put (the Flink fused layout notes what to write to Flink state)."""

    __slots__ = ("key", "on_put", "store")

    def __init__(
        self,
        store: ExpiringStore[V],
        key: str = "",
        on_put: Callable[[str, V | None], None] | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.on_put = on_put

    def get(self) -> V | None:
        return self.store.get(self.key)

    def put(self, state: V | None) -> None:
        if state is None:
            self.store.pop(self.key)
        else:
            self.store.put(self.key, state)
        if self.on_put is not None:
            self.on_put(self.key, state)
