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

from streamwarden.operators.anomaly.backtest import backtest_metric, bucket_history, score_series
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
    """A parsed ``timestamp,value`` file; ``lines`` are the 1-based file lines of the rows.
    ``values`` holds None where the value is empty or not finite (a missing measurement)."""

    timestamps: list[str]
    raw_values: list[str]
    times_ms: list[int]
    values: list[float | None]
    lines: list[int]


def parse_timestamp_ms(text: str) -> int:
    """ISO 8601 (``2014-03-09 03:00:00``, ``...T...Z``, with or without an offset; no zone = UTC) or a
    number: epoch seconds (below 10^11, fractions allowed) or epoch milliseconds."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        return round(number * 1000) if abs(number) < 1e11 else round(number)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


_MISSING = {"", "nan", "null", "none", "na", "n/a"}


def parse_value(raw: str) -> float | None:
    """A number, or None for a missing one (empty, NaN, null, NA, +-inf); ``ValueError`` otherwise."""
    text = raw.strip()
    if text.lower() in _MISSING:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def read_series_csv(path: Path) -> SeriesCsv:
    """Read ``timestamp,value`` rows: a header whose first two columns are timestamp and value (any
    case; further columns are ignored) or no header at all. Rows may be unsorted, duplicated, irregular;
    a row whose timestamp or value cannot be read at all is an error naming ``path:line``."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CsvFormatError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    out = SeriesCsv([], [], [], [], [])
    with handle:
        reader = csv.reader(handle)
        try:
            first = True
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if first:
                    first = False
                    names = [h.strip().lower() for h in row]
                    if names[:2] == ["timestamp", "value"]:
                        continue
                    if not _looks_like_data(row):
                        raise CsvFormatError(
                            f"{path}:{line}: header must start with 'timestamp,value', got {','.join(row)!r}"
                        )
                if len(row) < 2:
                    raise CsvFormatError(
                        f"{path}:{line}: expected 2 columns (timestamp,value), got {len(row)}"
                    )
                ts, raw = row[0].strip(), row[1].strip()
                try:
                    t_ms = parse_timestamp_ms(ts)
                except (ValueError, OverflowError) as exc:
                    raise CsvFormatError(f"{path}:{line}: bad timestamp {ts!r} (ISO 8601 or epoch)") from exc
                try:
                    value = parse_value(raw)
                except ValueError as exc:
                    raise CsvFormatError(f"{path}:{line}: value {raw!r} is not a number") from exc
                out.timestamps.append(ts)
                out.raw_values.append(raw)
                out.times_ms.append(t_ms)
                out.values.append(value)
                out.lines.append(line)
        except csv.Error as exc:
            raise CsvFormatError(f"{path}:{reader.line_num}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise CsvFormatError(f"{path}: not UTF-8 text: {exc}") from exc
    return out


def _looks_like_data(row: list[str]) -> bool:
    if len(row) < 2:
        return False
    try:
        parse_timestamp_ms(row[0])
        parse_value(row[1])
    except (ValueError, OverflowError):
        return False
    return True


def resolve_metric(
    spec: AnomalySpec, metric_name: str | None, detector: str | None, kind: str | None = None
) -> MetricSpec:
    """The metric whose detector and lifecycle the backtest uses (default: the spec's defaults, as a
    gauge unless ``kind`` says otherwise)."""
    if metric_name:
        metric = spec.metric(metric_name)
        if kind is not None and kind != metric.kind:
            raw = metric.model_dump()
            raw["kind"] = kind
            raw["detector"] = {**raw["detector"], "count_floor": None}
            metric = MetricSpec.model_validate(raw)
    else:
        metric = spec.default_metric(kind=kind or "gauge")
    if detector is not None and detector != metric.detector.kind:
        metric = with_detector(metric, detector)
    return metric


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def score_cmd(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV with 'timestamp,value' rows.")],
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
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="count (rows add up per bucket, a missing bucket is 0) or gauge (rows average, a missing "
            "bucket is missing). Default: the metric's kind with --metric, else gauge.",
        ),
    ] = None,
    backfill: Annotated[
        Path | None,
        typer.Option("--backfill", help="History CSV (same format) to warm the detector up from first."),
    ] = None,
) -> None:
    """Backtest a series: score every row with the streaming detector and alert lifecycle.

    Writes timestamp,value,anomaly_score,alert. Any well-formed file is accepted: rows in any order,
    duplicated timestamps and rows sharing a bucket (summed for count, averaged for gauge), irregular
    spacing, gaps. The bucket is the median spacing of the distinct timestamps. anomaly_score in [0, 1)
    is s/(s+6), s = -log10(tail probability) (0.5 = p 1e-6); alert=1 on the row where a FIRING starts.
    """
    if kind is not None and kind not in ("count", "gauge"):
        raise _fail(f"--kind must be count or gauge, got {kind!r}")
    try:
        spec = load_anomaly_spec(config)
        chosen = resolve_metric(spec, metric, detector, kind)
        series = read_series_csv(input)
        history_rows = read_series_csv(backfill) if backfill is not None else None
        all_times = series.times_ms + (history_rows.times_ms if history_rows else [])
        tuned = backtest_metric(chosen, series.times_ms or all_times)
        history = None
        if history_rows is not None:
            history = bucket_history(tuned, history_rows.times_ms, history_rows.values)
            if series.times_ms and history[1] and history[0] >= min(series.times_ms):
                raise CsvFormatError(f"{backfill}: the backfill must end before the series starts")
        results = score_series(tuned, series.times_ms, series.values, history)
    except (StreamwardenError, KeyError) as exc:
        raise _fail(str(exc).strip("'\"")) from exc
    try:
        with output.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["timestamp", "value", "anomaly_score", "alert"])
            for ts, raw, r in zip(series.timestamps, series.raw_values, results, strict=True):
                writer.writerow([ts, raw, repr(r.score), int(r.alert)])
    except OSError as exc:
        raise _fail(f"{output}: cannot write: {exc.strerror or exc}") from exc
    alerts = sum(r.alert for r in results)
    typer.echo(
        f"scored {len(results)} rows of {input} ({tuned.kind}, bucket {tuned.bucket_ms} ms, detector "
        f"{tuned.detector.kind}, alert threshold {tuned.detector.threshold}): {alerts} alert(s) -> {output}"
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
    realistic: Annotated[
        bool,
        typer.Option(
            "--realistic",
            help="Realistic labeled gauges and counts, NAB-style window score (standard / low-FP / low-FN) "
            "vs the windowed-Gaussian baseline, thresholds chosen on a calibration suite (seed + 1000).",
        ),
    ] = False,
    per_kind: Annotated[int, typer.Option(help="--realistic: series per anomaly kind.", min=1)] = 6,
) -> None:
    """Evaluate detectors on synthetic series: precision, recall, detection delay, false alerts per day.

    Prints one line per detector, then one JSON line last.
    """
    if realistic:
        _eval_realistic(seed, per_kind, clean, detector, config)
        return
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


def _eval_realistic(
    seed: int, per_kind: int, clean: int, detector: list[str] | None, config: Path | None
) -> None:
    from streamwarden.operators.anomaly.benchmark import PROFILES
    from streamwarden.operators.anomaly.evaluate import BASELINE, evaluate_realistic
    from streamwarden.operators.anomaly.realistic import REALISTIC_KINDS, realistic_suite

    kinds = list(detector or DETECTOR_KINDS)
    unknown = [k for k in kinds if k not in DETECTOR_KINDS]
    if unknown:
        raise _fail(f"unknown detector(s) {unknown}; choose from {list(DETECTOR_KINDS)}")
    try:
        base = load_anomaly_spec(config).default_metric()
    except StreamwardenError as exc:
        raise _fail(str(exc)) from exc
    calibration = realistic_suite(seed + 1000, per_kind=per_kind, clean=clean)
    test = realistic_suite(seed, per_kind=per_kind, clean=clean)
    windows = sum(len(s.anomalies) for s in test)
    days = sum(s.days for s in test)
    typer.echo(
        f"test suite: {len(test)} series ({per_kind} per kind x {len(REALISTIC_KINDS)} kinds + {clean} clean), "
        f"{windows} labeled anomalies, {days:.0f} series-days; thresholds chosen on seed {seed + 1000}"
    )
    reports = evaluate_realistic(base, calibration, test, [*kinds, BASELINE])
    baseline = next(r for r in reports if r.detector == BASELINE)
    header = " ".join(f"{p:>9}" for p in PROFILES)
    typer.echo(
        f"{'detector':<18} {header} {'x base':>7} {'alerts':>7} {'fa/s-day':>8}  recall / precision by kind"
    )
    figures: dict[str, dict[str, object]] = {}
    for r in reports:
        ratio = r.nab["standard"] / baseline.nab["standard"] if baseline.nab["standard"] > 0 else math.inf
        by_kind = " ".join(
            f"{k}={r.recall_by_kind.get(k, 0):.2f}/{r.precision_by_kind.get(k, 1):.2f}"
            for k in REALISTIC_KINDS
        )
        alert = "-" if r.alert_nab_standard is None else f"{r.alert_nab_standard:.1f}"
        fa = "-" if r.false_alerts_per_series_day is None else f"{r.false_alerts_per_series_day:.3f}"
        scores = " ".join(f"{r.nab[p]:>9.1f}" for p in PROFILES)
        typer.echo(f"{r.detector:<18} {scores} {ratio:>7.2f} {alert:>7} {fa:>8}  {by_kind}")
        figures[r.detector] = {**r.as_dict(), "ratio_to_baseline_standard": round(ratio, 4)}
    sys.stdout.flush()
    typer.echo(
        json.dumps(
            {
                "bench": "anomaly_eval_realistic",
                "seed": seed,
                "series": len(test),
                "windows": windows,
                "series_days": round(days, 2),
                "detectors": figures,
            },
            sort_keys=True,
            default=float,
        )
    )
