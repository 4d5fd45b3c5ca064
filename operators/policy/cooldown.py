"""Per-subject cooldown: at most one action per (rule, subject) per aligned event-time window.

The gate is the small keyed state an engine keeps *by subject* (``subject_key``), separate from the
decider (which runs keyed by event). Its state is bytes with a versioned layout, so Flink's
``ValueState[bytes]``, Beam's ``ReadModifyWriteState`` and the offline replay store it alike.

Why aligned windows (``window = event_time_ms // cooldown_ms``) instead of "N ms since the last
action": the window is a function of the event alone, and the gate remembers the *set* of windows
it admitted, so the set of (rule, subject, window) actions that pass, and their ids (decider.py), is
the same whatever order the subject's events arrive in, i.e. the same in Beam, Flink and the replay.
Only *which* event of a window carries the action (the first to arrive) depends on arrival order;
with the same per-subject order the actions are identical field for field.

``max_delay_ms`` (allowed out-of-orderness + allowed lateness of the job) bounds how far back the
remembered set reaches: an event more than that behind the newest event of its subject would have
been dropped as late upstream, and is dropped here too. State is therefore at most
``max_delay_ms / cooldown_ms + 2`` windows per rule, and can be cleared once the watermark passes
``expires_at_ms``.

Layout v1: ``0x01`` then one 12-byte entry per admitted (rule, window), sorted:
``u32 crc32(rule id) | i64 window`` (big-endian). Rule ids are hashed so entries are fixed-size and
decode in one ``struct.iter_unpack``; the gate rejects a policy whose rule ids collide.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.policy.policy import Policy
from streamwarden.schemas import streamwarden_pb2 as pb

STATE_LAYOUT_VERSION = 1
DEFAULT_MAX_DELAY_MS = 120_000
_ENTRY = struct.Struct(">Iq")
_HEADER = bytes([STATE_LAYOUT_VERSION])
_KIND_NAMES = {v.number: v.name.lower() for v in pb.EntityKind.DESCRIPTOR.values}

Entry = tuple[int, int]  # (crc32 of the rule id, window index)


def rule_hash(rule_id: str) -> int:
    """The 32-bit tag of a rule id in the state bytes."""
    return zlib.crc32(rule_id.encode("utf-8"))


def subject_key(action: pb.Action) -> str:
    """The key the gate's state is partitioned by, e.g. ``ip:203.0.113.7``."""
    return subject_key_for(_KIND_NAMES.get(action.subject.kind, "unknown"), action.subject.id)


def subject_key_for(kind: str, subject_id: str) -> str:
    """``subject_key`` of a subject given by its kind name (``ip``) and id: the reputation stage keys a
    touch by its target with it, so touches meet the actions on that target."""
    return f"{kind}:{subject_id}"


def encode_state(entries: Iterable[Entry]) -> bytes:
    """Admitted (rule hash, window) pairs as layout-v1 bytes (sorted, so equal sets give equal bytes)."""
    ordered = sorted(entries)
    return _HEADER + b"".join(_ENTRY.pack(h, w) for h, w in ordered)


def decode_state(state: bytes | None) -> list[Entry]:
    """Inverse of ``encode_state``; ``None`` or empty bytes is the empty state."""
    if not state:
        return []
    if state[0] != STATE_LAYOUT_VERSION:
        raise ValueError(f"cooldown state layout v{state[0]} is not v{STATE_LAYOUT_VERSION}")
    if (len(state) - 1) % _ENTRY.size:
        raise ValueError(f"cooldown state of {len(state)} bytes is not 1 + n * {_ENTRY.size}")
    return list(_ENTRY.iter_unpack(memoryview(state)[1:]))


class CooldownGate:
    """Admits or drops the decider's actions, given the subject's state bytes."""

    def __init__(self, policy: Policy, *, max_delay_ms: int = DEFAULT_MAX_DELAY_MS) -> None:
        if max_delay_ms < 0:
            raise ValueError("max_delay_ms must be >= 0")
        self.max_delay_ms = max_delay_ms
        self.cooldown_ms = {rule.id: rule.cooldown_ms for rule in policy.rules if rule.cooldown_ms > 0}
        self._hash = {rule_id: rule_hash(rule_id) for rule_id in self.cooldown_ms}
        self._cooldown_by_hash = {self._hash[r]: ms for r, ms in self.cooldown_ms.items()}
        if len(self._cooldown_by_hash) != len(self._hash):
            raise ConfigError(f"{policy.source_path}: two rule ids with a cooldown share a crc32; rename one")

    def gated(self, action: pb.Action) -> bool:
        """Whether this action goes through the gate at all (its rule has a cooldown)."""
        return bool(action.reasons) and action.reasons[0] in self.cooldown_ms

    def admit(self, action: pb.Action, state: bytes | None) -> tuple[bool, bytes | None]:
        """``(emit?, new state)`` for one action of the subject whose state is ``state``."""
        if not action.reasons or action.reasons[0] not in self.cooldown_ms:
            return True, state
        rule_id = action.reasons[0]
        cooldown_ms = self.cooldown_ms[rule_id]
        h = self._hash[rule_id]
        window = action.event_time_ms // cooldown_ms
        entries = decode_state(state)
        newest = window
        for eh, w in entries:
            if eh == h:
                if w == window:
                    return False, state
                if w > newest:
                    newest = w
        oldest_kept = (newest * cooldown_ms - self.max_delay_ms) // cooldown_ms
        if window < oldest_kept:
            return False, state  # behind the subject's newest event by more than the allowed delay
        live = self._cooldown_by_hash
        kept = [(eh, w) for eh, w in entries if eh in live and (eh != h or w >= oldest_kept)]
        kept.append((h, window))
        return True, encode_state(kept)

    def expires_at_ms(self, state: bytes | None) -> int | None:
        """Event time (watermark) from which the state can no longer change a decision: clear it then."""
        live = self._cooldown_by_hash
        ends = [(w + 1) * live[h] + self.max_delay_ms for h, w in decode_state(state) if h in live]
        return max(ends) if ends else None


class CooldownTable:
    """The gate with its per-subject states in a dict: for the offline replay and tests."""

    def __init__(self, policy: Policy, *, max_delay_ms: int = DEFAULT_MAX_DELAY_MS) -> None:
        self.gate = CooldownGate(policy, max_delay_ms=max_delay_ms)
        self.states: dict[str, bytes] = {}

    def filter(self, actions: Iterable[pb.Action]) -> list[pb.Action]:
        """The actions the gate admits, in order, updating the per-subject states."""
        out = []
        for action in actions:
            if not self.gate.gated(action):
                out.append(action)
                continue
            key = subject_key(action)
            ok, state = self.gate.admit(action, self.states.get(key))
            if ok:
                out.append(action)
                if state is not None:
                    self.states[key] = state
        return out

    def expire(self, watermark_ms: int) -> int:
        """Drop states the watermark has passed; returns how many were dropped."""
        stale = [k for k, s in self.states.items() if (self.gate.expires_at_ms(s) or 0) <= watermark_ms]
        for key in stale:
            del self.states[key]
        return len(stale)
