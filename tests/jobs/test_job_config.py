"""Job config: defaults, YAML + environment, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamwarden.jobs.config import JobConfig, load_config
from streamwarden.operators.errors import ConfigError


def test_defaults_without_file() -> None:
    cfg = load_config(None, environ={})
    assert cfg == JobConfig()
    assert cfg.kafka.client_config()["bootstrap.servers"] == "127.0.0.1:9092"


def test_yaml_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("group_id: g1\nkafka:\n  bootstrap_servers: k1:9092\n  extra:\n    client.id: sw\n")
    env = {"STREAMWARDEN_KAFKA__BOOTSTRAP_SERVERS": "k2:9093", "STREAMWARDEN_WRITE_FEATURES": "true"}
    cfg = load_config(path, environ=env)
    assert cfg.group_id == "g1"
    assert cfg.write_features is True
    conf = cfg.kafka.client_config()
    assert conf["bootstrap.servers"] == "k2:9093"
    assert conf["client.id"] == "sw"


def test_secrets_pass_through_but_never_print(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: u\n  sasl_password: hunter2\n"
    )
    cfg = load_config(path, environ={})
    assert cfg.kafka.client_config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("kafka:\n  bogus: 1\n", "kafka.bogus"),
        ("group_id: ''\n", "group_id"),
        ("engine: spark\n", "engine"),
        ("kafka:\n  security_protocol: SSH\n", "kafka.security_protocol"),
        ("allowed_lateness_ms: -1\n", "allowed_lateness_ms"),
    ],
)
def test_invalid_file_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert f": {field}:" in str(info.value)


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path, environ={})
