"""The streamwarden pipeline composed from the engine-free operators, stage by stage.

Both engine bindings (``jobs/beam/``, ``jobs/flink/``) build one ``Stages`` from a ``StagesConfig``
(feature spec, model cards, policy and the time settings) and call one small method per stage::

    decode(raw, source, now_ms)          -> pb.Event | pb.DeadLetter          (not keyed)
    event_clock().admit(event_time_ms)   -> bool: False = late (side output) (not keyed, observed time)
    fan_out(event)                       -> FanOutResult(facts, keys, event_key, event_partial)
    velocity(state, key, facts, wm_ms)   -> VelocityResult(partial, state, expiry_ms)   keyed by entity
    assemble(state, partial, now_ms)     -> (FeatureVector | None, state)     keyed by event id
    assembly_timeout(eid, state, now_ms) -> FeatureVector | None              (timer: impute)
    score(vectors)                       -> [{model: score}] per vector       (micro-batched)
    decide(vector, scores)               -> [pb.Action]                       (not keyed)
    decide_keyed(vector, scores)         -> [(key, payload)]: actions, touches (not keyed)
    cooldown(state, action)              -> (admit, state)                    keyed by subject_key
    subject_step(key, payload, cooldown slot, reputation slot) -> SubjectStep keyed by subject_key

``replay_actions`` runs the same chain in one process over records in arrival order: it is the
reference the engines' parity tests compare against (same action ids).

Keys crossing an engine boundary are strings: an entity key is ``"<EntityKind value>|<entity id>"``;
the event-level partial travels under the pseudo entity kind 0 (``"0|<event id>"``) so an engine can
send every partial through the velocity operator and needs no union of two streams. Window state is
bytes in the layout of ``operators/features/state_codec.py`` (``encode_key_state``/
``decode_key_state``); assembly and cooldown states are small versioned byte layouts too. Nothing is
pickled.

Time: every keyed operator decides from its own state and event times (lateness per key, cooldown
windows), so outputs depend only on the per-key arrival order. The job-level lateness gate uses the
*observed* watermark ``max event time seen - out_of_orderness_ms`` (as ``VelocityPipeline``): an
event more than ``allowed_lateness_ms`` behind it is late — counted, sent to the dead-letter topic
with reason ``LATE_EVENT`` and not applied. That gate is what lets an engine expire window state
whenever its watermark passes ``expiry_ms`` (lazily, or on a timer) without changing any output.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, NamedTuple, Protocol, TypeVar

from streamwarden.operators.errors import StreamwardenError
from streamwarden.operators.features.assemble import FeatureVector, VectorLayout, event_partial
from streamwarden.operators.features.facts_codec import decode_attributes, encode_attributes
from streamwarden.operators.features.fanout import N_PLAIN_FIELDS, EventFacts, FanOut
from streamwarden.operators.features.replay import VelocityPipeline
from streamwarden.operators.features.spec import FeatureSpec, load_spec
from streamwarden.operators.features.state_codec import StateFormatError, decode_state, encode_state
from streamwarden.operators.features.window import NO_TIME, KeyState, KindPlan, PartialFeatures, compile_plans
from streamwarden.operators.policy.cooldown import CooldownGate, subject_key
from streamwarden.operators.policy.decider import Decider
from streamwarden.operators.policy.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from streamwarden.operators.policy.reputation import TOUCH_TAG, ReputationBook, TargetState
from streamwarden.operators.scoring.model_card import default_card_paths
from streamwarden.operators.scoring.scorer import ScoringEngine
from streamwarden.operators.transparency.statements import StatementBuilder
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_FUTURE_MS,
    Framing,
    RecordLimits,
    SourceRef,
    dead_letter,
    decode_event,
)

Clock = Callable[[], int]
"""Wall clock in epoch ms (decision times, assembly timeouts, the decoder's future-time check)."""

KEY_SEP = "|"
EVENT_KIND = 0
"""Pseudo entity kind of the event-level partial (``EntityKind`` 0 is unused by entities)."""
LATE_EVENT = "LATE_EVENT"
"""Reason (dead-letter message prefix and metric name) of an event behind the lateness gate."""
SCORE_BATCH = 512
"""Rows per scoring call in ``replay_actions`` (engines choose their own micro-batch)."""


def wall_clock_ms() -> int:
    """The default clock: wall time in epoch ms."""
    return int(time.time() * 1000)


def entity_key(kind: int, entity_id: str) -> str:
    """The engine key of one entity's window state: ``"<kind>|<id>"``."""
    return f"{kind}{KEY_SEP}{entity_id}"


def key_kind(key: str) -> int:
    """The ``EntityKind`` value of an ``entity_key`` (``EVENT_KIND`` for the event-level route)."""
    return int(key[: key.index(KEY_SEP)])


def dead_letter_reason(letter: pb.DeadLetter) -> str:
    """Metric label of a dead letter: the name of its error kind (``LATE_EVENT`` for the lateness gate)."""
    return pb.DeadLetter.ErrorKind.Name(letter.error_kind)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class StagesConfig:
    """Everything ``Stages`` is built from: hashable and picklable, so engines ship it to workers and
    build the (unpicklable) ONNX sessions and compiled policies there."""

    feature_spec: Path | None = None
    """Feature spec YAML; None = the shipped default."""
    model_cards: tuple[Path, ...] | None = None
    """Model card YAMLs; None = the shipped models."""
    policy: Path | None = None
    """Policy YAML; None = the shipped default."""
    allowed_lateness_ms: int = 60_000
    """Events further than this behind the observed watermark are late (gate, side output)."""
    out_of_orderness_ms: int | None = None
    """Observed watermark = max event time - this; None = the feature spec's allowed lateness."""
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS
    """Events stamped further ahead of the decoder's clock are dead-lettered."""
    limits: RecordLimits = DEFAULT_LIMITS
    """Bounds on one record (size, string lengths, dead-letter size)."""
    framing: Framing = "auto"
    """How records carry an event: plain protobuf, Schema Registry framing, or auto (``schemas.codec``)."""
    schema_ids: frozenset[int] | None = None
    """Schema Registry ids a framed record may name; None = any."""
    reload_interval_ms: int = 0
    """How often the policy file and the model files are checked for changes (``Stages.maybe_reload``);
    0 = never (a restart picks up changes)."""
    assembly_timeout_ms: int = 10_000
    """How long an event waits for its partials before the missing blocks are imputed: processing
    time after its first partial (``assembly_timeout``), or event time past the event (the Beam
    binding's timer)."""
    inject_errors: frozenset[tuple[str, str]] = frozenset()
    """Test hook: ``(stage, event id)`` pairs for which ``Stages.inject`` raises ``InjectedOperatorError``
    in that stage (``velocity``: for every key of the event, before its state is touched;
    ``assemble``, ``score``, ``decide``), so tests can prove one record's operator error becomes an
    ``OPERATOR_ERROR`` dead letter. Empty (the default) costs one truth test per call."""


class InjectedOperatorError(RuntimeError):
    """Raised by the test hook ``StagesConfig.inject_errors``."""


OPERATOR_STAGES = ("velocity", "assemble", "score", "decide")
"""The stages after fan-out whose per-record exceptions become ``OPERATOR_ERROR`` dead letters that
name the event (``Stages.event_error``) rather than a source offset (decode and fan-out name theirs)."""


class FanOutResult(NamedTuple):
    """One event fanned out: its facts, the entity keys it updates, and its event-level partial."""

    facts: EventFacts
    keys: list[str]
    """``entity_key`` per entity the event names, in vector order."""
    event_key: str
    """``"0|<event id>"``: the route of the event-level partial through ``velocity``."""
    event_partial: PartialFeatures


class VelocityResult(NamedTuple):
    """One entity's partial for one event, the key's new state and when it may be dropped."""

    partial: PartialFeatures
    state: bytes | None
    """New state bytes (None for the event-level route, which keeps no state)."""
    expiry_ms: int | None
    """Watermark at or after which the state can be cleared (``KeyState.expiry_ms``)."""


class EventClock:
    """The observed watermark and the job-level lateness gate, tracked per source partition.

    Event time is ordered within a Kafka partition, never across partitions (a backlog may be read one
    partition after the other), so, like Flink's per-split watermarks, the watermark is the minimum over
    the active partitions of ``max event time seen in it - out_of_orderness_ms``. ``admit(t, partition)``
    is False for an event more than ``allowed_lateness_ms`` behind that watermark; admitted events raise
    their partition's maximum. A partition named in ``assign`` holds the watermark back until its first
    record. A partition with no record for ``idle_timeout_ms`` of wall-clock time (only when the caller
    passes ``now_ms``) is idle: excluded until its next record, so one quiet partition does not stall
    the watermark. Without ``now_ms`` (replays) nothing goes idle and the gate is deterministic. With a
    single partition this is the plain ``max event time seen`` clock.
    """

    __slots__ = (
        "_floor_ms",
        "_idle",
        "_last_wall_ms",
        "_max",
        "_next_idle_check_ms",
        "_watermark_ms",
        "allowed_lateness_ms",
        "idle_timeout_ms",
        "out_of_orderness_ms",
    )

    def __init__(
        self, out_of_orderness_ms: int, allowed_lateness_ms: int, idle_timeout_ms: int = 30_000
    ) -> None:
        self.out_of_orderness_ms = out_of_orderness_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.idle_timeout_ms = idle_timeout_ms
        self._max: dict[int, int] = {}
        self._last_wall_ms: dict[int, int] = {}
        self._idle: set[int] = set()
        self._watermark_ms: int | None = None  # cached; None = recompute
        self._floor_ms = NO_TIME - out_of_orderness_ms
        self._next_idle_check_ms = 0

    @property
    def max_seen_ms(self) -> int:
        """The largest event time admitted in any partition (``NO_TIME`` before any)."""
        return max(self._max.values(), default=NO_TIME)

    def assign(self, partitions: Iterable[int], now_ms: int | None = None) -> None:
        """Partitions the input will deliver: each holds the watermark back until its first record (or
        until it is idle)."""
        for partition in partitions:
            if partition not in self._max:
                self._max[partition] = NO_TIME
                if now_ms is not None:
                    self._last_wall_ms[partition] = now_ms
        self._watermark_ms = None

    @property
    def watermark_ms(self) -> int:
        """Min over active partitions of max event time - out-of-orderness (``NO_TIME`` minus it before
        any event; the max over all when every partition is idle); it never moves backwards."""
        wm = self._watermark_ms
        if wm is None:
            active = [m for p, m in self._max.items() if p not in self._idle]
            low = min(active) if active else max(self._max.values(), default=NO_TIME)
            # never backwards (as Flink's combined watermark): a partition back from idleness with older
            # records finds them late rather than rewinding the gate for everyone
            wm = self._watermark_ms = self._floor_ms = max(self._floor_ms, low - self.out_of_orderness_ms)
        return wm

    def is_late(self, t: int) -> bool:
        """Whether an event at ``t`` is behind the gate (does not change the clock)."""
        return t < self.watermark_ms - self.allowed_lateness_ms

    def admit(self, t: int, partition: int = 0, now_ms: int | None = None) -> bool:
        """True (and the partition's clock advances) unless ``t`` is late."""
        if now_ms is not None:
            self._track_idleness(partition, now_ms)
        if t < self.watermark_ms - self.allowed_lateness_ms:
            return False
        self._advance(partition, t)
        return True

    def observe(self, t: int, partition: int = 0) -> int:
        """Advance the partition's clock by ``t`` (no gate) and return the watermark."""
        self._advance(partition, t)
        return self.watermark_ms

    def _advance(self, partition: int, t: int) -> None:
        old = self._max.get(partition)
        if old is None or t > old:
            self._max[partition] = t
            # only a partition at the minimum (or a new one) can move the watermark
            if (
                old is None
                or self._watermark_ms is None
                or old - self.out_of_orderness_ms <= self._watermark_ms
            ):
                self._watermark_ms = None

    def _track_idleness(self, partition: int, now_ms: int) -> None:
        self._last_wall_ms[partition] = now_ms
        if partition in self._idle:
            self._idle.discard(partition)
            self._watermark_ms = None
        if now_ms < self._next_idle_check_ms:
            return
        self._next_idle_check_ms = now_ms + min(1_000, self.idle_timeout_ms)
        idle = {p for p, seen in self._last_wall_ms.items() if now_ms - seen > self.idle_timeout_ms}
        if idle != self._idle:
            self._idle = idle
            self._watermark_ms = None


# ---------------------------------------------------------------- assembly state (keyed by event id)

AssemblyState = tuple[int, int, int, int, tuple[tuple[float, ...] | None, ...], EventFacts | None]
"""(seen mask, expect mask, late mask, first arrival ms, blocks by slot, facts) of one pending event."""

_ASM_HEADER = struct.Struct("<BQQQq")
_ASM_VERSION = 2
_ASM_READABLE = (1, 2)
_U16 = struct.Struct("<H")
_Q = struct.Struct("<q")
_FACT_IS_STR = tuple(
    isinstance(v, str) for v in EventFacts("", 0, 0, *("",) * 9, 0, 0, 0, 0, 0, 0)[:N_PLAIN_FIELDS]
)


def _encode_facts(out: list[bytes], facts: EventFacts) -> None:
    for is_str, value in zip(_FACT_IS_STR, facts[:N_PLAIN_FIELDS], strict=True):
        if is_str:
            raw = str(value).encode("utf-8")
            out.append(_U16.pack(len(raw)))
            out.append(raw)
        else:
            out.append(_Q.pack(value))


def _decode_facts(data: bytes, pos: int) -> tuple[EventFacts, int]:
    values: list[object] = []
    for is_str in _FACT_IS_STR:
        if is_str:
            (n,) = _U16.unpack_from(data, pos)
            pos += _U16.size
            values.append(data[pos : pos + n].decode("utf-8"))
            pos += n
        else:
            values.append(_Q.unpack_from(data, pos)[0])
            pos += _Q.size
    values.append(())  # attributes: read after the facts in layout v2
    return EventFacts._make(values), pos


def _decode_facts_v2(data: bytes, pos: int) -> tuple[EventFacts, int]:
    facts, pos = _decode_facts(data, pos)
    attributes, pos = decode_attributes(data, pos)
    return facts._replace(attributes=attributes), pos


def encode_assembly_state(state: AssemblyState) -> bytes:
    """Layout v2: header ``<BQQQq`` (version, seen, expect, late, first ms), a facts flag byte and the
    facts (strings as u16 length + UTF-8, integers as i64, then the attributes as
    ``facts_codec.encode_attributes``), then per slot a u16 value count (0xFFFF = absent) and the
    float64 values. Layout v1 (still read) is the same without the attributes."""
    seen, expect, late, first_ms, blocks, facts = state
    out = [_ASM_HEADER.pack(_ASM_VERSION, seen, expect, late, first_ms)]
    if facts is None:
        out.append(b"\x00")
    else:
        out.append(b"\x01")
        _encode_facts(out, facts)
        out.append(encode_attributes(facts.attributes))
    out.append(_U16.pack(len(blocks)))
    for block in blocks:
        if block is None:
            out.append(_U16.pack(0xFFFF))
        else:
            out.append(_U16.pack(len(block)))
            out.append(struct.pack(f"<{len(block)}d", *block))
    return b"".join(out)


def decode_assembly_state(data: bytes) -> AssemblyState:
    """Inverse of ``encode_assembly_state``; raises ``ValueError`` on another layout version."""
    version, seen, expect, late, first_ms = _ASM_HEADER.unpack_from(data, 0)
    if version not in _ASM_READABLE:
        raise ValueError(f"assembly state layout v{version} is not one of {_ASM_READABLE}")
    pos = _ASM_HEADER.size
    facts: EventFacts | None = None
    has_facts = data[pos]
    pos += 1
    if has_facts:
        facts, pos = (_decode_facts_v2 if version == 2 else _decode_facts)(data, pos)
    (n_blocks,) = _U16.unpack_from(data, pos)
    pos += _U16.size
    blocks: list[tuple[float, ...] | None] = []
    for _ in range(n_blocks):
        (n,) = _U16.unpack_from(data, pos)
        pos += _U16.size
        if n == 0xFFFF:
            blocks.append(None)
            continue
        blocks.append(struct.unpack_from(f"<{n}d", data, pos))
        pos += 8 * n
    return seen, expect, late, first_ms, tuple(blocks), facts


class KeyedAssembly:
    """``operators.features.Assembler`` as a function of one event's state, for engines that key the
    assembly by event id: same slots, defaults, imputation and ``FeatureVector`` (a test checks the
    two agree)."""

    def __init__(self, spec: FeatureSpec, plans: dict[int, KindPlan]) -> None:
        self._layout = VectorLayout(spec, plans)
        self._slot_of = self._layout.slot_of
        self._emit = self._layout.join
        self._empty: tuple[tuple[float, ...] | None, ...] = (None,) * len(self._layout.bits)

    def add(
        self, state: AssemblyState | None, p: PartialFeatures, now_ms: int
    ) -> tuple[FeatureVector | None, AssemblyState | None, bool]:
        """Take one partial: ``(vector if complete, new state (None = clear), duplicate?)``."""
        bit = 1 << p[1]
        slot = self._slot_of[p[1]]
        if state is None:
            if p[4] == bit:
                blocks = list(self._empty)
                blocks[slot] = p[2]
                return self._emit(p[0], blocks, bit, bit, bit if p[3] else 0, p[5], False), None, False
            blocks = list(self._empty)
            blocks[slot] = p[2]
            return None, (bit, p[4], bit if p[3] else 0, now_ms, tuple(blocks), p[5]), False
        seen, expect, late, first_ms, old_blocks, facts = state
        if seen & bit:
            return None, state, True
        seen |= bit
        blocks = list(old_blocks)
        blocks[slot] = p[2]
        if p[3]:
            late |= bit
        if p[5] is not None:
            facts = p[5]
        if seen == expect:
            return self._emit(p[0], blocks, seen, expect, late, facts, False), None, False
        return None, (seen, expect, late, first_ms, tuple(blocks), facts), False

    def timeout(self, event_id: str, state: AssemblyState) -> FeatureVector:
        """The vector of a pending event with its missing blocks imputed (listed in ``imputed``)."""
        seen, expect, late, _, blocks, facts = state
        return self._emit(event_id, list(blocks), seen, expect, late, facts, True)


# ---------------------------------------------------------------- the stages


class Stages:
    """The pipeline's operators, built once per worker from a ``StagesConfig``.

    The scoring engine and the decider are built on first use, so a binding whose operator only
    fans out or keeps windows does not load ONNX models.
    """

    def __init__(
        self,
        config: StagesConfig,
        *,
        clock: Clock = wall_clock_ms,
        spec: FeatureSpec | None = None,
        scoring: ScoringEngine | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.spec = spec if spec is not None else load_spec(config.feature_spec)
        self.feature_names: tuple[str, ...] = tuple(self.spec.feature_names())
        self.out_of_orderness_ms = (
            self.spec.allowed_lateness_ms
            if config.out_of_orderness_ms is None
            else config.out_of_orderness_ms
        )
        self.fanout = FanOut(self.spec)
        self.plans: dict[int, KindPlan] = compile_plans(self.spec)
        self.assembly = KeyedAssembly(self.spec, self.plans)
        self._scoring = scoring
        self._policy = policy
        self._decider: Decider | None = None
        self._gate: CooldownGate | None = None
        self._reputation: ReputationBook | None = None
        self._statements: StatementBuilder | None = None
        self._policy_stamp: tuple[int, int] | None = None
        self._next_reload_check_ms = 0
        self._inject = config.inject_errors

    @classmethod
    def build(cls, config: StagesConfig, *, clock: Clock = wall_clock_ms) -> Stages:
        """Build and validate everything now (start-up errors name the file), models included."""
        stages = cls(config, clock=clock)
        _ = stages.decider
        return stages

    @classmethod
    def shared(cls, config: StagesConfig) -> Stages:
        """One ``Stages`` per config and process (wall clock), shared by every operator instance a
        worker deserializes, so models are loaded once. Engine workers are single-threaded per
        operator; the objects are not meant for concurrent use."""
        stages = _SHARED.get(config)
        if stages is None:
            stages = _SHARED[config] = cls(config)
        return stages

    # ---- components built on first use

    @property
    def scoring(self) -> ScoringEngine:
        if self._scoring is None:
            cards = (
                list(self.config.model_cards) if self.config.model_cards is not None else default_card_paths()
            )
            self._scoring = ScoringEngine.from_cards(cards, feature_names=self.feature_names)
        return self._scoring

    @property
    def policy_path(self) -> Path:
        return self.config.policy if self.config.policy is not None else DEFAULT_POLICY_PATH

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            path = self.policy_path
            stamp = _file_stamp(path)  # before the load: a change in between is seen by the next check
            self._policy = load_policy(path, feature_names=self.feature_names)
            self._policy_stamp = stamp
        return self._policy

    # ---- hot reload: the bindings call this between batches (it checks files every reload_interval_ms)

    def maybe_reload(self, now_ms: int) -> list[ReloadOutcome]:
        """Swap in a changed policy file or model, keeping every keyed state; a new file that does not
        validate is refused and the running one stays (the outcome says why). Cooldown states carry over
        for rule ids in both policies. A changed policy must carry a new ``version`` (it is part of every
        action id: the same version with other rules would make two decisions look like one)."""
        interval = self.config.reload_interval_ms
        if interval <= 0 or now_ms < self._next_reload_check_ms:
            return []
        self._next_reload_check_ms = now_ms + interval
        outcomes: list[ReloadOutcome] = []
        if self._scoring is not None:
            for scorer in self._scoring.scorers:
                result = scorer.maybe_reload()
                if result is None:
                    continue
                outcomes.append(
                    ReloadOutcome(f"model:{result.model}", result.reloaded, result.version, result.error)
                )
                if result.reloaded:
                    self._decider = None  # new model version and threshold
        if self._policy is not None and self._policy_stamp is not None:
            outcome = self._reload_policy()
            if outcome is not None:
                outcomes.append(outcome)
        for o in outcomes:
            if o.error is None:
                LOG.info("%s reloaded: now version %s", o.what, o.version)
            else:
                LOG.error("%s reload refused, keeping version %s: %s", o.what, o.version, o.error)
        return outcomes

    def _reload_policy(self) -> ReloadOutcome | None:
        path = self.policy_path
        try:
            stamp = _file_stamp(path)
        except OSError as exc:  # e.g. the file is being replaced: keep the running policy, retry later
            return ReloadOutcome("policy", False, self.policy.version, f"{path}: {exc}")
        if stamp == self._policy_stamp:
            return None
        self._policy_stamp = stamp
        running = self.policy
        try:
            scoring = self.scoring
            candidate = load_policy(
                path,
                feature_names=self.feature_names,
                model_names=scoring.names,
                thresholds=scoring.thresholds,
            )
            gate = CooldownGate(candidate, max_delay_ms=self.cooldown_max_delay_ms)
            statements = StatementBuilder(candidate)
        except (StreamwardenError, ValueError) as exc:
            return ReloadOutcome("policy", False, running.version, str(exc))
        if candidate.version == running.version:
            if _rule_signature(candidate) == _rule_signature(running):
                return None  # comments or formatting only
            return ReloadOutcome(
                "policy",
                False,
                running.version,
                f"{path}: rules changed but version {running.version} did not",
            )
        self._policy, self._gate, self._statements, self._decider = candidate, gate, statements, None
        self._reputation = None
        return ReloadOutcome("policy", True, candidate.version, None)

    @property
    def decider(self) -> Decider:
        if self._decider is None:
            scoring = self.scoring
            self._decider = Decider(
                self.policy,
                self.feature_names,
                clock=self.clock,
                thresholds=scoring.thresholds,
                model_names=scoring.names,
            )
        return self._decider

    @property
    def statement_builder(self) -> StatementBuilder:
        """DSA statements of reasons from the policy's ``statements:`` mapping (operators/transparency)."""
        if self._statements is None:
            self._statements = StatementBuilder(self.policy)
        return self._statements

    def statements(self, action: pb.Action) -> list[pb.StatementOfReasons]:
        """The statement of reasons of an emitted (post-cooldown) action: one for an enforcing
        restriction, none otherwise."""
        s = self.statement_builder.build(action)
        return [] if s is None else [s]

    @property
    def cooldown_gate(self) -> CooldownGate:
        if self._gate is None:
            self._gate = CooldownGate(self.policy, max_delay_ms=self.cooldown_max_delay_ms)
        return self._gate

    @property
    def cooldown_max_delay_ms(self) -> int:
        """How far back a subject's cooldown remembers: out-of-orderness plus allowed lateness."""
        return self.out_of_orderness_ms + self.config.allowed_lateness_ms

    @property
    def model_version(self) -> str:
        return self.scoring.model_version

    def event_clock(self) -> EventClock:
        """A fresh observed-watermark clock and lateness gate (one per unkeyed operator instance)."""
        return EventClock(self.out_of_orderness_ms, self.config.allowed_lateness_ms)

    # ---- decode (not keyed)

    def decode(self, raw: bytes | None, source: SourceRef, now_ms: int | None) -> pb.Event | pb.DeadLetter:
        """Parse and validate one record; ``now_ms`` None skips the future-time check (replays)."""
        return decode_event(
            raw,
            source,
            now_ms=now_ms,
            max_future_ms=self.config.max_future_ms,
            limits=self.config.limits,
            framing=self.config.framing,
            schema_ids=self.config.schema_ids,
        )

    def late_letter(
        self, raw: bytes | None, source: SourceRef, event: pb.Event, watermark_ms: int, now_ms: int | None
    ) -> pb.DeadLetter:
        """The side-output record of an event behind the lateness gate (reason ``LATE_EVENT``)."""
        behind = watermark_ms - event.event_time_ms
        return dead_letter(
            raw if raw is not None else b"",
            pb.DeadLetter.LATE_EVENT,
            f"event {event.event_id} is {behind} ms behind the watermark "
            f"(allowed lateness {self.config.allowed_lateness_ms} ms)",
            source,
            now_ms if now_ms is not None else 0,
            limits=self.config.limits,
        )

    def operator_error(
        self, raw: bytes | None, source: SourceRef, stage: str, exc: BaseException, now_ms: int | None
    ) -> pb.DeadLetter:
        """The dead letter of a record that raised in ``stage`` (kind ``OPERATOR_ERROR``: the exception
        type and message; the record is kept within the dead-letter limit)."""
        return dead_letter(
            raw if raw is not None else b"",
            pb.DeadLetter.OPERATOR_ERROR,
            f"{stage}: {type(exc).__name__}: {exc}",
            source,
            now_ms if now_ms is not None else 0,
            limits=self.config.limits,
            stage=stage,
        )

    def inject(self, stage: str, event_id: str) -> None:
        """The test hook ``StagesConfig.inject_errors``: raise ``InjectedOperatorError`` if it names
        ``(stage, event_id)``; nothing otherwise."""
        if self._inject and (stage, event_id) in self._inject:
            raise InjectedOperatorError(f"injected failure of event {event_id} in {stage}")

    def event_error(
        self, event_id: str, stage: str, exc: BaseException, now_ms: int | None = None
    ) -> pb.DeadLetter:
        """The dead letter of an event whose processing raised in ``stage`` after fan-out (velocity,
        assembly, scoring, decision), where the Kafka record is no longer at hand: kind
        ``OPERATOR_ERROR``, the message names the stage, the event id, the exception type and its
        message; source partition and offset are -1 (unknown there), ``original`` is empty. The engine
        keys it by the event id."""
        return dead_letter(
            b"",
            pb.DeadLetter.OPERATOR_ERROR,
            f"{stage}: event {event_id}: {type(exc).__name__}: {exc}",
            SourceRef("", -1, -1),
            now_ms if now_ms is not None else self.clock(),
            limits=self.config.limits,
            stage=stage,
        )

    def score_each(
        self, vectors: Sequence[FeatureVector]
    ) -> tuple[list[tuple[FeatureVector, dict[str, float]]], list[tuple[FeatureVector, BaseException]]]:
        """``score`` for a micro-batch that must not fail as a whole: one run for the batch; if it
        raises, each vector alone, so only the vectors that raise on their own fail. Returns
        ``(scored, failed)`` (scores are per row, so a good vector's scores are the same either way)."""
        try:
            return list(zip(vectors, self.score(vectors), strict=True)), []
        except Exception as exc:
            if len(vectors) == 1:
                return [], [(vectors[0], exc)]
        scored: list[tuple[FeatureVector, dict[str, float]]] = []
        failed: list[tuple[FeatureVector, BaseException]] = []
        for vector in vectors:
            try:
                scored.append((vector, self.score((vector,))[0]))
            except Exception as exc:
                failed.append((vector, exc))
        return scored, failed

    # ---- fan-out (not keyed)

    def fan_out(self, event: pb.Event) -> FanOutResult:
        """The event's facts, entity keys and event-level partial."""
        facts, keys = self.fanout(event)
        return FanOutResult(
            facts,
            [f"{kind}{KEY_SEP}{ident}" for kind, ident in keys],
            f"{EVENT_KIND}{KEY_SEP}{facts[0]}",
            event_partial(facts),
        )

    # ---- velocity (keyed by entity key)

    def new_key_state(self, key: str) -> KeyState:
        return KeyState(self.plans[key_kind(key)])

    def encode_key_state(self, state: KeyState) -> bytes:
        """The state's versioned bytes (``state_codec`` layout)."""
        return encode_state(state)

    def decode_key_state(self, data: bytes) -> KeyState:
        """Restore ``encode_key_state`` bytes; the plan comes from the kind in the layout's header
        (byte 4 of ``<3sBBBIqQ``); raises ``StateFormatError`` on bytes of another spec."""
        if len(data) < 5 or data[4] not in self.plans:
            raise StateFormatError("not a key state of this feature spec")
        return decode_state(self.plans[data[4]], data)

    def velocity_object(
        self, state: KeyState | None, key: str, facts: EventFacts, watermark_ms: int | None = None
    ) -> tuple[PartialFeatures, KeyState | None, bool]:
        """``velocity`` on a live ``KeyState`` (updated in place): ``(partial, state, expired?)``.

        A state whose ``expiry_ms()`` is at or before ``watermark_ms`` is dropped first (``expired``):
        events reaching this operator passed the lateness gate, so this changes no output.
        """
        kind = key_kind(key)
        if self._inject:
            self.inject("velocity", facts[0])
        if kind == EVENT_KIND:
            return event_partial(facts), None, False
        expired = False
        if state is not None and watermark_ms is not None and state.expiry_ms() <= watermark_ms:
            state = None
            expired = True
        if state is None:
            state = KeyState(self.plans[kind])
        return state.on_event(facts), state, expired

    def velocity(
        self, state: bytes | None, key: str, facts: EventFacts, watermark_ms: int | None = None
    ) -> VelocityResult:
        """One entity's partial for one event from the key's state bytes (None = no state yet)."""
        live = self.decode_key_state(state) if state is not None else None
        partial, new, _ = self.velocity_object(live, key, facts, watermark_ms)
        if new is None:
            return VelocityResult(partial, None, None)
        return VelocityResult(partial, encode_state(new), new.expiry_ms())

    # ---- assembly (keyed by event id)

    def assemble(
        self, state: AssemblyState | None, partial: PartialFeatures, now_ms: int
    ) -> tuple[FeatureVector | None, AssemblyState | None]:
        """Add one partial to its event's state: the vector once complete (then the state is None:
        clear it), else the new state to keep. A repeated partial leaves the state unchanged."""
        vector, new, _ = self.assembly.add(state, partial, now_ms)
        return vector, new

    def assembly_deadline_ms(self, state: AssemblyState) -> int:
        """Processing time at which ``assembly_timeout`` imputes the event."""
        return state[3] + self.config.assembly_timeout_ms

    def assembly_timeout(
        self, event_id: str, state: AssemblyState | None, now_ms: int
    ) -> FeatureVector | None:
        """On a timer: the imputed vector if the event is still pending past its deadline, else None."""
        if state is None or now_ms < self.assembly_deadline_ms(state):
            return None
        return self.assembly.timeout(event_id, state)

    # ---- score, decide (not keyed)

    def score(self, vectors: Sequence[FeatureVector]) -> list[dict[str, float]]:
        """Per vector ``{model name: score}``; one ONNX run per model for the whole micro-batch."""
        if not vectors:
            return []
        if self._inject:
            for vector in vectors:
                self.inject("score", vector[0])
        return self.scoring.score_rows([v[1] for v in vectors])

    def decide(
        self, vector: FeatureVector, scores: dict[str, float], touches: list[pb.Action] | None = None
    ) -> list[pb.Action]:
        """The policy's actions for one event (before the cooldown gate); none without the event's facts
        (only if its event-level partial timed out)."""
        if self._inject:
            self.inject("decide", vector[0])
        facts = vector[4]
        if facts is None:
            return []
        return self.decider.decide(facts, vector[1], scores, self.model_version, touches)

    def feature_record(self, vector: FeatureVector) -> pb.FeatureRecord:
        """The feature-log record of one assembled vector."""
        return pb.FeatureRecord(
            event_id=vector[0],
            names=self.feature_names,
            values=vector[1],
            model_version=self.model_version,
            event_time_ms=vector.event_time_ms,
            imputed=vector[2],
        )

    def decide_keyed(self, vector: FeatureVector, scores: dict[str, float]) -> list[tuple[str, bytes]]:
        """``decide``'s output keyed for the subject stage: ``(subject key, Action bytes)`` per action,
        ``(target key, touch payload)`` per action of an unwind rule (``operators/policy/reputation.py``)."""
        touches: list[pb.Action] = []
        out = [(self.cooldown_key(a), a.SerializeToString()) for a in self.decide(vector, scores, touches)]
        facts = vector[4]
        if touches and facts is not None:
            book = self.reputation
            for action in touches:
                touch = book.touch(action, facts, vector[1])
                if touch is not None:
                    out.append(touch)
        return out

    # ---- cooldown and reputation (keyed by subject)

    @property
    def reputation(self) -> ReputationBook:
        """The policy's unwind rules (empty when it has none)."""
        if self._reputation is None:
            self._reputation = ReputationBook(
                self.policy, self.feature_names, max_delay_ms=self.cooldown_max_delay_ms, clock=self.clock
            )
        return self._reputation

    def subject_step(
        self, key: str, payload: bytes, cooldown: StateSlot[bytes], reputation: StateSlot[TargetState]
    ) -> SubjectStep:
        """One payload of the subject stage (keyed by ``key``): an action goes through the cooldown
        gate and, admitted, may flag its subject and unwind to the subjects that touched it; a touch
        waits in, or matches, the target's reputation state. Each slot is read only when needed."""
        book = self.reputation
        if payload[:1] == _TOUCH:
            r = book.step(key, payload, reputation.get())
            reputation.put(r.state)
            return SubjectStep(r.actions, False, False, r.forgotten, r.event_time_ms)
        action = pb.Action.FromString(payload)
        t = action.event_time_ms
        if self.gated(action):
            ok, state = self.cooldown(cooldown.get(), action)
            if not ok:
                return SubjectStep([], False, True, 0, t)
            if state is not None:
                cooldown.put(state)
        if not book.flags(action):
            return SubjectStep([action], True, False, 0, t)
        r = book.step(key, action, reputation.get())
        reputation.put(r.state)
        return SubjectStep([action, *r.actions], True, False, r.forgotten, t)

    def cooldown_key(self, action: pb.Action) -> str:
        """The key of the cooldown state: ``subject_key`` (e.g. ``ip:203.0.113.7``)."""
        return subject_key(action)

    def gated(self, action: pb.Action) -> bool:
        """Whether the action's rule has a cooldown (else ``cooldown`` admits it without state)."""
        return self.cooldown_gate.gated(action)

    def cooldown(self, state: bytes | None, action: pb.Action) -> tuple[bool, bytes | None]:
        """``(emit?, new state)`` for one action of the subject whose cooldown state is ``state``."""
        return self.cooldown_gate.admit(action, state)


_SHARED: dict[StagesConfig, Stages] = {}

LOG = logging.getLogger("streamwarden.reload")


S = TypeVar("S")
_TOUCH = bytes([TOUCH_TAG])


class StateSlot(Protocol[S]):
    """One keyed state value of the subject stage, as an engine holds it: the cooldown gate's bytes, or
    the target's ``TargetState`` (an engine that keeps bytes converts with ``reputation.encode_state``)."""

    def get(self) -> S | None: ...

    def put(self, state: S | None) -> None:
        """Store ``state``; None clears the value."""


class DictSlot(Generic[S]):
    """A ``StateSlot`` over a dict entry: for the replay and tests (Beam's store: ``expiring.StoreSlot``)."""

    __slots__ = ("_states", "key")

    def __init__(self, states: dict[str, S], key: str = "") -> None:
        self._states = states
        self.key = key

    def get(self) -> S | None:
        return self._states.get(self.key)

    def put(self, state: S | None) -> None:
        if state is None:
            self._states.pop(self.key, None)
        else:
            self._states[self.key] = state


class SubjectStep(NamedTuple):
    """What one payload of the subject stage did: the actions to emit (the admitted input action
    first if ``admitted``, then any actions a flag or a touch unwound), whether the cooldown gate
    suppressed it, subjects a target forgot (over ``max_subjects``), and the payload's event time (the
    stage's clock)."""

    actions: list[pb.Action]
    admitted: bool
    suppressed: bool
    forgotten: int
    event_time_ms: int


class ReloadOutcome(NamedTuple):
    """One hot-reload attempt: ``what`` (``policy`` or ``model:<name>``), whether the new file is live,
    the version running afterwards, and why it was refused (``None`` if it was not)."""

    what: str
    ok: bool
    version: str
    error: str | None


def _file_stamp(path: Path) -> tuple[int, int]:
    """(mtime, size) of ``path``; a missing file stamps as (0, 0) and its loader names it in the error."""
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_mtime_ns, st.st_size


def _rule_signature(policy: Policy) -> tuple[tuple[object, ...], ...]:
    return tuple(
        (r.id, r.condition.text(), r.event_types, r.subject, r.verdict, r.mode, r.cooldown_ms, r.stop)
        for r in policy.rules
    )


# ---------------------------------------------------------------- offline reference


RawRecord = bytes | None | tuple[bytes | None, SourceRef]
"""A record as read: its payload, optionally with where it came from."""


@dataclass
class PipelineCounters:
    """What a run counted; engines report the same figures as metrics."""

    records: int = 0
    events: int = 0
    """Records decoded and admitted by the lateness gate."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    """By reason: ``DeadLetter.ErrorKind`` name, or ``LATE_EVENT``."""
    late_partials: int = 0
    """Entity partials of events that were late for that key (not applied there)."""
    vectors: int = 0
    imputed_vectors: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    """Emitted actions by verdict name."""
    suppressed_actions: int = 0
    """Actions the cooldown gate dropped."""
    forgotten_touches: int = 0
    """Subjects a target's reputation state forgot (over an unwind rule's ``max_subjects``)."""
    operator_errors: Counter[str] = field(default_factory=Counter)
    """Decoded events that failed in a stage after fan-out, by stage (``OPERATOR_ERROR`` dead letters,
    not in ``dead_letters``: the event is counted in ``events``)."""

    @property
    def late_events(self) -> int:
        return self.dead_letters[LATE_EVENT]

    @property
    def accounted(self) -> int:
        """Events plus dead letters: equals ``records`` when nothing was lost."""
        return self.events + sum(self.dead_letters.values())


@dataclass
class ReplayResult:
    """The reference output of one stream."""

    actions: list[pb.Action] = field(default_factory=list)
    statements: list[pb.StatementOfReasons] = field(default_factory=list)
    """One per emitted enforcing restrictive action, in action order (``Stages.statements``)."""
    dead_letters: list[pb.DeadLetter] = field(default_factory=list)
    feature_records: list[pb.FeatureRecord] = field(default_factory=list)
    counters: PipelineCounters = field(default_factory=PipelineCounters)


def _split(record: RawRecord, index: int) -> tuple[bytes | None, SourceRef]:
    if isinstance(record, tuple):
        return record
    return record, SourceRef("", 0, index)


def replay_actions(
    records: Iterable[RawRecord],
    stages: Stages,
    *,
    now_ms: int | None = None,
    feature_records: bool = True,
) -> ReplayResult:
    """The pipeline over ``records`` in arrival order, in one process: the engines' reference.

    Decoding uses ``now_ms`` for the future-time check (None: no check, as for recorded traffic); the
    lateness gate, the window state (``VelocityPipeline``: per-key lateness, watermark-driven expiry),
    scoring in batches of ``SCORE_BATCH`` (scores are per row, so batching changes nothing), the policy
    and the cooldown gate (per subject, in arrival order) follow the contract in the module docstring.
    Actions come out in input order; their ids are what an engine's must equal. An event whose scoring
    or decision raises becomes an ``OPERATOR_ERROR`` dead letter (``Stages.event_error``) without
    feature record or actions, as on the engines; so do the events ``StagesConfig.inject_errors`` names
    (in velocity: before any window update).
    """
    result = ReplayResult()
    counters = result.counters
    pipe = VelocityPipeline(
        stages.spec,
        out_of_orderness_ms=stages.out_of_orderness_ms,
        assembly_timeout_ms=stages.config.assembly_timeout_ms,
    )
    gate = stages.event_clock()
    cooldown_states: dict[str, bytes] = {}
    reputation_states: dict[str, TargetState] = {}
    gate_slot, reputation_slot = DictSlot(cooldown_states), DictSlot(reputation_states)
    pending: list[FeatureVector] = []
    inject = bool(stages.config.inject_errors)

    def failed(event_id: str, stage: str, exc: BaseException) -> None:
        result.dead_letters.append(stages.event_error(event_id, stage, exc, now_ms or 0))
        counters.operator_errors[stage] += 1

    def flush() -> None:
        scored, failures = stages.score_each(pending)
        dropped = set()
        for vector, exc in failures:
            failed(vector[0], "score", exc)
            dropped.add(vector[0])
        for vector, scores in scored:
            try:
                keyed = stages.decide_keyed(vector, scores)
            except Exception as exc:  # as the engines: the event becomes a dead letter
                failed(vector[0], "decide", exc)
                dropped.add(vector[0])
                continue
            for key, payload in keyed:
                gate_slot.key = reputation_slot.key = key
                step = stages.subject_step(key, payload, gate_slot, reputation_slot)
                counters.suppressed_actions += step.suppressed
                counters.forgotten_touches += step.forgotten
                for action in step.actions:
                    result.actions.append(action)
                    result.statements += stages.statements(action)
                    counters.actions[pb.Action.Verdict.Name(action.verdict)] += 1
        pending.clear()
        if dropped and feature_records:  # a failed event has no feature record on the engines either
            result.feature_records = [f for f in result.feature_records if f.event_id not in dropped]

    for i, record in enumerate(records):
        raw, source = _split(record, i)
        counters.records += 1
        out = stages.decode(raw, source, now_ms)
        if isinstance(out, pb.DeadLetter):
            result.dead_letters.append(out)
            counters.dead_letters[dead_letter_reason(out)] += 1
            continue
        if not gate.admit(out.event_time_ms, source.partition):
            letter = stages.late_letter(raw, source, out, gate.watermark_ms, now_ms)
            result.dead_letters.append(letter)
            counters.dead_letters[LATE_EVENT] += 1
            continue
        counters.events += 1
        if inject:  # the test hook, as the engines apply it: the event updates no window
            try:
                stages.inject("velocity", out.event_id)
            except Exception as exc:
                failed(out.event_id, "velocity", exc)
                continue
        vector = pipe.process(out)
        if inject:
            try:
                stages.inject("assemble", out.event_id)
            except Exception as exc:
                failed(out.event_id, "assemble", exc)
                continue
        counters.vectors += 1
        counters.imputed_vectors += bool(vector[2])
        counters.late_partials += bin(vector[3]).count("1")
        if feature_records:
            result.feature_records.append(stages.feature_record(vector))
        pending.append(vector)
        if len(pending) >= SCORE_BATCH:
            flush()
    flush()
    return result


def iter_kafka_like(payloads: Iterable[bytes], topic: str = "", partition: int = 0) -> Iterator[RawRecord]:
    """``(payload, SourceRef(topic, partition, offset))`` for payloads at offsets 0, 1, ...: the records a
    single-partition topic holds, for replaying what was produced to it."""
    for offset, payload in enumerate(payloads):
        yield payload, SourceRef(topic, partition, offset)
