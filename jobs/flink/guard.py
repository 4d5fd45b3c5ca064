"""Per-record guard of the Flink stages after fan-out (velocity, assembly, scoring, decision).

An exception while one event is processed in one of these stages makes that event an ``OPERATOR_ERROR``
dead letter (``Stages.event_error``: the stage, the event id, the exception type and message; source
partition and offset -1, which these stages no longer know) on the stage's side output
``dead_letter_tag()`` (the decoder's tag), keyed by the event id, instead of failing the task (and,
after the restart strategy's attempts, the job, on the same record every time). Counter
``operator_errors.<stage>`` in the operator's ``streamwarden`` metric group.

``dead_letters(...)`` is the union of the decoder's dead letters and these, for the dead-letter sink.
"""

from __future__ import annotations

import logging
from typing import Any

from pyflink.common import Row
from pyflink.datastream import OutputTag

from streamwarden.jobs.flink.decode import dead_letter_tag
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.operators.pipeline import Stages

LOG = logging.getLogger("streamwarden.operator_errors")


class OperatorErrors:
    """The dead letters and the counter of one stage's operator errors."""

    def __init__(self, stage: str, stages: Stages, counters: StageCounters) -> None:
        self.stage = stage
        self._stages = stages
        self._counters = counters
        self._counter = f"operator_errors.{stage}"
        self._tag = dead_letter_tag()

    def output(self, event_id: str, exc: BaseException) -> tuple[OutputTag, Row]:
        """Count the error; the ``(tag, Row(event id, DeadLetter bytes))`` side output."""
        self._counters.inc_named(self._counter)
        LOG.warning("%s: event %s failed: %s: %s", self.stage, event_id, type(exc).__name__, exc)
        letter = self._stages.event_error(event_id, self.stage, exc)
        return self._tag, Row(event_id.encode("utf-8"), letter.SerializeToString())


def dead_letters(decoded: Any, *stages: Any) -> Any:
    """The dead letters of the decode stage and of the guarded ``stages`` (the velocity, assemble,
    score and decide streams): one stream for the dead-letter sink."""
    tag = dead_letter_tag()
    out = decoded.get_side_output(tag)
    others = [s.get_side_output(tag) for s in stages]
    return out.union(*others) if others else out
