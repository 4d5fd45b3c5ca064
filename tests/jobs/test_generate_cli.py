"""``streamwarden generate`` to a file, pacing, and argument errors (no broker needed)."""

from __future__ import annotations

import typer
import yaml
from typer.testing import CliRunner

from streamwarden.jobs.cli.generate import FileSink, MemorySink, Pacer, generate_cmd, run_generate
from streamwarden.operators.traffic import TrafficRecord, iter_traffic, labels, read_labels, small_spec
from streamwarden.schemas.codec import read_delimited


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("generate")(generate_cmd)
    app.command("other")(lambda: None)  # keep "generate" a subcommand, as in the real CLI
    return app


def spec_file(tmp_path, **overrides):
    spec = small_spec(seed=11, **overrides)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return spec, path


def test_generate_to_file_writes_the_spec_traffic_and_labels(tmp_path):
    spec, path = spec_file(tmp_path)
    out, labels_path = tmp_path / "events.pb", tmp_path / "labels.jsonl"
    result = CliRunner().invoke(
        cli(),
        ["generate", "--spec", str(path), "--to", "file", "--out", str(out), "--labels", str(labels_path)],
    )
    assert result.exit_code == 0, result.output
    with out.open("rb") as src:
        written = list(read_delimited(src))
    assert written == [r.payload for r in iter_traffic(spec)]
    assert read_labels(labels_path) == labels(spec)
    assert f"{len(written)} records" in result.output


def test_seed_and_duration_options_override_the_spec(tmp_path):
    spec, path = spec_file(tmp_path)
    out = tmp_path / "events.pb"
    args = ["generate", "--spec", str(path), "--to", "file", "--out", str(out)]
    result = CliRunner().invoke(
        cli(), [*args, "--seed", "12", "--duration-s", "60", "--disable", "spam_burst"]
    )
    assert result.exit_code == 0, result.output
    expected = spec.with_updates(seed=12).scaled_to(60.0).without_scenarios("spam_burst")
    with out.open("rb") as src:
        assert list(read_delimited(src)) == [r.payload for r in iter_traffic(expected)]
    assert "spam_burst=" not in result.output


def test_argument_errors_exit_2_with_a_message(tmp_path):
    runner = CliRunner()
    no_out = runner.invoke(cli(), ["generate", "--to", "file"])
    assert no_out.exit_code == 2
    assert "--out" in no_out.output
    both = runner.invoke(
        cli(), ["generate", "--to", "file", "--out", str(tmp_path / "x"), "--live", "--rate", "5"]
    )
    assert both.exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nnot_a_field: 3\n")
    bad_spec = runner.invoke(
        cli(), ["generate", "--spec", str(bad), "--to", "file", "--out", str(tmp_path / "y")]
    )
    assert bad_spec.exit_code == 2
    assert str(bad) in bad_spec.output
    assert "not_a_field" in bad_spec.output


def test_file_sink_matches_memory_sink_counts(tmp_path):
    spec = small_spec(seed=5).scaled_to(40.0)
    memory = MemorySink()
    stats = run_generate(spec, memory)
    file_sink = FileSink(tmp_path / "e.pb")
    again = run_generate(spec, file_sink)
    assert memory.records == stats.records == again.records == file_sink.records
    assert stats.by_scenario == again.by_scenario
    assert stats.malformed > 0
    assert stats.late > 0


class FakeClock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += seconds


def record(arrival_ms: int) -> TrafficRecord:
    return TrafficRecord(b"x", arrival_ms, arrival_ms, "acc")


def test_rate_pacing_spreads_records_over_wall_time():
    clock = FakeClock(1000.0)
    pacer = Pacer(rate_per_s=500.0, clock=clock.time, sleep=clock.sleep, check_every=10)
    for _ in range(1000):
        pacer.wait(record(1))
    assert abs((clock.now_s - 1000.0) - 2.0) < 0.05  # 1000 records at 500/s
    assert len(clock.slept) == 100


def test_live_pacing_sends_each_record_at_its_arrival_time():
    clock = FakeClock(1_700_000_000.0)
    pacer = Pacer(live=True, clock=clock.time, sleep=clock.sleep)
    for arrival_ms in (1_700_000_000_000, 1_700_000_000_250, 1_700_000_001_000, 1_700_000_000_900):
        pacer.wait(record(arrival_ms))
        assert clock.now_s >= arrival_ms / 1000.0
    assert abs(clock.now_s - 1_700_000_001.0) < 1e-6
    assert len(clock.slept) == 2  # nothing to wait for at the start, nor for the late straggler


def test_now_starts_event_time_at_the_wall_clock(tmp_path):
    import time

    from streamwarden.schemas import streamwarden_pb2 as pb
    from streamwarden.schemas.codec import decode_event

    _, path = spec_file(tmp_path)
    out = tmp_path / "events.pb"
    before_ms = int(time.time() * 1000)
    args = ["generate", "--spec", str(path), "--to", "file", "--out", str(out), "--now", "--duration-s", "30"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    with out.open("rb") as src:
        times = [e.event_time_ms for e in map(decode_event, read_delimited(src)) if isinstance(e, pb.Event)]
    assert times
    assert before_ms <= min(times) and max(times) < before_ms + 30_000 + 5_000
