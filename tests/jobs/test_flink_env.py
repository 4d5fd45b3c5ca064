"""jobs/flink/env.py and connector.py without an engine: the settings we hand to Flink, the Kafka key
translation, and the pinned connector jars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.flink import connector, record_jar
from streamwarden.jobs.flink.env import REPO_ROOT, FlinkConfig, flink_settings, java_kafka_properties
from streamwarden.operators.errors import ConfigError


@pytest.fixture(scope="module")
def jars() -> list[Path]:
    return connector.connector_jars()  # the real pinned jars (fetched once into the cache if missing)


def test_connector_jars_match_their_pins(jars):
    assert [p.name for p in jars] == ["flink-connector-kafka.jar", "kafka-clients.jar"]
    for path, pin in zip(jars, connector.JARS, strict=True):
        assert connector.sha256_file(path) == pin.sha256


def test_tampered_jar_is_rejected(tmp_path):
    fake = tmp_path / "build"
    (fake / "connector").mkdir(parents=True)
    for jar in connector.JARS:
        (fake / "connector" / jar.file_name).write_bytes(b"not the real jar")
    with pytest.raises(connector.ConnectorFetchError, match="sha256"):
        connector.ensure_connector_jars(tmp_path / "out", built=fake)
    assert not list((tmp_path / "out").glob("*.jar"))


def test_connector_jars_copied_where_asked(jars, tmp_path):
    copies = connector.ensure_connector_jars(tmp_path / "lib")
    assert [p.parent for p in copies] == [tmp_path / "lib"] * 2
    assert [connector.sha256_file(p) for p in copies] == [pin.sha256 for pin in connector.JARS]


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv(record_jar.CACHE_ENV, str(tmp_path / "java"))
    assert record_jar.cache_root() == (tmp_path / "java").resolve()
    monkeypatch.delenv(record_jar.CACHE_ENV)
    assert record_jar.cache_root().parts[-2:] == ("streamwarden", "flink-java")


def test_thread_mode_settings(jars):
    settings = flink_settings(FlinkConfig(), jars)
    assert settings["python.execution-mode"] == "thread"
    path = settings["python.pythonpath"].split(os.pathsep)
    assert str(REPO_ROOT) in path
    assert any(p.endswith("site-packages") for p in path)
    assert settings["pipeline.jars"] == ";".join(p.resolve().as_uri() for p in jars)
    assert settings["state.backend.type"] == "rocksdb"
    assert settings["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert settings["execution.checkpointing.interval"] == "1000 ms"
    assert settings["python.executable"] == settings["python.client.executable"]
    assert "execution.state-recovery.path" not in settings


def test_process_mode_restore_and_overrides(jars):
    cfg = FlinkConfig(
        execution_mode="process",
        checkpoint_interval_ms=0,
        restore_path="file:///tmp/sp-1",
        ship_connector_jars=False,
        extra={"python.fn-execution.bundle.size": "500"},
    )
    settings = flink_settings(cfg, jars)
    assert "python.pythonpath" not in settings
    assert "pipeline.jars" not in settings
    assert "execution.checkpointing.interval" not in settings
    assert settings["execution.state-recovery.path"] == "file:///tmp/sp-1"
    assert settings["python.fn-execution.bundle.size"] == "500"


def test_flink_config_rejects_unknown_fields():
    with pytest.raises(ValidationError):
        FlinkConfig(bundel_size=5)  # type: ignore[call-arg]


def test_java_properties_plaintext():
    props = java_kafka_properties(KafkaConfig(bootstrap_servers="b:9092", extra={"linger.ms": "5"}))
    assert props == {"bootstrap.servers": "b:9092", "security.protocol": "PLAINTEXT", "linger.ms": "5"}


def test_java_properties_scram_and_pem(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("CA")
    props = java_kafka_properties(
        KafkaConfig(
            bootstrap_servers="b:9093",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="sw",
            sasl_password='p"w',
            ssl_ca_location=str(ca),
            extra={"queue.buffering.max.ms": "20", "enable.partition.eof": "true"},
        )
    )
    assert props["sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="sw" password="p\\"w";'
    )
    assert "sasl.username" not in props and "sasl.password" not in props
    assert props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == str(ca)
    assert props["linger.ms"] == "20"
    assert "enable.partition.eof" not in props


def test_java_properties_mutual_tls_reads_pem(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("CERT")
    key.write_text("KEY")
    props = java_kafka_properties(
        KafkaConfig(ssl_certificate_location=str(cert), ssl_key_location=str(key), security_protocol="SSL")
    )
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.keystore.certificate.chain"] == "CERT"
    assert props["ssl.keystore.key"] == "KEY"
    with pytest.raises(ConfigError, match="together"):
        java_kafka_properties(KafkaConfig(ssl_certificate_location=str(cert)))


def test_java_properties_unknown_sasl_mechanism():
    with pytest.raises(ConfigError, match="OAUTHBEARER"):
        java_kafka_properties(KafkaConfig(sasl_mechanism="OAUTHBEARER", sasl_username="u", sasl_password="p"))
