"""A real single-node Apache Kafka broker (KRaft, combined broker and controller) on loopback.

The test suite runs against it (transactions, restarts and durable logs: what tansu cannot show). The
jars come from Maven Central through ``deploy/kafka/pom.xml`` (:func:`ensure_kafka_lib`; ``make setup``
fetches them once into ``~/.cache/streamwarden/kafka``, or ``$STREAMWARDEN_KAFKA_CACHE``), because the
Apache binary tarball is not reachable from the build machines. The broker is a plain
``java -cp 'lib/*' kafka.Kafka`` child process bound to 127.0.0.1, killed if its parent dies.

Measured here (Kafka 4.1.2, Java 17, 2 cores): ready 1.1 s after launch with the class-data archive
(2.4 s without; the first start writes it), 145-160 MB RSS, SIGTERM shutdown 0.3-0.6 s, restart on the
same ports and data dir 2.4-2.8 s.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamwarden.deploy.broker import die_with_parent_hook
from streamwarden.operators.errors import BrokerError

__all__ = ["POM", "KRaftBroker", "default_cache_dir", "ensure_kafka_lib"]

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
CACHE_ENV = "STREAMWARDEN_KAFKA_CACHE"


def default_cache_dir() -> Path:
    """``$STREAMWARDEN_KAFKA_CACHE`` or ``~/.cache/streamwarden/kafka`` (outside git)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "streamwarden" / "kafka")


STAMP = ".pom.sha256"


def ensure_kafka_lib(pom: Path = POM, cache_dir: Path | None = None, *, mvn: str = "mvn") -> Path:
    """Return ``cache_dir/lib`` holding the broker classpath, running mvn only when needed.

    The lib dir is reused while its stamp matches the pom's sha256, so a version bump in the
    pom refetches. It is built in a sibling dir and renamed into place so an interrupted
    fetch never leaves a half-filled classpath that looks valid.
    """
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    lib = cache_dir / "lib"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = lib / STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return lib
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may all find the lib missing; one fetches, the rest wait.
    with open(cache_dir / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return lib
        _fetch(pom, cache_dir, lib, digest, mvn)
    return lib


def _fetch(pom: Path, cache_dir: Path, lib: Path, digest: str, mvn: str) -> None:
    tmp = cache_dir / "lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    res = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            # Private local repo: no dependence on (or pollution of) ~/.m2.
            f"-Dmaven.repo.local={cache_dir / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if res.returncode != 0:  # mvn -q still prints ANSI resets; only show output on failure
        raise BrokerError(
            f"mvn failed ({res.returncode}) fetching {pom}:\n{res.stdout.decode(errors='replace')}"
        )
    (tmp / STAMP).write_text(digest + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)


def _free_port() -> int:
    # Racy by nature (the port is released before Kafka binds it); start() retries on a
    # bind failure before the first successful start.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cluster_id() -> str:
    # Kafka's Uuid text form: 16 bytes, URL-safe base64 without padding. Kafka's own
    # generator avoids a leading '-' so the id can't be mistaken for a CLI flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# Small heap and serial GC: a test broker carries little data, and SerialGC plus C1-only JIT
# start faster and use less RSS than the G1/1 GiB defaults of kafka-server-start.sh.
DEFAULT_JVM_OPTS: tuple[str, ...] = (
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    # Kafka logs while it shuts down; log4j's own hook would stop logging first and print
    # "Unable to register Log4j shutdown hook" to stderr. The File appender flushes per line.
    "-Dlog4j2.shutdownHookEnabled=false",
)


class KRaftBroker:
    """One KRaft node on loopback; ``with KRaftBroker(lib, work) as b: b.bootstrap_servers``."""

    def __init__(
        self,
        lib_dir: Path,
        work_dir: Path,
        *,
        java: str = "java",
        jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS,
        extra_props: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        cds: bool = True,
    ) -> None:
        self.lib_dir = lib_dir.resolve()
        self.work_dir = work_dir.resolve()
        self.java = java
        self.jvm_opts = jvm_opts
        self.extra_props = dict(extra_props or {})
        self.ready_timeout = ready_timeout
        self.data_dir = self.work_dir / "data"
        self.log_dir = self.work_dir / "logs"
        self.port = 0
        self.controller_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        # AppCDS (JDK 13+ dynamic archive) roughly halves JVM+Kafka startup. The archive is
        # only valid for this exact JDK and classpath, so it lives in the lib dir (replaced on
        # refetch) and its name carries the JDK's identity. A JVM that can't use it just warns
        # and starts normally.
        self._jsa: Path | None = None
        if cds:
            jbin = Path(shutil.which(java) or java).resolve()
            key = hashlib.sha256(f"{jbin}:{jbin.stat().st_mtime_ns}".encode()).hexdigest()[:12]
            self._jsa = self.lib_dir / f"kafka-cds-{key}.jsa"
        self._jsa_tmp: Path | None = None
        self._log_start = 0

    # -- public API -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:port``; the same across ``restart()``."""
        if not self.port:
            raise BrokerError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The JVM's process id while started."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        """The broker's log file (appended across restarts)."""
        return self.log_dir / "server.log"

    def is_running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the JVM's output and of the broker log."""
        return self._log_tail(lines)

    def kill(self) -> None:
        """SIGKILL, as a crash would (the data dir keeps what was flushed); ``start()`` brings it back."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._jsa_tmp is not None:
            self._jsa_tmp.unlink(missing_ok=True)
            self._jsa_tmp = None

    def start(self) -> None:
        """Format storage if needed, launch the JVM and block until the broker serves metadata."""
        if self._proc is not None:
            raise BrokerError("the broker is already running")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        # Ports are chosen once and kept, so restart() serves the same bootstrap address and
        # clients/tests holding it keep working.
        for attempt in range(3):
            if not self._started_once:
                self.port, self.controller_port = _free_port(), _free_port()
            self._write_configs()
            self._format_if_needed()
            try:
                self._launch_and_wait()
            except _BindError:
                if self._started_once or attempt == 2:
                    raise
                continue  # someone grabbed a "free" port between probe and bind: pick new ones
            self._started_once = True
            return

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown, flushes logs), then SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The training run dumps its archive at exit under a private name; publish it with an
        # atomic rename so concurrent brokers never map a half-written file.
        tmp, self._jsa_tmp = self._jsa_tmp, None
        if tmp is not None and self._jsa is not None:
            if tmp.exists() and proc.returncode in (0, 143, -signal.SIGTERM):
                tmp.replace(self._jsa)
            else:
                tmp.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start again on the same ports and data dir (data survives)."""
        self.stop()
        self.start()

    def __enter__(self) -> KRaftBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _props(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            # Static voter set: needs no --standalone at format time and lets the controller
            # port change before the first successful start (bind retry above).
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Internal topics: RF 1 is mandatory on one node; 1 partition instead of 50 makes
            # the first group/transaction coordinator lookup near-instant.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Local clients use 2 s sessions for a fast join (the embedded client profile); Kafka's
            # default floor is 6 s.
            "group.min.session.timeout.ms": "500",
            # After a SIGKILL the controller rejects the restarted broker's registration
            # (DuplicateBrokerRegistration) until the old session expires: 9 s by default.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # Fewer threads and a small cleaner buffer (default 128 MiB on heap) keep RSS down.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            **self.extra_props,
        }

    def _write_configs(self) -> None:
        text = "".join(f"{k}={v}\n" for k, v in self._props().items())
        (self.work_dir / "server.properties").write_text(text)
        # log4j2 properties format needs nothing beyond log4j-core (YAML would need
        # jackson-dataformat-yaml, JSON jackson-databind). Everything goes to a file so test
        # output stays clean; the file is appended across restarts.
        (self.work_dir / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_dir / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            # The full config dump is ~400 lines per component and per start.
            "logger.config.name = org.apache.kafka.common.config.AbstractConfig\n"
            "logger.config.level = WARN\n"
        )

    def _java(self, main: str, *args: str, train: bool = False) -> list[str]:
        cds: list[str] = []
        if self._jsa is not None and self._jsa.exists():
            cds = [f"-XX:SharedArchiveFile={self._jsa}"]
        elif self._jsa is not None and train:
            self._jsa_tmp = self._jsa.with_name(f"{self._jsa.name}.{os.getpid()}.{id(self)}.tmp")
            cds = [f"-XX:ArchiveClassesAtExit={self._jsa_tmp}"]
        return [
            self.java,
            *self.jvm_opts,
            *cds,
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.lib_dir}/*",  # the JVM expands the wildcard itself
            main,
            *args,
        ]

    def _format_if_needed(self) -> None:
        # Kafka refuses to start on an unformatted dir; meta.properties marks a formatted one.
        if (self.data_dir / "meta.properties").exists():
            return
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                _cluster_id(),
                "--config",
                str(self.work_dir / "server.properties"),
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _launch_and_wait(self) -> None:
        server_log = self.log_dir / "server.log"
        self._log_start = server_log.stat().st_size if server_log.exists() else 0
        with open(self.log_dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.work_dir / "server.properties"), train=True),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent_hook(),  # a crashed test run leaves no JVM behind
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop(timeout=10)
            raise

    def _wait_ready(self) -> None:
        quiet = logging.getLogger("kraft.librdkafka")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False  # "connection refused" while the JVM boots is expected noise
        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap_servers,
                # Default backoff grows to 10 s; keep retrying fast while the broker boots.
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 200,
            },
            logger=quiet,
        )
        deadline = time.monotonic() + self.ready_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                server_log = self.log_dir / "server.log"
                this_run = ""  # this run's part of the appended log only
                if server_log.exists():
                    with open(server_log, "rb") as f:
                        f.seek(self._log_start)
                        this_run = f.read().decode(errors="replace")
                if "Address already in use" in this_run:
                    raise _BindError(this_run[-2000:])
                raise BrokerError(f"kafka exited with {self._proc.returncode}:\n{self._log_tail()}")
            try:
                md = admin.list_topics(timeout=0.5)
            except Exception:  # KafkaException while the listener is not up yet
                time.sleep(0.05)
                continue
            # A fenced broker is left out of Metadata responses, so a listed broker is one
            # that has caught up with the controller and accepts produce/fetch.
            if md.brokers:
                self._warm_group_coordinator(admin, deadline)
                return
            time.sleep(0.05)
        raise BrokerError(f"kafka not ready in {self.ready_timeout}s:\n{self._log_tail()}")

    def _warm_group_coordinator(self, admin: AdminClient, deadline: float) -> None:
        # __consumer_offsets is auto-created on the first FindCoordinator; server side that
        # takes ~0.1 s, but librdkafka's coordinator-retry backoff makes the first group join
        # of a test take ~3 s. Describing a dummy group up front pays it here instead.
        retriable = {
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        }
        while time.monotonic() < deadline:
            fut = admin.describe_consumer_groups(["_kraft_warmup"], request_timeout=5)
            try:
                fut["_kraft_warmup"].result(timeout=5)
                return
            except KafkaException as e:
                if e.args[0].code() not in retriable:
                    return  # e.g. GROUP_ID_NOT_FOUND: the coordinator answered
            time.sleep(0.05)

    def _log_tail(self, n: int = 40) -> str:
        lines: list[str] = []
        for name in ("stdout.log", "server.log"):
            path = self.log_dir / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)


class _BindError(BrokerError):
    """The broker could not bind its port (taken between the probe and the bind)."""


if __name__ == "__main__":  # python -m streamwarden.deploy.kraft: fetch the jars (make setup)
    print(ensure_kafka_lib())
