"""Policy rules over features and model scores, turned into ``Action``s (engine-free).

Engines call ``load_policy`` once at start-up, build a ``Decider`` (keyed by event) and a
``CooldownGate`` (keyed by ``subject_key``), and call ``Decider.decide`` per event.
"""

from streamwarden.operators.policy.cooldown import CooldownGate, CooldownTable, subject_key
from streamwarden.operators.policy.decider import Decider, action_id, subject_id
from streamwarden.operators.policy.policy import DEFAULT_POLICY_PATH, Policy, Rule, load_policy, parse_policy

__all__ = [
    "DEFAULT_POLICY_PATH",
    "CooldownGate",
    "CooldownTable",
    "Decider",
    "Policy",
    "Rule",
    "action_id",
    "load_policy",
    "parse_policy",
    "subject_id",
    "subject_key",
]
