"""The review service in one process: the store, the ingest loop and the outbox publisher (threads), and
the console (uvicorn, in a thread too, so the demo can run it next to the job)."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.review.app import create_app
from streamwarden.jobs.review.kafka_loops import Ingestor, OutboxPublisher, ReviewTopics
from streamwarden.jobs.review.store import ReviewStore
from streamwarden.operators.policy.policy import DEFAULT_POLICY_PATH, load_policy
from streamwarden.operators.review.routing import ReviewRouting
from streamwarden.operators.transparency.statements import StatementBuilder

LOG = logging.getLogger("streamwarden.review")


@dataclass
class ReviewService:
    store: ReviewStore
    routing: ReviewRouting
    kafka: KafkaConfig | None
    topics: ReviewTopics = field(default_factory=ReviewTopics)
    host: str = "127.0.0.1"
    port: int = 8080
    group_id: str = "streamwarden-review"
    policy: Path | None = None
    """The job's policy file: the statements of reasons a decision revises are rebuilt with it."""
    errors: list[tuple[str, BaseException]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: uvicorn.Server | None = None
        self.ingestor: Ingestor | None = None
        self.publisher: OutboxPublisher | None = None
        self.bound_port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.bound_port}"

    def _thread(self, name: str, target: object) -> None:
        def run() -> None:
            try:
                target()  # type: ignore[operator]
            except BaseException as exc:  # reported by whoever runs the service
                LOG.exception("review %s failed", name)
                self.errors.append((name, exc))
                self.stop_event.set()

        t = threading.Thread(target=run, name=f"review-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> str:
        """Start everything; returns the console's URL (the port is bound before this returns)."""
        if self.kafka is not None:
            self.ingestor = Ingestor(
                self.store, self.routing, self.kafka, self.topics, group_id=self.group_id
            )
            self.publisher = OutboxPublisher(
                self.store, self.kafka, self.topics.labels, statements_topic=self.topics.statements,
                statements=StatementBuilder(load_policy(self.policy or DEFAULT_POLICY_PATH))
                if self.topics.statements
                else None,
            )  # fmt: skip
            ingestor, publisher = self.ingestor, self.publisher
            self._thread("ingest", lambda: ingestor.run(self.stop_event))
            self._thread("outbox", lambda: publisher.run(self.stop_event))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.store, self.routing), log_level="warning", access_log=False, lifespan="off"
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread("console", lambda: server.run(sockets=[sock]))
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        if self._server is not None:
            self._server.should_exit = True
        for t in self._threads:
            t.join(timeout_s)


DEMO_REVIEWER = ("reviewer", "review-demo")
"""The demo's seeded reviewer account (user name, password)."""


def start_demo_review(
    kafka: KafkaConfig, actions: str, labels: str, db_dir: str, port: int = 8765
) -> ReviewService:
    """The review console for ``streamwarden demo``: a SQLite store in ``db_dir`` with the seeded reviewer,
    consuming ``actions`` and producing ``labels``, on ``port`` (any free port if that one is taken)."""
    from streamwarden.operators.review.routing import load_routing

    store = ReviewStore.open(f"sqlite:///{db_dir}/review.db")
    if store.user(DEMO_REVIEWER[0]) is None:
        store.add_user(*DEMO_REVIEWER, "admin", actor="demo")
    topics = ReviewTopics(actions, labels, None, None)
    service = ReviewService(
        store, load_routing(), kafka, topics, port=port, group_id="streamwarden-demo-review"
    )
    try:
        service.start()
    except OSError:  # the port is taken: any free one
        service = ReviewService(
            store, load_routing(), kafka, topics, port=0, group_id="streamwarden-demo-review"
        )
        service.start()
    return service
