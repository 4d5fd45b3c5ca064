"""Entity reputation: a flagged entity unwinds to the entities behind it (issue 14).

A farm is usually caught by its targets first: five tracks stand out long before each of two hundred
accounts, spread over many IPs and hours, does. An *unwind rule* (``Rule.unwind``) names a target kind
(e.g. ``target_content``), the rules whose actions flag such a target (``flagged_by``), and a
condition over the event's own features and scores. When its condition holds for an event, the decider
does not act: the action waits, as a *touch*, in the state of the event's target. When the target is
flagged (an admitted action of a ``flagged_by`` rule, with the target as subject), every subject that
touched it from one ``within_ms`` window before the flag's window to one after gets the action, and a
touch that comes after the flag gets it at once. So the accounts that streamed a flagged track are
flagged too, including those that streamed it before anything was known about the track.

Why a stage after the decision and not a feature before it: a flag is the job's own output, and a
feature computed from it would need a feedback edge from the decision back to the window stage; what
an event saw would then depend on how far the flag had travelled when the event arrived (the engines'
timing), never identical in replay, Beam and Flink. Here the touches and the flags meet in the target's
keyed state, in the cooldown stage (keyed by subject, the target's key is its subject key), which
already sees both in the same per-key order on every engine.

Exactness: which (rule, subject, target, flagged window) pairs act is independent of the order the
target's touches and flags arrive in (a pair acts when both are in, whichever comes last), as long as a
target never holds more than ``max_subjects`` subjects per rule (beyond 5/4 of that, the least recently
active are forgotten down to it; counted, ``forgotten`` below). Each
action's id is a function of that pair (anchor ``u:<target key>:<window>``), so it is emitted once per
pair on every engine; its ``event_id`` is the subject's first touch of the target and its event time
the later of that touch and the window's first flag.

State per target: versioned bytes (layout v1 below), dropped once the watermark passes
``expires_at_ms``; the engines keep it beside the cooldown gate's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from streamwarden.operators.policy.cooldown import rule_hash, subject_key_for
from streamwarden.operators.policy.decider import EventInput, action_id, subject_id
from streamwarden.operators.policy.policy import Policy, Unwind
from streamwarden.schemas import streamwarden_pb2 as pb

STATE_LAYOUT_VERSION = 1
TOUCH_TAG = 0x00
"""First byte of a touch payload. An ``Action``'s bytes never start with it (field number 0 is not
valid protobuf), so the cooldown stage tells touches from actions by one byte."""

_HEAD = struct.Struct("<BqIII")  # version, high-water mark, n flags, n touches, n emitted
_FLAG = struct.Struct("<IqqI")  # rule hash, window, first flag time, flags
_TOUCH = struct.Struct("<IqqIdI")  # rule hash, first/last touch time, touches, share base, action length
_BASE = struct.Struct("<d")
_EMIT = struct.Struct("<IqH")  # rule hash, window, subject length
_U16 = struct.Struct("<H")
_NO_TIME = -(1 << 62)
_TRIM_EVERY_MS = 60_000
"""Expired entries are looked for once per minute of a target's event time, not at every payload."""


@dataclass(slots=True)
class Touched:
    """One subject's touches of the target for one rule: the first (its pending action), the last, how
    many, and the largest ``share_of`` value seen with them."""

    first_ms: int
    last_ms: int
    count: int
    base: float
    action: bytes


@dataclass(slots=True)
class TargetState:
    """A target's flags, remembered touches and emitted pairs, for every unwind rule."""

    high_ms: int = _NO_TIME
    flags: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    """(rule hash, window) → (first flag time in that window, flagging actions seen in it)."""
    touched: dict[tuple[int, str], Touched] = field(default_factory=dict)
    """(rule hash, subject id) → touches."""
    emitted: set[tuple[int, int, str]] = field(default_factory=set)
    """(rule hash, window, subject id) already acted on."""
    trimmed_ms: int = _NO_TIME
    """High-water mark at the last expiry pass (not encoded: a decoded state is trimmed at once)."""

    def __bool__(self) -> bool:
        return bool(self.flags or self.touched or self.emitted)


def encode_state(s: TargetState) -> bytes:
    """Layout v1: ``<BqIII`` head, then flags ``<IqqI``, touches ``<IqqIdI`` + subject (u16 length +
    UTF-8) + the pending Action bytes, emitted ``<IqH`` + subject; each part sorted, so equal states
    give equal bytes."""
    out = [_HEAD.pack(STATE_LAYOUT_VERSION, s.high_ms, len(s.flags), len(s.touched), len(s.emitted))]
    out += [_FLAG.pack(h, w, t, n) for (h, w), (t, n) in sorted(s.flags.items())]
    for (h, subj), t in sorted(s.touched.items()):
        raw = subj.encode("utf-8")
        head = _TOUCH.pack(h, t.first_ms, t.last_ms, t.count, t.base, len(t.action))
        out += [head, _U16.pack(len(raw)), raw, t.action]
    for h, w, subj in sorted(s.emitted):
        raw = subj.encode("utf-8")
        out += [_EMIT.pack(h, w, len(raw)), raw]
    return b"".join(out)


def decode_state(data: bytes | None) -> TargetState:
    """Inverse of ``encode_state``; ``None`` or empty is the empty state."""
    s = TargetState()
    if not data:
        return s
    if data[0] != STATE_LAYOUT_VERSION:
        raise ValueError(f"reputation state layout v{data[0]} is not v{STATE_LAYOUT_VERSION}")
    _, s.high_ms, nf, nt, ne = _HEAD.unpack_from(data, 0)
    pos = _HEAD.size
    for _ in range(nf):
        h, w, t, n = _FLAG.unpack_from(data, pos)
        pos += _FLAG.size
        s.flags[(h, w)] = (t, n)
    for _ in range(nt):
        h, first, last, count, base, n = _TOUCH.unpack_from(data, pos)
        pos += _TOUCH.size
        (ns,) = _U16.unpack_from(data, pos)
        pos += 2
        subj = data[pos : pos + ns].decode("utf-8")
        pos += ns
        s.touched[(h, subj)] = Touched(first, last, count, base, bytes(data[pos : pos + n]))
        pos += n
    for _ in range(ne):
        h, w, ns = _EMIT.unpack_from(data, pos)
        pos += _EMIT.size
        s.emitted.add((h, w, data[pos : pos + ns].decode("utf-8")))
        pos += ns
    if pos != len(data):
        raise ValueError(f"reputation state has {len(data) - pos} trailing bytes")
    return s


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    hash: int
    unwind: Unwind
    subject_kind: str
    share_index: int | None


@dataclass(slots=True)
class StepResult:
    """What one payload did to a target: actions to emit, the new state (None: nothing left)."""

    actions: list[pb.Action]
    state: TargetState | None
    forgotten: int
    event_time_ms: int
    """The event time of the touch or the flagging action."""


class ReputationBook:
    """The policy's unwind rules, compiled: touches out of the decider, flags and matches per target."""

    def __init__(
        self,
        policy: Policy,
        feature_names: Sequence[str],
        *,
        max_delay_ms: int,
        clock: Callable[[], int],
    ) -> None:
        self.policy_version = policy.version
        self.max_delay_ms = max_delay_ms
        self._clock = clock
        index = {name: i for i, name in enumerate(feature_names)}
        self.rules: dict[str, _Rule] = {
            r.id: _Rule(
                r.id,
                rule_hash(r.id),
                r.unwind,
                r.subject,
                None if r.unwind.share_of is None else index[r.unwind.share_of],
            )
            for r in policy.rules
            if r.unwind is not None
        }
        self._min_slack = min((r.unwind.max_subjects * 5 // 4 for r in self.rules.values()), default=0)
        flaggers: dict[str, list[_Rule]] = {}
        for r in self.rules.values():
            for f in r.unwind.flagged_by:
                flaggers.setdefault(f, []).append(r)
        self._flaggers: Mapping[str, list[_Rule]] = flaggers

    # ---- the decider's side

    def touch(
        self, action: pb.Action, facts: EventInput, values: Sequence[float]
    ) -> tuple[str, bytes] | None:
        """``(target key, touch payload)`` for an unwind rule's action (``values``: the event's feature
        vector); None if the event has no target. Payload: the tag, the ``share_of`` value (f64), the
        Action bytes."""
        rule = self.rules[action.reasons[0]]
        target = subject_id(facts, rule.unwind.target)
        if not target:
            return None
        base = 0.0 if rule.share_index is None else float(values[rule.share_index])
        if base != base:  # NaN (an imputed block): no share can be required of it
            base = 0.0
        payload = b"".join((bytes([TOUCH_TAG]), _BASE.pack(base), action.SerializeToString()))
        return subject_key_for(rule.unwind.target, target), payload

    def flags(self, action: pb.Action) -> bool:
        """Whether an admitted action flags its subject for some unwind rule."""
        return bool(self._flaggers) and bool(action.reasons) and action.reasons[0] in self._flaggers

    # ---- the target's side (keyed by target key, in the cooldown stage)

    def step(self, key: str, payload: bytes | pb.Action, state: TargetState | None) -> StepResult:
        """Apply a touch payload, or an admitted flagging action, to the target ``key``'s state (changed
        in place; engines that keep bytes wrap it with ``decode_state``/``encode_state``)."""
        s = state if state is not None else TargetState()
        out: list[pb.Action] = []
        if isinstance(payload, pb.Action):
            action = payload
            self._flag(key, action, s, out)
        else:
            (base,) = _BASE.unpack_from(payload, 1)
            raw = payload[1 + _BASE.size :]
            action = pb.Action.FromString(raw)
            self._touch(key, action, raw, base, s, out)
        forgotten = self._trim(s)
        return StepResult(out, s if s else None, forgotten, action.event_time_ms)

    def _flag(self, key: str, action: pb.Action, s: TargetState, out: list[pb.Action]) -> None:
        t = action.event_time_ms
        s.high_ms = max(s.high_ms, t)
        for rule in self._flaggers.get(action.reasons[0], ()):
            w = t // rule.unwind.within_ms
            first, n = s.flags.get((rule.hash, w), (t, 0))
            first, n = min(first, t), n + 1
            s.flags[(rule.hash, w)] = (first, n)
            if n == rule.unwind.min_flags:  # the window just became flagged: unwind its touches
                for (h, subj), touched in sorted(s.touched.items()):
                    if h == rule.hash:
                        self._match(key, rule, w, first, subj, touched, s, out)

    def _touch(
        self, key: str, action: pb.Action, raw: bytes, base: float, s: TargetState, out: list[pb.Action]
    ) -> None:
        rule = self.rules[action.reasons[0]]
        t = action.event_time_ms
        s.high_ms = max(s.high_ms, t)
        subj = action.subject.id
        touched = s.touched.get((rule.hash, subj))
        if touched is None:
            touched = s.touched[(rule.hash, subj)] = Touched(t, t, 1, base, raw)
        else:
            if t <= touched.first_ms and (t, action.event_id) < (touched.first_ms, _event_id(touched.action)):
                touched.first_ms, touched.action = t, raw
            touched.last_ms = max(touched.last_ms, t)
            touched.count += 1
            touched.base = max(touched.base, base)
        for (h, w), (first_flag, n) in sorted(s.flags.items()) if s.flags else ():
            if h == rule.hash and n >= rule.unwind.min_flags:
                self._match(key, rule, w, first_flag, subj, touched, s, out)

    def _match(
        self,
        key: str,
        rule: _Rule,
        w: int,
        first_flag_ms: int,
        subj: str,
        touched: Touched,
        s: TargetState,
        out: list[pb.Action],
    ) -> None:
        W = rule.unwind.within_ms
        if touched.first_ms >= (w + 2) * W or touched.last_ms < (w - 1) * W:
            return
        if (rule.hash, w, subj) in s.emitted:
            return
        u = rule.unwind
        if touched.count < u.min_touches or touched.count < u.min_share * touched.base:
            return
        s.emitted.add((rule.hash, w, subj))
        action = pb.Action.FromString(touched.action)
        action.action_id = action_id(self.policy_version, rule.id, rule.subject_kind, subj, f"u:{key}:{w}")
        action.event_time_ms = max(touched.first_ms, first_flag_ms)
        action.decision_time_ms = self._clock()
        out.append(action)

    def _trim(self, s: TargetState) -> int:
        """Drop what no later payload can match (behind the target's high-water mark by more than
        two windows and the allowed delay; looked for once per ``_TRIM_EVERY_MS``), then the oldest
        touches beyond a rule's ``max_subjects``."""
        if s.high_ms - s.trimmed_ms >= _TRIM_EVERY_MS:
            s.trimmed_ms = s.high_ms
            horizon = {
                r.hash: (s.high_ms - self.max_delay_ms - 2 * r.unwind.within_ms, r.unwind.within_ms)
                for r in self.rules.values()
            }
            if s.touched:
                s.touched = {k: t for k, t in s.touched.items() if t.last_ms >= horizon[k[0]][0]}
            if s.flags:
                s.flags = {
                    k: t for k, t in s.flags.items() if (k[1] + 2) * horizon[k[0]][1] >= horizon[k[0]][0]
                }
            if s.emitted:
                s.emitted = {e for e in s.emitted if (e[1] + 2) * horizon[e[0]][1] >= horizon[e[0]][0]}
        # Over the limit, a rule's oldest subjects go in one sweep down to the limit, once its count
        # passes 5/4 of it: a busy target sorts its subjects once per limit/4 touches, not per touch.
        if len(s.touched) <= self._min_slack:
            return 0
        forgotten = 0
        for rule in self.rules.values():
            h, cap = rule.hash, rule.unwind.max_subjects
            mine = [(t.last_ms, k[1]) for k, t in s.touched.items() if k[0] == h]
            if len(mine) <= cap + cap // 4:
                continue
            mine.sort()
            for _, subj in mine[: len(mine) - cap]:
                del s.touched[(h, subj)]
                forgotten += 1
        return forgotten

    def expires_at_ms(self, s: TargetState | None) -> int | None:
        """Event time (watermark) from which the state can no longer change an action: clear it then."""
        if not s:
            return None
        longest = max((r.unwind.within_ms for r in self.rules.values()), default=0)
        return s.high_ms + self.max_delay_ms + 3 * longest


def _event_id(action_bytes: bytes) -> str:
    return pb.Action.FromString(action_bytes).event_id


__all__ = [
    "STATE_LAYOUT_VERSION",
    "TOUCH_TAG",
    "ReputationBook",
    "StepResult",
    "TargetState",
    "decode_state",
    "encode_state",
]
