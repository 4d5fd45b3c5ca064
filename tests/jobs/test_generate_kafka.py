"""``streamwarden generate --to kafka`` against the embedded broker: every record arrives, keyed by account,
each account's records in generation order within its partition."""

from __future__ import annotations

from collections import defaultdict

import pytest
import typer
import yaml
from typer.testing import CliRunner

from streamwarden.jobs.cli.generate import generate_cmd
from streamwarden.jobs.kafka_io import drain
from streamwarden.operators.traffic import iter_traffic, small_spec

pytestmark = pytest.mark.integration


def test_generate_produces_keyed_traffic_to_kafka(tmp_path, broker, kafka_config, kafka_topics):
    (topic,) = kafka_topics("events", partitions=3)
    spec = small_spec(seed=21).scaled_to(45.0)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    app = typer.Typer()
    app.command("generate")(generate_cmd)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--spec",
            str(path),
            "--to",
            "kafka",
            "--bootstrap",
            broker.bootstrap_servers,
            "--topic",
            topic,
        ],
    )
    assert result.exit_code == 0, result.output

    expected = list(iter_traffic(spec))
    assert len(expected) > 2_000
    got = drain(kafka_config, topic, expected_count=len(expected), max_wait_s=60)
    assert len(got) == len(expected)
    assert sorted(r.value for r in got) == sorted(r.payload for r in expected)
    assert len({r.partition for r in got}) == 3

    key_of = {r.payload: r.account_id for r in expected}
    partition_of_key: dict[bytes | None, int] = {}
    order: dict[bytes, list[bytes]] = defaultdict(list)
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        assert r.key == (key_of[r.value].encode() or None)
        if r.key is not None:
            assert partition_of_key.setdefault(r.key, r.partition) == r.partition
            order[r.key].append(r.value)
    want: dict[bytes, list[bytes]] = defaultdict(list)
    for r in expected:
        if r.account_id:
            want[r.account_id.encode()].append(r.payload)
    assert order == want


def test_bench_generate_prints_figures_and_a_json_line_last(broker):
    import json

    from streamwarden.jobs.cli.generate import bench_generate_cmd

    app = typer.Typer()
    app.command("generate")(bench_generate_cmd)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(
        app, ["generate", "--duration-s", "20", "--bootstrap", broker.bootstrap_servers]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["records"] > 1_000
    for key in ("events_per_s_kafka", "events_per_s_memory", "events_per_s_file"):
        assert figures[key] > 0
    assert figures["ratio"] == pytest.approx(
        figures["events_per_s_kafka"] / figures["events_per_s_memory"], rel=0.01
    )
    assert any(line.startswith("kafka:") for line in lines)
