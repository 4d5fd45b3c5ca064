"""Job config: defaults, YAML + environment, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamwarden.jobs.config import JobConfig, load_config, stages_config
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


@pytest.mark.parametrize(
    "password", ["#Hunter2", "abc #tail", "123456", "'quoted'", '"dq"', "sp ace ", "a: b"]
)
def test_environment_strings_are_taken_verbatim(password: str) -> None:
    cfg = load_config(None, environ={"STREAMWARDEN_KAFKA__SASL_PASSWORD": password})
    assert cfg.kafka.client_config()["sasl.password"] == password
    assert password not in repr(cfg)


def test_environment_numbers_mappings_and_unknown_fields() -> None:
    env = {"STREAMWARDEN_ALLOWED_LATENESS_MS": "5000", "STREAMWARDEN_KAFKA__EXTRA": '{"client.id": "a#b"}'}
    cfg = load_config(None, environ=env)
    assert cfg.allowed_lateness_ms == 5000
    assert cfg.kafka.extra == {"client.id": "a#b"}
    with pytest.raises(ConfigError, match="allowed_lateness_ms"):
        load_config(None, environ={"STREAMWARDEN_ALLOWED_LATENESS_MS": "soon"})


def test_yaml_syntax_error_on_the_password_line_does_not_print_it(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("kafka:\n  sasl_username: u\n  sasl_password: s3cr3t: [oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    assert "s3cr3t" not in message and "oops" not in message


def test_record_limits_reach_the_stages(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("limits:\n  max_id_bytes: 64\n  max_record_bytes: 4096\n")
    job = load_config(path, environ={})
    limits = stages_config(job).limits
    assert (limits.max_id_bytes, limits.max_record_bytes) == (64, 4096)
    path.write_text("limits:\n  max_id_bytes: 70000\n")
    with pytest.raises(ConfigError, match=r"limits\.max_id_bytes"):
        load_config(path, environ={})
