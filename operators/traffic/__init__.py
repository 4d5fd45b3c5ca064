"""Labeled synthetic platform traffic: organic users plus named abuse scenarios, deterministic by seed.

Public API:

- ``TrafficSpec`` (what to generate; ``load_spec(path, **overrides)`` from YAML, ``small_spec(seed)`` for
  tests; ``spec.scaled_to(duration_s)``, ``spec.with_updates(...)``, ``spec.without_scenarios(...)``).
- ``iter_traffic(spec) -> Iterator[TrafficRecord]``: every record in arrival order (late events after newer
  ones, malformed records mixed in); ``TrafficRecord.payload`` is a serialized ``Event`` (or garbage).
- ``labels(spec) -> list[Label]``: the ground truth, one per (scenario, entity); never inside the events.
  ``write_labels(path, labels)`` / ``read_labels(path)`` for the JSON-lines labels file.

Same spec, same bytes: no clock, no global random state.
"""

from streamwarden.operators.traffic.generator import TrafficRecord, iter_traffic, labels
from streamwarden.operators.traffic.labels import ENTITY_KINDS, Label, read_labels, write_labels
from streamwarden.operators.traffic.spec import (
    MALFORMED_KINDS,
    SCENARIO_NAMES,
    TrafficSpec,
    load_spec,
    small_spec,
)

__all__ = [
    "ENTITY_KINDS",
    "MALFORMED_KINDS",
    "SCENARIO_NAMES",
    "Label",
    "TrafficRecord",
    "TrafficSpec",
    "iter_traffic",
    "labels",
    "load_spec",
    "read_labels",
    "small_spec",
    "write_labels",
]
