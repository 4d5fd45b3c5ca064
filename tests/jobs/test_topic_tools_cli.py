"""``actions tail``, ``deadletter tail`` and ``deadletter replay`` against the real broker, through the
registered command line (``jobs.cli.app``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from streamwarden.jobs.cli.app import app
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import drain, make_producer
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef, dead_letter

pytestmark = [pytest.mark.integration]

Topics = Callable[..., list[str]]
NOW_MS = 1_750_000_000_000


def _produce(kafka: KafkaConfig, topic: str, values: list[bytes]) -> None:
    producer = make_producer(kafka)
    for v in values:
        producer.produce(topic, v)
    assert producer.flush(30) == 0


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_actions_tail_prints_each_action(kafka_config: KafkaConfig, kafka_topics: Topics) -> None:
    (actions,) = kafka_topics("actions")
    sent = [
        pb.Action(
            action_id=f"a{i}",
            event_id=f"e{i}",
            subject=pb.Subject(kind=pb.IP, id=f"10.0.0.{i}"),
            verdict=pb.Action.RATE_LIMIT,
            mode=pb.Action.SHADOW_MODE if i else pb.Action.ENFORCE,
            reasons=["cred-stuffing"],
            policy_version="p-7",
            event_time_ms=NOW_MS,
            decision_time_ms=NOW_MS + 42,
        )
        for i in range(2)
    ]
    _produce(kafka_config, actions, [a.SerializeToString() for a in sent])
    common = ["--bootstrap", kafka_config.bootstrap_servers, "--topic", actions, "--from-beginning"]
    text = _run("actions", "tail", *common, "--max-messages", "2").splitlines()
    assert len(text) == 2
    assert "RATE_LIMIT" in text[0] and "enforce" in text[0] and "ip:10.0.0.0" in text[0]
    assert "shadow" in text[1] and "rule=cred-stuffing" in text[1] and "lag=42ms" in text[1]
    lines = _run("actions", "tail", *common, "--json", "--max-messages", "2").splitlines()
    assert [json.loads(line)["action_id"] for line in lines] == ["a0", "a1"]


def _letters() -> tuple[pb.Event, list[pb.DeadLetter]]:
    fixed = pb.Event(event_id="e-old", event_time_ms=NOW_MS, type=pb.Event.LOGIN, schema_version=0)
    src = SourceRef("events", 0, 5)
    return fixed, [
        # what the decoder before #18 wrote for an event without schema_version: the decoder accepts it now
        dead_letter(
            fixed.SerializeToString(), pb.DeadLetter.UNKNOWN_SCHEMA_VERSION, "schema_version 0", src, NOW_MS
        ),
        dead_letter(
            b"\xff\xff\xff", pb.DeadLetter.UNDECODABLE, "not protobuf", SourceRef("events", 0, 6), NOW_MS
        ),
        pb.DeadLetter(  # a record cut short in its dead letter
            source_topic="events",
            source_offset=7,
            original=b"\x0a" * 10,
            original_size=100,
            original_sha256="ab" * 32,
            error_kind=pb.DeadLetter.RECORD_TOO_LARGE,
            message="big",
            time_ms=NOW_MS,
        ),
    ]


def test_deadletter_tail_and_replay(kafka_config: KafkaConfig, kafka_topics: Topics) -> None:
    events, dead = kafka_topics("events", "deadletter")
    fixed, letters = _letters()
    _produce(kafka_config, dead, [d.SerializeToString() for d in letters])
    common = ["--bootstrap", kafka_config.bootstrap_servers]

    text = _run("deadletter", "tail", *common, "--topic", dead, "--from-beginning", "--max-messages", "3")
    lines = text.splitlines()
    assert len(lines) == 3
    assert "UNKNOWN_SCHEMA_VERSION" in lines[0] and "events[0]@5" in lines[0]
    assert "(kept 10 of 100 bytes)" in lines[2]
    only = _run(
        "deadletter", "tail", *common, "--topic", dead, "--from-beginning", "--kind", "UNDECODABLE",
        "--json", "--idle-timeout-s", "2",
    )  # fmt: skip
    assert [json.loads(line)["error_kind"] for line in only.splitlines()] == ["UNDECODABLE"]

    dry = _run("deadletter", "replay", *common, "--topic", dead, "--to", events, "--dry-run")
    assert "would send 1" in dry and "1 the decoder still refuses" in dry and "1 cut short" in dry
    assert drain(kafka_config, events, idle_timeout_s=1.0) == []

    out = _run("deadletter", "replay", *common, "--topic", dead, "--to", events)
    assert f"sent 1 to {events}" in out
    (replayed,) = drain(kafka_config, events, expected_count=1)
    assert pb.Event.FromString(replayed.value or b"") == fixed
    headers = dict(replayed.headers)
    assert headers["streamwarden.replay.of"] == b"events/0/5"
    assert headers["streamwarden.replay.kind"] == b"UNKNOWN_SCHEMA_VERSION"

    everything = _run("deadletter", "replay", *common, "--topic", dead, "--to", events, "--all", "--dry-run")
    assert "would send 2" in everything  # the truncated one can never be sent


def test_unknown_kind_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["deadletter", "tail", "--kind", "NOPE"])
    assert result.exit_code == 2
    assert "unknown kind" in result.output
