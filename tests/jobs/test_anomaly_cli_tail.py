"""``alerts tail``: readable and JSON-lines output; against the real embedded broker (tansu)."""

from __future__ import annotations

import json

import pytest
import typer
from google.protobuf import json_format
from typer.testing import CliRunner

from streamwarden.jobs.cli.alerts import alert_to_dict, alert_to_json, format_alert, tail_cmd
from streamwarden.operators.anomaly.lifecycle import fingerprint
from streamwarden.schemas import streamwarden_pb2 as pb


def _alert(status: int = pb.AnomalyAlert.FIRING, key: str = "track-42") -> pb.AnomalyAlert:
    return pb.AnomalyAlert(
        fingerprint=fingerprint("plays_per_track", key),
        metric="plays_per_track",
        series_key=key,
        status=status,  # type: ignore[arg-type]
        severity=pb.AnomalyAlert.CRITICAL,
        window_start_ms=1_700_000_040_000,
        window_end_ms=1_700_000_160_000,
        observed=540.0,
        expected=52.5,
        score=0.93,
        detector="robust_z",
        labels={"team": "trust-safety", "direction": "up"},
        started_ms=1_700_000_040_000,
        updated_ms=1_700_000_160_000,
    )


def test_readable_line_has_the_essentials() -> None:
    line = format_alert(_alert())
    for part in (
        "FIRING",
        "CRITICAL",
        "plays_per_track",
        "key=track-42",
        "observed=540",
        "expected=52.5",
        "score=0.93",
        "2023-11-14T22:14:00Z..2023-11-14T22:16:00Z",
        "direction=up",
    ):
        assert part in line, part


def test_json_round_trips_through_json_format() -> None:
    alert = _alert(pb.AnomalyAlert.RESOLVED)
    text = alert_to_json(alert)
    assert "\n" not in text
    data = json.loads(text)
    assert data["status"] == "RESOLVED" and data["window_start_ms"] == "1700000040000"  # int64 as string
    assert json_format.ParseDict(data, pb.AnomalyAlert()) == alert
    assert alert_to_dict(pb.AnomalyAlert())["observed"] == 0.0  # defaults are printed


@pytest.mark.integration
def test_tail_prints_alerts_from_the_topic(kafka_config, kafka_topics) -> None:
    from confluent_kafka import Producer

    [topic] = kafka_topics("alerts", partitions=2)
    broker = kafka_config.bootstrap_servers
    producer = Producer(kafka_config.client_config())
    sent = [
        _alert(pb.AnomalyAlert.FIRING, "t1"),
        _alert(pb.AnomalyAlert.FIRING, "t2"),
        _alert(pb.AnomalyAlert.RESOLVED, "t1"),
    ]
    for alert in sent:
        producer.produce(topic, key=alert.fingerprint.encode(), value=alert.SerializeToString())
    producer.produce(topic, key=b"junk", value=b"\xff\xff not a protobuf")
    assert producer.flush(10) == 0

    app = typer.Typer()
    app.command("tail")(tail_cmd)
    args = ["--bootstrap", broker, "--topic", topic, "--from-beginning", "--idle-timeout-s", "3"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    got = [json_format.ParseDict(json.loads(line), pb.AnomalyAlert()) for line in result.stdout.splitlines()]
    key = lambda a: (a.series_key, a.status)  # noqa: E731
    assert sorted(got, key=key) == sorted(sent, key=key)
    assert "is not an AnomalyAlert" in result.stderr

    readable = CliRunner().invoke(app, [*args, "--max-messages", "3"])
    assert readable.exit_code == 0, readable.stderr
    lines = readable.stdout.splitlines()
    assert len(lines) == 3 and sum("RESOLVED" in line for line in lines) == 1


@pytest.mark.integration
def test_tail_names_a_missing_topic(kafka_config) -> None:
    app = typer.Typer()
    app.command("tail")(tail_cmd)
    args = [
        "--bootstrap",
        kafka_config.bootstrap_servers,
        "--topic",
        "no-such-topic",
        "--idle-timeout-s",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no-such-topic" in result.stderr


def test_tail_names_an_unreachable_broker() -> None:
    app = typer.Typer()
    app.command("tail")(tail_cmd)
    result = CliRunner().invoke(
        app, ["--bootstrap", "127.0.0.1:9", "--idle-timeout-s", "1", "--timeout-s", "2"]
    )
    assert result.exit_code == 2 and "127.0.0.1:9" in result.stderr


@pytest.mark.integration
def test_tail_reads_the_alerts_topic_of_the_job_config(kafka_config, kafka_topics, tmp_path) -> None:
    """Without --topic, tail reads topics.alerts of --config (not a hard-coded 'alerts')."""
    from confluent_kafka import Producer

    [topic] = kafka_topics("custom-alerts")
    producer = Producer(kafka_config.client_config())
    sent = _alert(pb.AnomalyAlert.FIRING, "t9")
    producer.produce(topic, key=b"k", value=sent.SerializeToString())
    assert producer.flush(10) == 0
    config = tmp_path / "job.yaml"
    config.write_text(
        f"kafka:\n  bootstrap_servers: {kafka_config.bootstrap_servers}\ntopics:\n  alerts: {topic}\n"
    )
    app = typer.Typer()
    app.command("tail")(tail_cmd)
    args = ["--config", str(config), "--from-beginning", "--idle-timeout-s", "2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json_format.ParseDict(json.loads(line), pb.AnomalyAlert()) == sent
    # --no-json gives the readable line for the same alert.
    readable = CliRunner().invoke(app, [*args[:-1], "--no-json"])
    assert readable.exit_code == 0 and "FIRING" in readable.stdout and "t9" in readable.stdout
