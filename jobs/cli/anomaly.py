"""``streamwarden anomaly score`` (backtest a CSV series) and ``streamwarden anomaly eval`` (detector figures).

Both run the streaming code itself (``operators.anomaly.AnomalyOperator``), so what a team sees
here is what the job would have alerted on.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from streamwarden.operators.anomaly.backtest import SeriesShapeError, backtest_metric, score_series
from streamwarden.operators.anomaly.evaluate import DETECT_SLACK, RECOVERY_SLACK, evaluate
from streamwarden.operators.anomaly.spec import (
    DETECTOR_KINDS,
    AnomalySpec,
    MetricSpec,
    load_anomaly_spec,
    with_detector,
)
from streamwarden.operators.anomaly.synth import generate_suite
from streamwarden.operators.errors import StreamwardenError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CsvFormatError(StreamwardenError, ValueError):
    """A series CSV is malformed; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class SeriesCsv:
    """A parsed ``timestamp,value`` file; ``lines`` are the 1-based file lines of the rows."""

    timestamps: list[str]
    raw_values: list[str]
    times_ms: list[int]
    values: list[float]
    lines: list[int]


def parse_timestamp_ms(text: str) -> int:
    """ISO 8601 timestamp to epoch milliseconds (no zone = UTC)."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def read_series_csv(path: Path) -> SeriesCsv:
    """Read ``timestamp,value`` rows (header required); every problem names ``path:line``."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CsvFormatError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    out = SeriesCsv([], [], [], [], [])
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise CsvFormatError(f"{path}:1: empty file, expected a 'timestamp,value' header")
            names = [h.strip().lower() for h in header]
            if names[:2] != ["timestamp", "value"] or len(names) != 2:
                raise CsvFormatError(f"{path}:1: header must be 'timestamp,value', got {','.join(header)!r}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2:
                    raise CsvFormatError(
                        f"{path}:{line}: expected 2 columns (timestamp,value), got {len(row)}"
                    )
                ts, raw = row[0].strip(), row[1].strip()
                try:
                    t_ms = parse_timestamp_ms(ts)
                except ValueError as exc:
                    raise CsvFormatError(f"{path}:{line}: bad ISO timestamp {ts!r}") from exc
                try:
                    value = float(raw)
                except ValueError as exc:
                    raise CsvFormatError(f"{path}:{line}: value {raw!r} is not a number") from exc
                if not math.isfinite(value):
                    raise CsvFormatError(f"{path}:{line}: value {raw!r} is not finite")
                if out.times_ms and t_ms <= out.times_ms[-1]:
                    raise CsvFormatError(
                        f"{path}:{line}: timestamp {ts} is not after the previous row's (rows must be sorted)"
                    )
                out.timestamps.append(ts)
                out.raw_values.append(raw)
                out.times_ms.append(t_ms)
                out.values.append(value)
                out.lines.append(line)
        except csv.Error as exc:
            raise CsvFormatError(f"{path}:{reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise CsvFormatError(f"{path}: not UTF-8 text: {exc}") from exc
    if len(out.times_ms) < 2:
        raise CsvFormatError(f"{path}: need at least two data rows, got {len(out.times_ms)}")
    return out


def resolve_metric(spec: AnomalySpec, metric_name: str | None, detector: str | None) -> MetricSpec:
    """The metric whose detector and lifecycle the backtest uses (default: the spec's defaults)."""
    metric = spec.metric(metric_name) if metric_name else spec.default_metric()
    if detector is not None and detector != metric.detector.kind:
        metric = with_detector(metric, detector)
    return metric


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def score_cmd(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV with a 'timestamp,value' header.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the scored CSV.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Anomaly spec YAML (default: the shipped one).")
    ] = None,
    detector: Annotated[
        str | None, typer.Option("--detector", help=f"Override the detector: {', '.join(DETECTOR_KINDS)}.")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Use this metric's detector and lifecycle (default: defaults)."),
    ] = None,
) -> None:
    """Backtest a series: score every row with the streaming detector and alert lifecycle.

    Writes timestamp,value,anomaly_score,alert (alert=1 on the row where a FIRING starts). The
    bucket length is the median spacing of the rows; missing rows count as empty buckets (0).
    """
    try:
        spec = load_anomaly_spec(config)
        chosen = resolve_metric(spec, metric, detector)
        series = read_series_csv(input)
        try:
            tuned = backtest_metric(chosen, series.times_ms)
            results = score_series(tuned, series.times_ms, series.values)
        except SeriesShapeError as exc:
            where = f"{input}:{series.lines[exc.row]}" if exc.row is not None else str(input)
            raise CsvFormatError(f"{where}: {exc}") from exc
    except (StreamwardenError, KeyError) as exc:
        raise _fail(str(exc).strip("'\"")) from exc
    try:
        with output.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["timestamp", "value", "anomaly_score", "alert"])
            for ts, raw, r in zip(series.timestamps, series.raw_values, results, strict=True):
                writer.writerow([ts, raw, f"{r.score:.6f}", int(r.alert)])
    except OSError as exc:
        raise _fail(f"{output}: cannot write: {exc.strerror or exc}") from exc
    alerts = sum(r.alert for r in results)
    typer.echo(
        f"scored {len(results)} rows of {input} (bucket {tuned.bucket_ms} ms, detector "
        f"{tuned.detector.kind}): {alerts} alert(s) -> {output}"
    )


def eval_cmd(
    seed: Annotated[int, typer.Option(help="Seed of the synthetic series.")] = 1,
    anomalous: Annotated[int, typer.Option(help="Series with labeled anomaly windows.", min=1)] = 24,
    clean: Annotated[int, typer.Option(help="Clean series (false alerts per day).", min=1)] = 12,
    days: Annotated[
        float, typer.Option(help="Length of each series in days (1-minute buckets).", min=3.0)
    ] = 6.0,
    detector: Annotated[
        list[str] | None, typer.Option("--detector", help="Detector(s) to evaluate (default: all).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Anomaly spec YAML whose defaults are evaluated.")
    ] = None,
) -> None:
    """Evaluate detectors on synthetic series: precision, recall, detection delay, false alerts per day.

    Prints one line per detector, then one JSON line last.
    """
    kinds = detector or list(DETECTOR_KINDS)
    unknown = [k for k in kinds if k not in DETECTOR_KINDS]
    if unknown:
        raise _fail(f"unknown detector(s) {unknown}; choose from {list(DETECTOR_KINDS)}")
    try:
        base = load_anomaly_spec(config).default_metric()
    except StreamwardenError as exc:
        raise _fail(str(exc)) from exc
    suite = generate_suite(seed, anomalous=anomalous, clean=clean, days=days)
    windows = sum(len(s.anomalies) for s in suite)
    typer.echo(
        f"{len(suite)} series ({anomalous} with {windows} labeled windows, {clean} clean), {days:g} days, "
        f"1-minute buckets; detected = FIRING within [start, end+{DETECT_SLACK}), "
        f"true alert = FIRING within [start, end+{RECOVERY_SLACK})"
    )
    reports = evaluate(base, suite, kinds)
    typer.echo(
        f"{'detector':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'delay':>6} {'fa/day':>7}  recall by kind"
    )
    figures: dict[str, dict[str, object]] = {}
    for r in reports:
        f1 = 2 * r.precision * r.recall / (r.precision + r.recall) if r.precision + r.recall else 0.0
        delay = "-" if r.median_delay_buckets is None else f"{r.median_delay_buckets:g}"
        by_kind = " ".join(f"{k}={v:.2f}" for k, v in r.recall_by_kind.items())
        typer.echo(
            f"{r.detector:<10} {r.precision:>9.3f} {r.recall:>7.3f} {f1:>6.3f} {delay:>6} "
            f"{r.false_alerts_per_day_clean:>7.3f} {r.warmup_buckets:>7} {r.state_bytes:>8}  {by_kind}"
        )
        figures[r.detector] = {
            "precision": round(r.precision, 4),
            "recall": round(r.recall, 4),
            "f1": round(f1, 4),
            "median_delay_buckets": r.median_delay_buckets,
            "false_alerts_per_day_clean": round(r.false_alerts_per_day_clean, 4),
            "alerts": r.firing_total,
            "windows": r.windows,
            "recall_by_kind": {k: round(v, 4) for k, v in r.recall_by_kind.items()},
            "warmup_buckets": r.warmup_buckets,
            "state_bytes": r.state_bytes,
        }
    summary = {
        "bench": "anomaly_eval",
        "seed": seed,
        "series": len(suite),
        "windows": windows,
        "days": days,
        "detectors": figures,
    }
    sys.stdout.flush()
    typer.echo(json.dumps(summary, sort_keys=True))
