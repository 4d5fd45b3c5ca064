"""Re-record ``golden/default/inputs.jsonl``: feature vectors of held-out generated traffic, taken from
the offline replay and scored by the shipped models (run after retraining or changing the features):

    .venv/bin/python tests/operators/policy/record_default_case.py
    .venv/bin/python -m pytest tests/operators/policy --update-golden   # then review the diff

Picks, in arrival order, for each scenario up to 7 events that draw enforced actions and 2 that do not,
and 12 organic events (6 with actions, if any), so every rule and the cooldown gate are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from google.protobuf.json_format import MessageToDict

from streamwarden.models.train import DEFAULT_EVAL_SEED, _label_index, label_event, replay_seed
from streamwarden.operators.policy import Decider, load_policy
from streamwarden.operators.scoring import ScoringEngine, default_card_paths

CASE = Path(__file__).parent / "golden" / "default"


def main() -> None:
    r = replay_seed(DEFAULT_EVAL_SEED)
    names = list(r.table.feature_names)
    engine = ScoringEngine.from_cards(default_card_paths(), feature_names=names)
    policy = load_policy(feature_names=names, model_names=engine.names)
    decider = Decider(policy, names, clock=lambda: 0, thresholds=engine.thresholds)
    index = _label_index(r.labels)
    quota: dict[tuple[str, bool], int] = {}
    picked: list[str] = []
    for start in range(0, len(r.events), 512):
        rows = engine.score_rows(r.table.values[start : start + 512])
        for i, scores in enumerate(rows):
            event = r.events[start + i]
            scenario = label_event(event, index) or "organic"
            vector = r.table.values[start + i]
            actions = decider.decide(event, vector, scores, engine.model_version)
            if scenario == "organic":
                acts = bool(actions)
                limit = 6
            else:
                acts = any(a.mode == a.ENFORCE for a in actions)
                limit = 7 if acts else 2
            key = (scenario, acts)
            if quota.get(key, 0) >= limit:
                continue
            quota[key] = quota.get(key, 0) + 1
            row = {
                "scenario": scenario,
                "event": MessageToDict(event, preserving_proto_field_name=True),
                "features": [float(v) for v in vector],
                "scores": {k: round(float(v), 7) for k, v in scores.items()},
            }
            picked.append(json.dumps(row, sort_keys=True))
    CASE.mkdir(parents=True, exist_ok=True)
    (CASE / "inputs.jsonl").write_text("\n".join(picked) + "\n")
    case = {
        "description": (
            f"Recorded: traffic seed {DEFAULT_EVAL_SEED}, offline feature replay, shipped models "
            f"({engine.model_version}); the shipped policy and feature spec. Re-record with "
            "tests/operators/policy/record_default_case.py."
        ),
        "policy": "default",
        "feature_names": "default",
        "thresholds": {k: float(v) for k, v in engine.thresholds.items()},
        "model_version": engine.model_version,
        "max_delay_ms": 120_000,
    }
    (CASE / "case.yaml").write_text(yaml.safe_dump(case, sort_keys=False, width=100))
    print(f"{len(picked)} inputs -> {CASE / 'inputs.jsonl'}; by (scenario, acts): {sorted(quota.items())}")


if __name__ == "__main__":
    main()
