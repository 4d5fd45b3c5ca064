"""Per-record guard of the stages after fan-out (velocity, assembly, scoring, decision).

An exception while one event is processed in one of these stages makes that event an ``OPERATOR_ERROR``
dead letter (``Stages.event_error``: the stage, the event id, the exception type and message; no
source offset, which these stages no longer know) on the stage's ``DEAD_LETTERS`` output, keyed by the
event id, instead of failing the bundle (and with it the job: the DirectRunner retries a failed bundle
and then stops). Counters ``operator_errors.<stage>`` per stage; the Prometheus
``streamwarden_dead_letters_total{kind="OPERATOR_ERROR"}`` of ``jobs/observability.py`` counts them
with the decoder's. They are not added to the decoder's ``dead_letters`` counter: the event was
decoded and is counted in ``events``, so ``records_in = events + dead_letters`` still holds.
"""

from __future__ import annotations

import logging

from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from streamwarden.jobs import observability
from streamwarden.jobs.beam.decode import DEAD_LETTERS, METRICS_NAMESPACE
from streamwarden.operators.pipeline import Stages

LOG = logging.getLogger("streamwarden.operator_errors")


class OperatorErrors:
    """The dead letters and the counter of one stage's operator errors."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._counter = Metrics.counter(METRICS_NAMESPACE, f"operator_errors.{stage}")

    def letter(self, stages: Stages, event_id: str, exc: BaseException) -> tuple[bytes, bytes]:
        """Count the error and return the ``(event id, DeadLetter bytes)`` pair."""
        self._counter.inc()
        observability.observe_dead_letter("OPERATOR_ERROR")
        LOG.warning("%s: event %s failed: %s: %s", self.stage, event_id, type(exc).__name__, exc)
        letter = stages.event_error(event_id, self.stage, exc)
        return event_id.encode("utf-8"), letter.SerializeToString()

    def output(self, stages: Stages, event_id: str, exc: BaseException) -> TaggedOutput:
        """``letter`` on the ``DEAD_LETTERS`` output."""
        return TaggedOutput(DEAD_LETTERS, self.letter(stages, event_id, exc))

    def windowed(
        self, stages: Stages, event_id: str, exc: BaseException, value: WindowedValue
    ) -> TaggedOutput:
        """``letter`` on ``DEAD_LETTERS`` with the timestamp and windows of ``value`` (for outputs
        of ``finish_bundle``)."""
        return TaggedOutput(DEAD_LETTERS, value.with_value(self.letter(stages, event_id, exc)))
