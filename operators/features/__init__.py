"""Velocity features: spec, fan-out, sliding-window key state, assembly and offline replay.

Engine bindings use: ``FanOut`` (event → facts + keys), ``KeyState`` (the compiled core's per-key
entry point: ``on_event``, ``expiry_ms``; bytes via ``state_codec``) built from ``compile_plans(spec)``,
``event_partial`` and ``Assembler`` (``add``/``expire``). ``VelocityPipeline``/``replay`` run the same
chain in one process through the core's batch entry point.
"""

from streamwarden.operators.features.assemble import Assembler, FeatureVector, event_features, event_partial
from streamwarden.operators.features.fanout import EntityKey, EventFacts, FanOut
from streamwarden.operators.features.replay import ReplayStats, VelocityPipeline, VelocityStore, replay
from streamwarden.operators.features.spec import FeatureSpec, default_spec, load_spec
from streamwarden.operators.features.state_codec import StateFormatError
from streamwarden.operators.features.window import KeyState, KindPlan, PartialFeatures, compile_plans

__all__ = [
    "Assembler",
    "EntityKey",
    "EventFacts",
    "FanOut",
    "FeatureSpec",
    "FeatureVector",
    "KeyState",
    "KindPlan",
    "PartialFeatures",
    "ReplayStats",
    "StateFormatError",
    "VelocityPipeline",
    "VelocityStore",
    "compile_plans",
    "default_spec",
    "event_features",
    "event_partial",
    "load_spec",
    "replay",
]
