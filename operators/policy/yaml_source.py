"""YAML loading that remembers where each value came from, so errors can name file, line and field.

Config errors for policies and model cards read ``file:line: rules[2] (id=x): condition: message``:
the line comes from the YAML node tree, the path from pydantic's error location.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Loc = Sequence[str | int]


@dataclass(frozen=True, slots=True)
class YamlSource:
    """A parsed YAML document plus its node tree (for line numbers)."""

    path: str
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the deepest node along ``loc`` that exists in the document."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                        child = value_node
                        line = key_node.start_mark.line + 1
                        break
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
            ):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line


def read_yaml(path: Path, error: Callable[[str], Exception]) -> YamlSource:
    """Parse ``path`` as one YAML mapping; any problem raises ``error(message naming the file)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(f"{path}: file not found") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return YamlSource(path=str(path), data=data, root=root)


def format_loc(loc: Loc, data: Any) -> str:
    """``rules[2] (id=spam-block).condition`` from a pydantic location; list items that carry
    an ``id`` are labelled with it so the reader finds the rule without counting."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" (id={node['id']})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def format_validation(source: YamlSource, exc: ValidationError) -> str:
    """One line per problem: ``file:line: field path: message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        line = source.line_of(loc)
        where = f"{source.path}:{line}" if line is not None else source.path
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{where}: {format_loc(loc, source.data)}: {msg}")
    return "\n".join(lines)
