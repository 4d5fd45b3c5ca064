"""``streamwarden models policy-report``: what the policy does on held-out labelled traffic.

Runs one seed's traffic through the offline feature replay, the shipped models (``ScoringEngine``),
the ``Decider`` and the cooldown gate, exactly like the jobs, then compares the actions with the
ground truth. Per rule: actions, *event precision* (share of actions taken on an event that is
positive, by the labelling rule of ``models/train.py``) and *subject precision* (share whose subject
is an entity some scenario label names). Per scenario: *recall* = share of its positive events that
are covered by an enforced action when they are decided: an action on the event itself, or an earlier
(or same-event) enforced action on one of its actor entities (account, ip, device, asn), e.g. the IP
already rate limited. The organic false-positive rate counts organic events covered the same way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from streamwarden.models.train import DEFAULT_EVAL_SEED, _label_index, label_event, replay_seed
from streamwarden.operators.policy import DEFAULT_POLICY_PATH, CooldownTable, Decider, load_policy
from streamwarden.operators.scoring import ScoringEngine, default_card_paths
from streamwarden.operators.traffic import SCENARIO_NAMES
from streamwarden.schemas import streamwarden_pb2 as pb

SCORE_BATCH = 256
ACTOR_KINDS = frozenset({pb.ACCOUNT, pb.IP, pb.DEVICE, pb.ASN})


def evaluate_policy(
    seed: int = DEFAULT_EVAL_SEED,
    *,
    policy_path: Path = DEFAULT_POLICY_PATH,
    card_paths: list[Path] | None = None,
    duration_s: float | None = None,
) -> dict[str, Any]:
    """Per-rule and per-scenario figures of the policy on seed ``seed`` (see the module docstring)."""
    r = replay_seed(seed, duration_s)
    names = list(r.table.feature_names)
    engine = ScoringEngine.from_cards(card_paths or default_card_paths(), feature_names=names)
    policy = load_policy(policy_path, feature_names=names, model_names=engine.names)
    decider = Decider(policy, names, clock=lambda: 0, thresholds=engine.thresholds, model_names=engine.names)
    gate = CooldownTable(policy)
    index = _label_index(r.labels)
    labelled_subjects = {(lab.entity_kind, lab.entity_id) for lab in r.labels}
    version = engine.model_version

    rules: dict[str, Counter[str]] = defaultdict(Counter)
    positives: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    organic_events = 0
    acted: set[tuple[int, str]] = set()
    organic_enforced = 0
    values = r.table.values
    for start in range(0, len(r.events), SCORE_BATCH):
        batch = values[start : start + SCORE_BATCH]
        rows = engine.score_rows(batch)
        for i, scores in enumerate(rows):
            event = r.events[start + i]
            scenario = label_event(event, index)
            actions = gate.filter(decider.decide(event, batch[i], scores, version))
            enforced = False
            for a in actions:
                if a.mode == pb.Action.ENFORCE:
                    enforced = True
                    if a.subject.kind in ACTOR_KINDS:
                        acted.add((a.subject.kind, a.subject.id))
            actor = event.actor
            enforced = enforced or any(
                key in acted
                for key in (
                    (pb.ACCOUNT, actor.account_id),
                    (pb.IP, actor.ip),
                    (pb.DEVICE, actor.device_id),
                    (pb.ASN, str(actor.asn) if actor.asn else ""),
                )
            )
            if scenario:
                positives[scenario] += 1
                caught[scenario] += enforced
            else:
                organic_events += 1
                organic_enforced += enforced
            for a in actions:
                c = rules[a.reasons[0]]
                c["actions"] += 1
                c["on_positive_event"] += bool(scenario)
                kind = pb.EntityKind.Name(a.subject.kind).lower()
                c["labelled_subject"] += (kind, a.subject.id) in labelled_subjects
                c[f"scenario:{scenario or 'organic'}"] += 1
    per_rule = {}
    for rule in policy.rules:
        c = rules.get(rule.id, Counter())
        n = c["actions"]
        per_rule[rule.id] = {
            "mode": rule.mode,
            "verdict": rule.verdict,
            "actions": n,
            "event_precision": round(c["on_positive_event"] / n, 4) if n else None,
            "subject_precision": round(c["labelled_subject"] / n, 4) if n else None,
            "by_scenario": {
                k.removeprefix("scenario:"): v for k, v in sorted(c.items()) if k.startswith("scenario:")
            },
        }
    per_scenario = {
        name: {"positives": positives[name], "recall": round(caught[name] / positives[name], 4)}
        for name in SCENARIO_NAMES
        if positives[name]
    }
    return {
        "seed": seed,
        "events": len(r.events),
        "policy_version": policy.version,
        "model_version": version,
        "rules": per_rule,
        "scenarios": per_scenario,
        "organic_events": organic_events,
        "organic_events_enforced": organic_enforced,
        "organic_false_positive_rate": round(organic_enforced / max(1, organic_events), 6),
    }
