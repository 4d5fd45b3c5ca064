"""Ground truth of generated traffic: one JSON line per labeled entity, never inside the events."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamwarden.operators.errors import ConfigError

ENTITY_KINDS: tuple[str, ...] = ("account", "ip", "device", "target_content", "target_account", "asn")
"""Label entity kinds, in the order ``labels`` lists them."""


REQUIRED_KEYS: frozenset[str] = frozenset({"scenario", "entity_kind", "entity_id", "start_ms", "end_ms"})
OPTIONAL_KEYS: frozenset[str] = frozenset({"first_ms", "benign"})
"""``first_ms``: the subject's own first abusive event (default ``start_ms``); ``benign``: ``true`` marks a
known-benign subject (a false-positive trap: any action on it is a false positive of that trap)."""


@dataclass(frozen=True, slots=True)
class Label:
    """``entity_kind``/``entity_id`` took part in ``scenario`` during [start_ms, end_ms) of event time.

    ``first_ms`` is when this subject itself first acted in the scenario (time to action is measured from
    it; ``None`` = ``start_ms``). ``benign`` marks a known-benign subject of a trap scenario (an organic
    surge, a shared NAT, a power user): labeled so that actions on it count as that trap's false positives.
    """

    scenario: str
    entity_kind: str
    entity_id: str
    start_ms: int
    end_ms: int
    first_ms: int | None = None
    benign: bool = False

    @property
    def abusive(self) -> bool:
        return not self.benign

    @property
    def onset_ms(self) -> int:
        """The subject's first abusive event time (``first_ms``, else ``start_ms``)."""
        return self.start_ms if self.first_ms is None else self.first_ms

    def to_json(self) -> str:
        """One JSON line (no newline), keys in a fixed order; optional keys only when set."""
        data: dict[str, Any] = asdict(self)
        if self.first_ms is None:
            del data["first_ms"]
        if not self.benign:
            del data["benign"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Label:
        """Parse one label line (the five required keys, optionally ``first_ms`` and ``benign``);
        raises ``ValueError`` on anything else."""
        data: Any = json.loads(line)
        if not isinstance(data, dict) or not REQUIRED_KEYS <= set(data) <= REQUIRED_KEYS | OPTIONAL_KEYS:
            raise ValueError(f"not a label line: {line!r}")
        if data["entity_kind"] not in ENTITY_KINDS:
            raise ValueError(f"unknown entity_kind {data['entity_kind']!r}")
        benign = data.get("benign", False)
        if not isinstance(benign, bool):
            raise ValueError(f"benign must be true or false, got {benign!r}")
        first = data.get("first_ms")
        return cls(
            scenario=str(data["scenario"]),
            entity_kind=str(data["entity_kind"]),
            entity_id=str(data["entity_id"]),
            start_ms=int(data["start_ms"]),
            end_ms=int(data["end_ms"]),
            first_ms=None if first is None else int(first),
            benign=benign,
        )


def write_labels(path: Path, labels: Iterable[Label]) -> int:
    """Write ``labels`` as JSON lines to ``path``; returns how many."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for label in labels:
            out.write(label.to_json())
            out.write("\n")
            n += 1
    return n


def read_labels(path: Path) -> list[Label]:
    """Read a labels file; a bad line raises ``ConfigError`` naming the file and line number."""
    labels = []
    with path.open(encoding="utf-8") as src:
        for lineno, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                labels.append(Label.from_json(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{lineno}: {exc}") from exc
    return labels
