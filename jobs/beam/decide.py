"""Decision stage (not keyed): policy rules over one event's features and scores → actions, keyed by
subject for the cooldown stage; optionally the feature-log record of every event (``FEATURES``). An
exception for one event makes it an ``OPERATOR_ERROR`` dead letter (``jobs/beam/guard.py``): none of
its outputs (feature record, actions) is emitted, the batch's other events go on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput

from streamwarden.jobs import observability
from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.jobs.beam.guard import OperatorErrors
from streamwarden.jobs.beam.score import ScoredBatch
from streamwarden.operators.pipeline import Stages, StagesConfig

FEATURES = "features"


class DecideFn(beam.DoFn):
    """A scored batch → ``(subject key, Action bytes)`` per action before cooldown; with
    ``write_features`` also ``(event id, FeatureRecord bytes)`` per event on ``FEATURES``."""

    def __init__(self, config: StagesConfig, *, write_features: bool = False) -> None:
        self._config = config
        self._write_features = write_features
        self._late_events = Metrics.counter(METRICS_NAMESPACE, "events_with_late_partials")
        self._latency = Metrics.distribution(METRICS_NAMESPACE, "event_to_decision_ms")
        self._errors = OperatorErrors("decide")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        _ = self._stages.decider

    def process(self, batch: ScoredBatch) -> Iterator[Any]:
        stages = self._stages
        now_ms = int(time.time() * 1000)
        reloads = stages.maybe_reload(now_ms)  # a changed policy/model file, every reload_interval_ms
        if reloads:
            observability.observe_reloads(reloads, stages.model_version, stages.policy.version)
        write_features = self._write_features
        for vector, scores in batch:
            try:
                record = stages.feature_record(vector).SerializeToString() if write_features else b""
                actions = stages.decide_keyed(vector, scores)
            except Exception as exc:  # one event must never stop the job: it becomes a dead letter
                yield self._errors.output(stages, vector[0], exc)
                continue
            if vector[3]:
                self._late_events.inc()
            if write_features:
                yield TaggedOutput(FEATURES, (vector[0].encode(), record))
            facts = vector[4]
            if facts is not None:
                self._latency.update(max(0, now_ms - facts[1]))
            yield from actions
