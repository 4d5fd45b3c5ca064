"""End to end in a real browser: Playwright drives Debian's Chromium against the review service, which
reads the real (embedded) broker. Actions in -> a reviewer logs in, opens the queue, sees the evidence,
decides with the keyboard -> the label is on the labels topic -> ``feedback build`` turns it into a
training row. A second browser session never sees the first one's claimed job."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streamwarden.jobs.cli.feedback import build_dataset
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import drain
from streamwarden.jobs.review.kafka_loops import ReviewTopics
from streamwarden.jobs.review.service import ReviewService
from streamwarden.jobs.review.store import ReviewStore
from streamwarden.operators.evaluation.feedback import read_dataset
from streamwarden.operators.review.routing import load_routing
from streamwarden.schemas import streamwarden_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def new_browser() -> Iterator[Callable[[], Any]]:
    """Factory of fresh browser contexts (each its own Chromium with its own user-data dir)."""
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    dirs: list[str] = []
    contexts: list[object] = []
    with sync_playwright() as pw:

        def new_context() -> object:
            d = tempfile.mkdtemp(prefix="sw-chromium-")
            dirs.append(d)
            ctx = pw.chromium.launch_persistent_context(
                d, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            contexts.append(ctx)
            return ctx

        yield new_context
        for ctx in contexts:
            ctx.close()  # type: ignore[attr-defined]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _action(action_id: str, account: str, event_id: str, t: int) -> pb.Action:
    a = pb.Action(
        action_id=action_id, event_id=event_id, subject=pb.Subject(kind=pb.ACCOUNT, id=account),
        verdict=pb.Action.SEND_TO_REVIEW, reasons=["spam-account-review"], event_time_ms=t,
        decision_time_ms=t + 20, mode=pb.Action.ENFORCE, model_version="gbt-test", policy_version="p-test",
    )  # fmt: skip
    a.scores["gbt"] = 0.97
    return a


def test_reviewer_decides_in_the_browser_and_the_label_feeds_training(
    broker: object,
    kafka_config: KafkaConfig,
    kafka_topics: Callable[..., list[str]],
    new_browser: Callable[[], Any],
    tmp_path: Path,
) -> None:
    actions_t, labels_t, features_t, events_t, appeals_t = kafka_topics(
        "actions", "labels", "features", "events", "appeals"
    )
    store = ReviewStore.open(f"sqlite:///{tmp_path / 'review.db'}")
    store.add_user("rita", "rita-password", "reviewer")
    store.add_user("rob", "rob-password", "reviewer")
    service = ReviewService(
        store, load_routing(), kafka_config, ReviewTopics(actions_t, labels_t, features_t, appeals_t), port=0,
        group_id=f"review-{actions_t}",
    )  # fmt: skip
    url = service.start()
    try:
        now = int(time.time() * 1000)
        producer = Producer({"bootstrap.servers": kafka_config.bootstrap_servers})
        for i, account in enumerate(("acc-e2e-1", "acc-e2e-2")):
            event_id = f"ev-e2e-{i}"
            ev = pb.Event(
                event_id=event_id, event_time_ms=now - 5000, type=pb.Event.COMMENT, schema_version=1
            )
            ev.actor.account_id = account
            producer.produce(events_t, ev.SerializeToString(), event_id.encode())
            rec = pb.FeatureRecord(
                event_id=event_id, names=["account.count_post.10m", "event.url_count"], values=[7.0 + i, 2.0],
                event_time_ms=now - 5000,
            )  # fmt: skip
            producer.produce(features_t, rec.SerializeToString(), event_id.encode())
            producer.produce(
                actions_t, _action(f"act-{i}", account, event_id, now - 5000).SerializeToString()
            )
        # the same action again (at-least-once delivery): still one job
        producer.produce(actions_t, _action("act-0", "acc-e2e-1", "ev-e2e-0", now - 5000).SerializeToString())
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 60
        while store.queue_stats(["spam"])[0].pending < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.queue_stats(["spam"])[0].pending == 2
        assert service.ingestor is not None and service.ingestor.counters.duplicates == 1

        a = new_browser()
        b = new_browser()
        page_a = a.pages[0] if a.pages else a.new_page()
        page_b = b.pages[0] if b.pages else b.new_page()
        for page, user, pw in ((page_a, "rita", "rita-password"), (page_b, "rob", "rob-password")):
            page.goto(url + "/")
            assert page.url.endswith("/login")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", pw)
            page.click("button[type=submit]")
            page.wait_for_selector("tr[data-queue=spam]")

        assert page_a.inner_text("tr[data-queue=spam] .pending") == "2"
        page_a.click("tr[data-queue=spam] button")
        page_a.wait_for_selector("#decide-form")
        job_a = page_a.inner_text("#job-id")
        subject_a = page_a.inner_text("#subject")
        evidence = page_a.inner_text("main")
        assert "spam-account-review" in evidence and "SEND_TO_REVIEW" in evidence
        assert "gbt 0.970" in evidence  # the model score, with its threshold next to it
        assert "account.count_post.10m" in evidence  # feature names from the feature log
        assert page_a.url.endswith(f"/jobs/{job_a}")  # every job its own URL

        page_b.click("tr[data-queue=spam] button")
        page_b.wait_for_selector("#decide-form")
        job_b = page_b.inner_text("#job-id")
        assert job_b != job_a and page_b.inner_text("#subject") != subject_a
        page_b.goto(url + f"/jobs/{job_a}")  # rob can look at rita's job but not decide it
        assert page_b.locator("#decide-form").count() == 0

        page_a.keyboard.press("2")  # second category
        page_a.keyboard.press("u")  # uphold
        page_a.wait_for_url(lambda u: "/jobs/" not in u)  # nothing left to claim: back to the queues
        assert "nothing left" in page_a.inner_text("main")

        labels = drain(kafka_config, labels_t, expected_count=1, idle_timeout_s=10, max_wait_s=60)
        assert len(labels) == 1
        label = pb.ReviewLabel.FromString(labels[0].value or b"")
        assert (label.subject.id, label.label, label.reviewer) == (
            subject_a.split(":", 1)[1],
            "abuse",
            "rita",
        )
        assert label.category == load_routing().categories[1] and label.rule_ids == ["spam-account-review"]

        out = tmp_path / "dataset.csv"
        stats, _ = build_dataset(
            kafka_config, labels_topic=labels_t, features_topic=features_t, events_topic=events_t, out=out,
            idle_timeout_s=2.0,
        )  # fmt: skip
        data = read_dataset(out)
        assert stats.decisions == 1 and stats.rows == 1 and list(data.y) == [1]
        assert data.account_ids == [label.subject.id] and data.feature_names[0] == "account.count_post.10m"
    finally:
        service.stop()
        store.close()
