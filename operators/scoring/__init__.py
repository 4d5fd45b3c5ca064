"""ONNX model scoring (engine-free): model cards, a micro-batch scorer with safe hot reload,
and a multi-model engine. Engines build a ``ScoringEngine`` once and call ``score_batch``."""

from streamwarden.operators.scoring.model_card import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_NAMES,
    MODELS_DIR,
    LoadedCard,
    ModelCard,
    default_card_paths,
    load_model_card,
)
from streamwarden.operators.scoring.scorer import ReloadResult, Scorer, ScoringEngine

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_NAMES",
    "MODELS_DIR",
    "LoadedCard",
    "ModelCard",
    "ReloadResult",
    "Scorer",
    "ScoringEngine",
    "default_card_paths",
    "load_model_card",
]
