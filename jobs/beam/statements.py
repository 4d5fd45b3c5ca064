"""Statements stage: each admitted action → its DSA statement of reasons (``Stages.statements``: one for
an enforcing restriction, none otherwise), keyed like the action (subject key) for the statements sink."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics.metric import Metrics

from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.schemas import streamwarden_pb2 as pb


class StatementsFn(beam.DoFn):
    """``(subject key bytes, Action bytes)`` → ``(subject key bytes, StatementOfReasons bytes)``."""

    def __init__(self, config: StagesConfig) -> None:
        self._config = config
        self._count = Metrics.counter(METRICS_NAMESPACE, "statements")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)

    def process(self, element: tuple[bytes, bytes]) -> Iterator[tuple[bytes, bytes]]:
        key, payload = element
        for s in self._stages.statements(pb.Action.FromString(payload)):
            self._count.inc()
            yield key, s.SerializeToString()
