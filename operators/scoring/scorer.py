"""ONNX scoring of feature micro-batches, with hot reload that never drops a working model.

``Scorer`` wraps one model card and one onnxruntime session: ``score_batch`` turns a micro-batch of
feature vectors into one float32 array (one ``run`` per batch). ``ScoringEngine`` runs several
models over the same batch and returns ``{model name: scores}``. Both engines' bindings use these
two classes and nothing else from onnxruntime.

Reload: ``reload()`` re-reads the card and ONNX file and swaps the session only if everything
validates (sha256, feature names, tensor names, a trial run); otherwise the previous model stays and
the reason is returned (and kept in ``last_error``). ``maybe_reload()`` does that only when the
files' mtime/size changed, so an engine can call it once per bundle or on a timer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# At module level on purpose: in PyFlink thread mode, onnxruntime's module init takes the GIL through
# PyGILState_Ensure and deadlocks when it first runs on a later operator's thread (measured: a lazy
# import hung the MiniCluster job at the decide stage), so every stage imports it with operators.pipeline.
import onnxruntime as ort

from streamwarden.operators.errors import ModelError
from streamwarden.operators.scoring.model_card import (
    LoadedCard,
    ModelCard,
    default_card_paths,
    load_model_card,
)

Rows = Sequence[Sequence[float]] | npt.NDArray[Any]
Scores = npt.NDArray[np.float32]
_Fingerprint = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """Outcome of a reload attempt: ``reloaded`` if a new model is live, ``error`` if it was rejected."""

    model: str
    reloaded: bool
    version: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Live:
    loaded: LoadedCard
    session: Any
    input_name: str
    output_name: str
    positive: int
    n_features: int


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


class Scorer:
    """One model card, one onnxruntime session (CPUExecutionProvider).

    ``feature_names`` is the feature spec's ordered names; the card must list exactly these.
    ``intra_op_threads``/``inter_op_threads`` size onnxruntime's pools (1 = run on the caller's
    thread, the right choice when the engine already runs one scorer per core).
    """

    def __init__(
        self,
        card_path: Path,
        *,
        feature_names: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        if intra_op_threads < 0 or inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 = onnxruntime's default)")
        self.card_path = Path(card_path)
        self.feature_names = tuple(feature_names) if feature_names is not None else None
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.last_error: str | None = None
        self._live = self._build()
        self._fingerprint = self._files_fingerprint(self._live.loaded)

    # ---- the model in use ----------------------------------------------------------------------

    @property
    def card(self) -> ModelCard:
        return self._live.loaded.card

    @property
    def name(self) -> str:
        return self._live.loaded.card.name

    @property
    def version(self) -> str:
        return self._live.loaded.card.version

    @property
    def threshold(self) -> float:
        return self._live.loaded.card.threshold

    @property
    def n_features(self) -> int:
        return self._live.n_features

    # ---- scoring -------------------------------------------------------------------------------

    def score_batch(self, rows: Rows) -> Scores:
        """Positive-class probability per row, float32, shape ``(len(rows),)``; one ``run`` per call."""
        live = self._live
        x = np.asarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != live.n_features:
            if x.size == 0:
                return np.zeros(0, dtype=np.float32)
            raise ValueError(
                f"{self.name}: expected rows of {live.n_features} features, got an array of shape {x.shape}"
            )
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        probabilities = live.session.run([live.output_name], {live.input_name: x})[0]
        return np.ascontiguousarray(probabilities[:, live.positive], dtype=np.float32)

    def score_one(self, row: Sequence[float] | npt.NDArray[Any]) -> float:
        """Score of a single feature vector (a batch of one)."""
        return float(self.score_batch(np.asarray(row, dtype=np.float32).reshape(1, -1))[0])

    # ---- loading and reloading -----------------------------------------------------------------

    def _build(self) -> _Live:
        loaded = load_model_card(self.card_path, self.feature_names)
        card = loaded.card
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                loaded.onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{loaded.onnx_path}: onnxruntime cannot load it: {exc}") from None
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if card.input_name not in inputs:
            raise ModelError(
                f"{self.card_path}: input_name {card.input_name!r} is not an input of the model ({list(inputs)})"
            )
        if card.output_name not in outputs:
            raise ModelError(
                f"{self.card_path}: output_name {card.output_name!r} is not an output of the model ({outputs})"
            )
        shape = inputs[card.input_name].shape
        n_features = len(card.feature_names)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_features):
            raise ModelError(
                f"{self.card_path}: input {card.input_name!r} has shape {shape}, "
                f"the card lists {n_features} features"
            )
        try:
            trial = session.run([card.output_name], {card.input_name: np.zeros((2, n_features), np.float32)})[
                0
            ]
        except Exception as exc:
            raise ModelError(f"{loaded.onnx_path}: trial run failed: {exc}") from None
        trial = np.asarray(trial)
        if trial.ndim != 2 or trial.shape[0] != 2 or trial.shape[1] <= card.positive_class_index:
            raise ModelError(
                f"{self.card_path}: output {card.output_name!r} has shape {trial.shape}; expected "
                f"[batch, classes] with column {card.positive_class_index} (export with zipmap disabled)"
            )
        return _Live(
            loaded, session, card.input_name, card.output_name, card.positive_class_index, n_features
        )

    @staticmethod
    def _files_fingerprint(loaded: LoadedCard) -> _Fingerprint:
        return (_stat(loaded.card_path), _stat(loaded.onnx_path))

    def _current_fingerprint(self) -> _Fingerprint:
        return (_stat(self.card_path), _stat(self._live.loaded.onnx_path))

    def reload(self) -> ReloadResult:
        """Load the card and model again; swap only if valid. Unchanged content is not swapped."""
        fingerprint = self._current_fingerprint()
        try:
            candidate = self._build()
        except ModelError as exc:
            self._fingerprint = fingerprint
            self.last_error = str(exc)
            return ReloadResult(self.name, False, self.version, str(exc))
        self._fingerprint = self._files_fingerprint(candidate.loaded)
        self.last_error = None
        old = self._live.loaded
        if (candidate.loaded.card_sha256, candidate.loaded.card.sha256) == (old.card_sha256, old.card.sha256):
            return ReloadResult(self.name, False, self.version)
        self._live = candidate
        return ReloadResult(self.name, True, self.version)

    def maybe_reload(self) -> ReloadResult | None:
        """``reload()`` if the card or ONNX file changed on disk since last seen, else ``None``."""
        if self._current_fingerprint() == self._fingerprint:
            return None
        return self.reload()


class ScoringEngine:
    """Several scorers over the same feature vectors: ``{model name: scores}`` per batch."""

    def __init__(self, scorers: Sequence[Scorer]) -> None:
        if not scorers:
            raise ValueError("a ScoringEngine needs at least one scorer")
        names = [s.name for s in scorers]
        if len(set(names)) != len(names):
            raise ModelError(f"model names must be unique, got {names}")
        self.scorers = tuple(scorers)

    @classmethod
    def from_cards(
        cls,
        card_paths: Sequence[Path] | None = None,
        *,
        feature_names: Sequence[str] | None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> ScoringEngine:
        """Load each card (default: the shipped models) against the feature spec's names."""
        paths = list(card_paths) if card_paths is not None else default_card_paths()
        return cls(
            [
                Scorer(
                    p,
                    feature_names=feature_names,
                    intra_op_threads=intra_op_threads,
                    inter_op_threads=inter_op_threads,
                )
                for p in paths
            ]
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.scorers)

    @property
    def model_version(self) -> str:
        """``name@version`` of every model, joined by ``+``: the Action's ``model_version``."""
        return "+".join(f"{s.name}@{s.version}" for s in self.scorers)

    @property
    def thresholds(self) -> dict[str, float]:
        """Model name → card threshold (resolves ``threshold.<model>`` in policies)."""
        return {s.name: s.threshold for s in self.scorers}

    def score_batch(self, rows: Rows) -> dict[str, Scores]:
        """Every model's scores for the batch (the rows are converted to float32 once)."""
        x = np.asarray(rows, dtype=np.float32)
        return {s.name: s.score_batch(x) for s in self.scorers}

    def score_rows(self, rows: Rows) -> list[dict[str, float]]:
        """Per row ``{model name: score}``, the shape the decider takes."""
        batch = self.score_batch(rows)
        columns = [(name, scores.tolist()) for name, scores in batch.items()]
        n = len(columns[0][1])
        return [{name: values[i] for name, values in columns} for i in range(n)]

    def maybe_reload(self) -> Mapping[str, ReloadResult]:
        """Reload the models whose files changed; results only for those."""
        out = {}
        for s in self.scorers:
            result = s.maybe_reload()
            if result is not None:
                out[s.name] = result
        return out
