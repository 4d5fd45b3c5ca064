"""Velocity stage, keyed by entity: the key's sliding-window state in Flink keyed state, as bytes.

Input ``jobs.flink.decode.route_value(...)`` keyed by the entity key; output ``Row(event id, group)``
keyed by the event id for the assembly, where a group (``join_partials``) is the partial bytes
(``encode_partial``) of one event that this subtask computed: the route says how many of its event's
routes come to this subtask, and the stage holds the partials until they are all in, then sends them
as one element (at parallelism 1: every partial of the event, so the assembly joins without touching
state). A route flagged ``ROUTE_CARRIES_EVENT`` adds the event-level partial; the event-level route
(``"0|<event id>"``, events without entity keys) keeps no state.

Held partials are never in a checkpoint: all routes of an event leave the decode stage while it
processes one record, so they reach this subtask before the next checkpoint barrier, and the group is
complete and sent before the snapshot. The counts hold for the parallelism and max parallelism the job
was built with (``route_subtasks``); a subtask that finds itself running at others (e.g. an adaptive
scheduler that got fewer slots) ignores the counts and sends every route's partials at once (counter
``join_disabled``): slower, still exact. As a last guard, groups waiting for more than
``join_max_wait`` later elements are sent as they are (counter ``join_flushed_incomplete``) and the
keyed assembly joins them.

State, per key, is one ``ValueState[bytes]`` (layout v1, ``<BI``: version, base length) holding a
*base* — the ``KeyState`` in its versioned layout (``operators/features/state_codec.py``) — followed by a
*log* of the facts applied since (each a u32 length and ``encode_facts`` bytes).

Why: with the pure-Python window engine, encoding a ``KeyState`` cost ~70 µs and decoding ~40 µs here,
more than the rest of the stage per event, while appending the facts (bytes the stage already holds)
costs a concatenation. The compiled core (#16) brought an update plus encode to a few µs, so the log
now saves much less; whether it still pays off has not been re-measured. The live
``KeyState`` stays in a per-instance cache (``cache_keys`` LRU), so a hot key is decoded once, and every
event costs one state write; every ``compact_every`` events the base is re-encoded and the log dropped.
A key that is not cached (a new instance after a restore, or evicted) is rebuilt as ``from_bytes(base)``
plus ``on_event`` of each logged facts in order: ``KeyState.on_event`` is deterministic, so that is the
same state. Flink keyed state is the truth after every element, as checkpoints need: PyFlink's thread
mode gives Python no pre-checkpoint hook, so nothing may be held back in memory only.

Expiry: an event-time timer at ``expiry_ms()`` rounded up to ``expiry_tick_ms`` (a busy key registers
one timer per tick, not one per event); when the watermark passes it and the state's expiry is behind
it, the key's state and cache entry are dropped, else the timer moves on. Events here passed the job's
lateness gate, so dropping expired state changes no output.

Operator errors (``jobs/flink/guard.py``): an exception while one route of an event is handled makes
the event an ``OPERATOR_ERROR`` dead letter (once per event) on ``dead_letter_tag()``, and the job goes
on. The key's update is skipped: the Flink state is written only after the update, and the key's
cached ``KeyState`` (which the update may have changed) is dropped, so its next event rebuilds the
state from Flink state as it was before. The event's partials held here are dropped and its later
routes on this subtask are skipped (not applied), so at parallelism 1 the event yields no vector; at
higher parallelism routes on other subtasks are applied and the assembly imputes the event.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row
from pyflink.datastream import KeyedProcessFunction, RuntimeContext

from streamwarden.jobs.flink.decode import ROUTE_CARRIES_EVENT, split_route_value
from streamwarden.jobs.flink.guard import OperatorErrors
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_value_state
from streamwarden.operators.features.assemble import event_partial
from streamwarden.operators.features.facts_codec import decode_facts
from streamwarden.operators.features.fanout import EventFacts
from streamwarden.operators.features.state_codec import encode_state
from streamwarden.operators.features.window import KeyState, PartialFeatures
from streamwarden.operators.pipeline import EVENT_KIND, KEY_SEP, Stages, StagesConfig

# ---------------------------------------------------------------- partials

_U32 = struct.Struct("<I")

PARTIAL_LAYOUT_VERSION = 1
_PARTIAL_HEADER = struct.Struct("<BBBHqH")


def encode_partial(p: PartialFeatures, facts: bytes = b"") -> bytes:
    """Partial layout v1: ``<BBBHqH`` (version, kind, late, value count, expect mask, event id length),
    the values as f64, the event id (UTF-8), then the event's facts bytes (event-level partial only)."""
    eid = p[0].encode("utf-8")
    values = p[2]
    return b"".join(
        (
            _PARTIAL_HEADER.pack(PARTIAL_LAYOUT_VERSION, p[1], p[3], len(values), p[4], len(eid)),
            struct.pack(f"<{len(values)}d", *values),
            eid,
            facts,
        )
    )


_new_partial = tuple.__new__


def decode_partial(data: bytes) -> PartialFeatures:
    """Inverse of ``encode_partial``; raises ``ValueError`` on another layout version."""
    version, kind, late, n, mask, n_eid = _PARTIAL_HEADER.unpack_from(data, 0)
    if version != PARTIAL_LAYOUT_VERSION:
        raise ValueError(f"partial layout v{version} is not v{PARTIAL_LAYOUT_VERSION}")
    pos = _PARTIAL_HEADER.size
    values = struct.unpack_from(f"<{n}d", data, pos)
    pos += 8 * n
    eid = data[pos : pos + n_eid].decode("utf-8")
    pos += n_eid
    facts = decode_facts(data[pos:]) if pos < len(data) else None
    return _new_partial(PartialFeatures, (eid, kind, values, bool(late), mask, facts))


def join_partials(parts: list[bytes]) -> bytes:
    """Entries back to back, each a u32 length and its bytes: a group of partials (``encode_partial``
    bytes), and the logs of the window and assembly state layouts."""
    return b"".join(_U32.pack(len(p)) + p for p in parts)


def split_partials(data: bytes, pos: int = 0) -> list[bytes]:
    """Inverse of ``join_partials``, reading from ``pos``."""
    parts: list[bytes] = []
    while pos < len(data):
        (n,) = _U32.unpack_from(data, pos)
        pos += _U32.size
        parts.append(data[pos : pos + n])
        pos += n
    return parts


# ---------------------------------------------------------------- window state bytes

WINDOW_LAYOUT_VERSION = 1
_WINDOW_HEADER = struct.Struct("<BI")


def encode_window(base: bytes, log: bytes) -> bytes:
    """Window state layout v1: ``<BI`` (version, base length), the base, then the log (``log_entry``s)."""
    return _WINDOW_HEADER.pack(WINDOW_LAYOUT_VERSION, len(base)) + base + log


def log_entry(facts: bytes) -> bytes:
    return _U32.pack(len(facts)) + facts


def decode_window(data: bytes) -> tuple[bytes, list[bytes]]:
    """Inverse of ``encode_window``: ``(base bytes, [facts bytes, ...])``."""
    version, n_base = _WINDOW_HEADER.unpack_from(data, 0)
    if version != WINDOW_LAYOUT_VERSION:
        raise ValueError(f"window state layout v{version} is not v{WINDOW_LAYOUT_VERSION}")
    pos = _WINDOW_HEADER.size
    return data[pos : pos + n_base], split_partials(data, pos + n_base)


# ---------------------------------------------------------------- the operator

_EVENT_ROUTE = f"{EVENT_KIND}{KEY_SEP}"
_FAILED_KEPT = 10_000


def parallelism_of(runtime_context: RuntimeContext) -> tuple[int, int]:
    """``(parallelism, max parallelism)`` of the running operator. PyFlink 2.3's thread-mode context
    calls ``getNumberOfParallelSubtasks`` on the Java ``RuntimeContext``, which Flink 2 moved to
    ``getTaskInfo()``; ask the task info directly there."""
    java_ctx = getattr(runtime_context, "_runtime_context", None)
    if java_ctx is not None and hasattr(java_ctx, "getTaskInfo"):
        info = java_ctx.getTaskInfo()
        return int(info.getNumberOfParallelSubtasks()), int(info.getMaxNumberOfParallelSubtasks())
    return (
        runtime_context.get_number_of_parallel_subtasks(),
        runtime_context.get_max_number_of_parallel_subtasks(),
    )


class _Entry:
    """A cached live state: the ``KeyState``, its last encoded base, the log since (entries joined),
    how many events that log holds, and the expiry timer this instance registered last (0 = none)."""

    __slots__ = ("base", "log", "logged", "state", "timer_ms")

    def __init__(self, state: KeyState, base: bytes, log: bytes, logged: int) -> None:
        self.state = state
        self.base = base
        self.log = log
        self.logged = logged
        self.timer_ms = 0


class VelocityFunction(KeyedProcessFunction):  # type: ignore[misc]
    """``route_value`` → ``Row(event id, encode_partial(...))`` via ``KeyState.on_event``."""

    def __init__(
        self,
        config: StagesConfig,
        *,
        compact_every: int = 16,
        cache_keys: int = 200_000,
        expiry_tick_ms: int = 60_000,
        join_max_wait: int = 10_000,
        route_subtasks: tuple[int, int] = (1, 1),
    ) -> None:
        if compact_every < 1 or cache_keys < 1 or expiry_tick_ms < 1 or join_max_wait < 1:
            raise ValueError("compact_every, cache_keys, expiry_tick_ms and join_max_wait must be >= 1")
        self._config = config
        self._join_max_wait = join_max_wait
        self._route_subtasks = route_subtasks
        self._compact_every = compact_every
        self._cache_keys = cache_keys
        self._tick_ms = expiry_tick_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        self._window = bytes_value_state(runtime_context, "window")
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._open: dict[str, tuple[int, list[bytes], int]] = {}
        """Per event whose routes are not all in: (routes still to come, partials, element number)."""
        self._seen = 0
        self._counters = StageCounters(
            runtime_context,
            ("late_partials", "expired_keys", "restored_keys", "join_flushed_incomplete", "join_disabled"),
        )
        actual = parallelism_of(runtime_context)
        # At parallelism 1 every route is local whatever the max parallelism.
        self._trust_counts = actual == self._route_subtasks or actual[0] == self._route_subtasks[0] == 1
        if not self._trust_counts:
            self._counters.inc("join_disabled")
        self._errors = OperatorErrors("velocity", self._stages, self._counters)
        self._failed: OrderedDict[str, None] = OrderedDict()
        """Events that failed here (the last ``_FAILED_KEPT``): their later routes are skipped."""

    def close(self) -> None:
        self._counters.flush()

    def _load(self, key: str) -> _Entry | None:
        """The key's state rebuilt from Flink state (base + log), or None if it has none."""
        raw = self._window.value()
        if raw is None:
            return None
        base, log = decode_window(raw)
        stages = self._stages
        state = stages.decode_key_state(base) if base else stages.new_key_state(key)
        for facts in log:
            state.on_event(decode_facts(facts))
        self._counters.inc("restored_keys")
        return _Entry(state, base, raw[_WINDOW_HEADER.size + len(base) :], len(log))

    def _entry(self, key: str) -> _Entry | None:
        cache = self._cache
        entry = cache.get(key)
        if entry is not None:
            cache.move_to_end(key)
            return entry
        entry = self._load(key)
        if entry is not None:
            self._remember(key, entry)
        return entry

    def _remember(self, key: str, entry: _Entry) -> None:
        cache = self._cache
        cache[key] = entry
        if len(cache) > self._cache_keys:
            cache.popitem(last=False)

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        key = ""
        eid = ""
        try:
            key, facts_bytes, local_routes, flags = split_route_value(value)
            facts = decode_facts(facts_bytes)
            eid = facts[0]
            if self._failed and eid in self._failed:
                return  # a failed event's later routes: skipped
            stages = self._stages
            if stages.config.inject_errors:
                stages.inject("velocity", eid)
            if key.startswith(_EVENT_ROUTE):
                parts = [encode_partial(event_partial(facts), facts_bytes)]
            else:
                parts = [encode_partial(self._apply(key, facts, facts_bytes, ctx))]
                if flags & ROUTE_CARRIES_EVENT:
                    parts.append(encode_partial(event_partial(facts), facts_bytes))
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            self._cache.pop(key, None)  # may hold a half-applied update; Flink state holds the last good
            self._open.pop(eid, None)
            self._failed[eid] = None
            if len(self._failed) > _FAILED_KEPT:
                self._failed.popitem(last=False)
            yield self._errors.output(eid, exc)
            return
        self._seen += 1
        if local_routes <= 1 or not self._trust_counts:
            yield Row(eid, join_partials(parts))
        else:
            open_ = self._open
            held = open_.get(eid)
            if held is None:
                open_[eid] = (local_routes - 1, parts, self._seen)
            elif held[0] <= 1:
                del open_[eid]
                yield Row(eid, join_partials(held[1] + parts))
            else:
                open_[eid] = (held[0] - 1, held[1] + parts, held[2])
        if self._open and self._seen % 1024 == 0:
            yield from self._flush_stale()

    def _flush_stale(self) -> Iterator[Row]:
        """Send groups that waited too long as they are (only a wrong route count leaves any)."""
        oldest = self._seen - self._join_max_wait
        for eid, (_, parts, since) in list(self._open.items()):
            if since <= oldest:
                del self._open[eid]
                self._counters.inc("join_flushed_incomplete")
                yield Row(eid, join_partials(parts))

    def _apply(
        self, key: str, facts: EventFacts, facts_bytes: bytes, ctx: KeyedProcessFunction.Context
    ) -> PartialFeatures:
        """One event on the key's window state: the partial; the state written to Flink."""
        entry = self._entry(key)
        if entry is None:
            entry = _Entry(self._stages.new_key_state(key), b"", b"", 0)
            self._remember(key, entry)
        state = entry.state
        partial = state.on_event(facts)
        if entry.logged + 1 >= self._compact_every:
            entry.base, entry.log, entry.logged = encode_state(state), b"", 0
        else:
            entry.log += log_entry(facts_bytes)
            entry.logged += 1
        self._window.update(encode_window(entry.base, entry.log))
        tick = self._tick(state.expiry_ms())
        if tick != entry.timer_ms:
            ctx.timer_service().register_event_time_timer(tick)
            entry.timer_ms = tick
        if partial[3]:
            self._counters.inc("late_partials")
        return partial

    def _tick(self, expiry_ms: int) -> int:
        return -(-expiry_ms // self._tick_ms) * self._tick_ms

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        key: str = ctx.get_current_key()
        entry = self._entry(key)
        if entry is None:
            return
        if entry.state.expiry_ms() <= timestamp:
            self._window.clear()
            self._cache.pop(key, None)
            self._counters.inc("expired_keys")
            return
        tick = self._tick(entry.state.expiry_ms())
        if tick != entry.timer_ms:
            ctx.timer_service().register_event_time_timer(tick)
            entry.timer_ms = tick
        yield from ()


class NaiveVelocityFunction(KeyedProcessFunction):  # type: ignore[misc]
    """The benchmark's baseline: the key's ``KeyState`` bytes read, decoded, updated, encoded and written
    for every event (``Stages.velocity``), no cache, no log, no expiry timers."""

    def __init__(self, config: StagesConfig) -> None:
        self._config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        self._window = bytes_value_state(runtime_context, "window-naive")

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        key, facts_bytes, _, flags = split_route_value(value)
        facts = decode_facts(facts_bytes)
        if key.startswith(_EVENT_ROUTE) or flags & ROUTE_CARRIES_EVENT:
            yield Row(facts[0], join_partials([encode_partial(event_partial(facts), facts_bytes)]))
        if key.startswith(_EVENT_ROUTE):
            return
        result = self._stages.velocity(self._window.value(), key, facts)
        self._window.update(result.state)
        yield Row(facts[0], join_partials([encode_partial(result.partial)]))
