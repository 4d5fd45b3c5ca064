"""TrafficSpec: defaults, YAML loading, errors that name the file and the field."""

from __future__ import annotations

from collections import Counter

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.traffic import SCENARIO_NAMES, TrafficSpec, iter_traffic, labels, load_spec
from streamwarden.operators.traffic.spec import TRAP_NAMES, ScenariosSpec, TrapsSpec


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(TrafficSpec)
    for name in SCENARIO_NAMES:
        walk(type(getattr(ScenariosSpec(), name)))
    for name in TRAP_NAMES:
        walk(type(getattr(TrapsSpec(), name)))


@pytest.mark.slow
def test_default_spec_is_a_reproducible_run_with_every_scenario_once():
    spec = TrafficSpec()
    assert spec.start_ms == TrafficSpec().start_ms  # fixed, not "now"
    records = list(iter_traffic(spec))
    assert 50_000 <= len(records) <= 100_000
    per_scenario = Counter(r.scenario for r in records)
    assert set(per_scenario) == {None, *SCENARIO_NAMES}
    spans = {label.scenario: (label.start_ms, label.end_ms) for label in labels(spec)}
    assert set(spans) == set(SCENARIO_NAMES)
    # A quiet baseline before the first attack, for detectors to learn from.
    assert min(start for start, _ in spans.values()) - spec.start_ms >= 60_000


def test_load_spec_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "seed: 9\nduration_s: 60\nscenarios:\n  spam_burst: {enabled: false}\n  streaming_farm: {accounts: 12}\n"
    )
    spec = load_spec(path, duration_s=30.0, seed=None)
    assert spec.seed == 9
    assert spec.duration_s == 30.0
    assert not spec.scenarios.spam_burst.enabled
    assert spec.scenarios.streaming_farm.accounts == 12
    assert spec.scenarios.streaming_farm.ips == 4  # untouched defaults stay


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("seed: 1\nbogus: 2\n", "bogus"),
        ("scenarios:\n  spam_burst: {accounts: 0}\n", "scenarios.spam_burst.accounts"),
        ("scenarios:\n  no_such_attack: {}\n", "scenarios.no_such_attack"),
        ("late_fraction: 2\n", "late_fraction"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("seed: [\n", "not valid YAML"),
    ],
)
def test_bad_spec_errors_name_file_and_field(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_missing_file_and_unknown_scenario_name(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unknown scenario"):
        TrafficSpec().without_scenarios("not_a_scenario")


def test_malformed_kinds_required_when_malformed_records_wanted():
    with pytest.raises(ValueError, match="malformed_kinds"):
        TrafficSpec(malformed_fraction=0.1, malformed_kinds=())
    assert TrafficSpec(malformed_fraction=0.0, malformed_kinds=()).malformed_kinds == ()
