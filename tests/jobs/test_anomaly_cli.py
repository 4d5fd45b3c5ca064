"""``anomaly score`` equals the streaming path on the same series; bad CSVs name file and line; ``anomaly eval``."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streamwarden.jobs.cli.anomaly import eval_cmd, parse_timestamp_ms, score_cmd
from streamwarden.operators.anomaly.operator import AnomalyOperator
from streamwarden.operators.anomaly.series import points_for_event
from streamwarden.operators.anomaly.spec import load_anomaly_spec
from streamwarden.schemas import streamwarden_pb2 as pb

B = 60_000
T0 = 1_700_000_040_000
LATENESS = 30_000

SPEC_YAML = f"""
version: 1
defaults:
  allowed_lateness_ms: {LATENESS}
  idle_expiry_ms: 3600000
metrics:
  - name: plays_per_track
    event_types: [PLAY]
    key: target.content_id
    detector: {{kind: robust_z, direction: both}}
"""


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("score")(score_cmd)
    app.command("eval")(eval_cmd)
    return app


def _counts(seed: int = 5, n: int = 300) -> list[int]:
    rng = np.random.default_rng(seed)
    counts = [int(c) for c in rng.poisson(25, size=n)]
    for i in range(120, 124):
        counts[i] *= 6  # spike
    for i in range(200, 230):
        counts[i] = 0  # the track goes dark (no events at all in the stream)
    return counts


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _streaming(
    spec_path: Path, counts: list[int], detector: str | None = None
) -> dict[int, tuple[float, bool]]:
    """Events through routing + a keyed AnomalyOperator, the watermark trailing the stream: score per bucket."""
    spec = load_anomaly_spec(spec_path)
    metric = spec.metric("plays_per_track")
    if detector:
        from streamwarden.operators.anomaly.spec import with_detector

        metric = with_detector(metric, detector)
    rng = np.random.default_rng(0)
    op = AnomalyOperator(metric, "track-1")
    out: dict[int, tuple[float, bool]] = {}
    for minute, count in enumerate(counts):
        times = sorted(T0 + minute * B + int(x) for x in rng.integers(0, B, size=count))
        for t in times:
            event = pb.Event(
                event_id=f"{t}",
                event_time_ms=t,
                type=pb.Event.PLAY,
                schema_version=1,
                target=pb.Target(content_id="track-1"),
            )
            for p in points_for_event(spec, event):
                op.add(p.time_ms, p.amount)
        for outcome in op.close(T0 + (minute + 1) * B + LATENESS):
            out[(outcome.bucket.start_ms - T0) // B] = (outcome.score.score, outcome.fired)
    return out


def _write_csv(path: Path, counts: list[int]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        for i, c in enumerate(counts):
            w.writerow([_iso(T0 + i * B), c])


def _read_out(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("detector", [None, "holt"])
def test_score_cli_equals_the_streaming_path(tmp_path: Path, detector: str | None) -> None:
    spec_path = tmp_path / "anomaly.yaml"
    spec_path.write_text(SPEC_YAML)
    counts = _counts()
    src, dst = tmp_path / "series.csv", tmp_path / "scored.csv"
    _write_csv(src, counts)
    args = ["score", "--input", str(src), "--output", str(dst), "--config", str(spec_path)]
    args += ["--metric", "plays_per_track"] + (["--detector", detector] if detector else [])
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.stderr
    rows = _read_out(dst)
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "alert"]
    assert len(rows) == len(counts)
    stream = _streaming(spec_path, counts, detector)
    # The stream only starts at the first event; every CSV row has a bucket there.
    assert sorted(stream) == list(range(len(counts)))
    for i, row in enumerate(rows):
        score, fired = stream[i]
        assert float(row["anomaly_score"]) == pytest.approx(score, abs=5e-7), f"row {i}"
        assert int(row["alert"]) == int(fired), f"row {i}"
        assert 0.0 <= float(row["anomaly_score"]) <= 1.0
    alert_rows = [i for i, r in enumerate(rows) if r["alert"] == "1"]
    assert any(120 <= i <= 122 for i in alert_rows)
    if detector is None:  # robust_z (with its sustained statistic) also catches the track going dark
        assert any(200 <= i <= 206 for i in alert_rows)


def test_score_cli_count_infers_the_bucket_from_the_median_spacing_and_fills_gaps_with_zero(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "s.csv", tmp_path / "o.csv"
    rng = np.random.default_rng(1)
    lines = ["timestamp,value"]
    kept = [i for i in range(400) if i not in (50, 51, 300)]  # missing rows
    for i in kept:
        lines.append("2024-03-01T00:00:00+00:00" if i == 0 else f"{_iso(1_709_251_200_000 + i * 300_000)}")
        lines[-1] += f",{rng.poisson(40) if i < 350 else 400}"
    src.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        _app(), ["score", "--input", str(src), "--output", str(dst), "--kind", "count"]
    )
    assert result.exit_code == 0, result.stderr
    assert "bucket 300000 ms" in result.stdout
    rows = _read_out(dst)
    assert len(rows) == len(kept)
    alert_rows = [kept[i] for i, r in enumerate(rows) if r["alert"] == "1"]
    # The two missing rows are two empty buckets in the stream (a drop to zero at rate 40): the
    # FIRING happens in the gap and is reported on the next row. Then the jump to 400 fires.
    assert alert_rows[0] == 52 and alert_rows[1] in (350, 351) and len(alert_rows) == 2


def test_gauge_gaps_are_missing_not_zero(tmp_path: Path) -> None:
    src, dst = tmp_path / "s.csv", tmp_path / "o.csv"
    rng = np.random.default_rng(2)
    kept = [i for i in range(400) if not 150 <= i < 190]  # a 40-row hole in a temperature-like series
    src.write_text(
        "timestamp,value\n"
        + "".join(f"{_iso(1_709_251_200_000 + i * 300_000)},{20 + rng.normal(0, 0.3):.3f}\n" for i in kept)
    )
    result = CliRunner().invoke(_app(), ["score", "--input", str(src), "--output", str(dst)])
    assert result.exit_code == 0, result.stderr
    assert "(gauge, bucket 300000 ms" in result.stdout
    rows = _read_out(dst)
    assert len(rows) == len(kept)
    assert not any(r["alert"] == "1" for r in rows)  # as count, the hole would be a drop to zero
    assert max(float(r["anomaly_score"]) for r in rows) < 0.5


def test_any_well_formed_csv_is_accepted(tmp_path: Path) -> None:
    """Unsorted rows, a daylight-saving repeat, rows sharing a bucket, gaps, missing values, epoch
    seconds, extra columns: exit 0, one output row per input row, scores in [0, 1)."""
    rng = np.random.default_rng(4)
    rows = [(1_393_632_000 + i * 3600, f"{5 + rng.normal(0, 0.5):.3f}") for i in range(300) if i % 37]
    rows.insert(100, rows[100])  # duplicated timestamp
    rows.insert(200, (rows[200][0] + 1200, "5.1"))  # off the grid: shares a bucket
    rows[50] = (rows[50][0], "")  # missing value
    rows[150], rows[151] = rows[151], rows[150]  # out of order
    rows.append((rows[-1][0] + 3600, "40"))  # a spike at the end
    src, dst = tmp_path / "messy.csv", tmp_path / "o.csv"
    src.write_text("Timestamp,Value,label\n" + "".join(f"{t},{v},x\n" for t, v in rows))
    result = CliRunner().invoke(_app(), ["score", "--input", str(src), "--output", str(dst)])
    assert result.exit_code == 0, result.stderr
    assert "bucket 3600000 ms" in result.stdout
    out = _read_out(dst)
    assert len(out) == len(rows)
    scores = [float(r["anomaly_score"]) for r in out]
    assert all(0.0 <= s < 1.0 for s in scores)
    assert scores[-1] == max(scores) and scores[-1] > 0.5
    assert sorted(scores)[-2] < scores[-1]  # no tie at the top


@pytest.mark.parametrize(
    "content,line,needle",
    [
        ("time,value\n2024-01-01T00:00:00Z,1\n", 1, "header must start with 'timestamp,value'"),
        ("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,abc\n", 3, "not a number"),
        ("timestamp,value\n2024-01-01T00:00:00Z,1\nyesterday,2\n", 3, "bad timestamp"),
        ("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z\n", 3, "expected 2 columns"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path: Path, content: str, line: int, needle: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content)
    result = CliRunner().invoke(_app(), ["score", "--input", str(src), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert f"{src}:{line}:" in result.stderr and needle in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_missing_input_and_unknown_detector(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["score", "--input", str(tmp_path / "x.csv"), "--output", "o.csv"])
    assert result.exit_code == 2 and "x.csv: cannot open" in result.stderr
    src = tmp_path / "s.csv"
    src.write_text("timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,1\n")
    result = CliRunner().invoke(
        _app(), ["score", "--input", str(src), "--output", str(tmp_path / "o.csv"), "--detector", "arima"]
    )
    assert result.exit_code == 2 and "unknown detector 'arima'" in result.stderr


def test_parse_timestamp_naive_is_utc() -> None:
    assert parse_timestamp_ms("1970-01-01T00:00:01") == 1000
    assert parse_timestamp_ms("1970-01-01T01:00:01+01:00") == 1000
    assert parse_timestamp_ms("1970-01-01T00:00:00.250Z") == 250


def test_eval_prints_per_detector_figures_and_one_json_line_last() -> None:
    result = CliRunner().invoke(
        _app(),
        [
            "eval",
            "--seed",
            "3",
            "--anomalous",
            "3",
            "--clean",
            "2",
            "--days",
            "3.5",
            "--detector",
            "robust_z",
            "--detector",
            "holt",
        ],
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary["detectors"]) == {"robust_z", "holt"}
    for figures in summary["detectors"].values():
        assert 0.0 <= figures["precision"] <= 1.0 and 0.0 <= figures["recall"] <= 1.0
        assert figures["false_alerts_per_day_clean"] >= 0.0
        assert figures["windows"] == summary["windows"] > 0
    assert summary["detectors"]["robust_z"]["recall"] > 0.5
    assert any(line.startswith("robust_z") for line in lines[:-1])


def test_eval_realistic_scores_detectors_and_the_baseline_in_one_run() -> None:
    result = CliRunner().invoke(
        _app(),
        ["eval", "--realistic", "--seed", "4", "--per-kind", "1", "--clean", "1", "--detector", "holt"],
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bench"] == "anomaly_eval_realistic"
    assert summary["series"] == 6 and summary["windows"] >= 5
    assert set(summary["detectors"]) == {"holt", "windowed_gaussian"}
    holt, base = summary["detectors"]["holt"], summary["detectors"]["windowed_gaussian"]
    for figures in (holt, base):
        assert set(figures["nab"]) == {"standard", "low_fp", "low_fn"}
        assert all(v <= 100.0 for v in figures["nab"].values())
        assert all(0.0 < t < 1.0 for t in figures["thresholds"].values())
    # The baseline has no alert lifecycle; the detector's alert column and per-kind figures are there.
    assert base["alert_nab_standard"] is None and base["false_alerts_per_series_day"] is None
    assert holt["false_alerts_per_series_day"] >= 0.0
    assert set(holt["recall_by_kind"]) <= {"spike", "dip", "level_shift", "variance_change", "flatline"}
    assert all(0.0 <= v <= 1.0 for v in holt["recall_by_kind"].values())
    assert (
        holt["ratio_to_baseline_standard"] == round(holt["nab"]["standard"] / base["nab"]["standard"], 4)
        or base["nab"]["standard"] <= 0
    )
    assert any(line.startswith("windowed_gaussian") for line in lines[:-1])
