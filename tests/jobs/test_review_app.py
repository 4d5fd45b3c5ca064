"""The review console's HTTP surface (Starlette's TestClient over the real app and a SQLite store):
sessions, CSRF, roles, decisions and the appeals API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streamwarden.jobs.review.app import create_app
from streamwarden.jobs.review.store import ReviewStore
from streamwarden.operators.review.routing import load_routing
from streamwarden.schemas import streamwarden_pb2 as pb


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReviewStore]:
    s = ReviewStore.open(f"sqlite:///{tmp_path / 'review.db'}")
    s.add_user("rita", "reviewer-pass", "reviewer")
    s.add_user("ada", "admin-pass!", "admin")
    yield s
    s.close()


@pytest.fixture
def client(store: ReviewStore) -> TestClient:
    return TestClient(create_app(store, load_routing(), thresholds={"gbt": 0.05}))


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client: TestClient, user: str, password: str) -> str:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": user, "password": password, "csrf_token": token})
    assert r.status_code == 200 and "Queues" in r.text, r.text[:300]
    return csrf_of(r.text)


def add_job(store: ReviewStore, subject: str = "acc1") -> None:
    a = pb.Action(
        action_id=f"a-{subject}", event_id=f"e-{subject}", subject=pb.Subject(kind=pb.ACCOUNT, id=subject),
        verdict=pb.Action.SEND_TO_REVIEW, reasons=["spam-account-review"], event_time_ms=1, mode=pb.Action.ENFORCE,
    )  # fmt: skip
    a.scores["gbt"] = 0.8
    store.ingest_actions([(a, "spam")])


def test_pages_need_a_session_and_posts_need_the_csrf_token(client: TestClient, store: ReviewStore) -> None:
    add_job(store)
    r = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/api/queues").status_code == 401
    assert client.post("/queues/spam/start", data={"csrf_token": "x"}).status_code == 403  # no session
    token = login(client, "rita", "reviewer-pass")
    assert client.post("/queues/spam/start", data={}).status_code == 403
    assert client.post("/queues/spam/start", data={"csrf_token": token + "x"}).status_code == 403
    assert store.queue_stats(["spam"])[0].claimed == 0  # nothing happened
    r = client.post("/queues/spam/start", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    assert store.queue_stats(["spam"])[0].claimed == 1


def test_wrong_password_and_login_without_csrf_are_refused(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": "rita", "password": "nope", "csrf_token": token})
    assert r.status_code == 401
    r = client.post("/login", data={"username": "rita", "password": "reviewer-pass"})
    assert r.status_code == 403


def test_a_reviewer_cannot_reach_admin_pages(client: TestClient) -> None:
    token = login(client, "rita", "reviewer-pass")
    assert client.get("/admin/users").status_code == 403
    assert client.get("/admin/audit").status_code == 403
    data = {"username": "eve", "role": "admin", "password": "12345678", "csrf_token": token}
    assert client.post("/admin/users", data=data).status_code == 403
    client.post("/logout", data={"csrf_token": token})
    token = login(client, "ada", "admin-pass!")
    assert client.get("/admin/users").status_code == 200
    data["csrf_token"] = token
    assert client.post("/admin/users", data=data, follow_redirects=False).status_code == 303
    assert "eve" in client.get("/admin/users").text
    assert "user.add" in client.get("/admin/audit").text


def test_decision_needs_its_reason_then_the_next_job_loads(client: TestClient, store: ReviewStore) -> None:
    add_job(store, "acc1")
    add_job(store, "acc2")
    token = login(client, "rita", "reviewer-pass")
    first = client.post("/queues/spam/start", data={"csrf_token": token}, follow_redirects=False).headers[
        "location"
    ]
    page = client.get(first).text
    assert "spam-account-review" in page and "0.800" in page and "0.050" in page  # score with its threshold
    r = client.post(f"{first}/decide", data={"csrf_token": token, "decision": "overturn"})
    assert r.status_code == 400 and "reason is required" in r.text
    r = client.post(
        f"{first}/decide", data={"csrf_token": token, "decision": "overturn", "reason": "organic"},
        follow_redirects=False,
    )  # fmt: skip
    second = r.headers["location"]
    assert r.status_code == 303 and second.startswith("/jobs/") and second != first
    assert len(store.pending_labels()) == 1


def test_appeals_api_with_an_api_key(client: TestClient, store: ReviewStore) -> None:
    store.add_user("appeals-svc", None, "reviewer")
    key = store.new_api_key("appeals-svc")
    body = {"subject_kind": "account", "subject_id": "acc1", "reason": "not spam", "appeal_id": "ap-1"}
    assert client.post("/api/appeals", json=body).status_code == 403  # no key, no session: CSRF refuses
    assert client.post("/api/appeals", json=body, headers={"x-api-key": "bad"}).status_code == 401
    r = client.post("/api/appeals", json=body, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 404  # nothing decided about acc1 yet
    add_job(store, "acc1")
    job = store.claim_next("spam", "rita", 60)
    assert job is not None
    from streamwarden.operators.review.decisions import DecisionInput

    store.decide(job, "rita", DecisionInput("uphold", "spam_burst"))
    r = client.post("/api/appeals", json=body, headers={"x-api-key": key})
    assert r.status_code == 201 and r.json()["created"]
    assert client.post("/api/appeals", json=body, headers={"x-api-key": key}).json() == {
        "job_id": r.json()["job_id"], "created": False,
    }  # fmt: skip
    queues = {q["queue"]: q for q in client.get("/api/queues", headers={"x-api-key": key}).json()}
    assert queues["appeals"]["pending"] == 1
