"""The Beam anomaly stage against the offline reference (``operators.anomaly.replay``): the same
recorded stream gives the same alerts, the same late points, and the stage rides along in the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

from streamwarden.jobs.beam.alerts import AnomalyAlerts
from streamwarden.jobs.beam.kafka_source import KafkaRecord
from streamwarden.jobs.beam.pipeline import StreamwardenTransform, pipeline_options
from streamwarden.operators.anomaly import load_anomaly_spec
from streamwarden.operators.anomaly.replay import alert_sort_key, replay
from streamwarden.operators.pipeline import StagesConfig
from streamwarden.operators.traffic import iter_traffic, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.engine]

OUT_OF_ORDERNESS_MS = 2_000
CONFIG = StagesConfig(out_of_orderness_ms=OUT_OF_ORDERNESS_MS)


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    return [r.payload for r in iter_traffic(small_spec(seed=3))]


def _records(payloads: list[bytes]) -> list[KafkaRecord]:
    return [KafkaRecord("events", 0, i, None, p, 0) for i, p in enumerate(payloads)]


_COLLECTED: list[bytes] = []
"""Alert values the pipeline emitted (module level: the DirectRunner pickles the DoFns, not this list)."""


def _collect(kv: tuple[bytes, bytes]) -> None:
    _COLLECTED.append(kv[1])


def _run(payloads: list[bytes], build: Any) -> tuple[list[pb.AnomalyAlert], dict[str, int]]:
    _COLLECTED.clear()
    pipeline = beam.Pipeline(options=pipeline_options())
    records = pipeline | beam.Create(_records(payloads), reshuffle=False)
    alerts = build(records)
    _ = alerts | beam.Map(_collect)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: int(c.committed)
        for c in result.metrics().query(MetricsFilter().with_namespace("streamwarden"))["counters"]
    }
    out = [pb.AnomalyAlert.FromString(b) for b in _COLLECTED]
    return sorted(out, key=alert_sort_key), counters


def _reference(payloads: list[bytes], spec_path: Path) -> Any:
    return replay(payloads, load_anomaly_spec(spec_path), out_of_orderness_ms=OUT_OF_ORDERNESS_MS)


def test_the_job_emits_the_alerts_of_the_offline_replay(
    payloads: list[bytes], fast_anomaly_spec: Path
) -> None:
    reference = _reference(payloads, fast_anomaly_spec)
    expected = sorted(reference.alerts, key=alert_sort_key)
    assert any(a.status == pb.AnomalyAlert.FIRING for a in expected), "the stream must make alerts"
    assert any(e.at_end_of_input for e in reference.emitted), "and one closed by the end-of-input flush"
    assert reference.late_points > 0

    def build(recs: Any) -> Any:
        out = recs | StreamwardenTransform(
            CONFIG, check_future=False, anomaly_spec=fast_anomaly_spec, flush_alerts_at_end=True
        )
        assert out.alerts is not None
        return out.alerts

    alerts, counters = _run(payloads, build)

    assert [a.SerializeToString(deterministic=True) for a in alerts] == [
        a.SerializeToString(deterministic=True) for a in expected
    ]
    assert counters["anomaly_late_points"] == reference.late_points
    assert counters["events"] == reference.events  # the rest of the job ran alongside


def test_without_flush_only_the_end_of_input_alerts_are_missing(
    payloads: list[bytes], fast_anomaly_spec: Path
) -> None:
    reference = _reference(payloads, fast_anomaly_spec)
    in_stream = sorted((e.alert for e in reference.emitted if not e.at_end_of_input), key=alert_sort_key)

    alerts, _ = _run(
        payloads, lambda recs: recs | AnomalyAlerts(CONFIG, fast_anomaly_spec, check_future=False)
    )

    assert alerts == in_stream
