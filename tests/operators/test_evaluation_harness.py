"""The eval harness on hand-built events, labels and actions: which events belong to an attack, the
timeline marks, the table and the HTML report; reading traffic files."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.evaluation import evaluate
from streamwarden.operators.evaluation.harness import (
    event_scenarios,
    first_actions,
    format_table,
    latencies_ms,
    summary,
    traffic_from_files,
)
from streamwarden.operators.evaluation.html import latency_histogram_svg, render_html, timeline_svg
from streamwarden.operators.traffic import Label, write_labels
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import write_delimited

A = pb.Action


def _event(eid: str, t_ms: int, account: str = "", ip: str = "", asn: int = 0) -> pb.Event:
    return pb.Event(
        event_id=eid,
        event_time_ms=t_ms,
        type=pb.Event.COMMENT,
        actor=pb.Actor(account_id=account, ip=ip, asn=asn),
        target=pb.Target(content_id="T1", account_id="V1"),
        schema_version=1,
    )


LABELS = [
    Label("spam_burst", "account", "S1", 1_000, 2_000),
    Label("credential_stuffing", "ip", "I5", 1_500, 3_000),
    Label("signup_burst", "asn", "64512", 0, 10_000),
    Label(
        "streaming_farm", "target_content", "T1", 0, 10_000
    ),  # a target label: never makes an event an attack's
]


def test_event_scenarios_follow_actor_labels_within_their_window() -> None:
    events = [
        _event("e1", 1_200, account="S1"),  # spam account inside its window
        _event("e2", 2_000, account="S1"),  # at end_ms: outside (end exclusive)
        _event("e3", 1_600, account="O1", ip="I5"),  # stuffing IP on an organic account
        _event("e4", 1_600, account="S1", ip="I5"),  # both: spam_burst comes first in SCENARIO_NAMES
        _event("e5", 5_000, account="O2", asn=64512),  # asn label
        _event("e6", 5_000, account="O3"),  # organic, though its target T1 is labeled
    ]
    assert event_scenarios(events, LABELS) == {
        "e1": "spam_burst",
        "e3": "credential_stuffing",
        "e4": "spam_burst",
        "e5": "signup_burst",
    }


def _act(
    rule: str, kind: int, subject: str, t_ms: int, eid: str, verdict: int = A.FLAG, **kw: int
) -> pb.Action:
    return pb.Action(
        event_id=eid,
        subject=pb.Subject(kind=kind, id=subject),  # type: ignore[arg-type]
        verdict=verdict,  # type: ignore[arg-type]
        reasons=[rule],
        mode=kw.get("mode", A.ENFORCE),  # type: ignore[arg-type]
        event_time_ms=t_ms,
        decision_time_ms=kw.get("decision_ms", 0),
    )


ACTIONS = [
    _act("spam-review", pb.ACCOUNT, "S1", 1_500, "e1", decision_ms=1_010),
    _act("spam-review", pb.ACCOUNT, "S1", 1_300, "e7", decision_ms=1_040),  # earlier in event time
    _act("spam-block", pb.TARGET_ACCOUNT, "V1", 1_200, "e1", A.BLOCK),  # victim: attack event only
    _act("spam-block", pb.TARGET_ACCOUNT, "V2", 1_250, "e1", A.BLOCK),
    _act("spam-block", pb.TARGET_ACCOUNT, "V2", 1_260, "e6", A.BLOCK),  # ... and an organic one
    _act("allow", pb.ACCOUNT, "O9", 1_000, "e6", A.ALLOW),  # ALLOW: never a mark
    _act("shadow", pb.ACCOUNT, "O8", 1_000, "e6", mode=A.SHADOW_MODE),  # shadow mode: not counted
]


def test_first_actions_mark_labeled_victims_and_false_positives() -> None:
    marks = first_actions(ACTIONS, LABELS, {"e1": "spam_burst", "e7": "spam_burst"})
    got = [(m.time_ms, m.kind, m.subject_id, m.scenario, m.collateral) for m in marks]
    assert got == [
        (1_200, "target_account", "V1", None, True),
        (1_250, "target_account", "V2", None, False),
        (1_300, "account", "S1", "spam_burst", False),
    ]
    assert marks[2].rules == ("spam-review",)
    # Without event scenarios nothing can be called collateral.
    assert not any(m.collateral for m in first_actions(ACTIONS, LABELS))


def test_latencies_use_known_ingest_times_only() -> None:
    assert latencies_ms(ACTIONS[:2], {"e1": 1_000}) == [10.0]


def test_table_and_summary_carry_every_scenario() -> None:
    report = evaluate(ACTIONS, LABELS, organic_subjects={"account": 10, "target_account": 5})
    table = format_table(report, "test basis")
    for name in ("spam_burst", "credential_stuffing", "signup_burst", "streaming_farm", "overall"):
        assert name in table
    assert "(test basis)" not in table  # no latency figures without ingest times
    out = summary(report, engine="replay")
    assert out["engine"] == "replay"
    assert set(out["scenarios"]) == {"spam_burst", "credential_stuffing", "signup_burst", "streaming_farm"}
    assert out["scenarios"]["spam_burst"]["recall"] == 1.0


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_html_report_is_self_contained_and_well_formed() -> None:
    report = evaluate(ACTIONS, LABELS, ingest_ms={"e1": 1_000, "e7": 1_000})
    marks = first_actions(ACTIONS, LABELS, {"e1": "spam_burst"})
    page = render_html(
        report, marks, LABELS, [10.0, 40.0, 5_000.0], start_ms=0, end_ms=10_000, meta={"engine": "x"}
    )
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    body = page[page.index("<body>") : page.index("</body>") + len("</body>")]
    root = ET.fromstring(body.replace("<br>", ""))  # the body is well-formed XML
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "spam_burst" in texts and "victims (collateral)" in texts and "false positives" in texts


def test_latency_histogram_counts_every_value() -> None:
    values = [float(v) for v in range(100)] + [10_000.0]  # one outlier lands in the last bin
    root = _parse(latency_histogram_svg(values, bins=10))
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    counts = [int(b.find("{http://www.w3.org/2000/svg}title").text.rsplit(": ", 1)[1]) for b in bars]  # type: ignore[union-attr]
    assert len(bars) == 10 and sum(counts) == 101
    assert "no latency figures" in latency_histogram_svg([])


def test_timeline_places_marks_inside_the_plot() -> None:
    marks = first_actions(ACTIONS, LABELS, {"e1": "spam_burst"})
    root = _parse(timeline_svg(marks, LABELS, start_ms=0, end_ms=10_000))
    ticks = [
        e
        for e in root.iter("{http://www.w3.org/2000/svg}line")
        if e.find("{http://www.w3.org/2000/svg}title") is not None
    ]
    assert len(ticks) == 3
    xs = [float(t.get("x1", "nan")) for t in ticks]
    # 720 px wide, plot from x=170 to x=700 over 10 s: 1.2 s is at 170 + 530 * 0.12.
    assert xs[0] == pytest.approx(170 + 530 * 0.12, abs=0.1)


def test_traffic_from_files_round_trip_and_errors(tmp_path: Path) -> None:
    events = [_event("e1", 1_200, account="S1"), _event("e3", 1_600, account="O1", ip="I5")]
    buf = io.BytesIO()
    write_delimited(buf, [e.SerializeToString() for e in events] + [b"\x00garbage"])
    (tmp_path / "events.pb").write_bytes(buf.getvalue())
    write_labels(tmp_path / "labels.jsonl", LABELS)
    t = traffic_from_files(tmp_path / "events.pb", tmp_path / "labels.jsonl")
    assert len(t.payloads) == 3 and [e.event_id for e in t.events] == ["e1", "e3"]
    assert t.event_ids == ["e1", "e3", None] and t.keys == [b"S1", b"O1", None]
    assert t.event_scenarios == {"e1": "spam_burst", "e3": "credential_stuffing"}
    assert (t.start_ms, t.end_ms) == (0, 10_000)
    (tmp_path / "cut.pb").write_bytes(buf.getvalue()[:-3])
    with pytest.raises(ConfigError, match=r"cut\.pb"):
        traffic_from_files(tmp_path / "cut.pb", tmp_path / "labels.jsonl")
    with pytest.raises(ConfigError, match=r"missing\.jsonl: file not found"):
        traffic_from_files(tmp_path / "events.pb", tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no labels"):
        traffic_from_files(tmp_path / "events.pb", tmp_path / "empty.jsonl")
