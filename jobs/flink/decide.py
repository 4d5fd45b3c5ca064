"""Decision stage (not keyed): policy rules over one event's features and scores → actions, keyed by
subject for the cooldown stage; optionally the feature-log record of every event (side output
``features_tag()``). An exception for one event makes it an ``OPERATOR_ERROR`` dead letter on
``dead_letter_tag()`` (``jobs/flink/guard.py``): none of its outputs is emitted, the job goes on.

Metrics (group ``streamwarden``, ``jobs/flink/metrics.py``): histogram ``event_to_decision_ms``, the
wall-clock time of the decision minus the event's time, per decided event (as the Beam job's
distribution of that name: it includes the time the event took to reach Kafka and the job's input lag;
a replay of old traffic shows its age); gauge ``versions`` = 1 with labels ``model_version`` (as in
``Action.model_version``) and ``policy_version`` of what runs now (0 for what a hot reload replaced),
like ``streamwarden_versions_info`` of the Beam/local job (Flink's Prometheus reporter writes
``_`` for every other character than letters, digits and ``_`` in label values: ``2026_12_1``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from streamwarden.jobs.flink.env import keyed_bytes_type
from streamwarden.jobs.flink.guard import OperatorErrors
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.score import Scored
from streamwarden.operators.pipeline import Stages, StagesConfig


def features_tag() -> OutputTag:
    """The side output of feature-log records: ``Row(event id bytes, FeatureRecord bytes)``."""
    return OutputTag("features", keyed_bytes_type())


def report_versions(stages: Stages, counters: StageCounters) -> None:
    """Gauge ``versions``: the model and policy versions running now."""
    counters.info("versions", model_version=stages.model_version, policy_version=stages.policy.version)


def reload_files(stages: Stages, counters: StageCounters, now_ms: int) -> None:
    """Hot-reload the policy and models if their files changed (checked every ``reload_interval_ms``);
    count each attempt (``reloads``: what, applied or refused) and report the versions after one."""
    reloads = stages.maybe_reload(now_ms)
    for o in reloads:
        counters.inc_labelled("reloads", what=o.what, outcome="applied" if o.ok else "refused")
    if reloads:
        report_versions(stages, counters)


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
        self._errors = OperatorErrors("decide", self._stages, self._counters)
        self._latency = self._counters.histogram("event_to_decision_ms")
        report_versions(self._stages, self._counters)

    def close(self) -> None:
        self._counters.flush()

    def process_element(self, element: Scored, ctx: ProcessFunction.Context) -> Iterator[Any]:
        vector, scores = element
        stages = self._stages
        now_ms = int(time.time() * 1000)
        reload_files(stages, self._counters, now_ms)
        try:
            record = stages.feature_record(vector).SerializeToString() if self._write_features else b""
            actions = [Row(key, payload) for key, payload in stages.decide_keyed(vector, scores)]
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            yield self._errors.output(vector[0], exc)
            return
        self._counters.inc("decided_events")
        facts = vector[4]
        if facts is not None:
            self._latency.update(max(0, now_ms - facts[1]))
        if vector[3]:
            self._counters.inc("events_with_late_partials")
        if self._write_features:
            yield self._tag, Row(vector[0].encode("utf-8"), record)
        yield from actions
