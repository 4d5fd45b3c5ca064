"""The review store against real databases: SQLite (file, WAL) and a throwaway PostgreSQL cluster
(initdb/pg_ctl in a temp dir; CI installs PostgreSQL, so a missing server fails the test, never skips)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from streamwarden.jobs.review.models import Base
from streamwarden.jobs.review.store import ClaimLost, ReviewStore, StoreError
from streamwarden.operators.evaluation.feedback import parse_decisions
from streamwarden.operators.review.decisions import DecisionInput
from streamwarden.schemas import streamwarden_pb2 as pb


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} not found: install the postgresql package (.ci/run does)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of our own for the session (trust auth on 127.0.0.1, a free port)."""
    root = Path(tempfile.mkdtemp(prefix="streamwarden-pg-"))  # not under pytest's root-only temp dir
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres system user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReviewStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'review.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        from sqlalchemy import create_engine

        eng = create_engine(url)
        with eng.begin() as conn:  # a clean schema per test
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        eng.dispose()
    s = ReviewStore.open(url)
    yield s
    s.close()


def action(
    action_id: str, subject: str, rules: tuple[str, ...] = ("spam-account-review",), t: int = 1000
) -> pb.Action:
    a = pb.Action(
        action_id=action_id, event_id=f"ev-{action_id}", subject=pb.Subject(kind=pb.ACCOUNT, id=subject),
        verdict=pb.Action.SEND_TO_REVIEW, reasons=list(rules), event_time_ms=t, decision_time_ms=t + 5,
        mode=pb.Action.ENFORCE, model_version="m1", policy_version="p1",
    )  # fmt: skip
    a.scores["gbt"] = 0.93
    return a


def test_migrations_match_the_models(store: ReviewStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_ingestion_is_idempotent_and_attaches_to_the_open_job(store: ReviewStore) -> None:
    a1, a2, a3 = action("a1", "acc1"), action("a2", "acc1", t=2000), action("a3", "acc2")
    r = store.ingest_actions([(a1, "spam"), (a1, "spam"), (a2, "spam"), (a3, "spam")])
    assert (r.new_jobs, r.attached, r.duplicates) == (2, 1, 1)
    again = store.ingest_actions([(a1, "spam"), (a2, "spam")])  # a redelivered batch after a restart
    assert (again.new_jobs, again.attached, again.duplicates) == (0, 0, 2)
    jobs = store.jobs_in("spam")
    assert sorted(j.subject_id for j in jobs) == ["acc1", "acc2"]
    acc1 = store.job(next(j.id for j in jobs if j.subject_id == "acc1"))
    assert acc1 is not None and [a.action_id for a in acc1.actions] == ["a1", "a2"]
    # history-only actions (not routed to review) show as the subject's other actions
    store.ingest_actions([(action("h1", "acc1", ("farm-account-flag",), t=500), None)])
    acc1 = store.job(acc1.id)
    assert acc1 is not None and [h.action_id for h in acc1.history] == ["h1"]


def test_claims_are_exclusive_and_leases_expire(store: ReviewStore) -> None:
    store.ingest_actions([(action("a1", "acc1"), "spam"), (action("a2", "acc2"), "spam")], received_ms=1000)
    j1 = store.claim_next("spam", "alice", lease_s=60, at_ms=10_000)
    assert store.claim_next("spam", "alice", lease_s=60, at_ms=10_001) == j1  # her own claim comes back
    j2 = store.claim_next("spam", "bob", lease_s=60, at_ms=10_002)
    assert j2 is not None and j2 != j1
    assert store.claim_next("spam", "carol", lease_s=60, at_ms=10_003) is None
    # alice abandons j1: after the lease it goes to carol, and alice can no longer decide it
    assert store.claim_next("spam", "carol", lease_s=60, at_ms=70_000) == j1
    with pytest.raises(ClaimLost):
        store.decide(j1, "alice", DecisionInput("overturn"))
    store.decide(j1, "carol", DecisionInput("overturn", reason="fine"))


def test_concurrent_claimers_never_get_the_same_job(store: ReviewStore) -> None:
    n_jobs, n_threads = 40, 8
    store.ingest_actions([(action(f"a{i}", f"acc{i}"), "spam") for i in range(n_jobs)])
    got: list[tuple[str, str]] = []
    barrier = threading.Barrier(n_threads)
    failures: list[BaseException] = []

    def reviewer(name: str) -> None:
        try:
            barrier.wait()
            while (job := store.claim_next("spam", name, lease_s=600)) is not None:
                got.append((name, job))
                store.decide(job, name, DecisionInput("uphold", "spam_burst"))
                time.sleep(0.01)  # reading the next job: lets the other reviewers in
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    jobs = [j for _, j in got]
    assert len(jobs) == n_jobs and len(set(jobs)) == n_jobs  # every job once, none twice
    assert len({name for name, _ in got}) > 1  # real concurrency: more than one reviewer got work
    assert len(store.pending_labels(limit=1000)) == n_jobs


def test_decisions_fill_the_outbox_once_and_labels_parse_for_feedback(store: ReviewStore) -> None:
    store.ingest_actions([(action("a1", "acc1"), "spam")], received_ms=1000)
    store.ingest_actions([(action("a2", "acc2"), "spam")], received_ms=2000)
    j1 = store.claim_next("spam", "alice", 60)
    assert j1 is not None
    d1 = store.decide(j1, "alice", DecisionInput("uphold", "spam_burst", "links"))
    with pytest.raises(ClaimLost):  # decided: no second decision
        store.decide(j1, "alice", DecisionInput("overturn"))
    j2 = store.claim_next("spam", "alice", 60)
    assert j2 is not None
    store.decide(j2, "alice", DecisionInput("escalate", reason="unsure", escalate_to="escalations"))
    assert store.claim_next("spam", "alice", 60) is None
    j2b = store.claim_next("escalations", "senior", 60)
    assert j2b == j2
    d2 = store.decide(j2, "senior", DecisionInput("overturn", reason="organic"))
    pending = store.pending_labels()
    assert [p[0] for p in pending] == [d1, d2]  # the escalation produced no label
    labels = [pb.ReviewLabel.FromString(p[2]) for p in pending]
    assert (
        labels[0].label == "abuse"
        and labels[0].category == "spam_burst"
        and list(labels[0].action_ids) == ["a1"]
    )
    assert labels[1].label == "benign" and labels[1].reviewer == "senior" and labels[1].queue == "escalations"
    decisions, bad = parse_decisions([p[2] for p in pending] + [pending[0][2]])  # a repeat counts once
    assert [(d.subject_id, d.label, d.scenario) for d in decisions] == [
        ("acc1", "abuse", "spam_burst"),
        ("acc2", "benign", None),
    ]
    assert bad == Counter({"duplicate decision_id": 1})
    store.mark_produced([d1])
    assert [p[0] for p in store.pending_labels()] == [d2]
    lab = store.entity_label("account", "acc2")
    assert lab is not None and lab.label == "benign"  # overturned: not treated as flagged


def test_appeal_reopens_with_the_original_decision(store: ReviewStore) -> None:
    with pytest.raises(StoreError, match="no decision"):
        store.open_appeal("account", "acc1", reason="x", queue="appeals", actor="api")
    store.ingest_actions([(action("a1", "acc1"), "spam")])
    j = store.claim_next("spam", "alice", 60)
    assert j is not None
    d = store.decide(j, "alice", DecisionInput("uphold", "spam_burst"))
    job_id, created = store.open_appeal(
        "account", "acc1", reason="I am a band", queue="appeals", actor="api", appeal_id="ap1"
    )
    assert created
    assert store.open_appeal(
        "account", "acc1", reason="again", queue="appeals", actor="api", appeal_id="ap1"
    ) == (job_id, False)
    view = store.job(job_id)
    assert view is not None and view.appealed is not None and view.appealed.id == d
    assert [a.action_id for a in view.actions] == ["a1"]
    assert store.claim_next("appeals", "bob", 60) == job_id
    granted = store.decide(job_id, "bob", DecisionInput("overturn", reason="verified artist"))
    label = pb.ReviewLabel.FromString(dict((p[0], p[2]) for p in store.pending_labels())[granted])
    assert label.label == "benign" and label.appealed_decision_id == d and list(label.action_ids) == ["a1"]


def test_audit_log_is_append_only(store: ReviewStore) -> None:
    store.audit("alice", "test.entry", None, note="x")
    assert store.audit_entries(5)[0].action == "test.entry"
    for sql in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(sql))
    assert store.audit_entries(5)[0].actor == "alice"


def test_passwords_are_hashed_and_api_keys_work(store: ReviewStore) -> None:
    store.add_user("alice", "correct horse", "reviewer")
    with pytest.raises(StoreError, match="exists"):
        store.add_user("alice", "another pass", "reviewer")
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users")).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert store.authenticate("alice", "correct horse") is not None
    assert store.authenticate("alice", "wrong") is None and store.authenticate("nobody", "x") is None
    store.add_user("svc", None, "reviewer")
    key = store.new_api_key("svc")
    user = store.user_by_api_key(key)
    assert user is not None and user.username == "svc"
    assert store.user_by_api_key(key + "x") is None
