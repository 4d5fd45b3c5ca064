"""The actions file (``streamwarden eval --actions-out FILE``): what a run did, for any scorer to re-score.

Two encodings, chosen by the file name:

- ``*.jsonl``: JSON lines, one ``streamwarden.v1.Action`` per line in the proto3 JSON mapping with the
  proto field names (``action_id``, ``event_id``, ``subject`` {``kind``: ``"ACCOUNT"``, ``id``},
  ``verdict``, ``reasons``, ``mode``, ``event_time_ms`` ...; 64-bit integers are strings, as the
  mapping says);
- anything else: length-delimited protobuf (each record its byte length as a base-128 varint, then one
  serialized ``Action``), the framing of the events file.

Actions are written in the order the run emitted them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from streamwarden.operators.errors import ConfigError
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import read_delimited, write_delimited


def _is_jsonl(path: Path) -> bool:
    return path.suffix == ".jsonl"


def write_actions(path: Path, actions: Iterable[pb.Action]) -> int:
    """Write ``actions`` to ``path`` (encoding by suffix, see the module docstring); returns how many."""
    if _is_jsonl(path):
        n = 0
        with path.open("w", encoding="utf-8") as out:
            for a in actions:
                data = json_format.MessageToDict(a, preserving_proto_field_name=True)
                out.write(json.dumps(data, sort_keys=True, separators=(",", ":")))
                out.write("\n")
                n += 1
        return n
    with path.open("wb") as raw:
        return write_delimited(raw, (a.SerializeToString() for a in actions))


def read_actions(path: Path) -> list[pb.Action]:
    """Read an actions file written by ``write_actions`` (or by anyone, in the same format); errors name
    the file (and the line for JSON lines)."""
    out: list[pb.Action] = []
    try:
        if _is_jsonl(path):
            with path.open(encoding="utf-8") as src:
                for lineno, line in enumerate(src, 1):
                    if not line.strip():
                        continue
                    try:
                        out.append(json_format.Parse(line, pb.Action()))
                    except json_format.ParseError as exc:
                        raise ConfigError(f"{path}:{lineno}: not an Action: {exc}") from exc
            return out
        with path.open("rb") as raw:
            for i, payload in enumerate(read_delimited(raw)):
                try:
                    out.append(pb.Action.FromString(payload))
                except DecodeError as exc:
                    raise ConfigError(f"{path}: record {i} is not an Action: {exc}") from exc
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return out
