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


@dataclass(frozen=True, slots=True)
class Label:
    """``entity_kind``/``entity_id`` took part in ``scenario`` during [start_ms, end_ms) of event time."""

    scenario: str
    entity_kind: str
    entity_id: str
    start_ms: int
    end_ms: int

    def to_json(self) -> str:
        """One JSON line (no newline), keys in a fixed order."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Label:
        """Parse one line written by ``to_json``; raises ``ValueError`` on anything else."""
        data: Any = json.loads(line)
        if not isinstance(data, dict) or set(data) != {f for f in cls.__dataclass_fields__}:
            raise ValueError(f"not a label line: {line!r}")
        if data["entity_kind"] not in ENTITY_KINDS:
            raise ValueError(f"unknown entity_kind {data['entity_kind']!r}")
        return cls(
            scenario=str(data["scenario"]),
            entity_kind=str(data["entity_kind"]),
            entity_id=str(data["entity_id"]),
            start_ms=int(data["start_ms"]),
            end_ms=int(data["end_ms"]),
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
