"""Statements stage: each admitted action → its DSA statement of reasons (``Stages.statements``: one for
an enforcing restriction, none otherwise), chained after the cooldown, keyed like the action (subject
key) for the statements sink."""

from __future__ import annotations

from collections.abc import Iterator

from pyflink.common import Row
from pyflink.datastream import FlatMapFunction, RuntimeContext

from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.operators.pipeline import Stages, StagesConfig
from streamwarden.schemas import streamwarden_pb2 as pb


class StatementsFunction(FlatMapFunction):  # type: ignore[misc]
    """``Row(subject key bytes, Action bytes)`` → ``Row(subject key bytes, StatementOfReasons bytes)``."""

    def __init__(self, config: StagesConfig) -> None:
        self._config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        self._counters = StageCounters(runtime_context, ("statements",))

    def close(self) -> None:
        self._counters.flush()

    def flat_map(self, value: Row) -> Iterator[Row]:
        for s in self._stages.statements(pb.Action.FromString(value[1])):
            self._counters.inc("statements")
            yield Row(value[0], s.SerializeToString())
