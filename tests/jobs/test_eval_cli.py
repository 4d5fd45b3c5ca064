"""``streamwarden eval`` against the offline replay: the JSON report's structure with every labeled
scenario, the HTML report, traffic read from the generator's file formats, and option errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
import yaml
from typer.testing import CliRunner

from streamwarden.jobs.cli.app import app as cli_app
from streamwarden.jobs.cli.eval import EngineName, evaluate_engine
from streamwarden.jobs.cli.generate import FileSink, run_generate
from streamwarden.operators.evaluation.harness import traffic_from_spec
from streamwarden.operators.pipeline import StagesConfig
from streamwarden.operators.policy import load_policy
from streamwarden.operators.traffic import (
    SCENARIO_NAMES,
    iter_traffic,
    labels,
    load_spec,
    small_spec,
    write_labels,
)


def _app() -> typer.Typer:
    """The real ``streamwarden`` command line (``eval`` is loaded lazily from ``jobs/cli/eval.py``)."""
    return cli_app


def _last_json(output: str) -> dict[str, Any]:
    out = json.loads(output.strip().splitlines()[-1])
    assert isinstance(out, dict)
    return out


def _is_number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and math.isfinite(value))


def test_eval_small_seed_replay_json_and_html(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = CliRunner().invoke(_app(), ["eval", "--small", "--seed", "3", "--json", "--html", str(html)])
    assert result.exit_code == 0, result.output
    out = _last_json(result.output)
    spec = small_spec(3)
    labeled = {x.scenario for x in labels(spec)}
    assert labeled == set(SCENARIO_NAMES)  # the small spec runs every scenario
    assert set(out["scenarios"]) == labeled
    for name, s in out["scenarios"].items():
        for key in ("precision", "recall", "time_to_action_s_p50"):
            assert key in s and _is_number_or_none(s[key]), (name, key, s.get(key))
        assert s["recall"] is not None and 0 <= s["recall"] <= 1
        assert s["precision"] is None or 0 <= s["precision"] <= 1
        assert 0 <= s["true_positives"] <= s["labeled_subjects"]
    overall = out["overall"]
    assert overall["true_positives"] > 0 and 0 < overall["recall"] <= 1
    assert overall["organic_subjects"] > 0 and 0 <= overall["false_positive_rate"] < 1
    assert out["engine"] == "replay" and out["records"] == sum(1 for _ in iter_traffic(spec))
    assert out["actions"] == sum(out["counters"]["actions"].values()) == overall["latency"]["count"]
    assert overall["latency"]["missing"] == 0 and overall["latency"]["p50_ms"] >= 0
    page = html.read_text()
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" width=') == 3
    assert all(name in page for name in labeled)
    # The Plotly plots, and the run table names the versions the actions carry.
    assert all(f'id="{p}"' in page for p in ("plot-time-to-action", "plot-scores", "plot-pr-curve"))
    assert (
        f"<th>policy version</th><td>{load_policy().version}</td>" in page
        and "<th>model version</th><td>gbt@" in page
    )


def test_eval_reads_the_generator_file_formats(tmp_path: Path) -> None:
    spec = small_spec(4).scaled_to(60.0)
    events, labs = tmp_path / "events.pb", tmp_path / "labels.jsonl"
    run_generate(spec, FileSink(events))
    write_labels(labs, labels(spec))
    result = CliRunner().invoke(_app(), ["eval", "--events", str(events), "--labels", str(labs), "--json"])
    assert result.exit_code == 0, result.output
    from_files = _last_json(result.output)
    # The same traffic generated in process gives the same report (latency aside: it is wall time).
    _, _, generated = evaluate_engine(traffic_from_spec(spec), EngineName.replay, StagesConfig())
    assert from_files["scenarios"] == generated["scenarios"]
    drop = {"latency"}
    assert {k: v for k, v in from_files["overall"].items() if k not in drop} == {
        k: v for k, v in generated["overall"].items() if k not in drop
    }
    assert from_files["source"] == f"{events} + {labs}"


def test_eval_table_for_people(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(small_spec(5).scaled_to(40.0).model_dump(mode="json")))
    result = CliRunner().invoke(_app(), ["eval", "--spec", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("scenario ") and "precision" in line and "recall" in line for line in lines)
    # The spec file's seed is replaced by --seed (default 2); at 40 s the farm's plays (31 s) never end.
    labeled = {x.scenario for x in labels(load_spec(path, seed=2))}
    assert len(labeled) == 4
    for name in labeled:
        assert any(line.startswith(name) for line in lines), name
    assert any(line.startswith("overall") for line in lines)
    assert any(line.startswith("event->action latency: p50") for line in lines)


def test_eval_option_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    shadow_help = runner.invoke(_app(), ["eval", "shadow", "--help"])  # the subcommand, not an evaluation
    assert (
        shadow_help.exit_code == 0
        and "--policy-a" in shadow_help.output
        and "engine" not in shadow_help.output
    )
    result = runner.invoke(_app(), ["eval", "--events", str(tmp_path / "x.pb")])
    assert result.exit_code == 2 and "--events and --labels go together" in result.output
    result = runner.invoke(_app(), ["eval", "--small", "--spec", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2 and "exclusive" in result.output
    (tmp_path / "l.jsonl").write_text('{"scenario": "x"}\n')
    (tmp_path / "e.pb").write_bytes(b"")
    result = runner.invoke(
        _app(), ["eval", "--events", str(tmp_path / "e.pb"), "--labels", str(tmp_path / "l.jsonl")]
    )
    assert result.exit_code == 2 and "l.jsonl:1:" in result.output


def test_eval_variant_files_actions_out_and_rescoring(tmp_path: Path) -> None:
    """An outside-range variant with traps, written in the documented file formats, evaluated through
    --events/--labels; the actions written by --actions-out re-score to the same report (eval score)."""
    from streamwarden.operators.traffic.variants import variant_spec
    from streamwarden.schemas.codec import write_delimited

    spec = variant_spec("outside", 301, duration_s=300.0)
    events, labels_file, actions = (
        tmp_path / "events.pb",
        tmp_path / "labels.jsonl",
        tmp_path / "actions.jsonl",
    )
    with events.open("wb") as out:
        write_delimited(out, (r.payload for r in iter_traffic(spec)))
    truth = labels(spec)
    write_labels(labels_file, truth)
    assert any(x.benign for x in truth)
    files = ["--events", str(events), "--labels", str(labels_file)]
    result = CliRunner().invoke(_app(), ["eval", *files, "--json", "--actions-out", str(actions)])
    assert result.exit_code == 0, result.output
    out = _last_json(result.output)
    assert set(out["traps"]) == {"viral_release", "cgnat", "office", "power_user", "album_fans"}
    for trap in out["traps"].values():
        assert 0 <= trap["false_positives"] <= trap["subjects"]
    assert len(actions.read_text().splitlines()) == out["actions"]
    rescored = CliRunner().invoke(_app(), ["eval", "score", "--actions", str(actions), *files, "--json"])
    assert rescored.exit_code == 0, rescored.output
    again = _last_json(rescored.output)
    for key in ("scenarios", "traps"):
        assert again[key] == out[key]
    assert {k: v for k, v in again["overall"].items() if k != "latency"} == {
        k: v for k, v in out["overall"].items() if k != "latency"
    }


def test_eval_variant_option_errors() -> None:
    result = CliRunner().invoke(_app(), ["eval", "--variant", "sideways", "--json"])
    assert result.exit_code == 2
    assert "unknown split" in result.output
    result = CliRunner().invoke(_app(), ["eval", "--variant", "unseen", "--small"])
    assert result.exit_code == 2
