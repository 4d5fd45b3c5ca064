"""Model cards: ``models/<name>/model.yaml`` says what an ONNX file is and how to feed it.

A card pins the ONNX bytes (sha256), the ordered input feature names (which must equal the feature
spec's), the tensor names, the decision threshold and how the model was trained and evaluated.
``load_model_card`` checks all of it and raises ``ModelError`` naming the file at start-up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamwarden.operators.errors import ModelError
from streamwarden.operators.policy.yaml_source import format_validation, read_yaml

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
"""Where the shipped models live (``models/<name>/model.yaml``)."""
DEFAULT_MODEL_NAMES = ("gbt", "logreg")
DEFAULT_MODEL = "gbt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metrics(_Strict):
    """Held-out metrics of the positive class at the card's threshold (PR-AUC is threshold-free)."""

    precision: float = Field(ge=0, le=1, description="TP / (TP + FP) at the threshold.")
    recall: float = Field(ge=0, le=1, description="TP / (TP + FN) at the threshold.")
    pr_auc: float = Field(
        ge=0, le=1, description="Area under the precision-recall curve (average precision)."
    )
    positives: int = Field(ge=0, description="Positive rows evaluated.")
    negatives: int = Field(ge=0, description="Negative rows evaluated.")


class EvalMetrics(_Strict):
    """Overall metrics and one entry per traffic scenario."""

    overall: Metrics = Field(description="All held-out rows.")
    per_scenario: dict[str, Metrics] = Field(
        default_factory=dict,
        description="Per scenario: that scenario's positives against all negatives.",
    )


class TrainingInfo(_Strict):
    """How the model was produced; ``streamwarden train`` with these seeds reproduces it."""

    seed: int = Field(description="Traffic generator seed of the training data.")
    eval_seed: int = Field(description="Traffic generator seed of the held-out evaluation data.")
    algorithm: str = Field("", description="Estimator, e.g. sklearn GradientBoostingClassifier.")
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator hyper-parameters.")
    labeling: str = Field("", description="How events were labelled positive.")
    train_rows: int = Field(0, ge=0, description="Rows used for training.")
    eval_rows: int = Field(0, ge=0, description="Rows used for evaluation.")
    target_precision: float = Field(0.99, gt=0, le=1, description="Precision the threshold was chosen for.")
    metrics: EvalMetrics = Field(description="Held-out metrics (eval_seed).")


class ModelCard(_Strict):
    """The contents of ``model.yaml``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Model name; scores are keyed by it.")
    version: str = Field(min_length=1, description="Model version written into each Action.")
    description: str = Field("", description="What the model is, for humans.")
    onnx_file: str = Field(min_length=1, description="ONNX file, relative to the card's folder.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the ONNX file (lower-case hex).")
    feature_names: tuple[str, ...] = Field(description="Input columns in order; must equal the feature spec.")
    input_name: str = Field(min_length=1, description="ONNX input tensor: float32 [batch, n_features].")
    output_name: str = Field(
        min_length=1, description="ONNX output tensor of class probabilities [batch, classes]."
    )
    positive_class_index: int = Field(1, ge=0, description="Column of the positive (abusive) class.")
    threshold: float = Field(
        ge=0, le=1, description="Score at or above which the model calls an event abusive."
    )
    training: TrainingInfo = Field(description="Training data, parameters and held-out metrics.")
    created_ms: int = Field(ge=0, description="When the card was written (ms since epoch, UTC).")
    created: str = Field(description="created_ms as an ISO-8601 UTC timestamp, for humans.")

    @field_validator("onnx_file")
    @classmethod
    def _relative(cls, value: str) -> str:
        p = Path(value)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a path inside the card's folder (relative, no '..')")
        return value

    @field_validator("feature_names")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one feature")
        dups = sorted({n for n in value if value.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate feature names {dups}")
        return value

    @field_validator("created")
    @classmethod
    def _iso_utc(cls, value: str) -> str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
        if parsed.utcoffset() is None or parsed.utcoffset() != UTC.utcoffset(None):
            raise ValueError("must be in UTC with an explicit offset (e.g. 2025-01-01T00:00:00Z)")
        return value

    @model_validator(mode="after")
    def _created_agrees(self) -> ModelCard:
        created_ms = int(datetime.fromisoformat(self.created).timestamp() * 1000)
        if abs(created_ms - self.created_ms) > 1:
            raise ValueError(f"created {self.created} does not match created_ms {self.created_ms}")
        return self


def iso_utc(time_ms: int) -> str:
    """``2025-01-01T00:00:00.000Z`` for a ms timestamp."""
    return (
        datetime.fromtimestamp(time_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class LoadedCard:
    """A validated card with the ONNX bytes it vouches for (read once, so what was hashed is what runs)."""

    card: ModelCard
    card_path: Path
    onnx_path: Path
    onnx_bytes: bytes
    card_sha256: str


def feature_mismatch(expected: Sequence[str], got: Sequence[str]) -> str | None:
    """A one-line description of how two ordered name lists differ, or ``None`` if equal."""
    if tuple(expected) == tuple(got):
        return None
    missing = [n for n in expected if n not in set(got)]
    extra = [n for n in got if n not in set(expected)]
    if missing or extra:
        return f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}" + (
            "..." if len(extra) > 5 else ""
        )
    first = next(i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b)
    return (
        f"same names in another order: position {first} is {got[first]!r}, the spec has {expected[first]!r}"
    )


def load_model_card(path: Path, feature_names: Sequence[str] | None = None) -> LoadedCard:
    """Read, validate and verify a card and its ONNX file; ``ModelError`` names the file on any problem.

    ``feature_names`` (the feature spec's ordered names) must equal the card's when given.
    """
    source = read_yaml(path, ModelError)
    try:
        card = ModelCard.model_validate(source.data)
    except ValidationError as exc:
        raise ModelError(format_validation(source, exc)) from None
    onnx_path = path.parent / card.onnx_file
    try:
        onnx_bytes = onnx_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: onnx_file: {onnx_path} does not exist") from None
    except OSError as exc:
        raise ModelError(f"{path}: onnx_file: cannot read {onnx_path}: {exc}") from None
    actual = sha256_hex(onnx_bytes)
    if actual != card.sha256:
        raise ModelError(
            f"{path}: sha256: {onnx_path} has sha256 {actual}, the card says {card.sha256} "
            "(file changed or card stale; retrain or fix the card)"
        )
    if feature_names is not None:
        diff = feature_mismatch(feature_names, card.feature_names)
        if diff is not None:
            raise ModelError(f"{path}: feature_names do not match the feature spec: {diff}")
    card_sha = sha256_hex(path.read_bytes())
    return LoadedCard(
        card=card, card_path=path, onnx_path=onnx_path, onnx_bytes=onnx_bytes, card_sha256=card_sha
    )


def dump_model_card(card: ModelCard, path: Path) -> None:
    """Write ``card`` as YAML (field order as declared, stable across runs)."""
    text = yaml.safe_dump(card.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)
    path.write_text(text, encoding="utf-8")


def default_card_paths(names: Sequence[str] = DEFAULT_MODEL_NAMES) -> list[Path]:
    """``models/<name>/model.yaml`` for the shipped models."""
    return [MODELS_DIR / name / "model.yaml" for name in names]
