"""Loading validated YAML configs: one place for "file not found", "not valid YAML" and pydantic errors
rendered as ``FILE: field.path: reason`` lines (every spec, policy and job config uses it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from streamwarden.operators.errors import ConfigError


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``source: field.path: message``."""
    return "\n".join(
        f"{source}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
        for err in exc.errors()
    )


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the offending line: PyYAML's message quotes it, and in a config that line
    may hold a password."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
        return where + (what or type(exc).__name__)
    return type(exc).__name__


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is ``{}``); errors name the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data
