"""ONNX export of sklearn classifiers and the model card written next to them.

The exported graph takes ``features`` (float32 ``[batch, n_features]``) and returns ``probabilities``
(float32 ``[batch, 2]``, no ZipMap) plus ``label``. Opsets are pinned so the same estimator always
gives the same bytes (and so the same sha256 and model version).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from streamwarden.operators.scoring.model_card import (
    ModelCard,
    TrainingInfo,
    dump_model_card,
    iso_utc,
    sha256_hex,
)

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
VERSION_HEX_CHARS = 12


def to_onnx_bytes(estimator: Any, n_features: int, *, name: str) -> bytes:
    """Serialize a fitted sklearn classifier (or Pipeline ending in one) to ONNX bytes."""
    onx = convert_sklearn(
        estimator,
        name=name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={"zipmap": False},
        target_opset=TARGET_OPSET,
    )
    onx.doc_string = ""
    return bytes(onx.SerializeToString())


def write_model(
    folder: Path,
    *,
    name: str,
    estimator: Any,
    feature_names: Sequence[str],
    threshold: float,
    training: TrainingInfo,
    created_ms: int,
    description: str = "",
) -> Path:
    """Write ``folder/model.onnx`` and ``folder/model.yaml``; returns the card path.

    The version is the first hex digits of the ONNX sha256, so equal bytes mean equal versions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    onnx_bytes = to_onnx_bytes(estimator, len(feature_names), name=name)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    digest = sha256_hex(onnx_bytes)
    card = ModelCard(
        name=name,
        version=digest[:VERSION_HEX_CHARS],
        description=description,
        onnx_file="model.onnx",
        sha256=digest,
        feature_names=tuple(feature_names),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        positive_class_index=1,
        threshold=threshold,
        training=training,
        created_ms=created_ms,
        created=iso_utc(created_ms),
    )
    card_path = folder / "model.yaml"
    dump_model_card(card, card_path)
    return card_path
