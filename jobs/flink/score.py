"""Scoring stage: ONNX models over feature vectors, micro-batched.

Two bindings, chosen by ``score_batch`` in the job options:

* ``ScoreFunction`` (``score_batch <= 1``): not keyed, chained into the assembly's Python operator;
  one ``Stages.score`` call per vector.
* ``ScoreBatchFunction`` (``score_batch > 1``): keyed by a score shard (``shard_of``; the job picks one
  shard key per subtask, so each subtask keeps one buffer and scores in arrival order). Vectors are
  buffered and scored together when ``score_batch`` are pending or ``flush_ms`` after the first one
  (a processing-time timer), and at the end of a bounded input (an event-time timer at the final
  watermark). PyFlink thread mode gives Python no bundle-end or pre-checkpoint hook, so the buffer is
  also kept in Flink state (``MapState[int, bytes]`` of ``encode_vector`` bytes): a checkpoint taken
  while vectors wait holds them, and a restored instance scores them on its first timer or element.

Output ``(vector, {model: score})`` for the decision stage. A vector whose scoring raises is an
``OPERATOR_ERROR`` dead letter on ``dead_letter_tag()`` (``jobs/flink/guard.py``); a micro-batch whose run
raises is scored again vector by vector (``Stages.score_each``), so only the vectors that raise alone
fail, and the others keep their scores.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, ProcessFunction, RuntimeContext

from streamwarden.jobs.flink.guard import OperatorErrors
from streamwarden.jobs.flink.metrics import StageCounters
from streamwarden.jobs.flink.state import bytes_map_state
from streamwarden.operators.features.assemble import FeatureVector
from streamwarden.operators.features.facts_codec import decode_facts, encode_facts
from streamwarden.operators.pipeline import Stages, StagesConfig

Scored = tuple[FeatureVector, dict[str, float]]
FINAL_WATERMARK_MS = 2**63 - 1
"""Flink's watermark at the end of a bounded input (``Long.MAX_VALUE``): fires every event-time timer."""

# ---------------------------------------------------------------- vector codec

VECTOR_LAYOUT_VERSION = 1
_VEC_HEADER = struct.Struct("<BHHqI")
_U16 = struct.Struct("<H")


def encode_vector(v: FeatureVector) -> bytes:
    """Vector layout v1: ``<BHHqI`` (version, value count, imputed-name count, late kinds mask, facts
    byte length, 0 = no facts), the values as f64, the event id and each imputed name as u16 length +
    UTF-8, then the facts (``encode_facts``)."""
    eid, values, imputed, late, facts = v
    fb = encode_facts(facts) if facts is not None else b""
    out = [
        _VEC_HEADER.pack(VECTOR_LAYOUT_VERSION, len(values), len(imputed), late, len(fb)),
        struct.pack(f"<{len(values)}d", *values),
    ]
    for text in (eid, *imputed):
        raw = text.encode("utf-8")
        out.append(_U16.pack(len(raw)))
        out.append(raw)
    out.append(fb)
    return b"".join(out)


def decode_vector(data: bytes) -> FeatureVector:
    """Inverse of ``encode_vector``; raises ``ValueError`` on another layout version."""
    version, n_values, n_imputed, late, n_facts = _VEC_HEADER.unpack_from(data, 0)
    if version != VECTOR_LAYOUT_VERSION:
        raise ValueError(f"vector layout v{version} is not v{VECTOR_LAYOUT_VERSION}")
    pos = _VEC_HEADER.size
    values = struct.unpack_from(f"<{n_values}d", data, pos)
    pos += 8 * n_values
    texts: list[str] = []
    for _ in range(1 + n_imputed):
        (n,) = _U16.unpack_from(data, pos)
        pos += _U16.size
        texts.append(data[pos : pos + n].decode("utf-8"))
        pos += n
    facts = decode_facts(data[pos : pos + n_facts]) if n_facts else None
    return FeatureVector(texts[0], values, tuple(texts[1:]), late, facts)


def shard_of(event_id: str, shards: list[str]) -> str:
    """The score shard (key of ``ScoreBatchFunction``) of an event."""
    return shards[zlib.crc32(event_id.encode("utf-8")) % len(shards)] if len(shards) > 1 else shards[0]


# ---------------------------------------------------------------- bindings


class ScoreFunction(ProcessFunction):  # type: ignore[misc]
    """``FeatureVector`` → ``(vector, scores)``, one vector per ONNX run (no buffering)."""

    def __init__(self, config: StagesConfig) -> None:
        self._config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        _ = self._stages.scoring  # load the models now, not on the first event
        self._counters = StageCounters(runtime_context, ())
        self._errors = OperatorErrors("score", self._stages, self._counters)

    def close(self) -> None:
        self._counters.flush()

    def process_element(self, vector: FeatureVector, ctx: ProcessFunction.Context) -> Iterator[Any]:
        try:
            scores = self._stages.score((vector,))[0]
        except Exception as exc:  # one event must never stop the job: it becomes a dead letter
            yield self._errors.output(vector[0], exc)
            return
        yield vector, scores


class ToScoreShard(ProcessFunction):  # type: ignore[misc]
    """``FeatureVector`` → ``Row(score shard, vector bytes)`` (chained after the assembly)."""

    def __init__(self, shards: list[str]) -> None:
        if not shards:
            raise ValueError("at least one shard key")
        self._shards = shards

    def process_element(self, vector: FeatureVector, ctx: ProcessFunction.Context) -> Iterator[Row]:
        yield Row(shard_of(vector[0], self._shards), encode_vector(vector))


class ScoreBatchFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Vector bytes keyed by score shard → ``(vector, scores)`` in micro-batches (see module doc)."""

    def __init__(self, config: StagesConfig, *, max_batch: int = 256, flush_ms: int = 20) -> None:
        if max_batch < 1 or flush_ms < 1:
            raise ValueError("max_batch and flush_ms must be >= 1")
        self._config = config
        self._max_batch = max_batch
        self._flush_ms = flush_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._stages = Stages.shared(self._config)
        _ = self._stages.scoring
        self._buffer_state = bytes_map_state(runtime_context, "score-buffer", Types.INT())
        self._buffers: dict[str, list[FeatureVector]] = {}
        """Per shard key the vectors waiting (mirrors the state; absent = not loaded yet)."""
        self._counters = StageCounters(runtime_context, ("score_batches", "scored_vectors"))
        self._errors = OperatorErrors("score", self._stages, self._counters)

    def close(self) -> None:
        self._counters.flush()

    def _buffer(self, shard: str, ctx: Any) -> list[FeatureVector]:
        buffer = self._buffers.get(shard)
        if buffer is None:  # first sight of this shard in this instance: take over what the state holds
            buffer = [decode_vector(raw) for _, raw in sorted(self._buffer_state.items())]
            self._buffers[shard] = buffer
            ctx.timer_service().register_event_time_timer(FINAL_WATERMARK_MS)
        return buffer

    def process_element(self, raw: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        buffer = self._buffer(ctx.get_current_key(), ctx)
        buffer.append(decode_vector(raw))
        if len(buffer) >= self._max_batch:
            yield from self._flush(buffer)
            return
        self._buffer_state.put(len(buffer), raw)
        if len(buffer) == 1:
            now_ms = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now_ms + self._flush_ms)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        buffer = self._buffer(ctx.get_current_key(), ctx)
        if buffer:
            yield from self._flush(buffer)

    def _flush(self, buffer: list[FeatureVector]) -> Iterator[Any]:
        vectors = list(buffer)
        buffer.clear()
        self._buffer_state.clear()
        self._counters.inc("score_batches")
        self._counters.inc("scored_vectors", len(vectors))
        scored, failed = self._stages.score_each(vectors)
        for vector, exc in failed:
            yield self._errors.output(vector[0], exc)
        yield from scored
