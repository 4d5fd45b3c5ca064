"""Platform fields for the parity tests: generated traffic with ``Event.attributes``, a feature spec
with an attribute-filtered feature, a policy with a rule on an attribute and a rule on that feature,
and the shipped gbt model over the wider vector (so every shipped rule decides as before)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import helper, numpy_helper

from streamwarden.operators.features.spec import DEFAULT_SPEC_PATH, load_spec
from streamwarden.operators.policy.policy import DEFAULT_POLICY_PATH
from streamwarden.operators.scoring.model_card import MODELS_DIR, dump_model_card, load_model_card, sha256_hex
from streamwarden.operators.traffic.generator import TrafficRecord
from streamwarden.schemas import streamwarden_pb2 as pb

ATTRIBUTE_RULES = ("free-plan-post-flag", "free-post-burst-review")
"""The policy's rule on an attribute and its rule on the attribute-filtered feature."""


def with_plans(records: list[TrafficRecord]) -> list[TrafficRecord]:
    """Valid events of a third of the accounts get ``plan: free``, a third ``plan: paid`` (both with a
    second attribute), the rest none; malformed records stay as they are."""
    out = []
    for r in records:
        if r.malformed is None:
            ev = pb.Event.FromString(r.payload)
            bucket = zlib.crc32(ev.actor.account_id.encode()) % 3
            if bucket:
                ev.attributes["plan"] = "free" if bucket == 1 else "paid"
                ev.attributes["region"] = "eu"
            r = r._replace(payload=ev.SerializeToString())
        out.append(r)
    return out


def write_attribute_files(work: Path) -> tuple[Path, Path, Path]:
    """(feature spec, policy, model card) in ``work``: the shipped ones plus the attribute feature
    ``account.count_free_post.<window>`` and the two ``ATTRIBUTE_RULES`` (first, no ``stop``)."""
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text(encoding="utf-8"))
    spec["version"] += 100
    spec["entities"]["account"]["groups"].append(
        {
            "name": "free_post",
            "event_types": ["COMMENT", "MESSAGE"],
            "where": {"attribute": "plan", "equals": "free"},
            "aggregations": [{"name": "count_free_post", "op": "count"}],
        }
    )
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    policy["version"] += "-attributes"
    policy["rules"][:0] = [
        {
            "id": ATTRIBUTE_RULES[0],
            "description": "Free-plan accounts posting twice in 10 minutes are flagged.",
            "event_types": ["COMMENT", "MESSAGE"],
            "condition": 'attributes["plan"] == "free" and account.count_post.10m >= 2',
            "subject": "account",
            "verdict": "flag",
            "cooldown_ms": 600_000,
        },
        {
            "id": ATTRIBUTE_RULES[1],
            "description": "Three free-plan posts in 10 minutes go to review.",
            "event_types": ["COMMENT", "MESSAGE"],
            "condition": "account.count_free_post.10m >= 3",
            "subject": "account",
            "verdict": "send_to_review",
            "cooldown_ms": 600_000,
        },
    ]
    policy_path = work / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    names = load_spec(spec_path).feature_names()
    return spec_path, policy_path, gathered_card(MODELS_DIR / "gbt" / "model.yaml", names, work / "gbt")


def gathered_card(card_path: Path, names: list[str], folder: Path) -> Path:
    """The card's model over a wider vector ``names``: a Gather in front picks its own features by
    name, so its scores are the original model's."""
    card = load_model_card(card_path).card
    model = onnx.load(str(card_path.parent / card.onnx_file))
    graph = model.graph
    outer = graph.input[0]
    inner = outer.name + "_own"
    for node in graph.node:
        node.input[:] = [inner if i == outer.name else i for i in node.input]
    picked = np.array([names.index(n) for n in card.feature_names], dtype=np.int64)
    graph.initializer.append(numpy_helper.from_array(picked, name="own_features"))
    graph.node.insert(0, helper.make_node("Gather", [outer.name, "own_features"], [inner], axis=1))
    outer.type.tensor_type.shape.dim[1].dim_value = len(names)
    folder.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    new = card.model_copy(
        update={"feature_names": tuple(names), "sha256": sha256_hex(data), "onnx_file": "model.onnx"}
    )
    dump_model_card(new, folder / "model.yaml")
    return folder / "model.yaml"
