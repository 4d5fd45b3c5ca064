"""Velocity features: spec, fan-out, sliding-window key state, assembly and offline replay.

Engine bindings use: ``FanOut`` (event → facts + keys), ``KeyState`` (``on_event``, ``expiry_ms``,
``to_bytes``/``from_bytes``) built from ``compile_plans(spec)``, ``event_partial`` and ``Assembler``
(``add``/``expire``). ``VelocityPipeline``/``replay`` run the same chain in one process.
"""

from operators.features.assemble import Assembler, FeatureVector, event_features, event_partial
from operators.features.fanout import EntityKey, EventFacts, FanOut
from operators.features.replay import ReplayStats, VelocityPipeline, VelocityStore, replay
from operators.features.spec import FeatureSpec, default_spec, load_spec
from operators.features.state_codec import StateFormatError
from operators.features.window import KeyState, KindPlan, PartialFeatures, compile_plans

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
