"""Decision stage (not keyed): policy rules over one event's features and scores → actions, keyed by
subject for the cooldown stage; optionally the feature-log record of every event (side output
``features_tag()``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from streamwarden.jobs.flink.env import keyed_bytes_type
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.score import Scored
from streamwarden.operators.pipeline import Stages, StagesConfig


def features_tag() -> OutputTag:
    """The side output of feature-log records: ``Row(event id bytes, FeatureRecord bytes)``."""
    return OutputTag("features", keyed_bytes_type())


class DecideFunction(ProcessFunction):  # type: ignore[misc]
    """``(vector, scores)`` → ``Row(subject key, Action bytes)`` per action before the cooldown; with
    ``write_features`` also ``Row(event id, FeatureRecord bytes)`` on ``features_tag()``."""

    def __init__(self, config: StagesConfig, *, write_features: bool = False) -> None:
        self._config = config
        self._write_features = write_features

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        _ = self._stages.decider
        self._tag = features_tag()
        self._counters = StageCounters(runtime_context, ("decided_events", "events_with_late_partials"))

    def close(self) -> None:
        self._counters.flush()

    def process_element(self, element: Scored, ctx: ProcessFunction.Context) -> Iterator[Any]:
        vector, scores = element
        stages = self._stages
        for o in stages.maybe_reload(int(time.time() * 1000)):  # checks files every reload_interval_ms
            self._counters.inc_labelled("reloads", what=o.what, outcome="applied" if o.ok else "refused")
        self._counters.inc("decided_events")
        if vector[3]:
            self._counters.inc("events_with_late_partials")
        if self._write_features:
            record = stages.feature_record(vector)
            yield self._tag, Row(vector[0].encode("utf-8"), record.SerializeToString())
        for action in stages.decide(vector, scores):
            yield Row(stages.cooldown_key(action), action.SerializeToString())
