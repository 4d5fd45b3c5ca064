"""Feature spec: the shipped default, stable names, and errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.features.spec import DEFAULT_SPEC_PATH, EVENT_FEATURES, default_spec, load_spec


def test_default_spec_names_are_unique_ordered_and_stable():
    spec = default_spec()
    names = spec.feature_names()
    assert len(names) == len(set(names)) == 202
    assert names[: len(EVENT_FEATURES)] == [f"event.{n}" for n in EVENT_FEATURES]
    # Blocks follow ENTITY_KINDS order; inside a block windows are major, ratios come last.
    kinds = [n.split(".")[0] for n in names[len(EVENT_FEATURES) :]]
    assert list(dict.fromkeys(kinds)) == [
        "account",
        "ip",
        "device",
        "target_content",
        "target_account",
        "asn",
    ]
    for must in ("ip.distinct_account.1h", "account.count_play.10m", "ip.ratio_login_failed.10m"):
        assert must in names
    assert names.index("account.count_event.1m") < names.index("account.count_event.10m")
    assert names.index("account.count_login_failed.24h") < names.index("account.ratio_short_play.1m")
    assert spec.fingerprint() == load_spec(DEFAULT_SPEC_PATH).fingerprint()


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _base() -> dict:
    return yaml.safe_load(DEFAULT_SPEC_PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["windows"].update({"7s": {"length_ms": 7000, "bucket_ms": 2000}}), "not a multiple"),
        (lambda d: d["entities"]["ip"]["windows"].append("2h"), "unknown window '2h'"),
        (
            lambda d: d["entities"]["ip"]["groups"][0]["aggregations"].append(
                {"name": "x", "op": "sum", "field": "ip"}
            ),
            "aggregations",
        ),
        (
            lambda d: d["entities"]["ip"]["groups"][0]["aggregations"].append(
                {"name": "count_event", "op": "count"}
            ),
            "duplicate aggregation",
        ),
        (
            lambda d: d["entities"]["ip"]["ratios"].append(
                {"name": "r", "numerator": "distinct_account", "denominator": "count_event"}
            ),
            "distinct count",
        ),
        (lambda d: d["entities"]["asn"]["groups"][0].update({"event_types": ["PLAY"]}), "never reach"),
        (lambda d: d.update({"surprise": 1}), "surprise"),
        (lambda d: d["entities"].update({"planet": d["entities"]["ip"]}), "entities.planet"),
    ],
)
def test_invalid_specs_name_file_and_field(tmp_path, mutate, message):
    data = _base()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_spec(bad)
