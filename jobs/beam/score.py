"""Scoring stage (not keyed), micro-batched within a bundle: one ONNX run per model per batch.

Vectors are buffered until ``max_batch`` are pending or the bundle ends; the source ends a bundle at
least every ``bundle_max_ms``, so buffering adds at most that much latency. A scored batch goes on as
one element (a list of ``(vector, scores)``, stamped with its latest element's timestamp): the decision
stage then also runs per batch, which saves the DirectRunner's per-element cost (~30 µs per element and
DoFn here). Outputs from ``finish_bundle`` reach the fused downstream stages (and the sinks' flush)
before the bundle completes, so the source commits offsets only after them.

A batch whose run raises is scored again vector by vector (``Stages.score_each``): a vector that
raises alone becomes an ``OPERATOR_ERROR`` dead letter (``jobs/beam/guard.py``), the others go on with
the same scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from streamwarden.jobs.beam.decode import METRICS_NAMESPACE
from streamwarden.jobs.beam.guard import OperatorErrors
from streamwarden.operators.features.assemble import FeatureVector
from streamwarden.operators.pipeline import Stages, StagesConfig

Scored = tuple[FeatureVector, dict[str, float]]
ScoredBatch = list[Scored]


class ScoreFn(beam.DoFn):
    """``FeatureVector``s → ``[(vector, {model: score}), ...]`` per micro-batch of up to ``max_batch``."""

    def __init__(self, config: StagesConfig, *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._config = config
        self._max_batch = max_batch
        self._batch_sizes = Metrics.distribution(METRICS_NAMESPACE, "score_batch_size")
        self._errors = OperatorErrors("score")

    def setup(self) -> None:
        self._stages = Stages.shared(self._config)
        _ = self._stages.scoring  # load the models now, not on the first event

    def start_bundle(self) -> None:
        self._vectors: list[FeatureVector] = []
        self._latest: Timestamp | None = None
        self._window: Any = None

    def process(
        self,
        vector: FeatureVector,
        ts: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterator[WindowedValue | TaggedOutput]:
        if self._window is not None and window != self._window:
            yield from self._flush()  # a batch never spans windows
        self._vectors.append(vector)
        self._window = window
        if self._latest is None or ts > self._latest:
            self._latest = ts
        if len(self._vectors) >= self._max_batch:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue | TaggedOutput]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue | TaggedOutput]:
        vectors = self._vectors
        if not vectors:
            return
        self._vectors = []
        self._batch_sizes.update(len(vectors))
        batch, failed = self._stages.score_each(vectors)
        latest = self._latest if self._latest is not None else Timestamp(0)
        self._latest = None
        out = WindowedValue(batch, latest, (self._window,))
        for vector, exc in failed:
            yield self._errors.windowed(self._stages, vector[0], exc, out)
        if batch:
            yield out
