"""A real standalone Flink cluster on this machine, started from PyFlink's bundled ``bin/`` scripts.

The cluster gets its own work directory: ``conf/`` (a generated ``config.yaml`` binding JobManager,
TaskManager, REST and blob server to 127.0.0.1 on free ports), ``lib/``, ``log/`` and ``pid/``.
``lib/`` is an overlay of symlinks, passed to the scripts as ``FLINK_LIB_DIR`` (which ``config.sh``
honours), so nothing in site-packages changes:

* every jar of ``pyflink/lib`` (flink-dist, table, log4j, ...);
* ``pyflink/opt/flink-python-*.jar`` - the pemja fix: loaded once, parent-first, so a second
  thread-mode job on the same TaskManager does not fail with ``NoSuchFieldException:
  loadedLibraryNames`` (Java 17);
* the Kafka connector jars, so jobs submitted here need not ship them (``FlinkConfig.ship_connector_jars``).

Jobs are submitted with ``bin/flink run -py`` (Python needs the CLI); status, cancel and
stop-with-savepoint go through the REST API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from streamwarden.jobs.flink.env import job_jars
from streamwarden.operators.errors import StreamwardenError

DEFAULT_JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})
STATE_FILE = "cluster.json"
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


class FlinkClusterError(StreamwardenError):
    """The local Flink cluster did not start, or a request to it failed."""


def pyflink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel (``site-packages/pyflink``)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def flink_python_jar(home: Path | None = None) -> Path:
    jars = sorted((home or pyflink_home()).glob("opt/flink-python*.jar"))
    if len(jars) != 1:
        raise FlinkClusterError(f"expected one opt/flink-python*.jar under {home}, found {jars}")
    return jars[0]


def detect_java_home() -> Path:
    """``$JAVA_HOME`` if it has ``bin/java``, else the Java 17 this project was verified with, else ``java`` on PATH."""
    candidates = [os.environ.get("JAVA_HOME"), str(DEFAULT_JAVA_HOME)]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "bin" / "java").exists():
            return Path(candidate)
    java = shutil.which("java")
    if java:
        return Path(java).resolve().parent.parent
    raise FlinkClusterError("no Java found: set JAVA_HOME (Flink 2.3 runs on Java 11, 17 or 21)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _descendants(pid: int) -> list[int]:
    """Child processes (recursively) of ``pid`` on Linux, e.g. Python workers of a TaskManager."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found.extend(_descendants(int(child)))
    return found


class LocalFlinkCluster:
    """A standalone session cluster (one JobManager, ``taskmanagers`` TaskManagers) bound to 127.0.0.1.

    Several TaskManagers are several JVMs, so several Python interpreters in thread mode: with one slot
    each, parallelism p runs p subtasks that never wait for each other's GIL (``deploy/flink/``'s layout).
    Use as a context manager; ``stop()`` always leaves no JVM or Python worker behind.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        jobmanager_memory: str = "1024m",
        taskmanager_memory: str = "2048m",
        task_slots: int = 2,
        taskmanagers: int = 1,
        java_home: Path | None = None,
        with_connector_jars: bool = True,
        flink_python_in_lib: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sw-flink-cluster-")).resolve()
        self.conf_dir = self.work_dir / "conf"
        self.lib_dir = self.work_dir / "lib"
        self.log_dir = self.work_dir / "log"
        self.pid_dir = self.work_dir / "pid"
        self.home = pyflink_home()
        self.java_home = java_home or detect_java_home()
        self.with_connector_jars = with_connector_jars
        self.flink_python_in_lib = flink_python_in_lib
        self.rest_port = free_port()
        if taskmanagers < 1:
            raise FlinkClusterError(f"taskmanagers must be >= 1, not {taskmanagers}")
        self.taskmanager_count = taskmanagers
        self.settings: dict[str, Any] = self._settings(jobmanager_memory, taskmanager_memory, task_slots)
        self.settings.update(config or {})
        self._pids: set[int] = set()

    # --- layout -------------------------------------------------------------------------------------

    def _settings(self, jm_memory: str, tm_memory: str, slots: int) -> dict[str, Any]:
        base = yaml.safe_load((self.home / "conf" / "config.yaml").read_text(encoding="utf-8")) or {}
        settings = _flatten(base)  # keeps env.java.opts.all (the --add-opens Java 17 needs)
        settings.update(
            {
                "jobmanager.rpc.address": "127.0.0.1",
                "jobmanager.rpc.port": free_port(),
                "jobmanager.bind-host": "127.0.0.1",
                "jobmanager.memory.process.size": jm_memory,
                "taskmanager.host": "127.0.0.1",
                "taskmanager.bind-host": "127.0.0.1",
                # Several TaskManagers on one host cannot share ports: then the OS picks them (0).
                "taskmanager.rpc.port": free_port() if self.taskmanager_count == 1 else 0,
                "taskmanager.data.port": free_port() if self.taskmanager_count == 1 else 0,
                "taskmanager.memory.process.size": tm_memory,
                "taskmanager.numberOfTaskSlots": slots,
                "rest.address": "127.0.0.1",
                "rest.bind-address": "127.0.0.1",
                "rest.port": self.rest_port,
                "blob.server.port": str(free_port()),
                "env.pid.dir": str(self.pid_dir),
                "env.log.dir": str(self.log_dir),
                "env.java.home": str(self.java_home),
                "io.tmp.dirs": str(self.work_dir / "tmp"),
            }
        )
        if self.with_connector_jars:
            # One Kafka client for everyone, even if a job also ships the jars in pipeline.jars.
            settings["classloader.parent-first-patterns.additional"] = "org.apache.kafka."
        return settings

    def _write_layout(self) -> None:
        for d in (self.conf_dir, self.lib_dir, self.log_dir, self.pid_dir, self.work_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        for item in (self.home / "conf").iterdir():  # log4j/logback configs; config.yaml is ours
            if item.is_file() and item.name not in {"config.yaml", "masters", "workers"}:
                shutil.copy2(item, self.conf_dir / item.name)
        (self.conf_dir / "config.yaml").write_text(
            "# Generated by jobs.flink.cluster.LocalFlinkCluster\n"
            + yaml.safe_dump(self.settings, sort_keys=True),
            encoding="utf-8",
        )
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n", encoding="utf-8")
        # start-cluster.sh starts one TaskManager per line (locally, without ssh, for 127.0.0.1).
        (self.conf_dir / "workers").write_text("127.0.0.1\n" * self.taskmanager_count, encoding="utf-8")
        jars = sorted((self.home / "lib").glob("*.jar"))
        if self.flink_python_in_lib:
            jars.append(flink_python_jar(self.home))
        if self.with_connector_jars:
            jars += job_jars()  # the connector's and the job's own RecordWithMetadataSchema
        for jar in jars:
            link = self.lib_dir / jar.name
            if not link.exists():
                link.symlink_to(jar)

    def script_env(self) -> dict[str, str]:
        """Environment for ``bin/`` scripts: our conf and lib overlay, Java, and no stray FLINK_HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
        env.update(
            {
                "FLINK_CONF_DIR": str(self.conf_dir),
                "FLINK_LIB_DIR": str(self.lib_dir),
                "FLINK_LOG_DIR": str(self.log_dir),
                "FLINK_PID_DIR": str(self.pid_dir),
                "JAVA_HOME": str(self.java_home),
                "PATH": f"{self.java_home / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                + env.get("PATH", ""),
            }
        )
        return env

    def _bin(self, name: str) -> str:
        return str(self.home / "bin" / name)

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, timeout_s: float = 90.0) -> Self:
        """Start the JobManager and the TaskManagers and wait until every TaskManager has registered."""
        self._write_layout()
        proc = subprocess.run(
            [self._bin("start-cluster.sh")],
            env=self.script_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        self._pids |= self.daemon_pids()
        if proc.returncode != 0:
            self.stop()
            raise FlinkClusterError(
                f"start-cluster.sh failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._pids |= self.daemon_pids()
            with contextlib.suppress(OSError, FlinkClusterError):
                if len(self.taskmanagers()) >= self.taskmanager_count:
                    self._save_state()
                    return self
            if self._pids and not any(_alive(pid) for pid in self._pids):
                break
            time.sleep(0.5)
        logs = self.log_tail()
        self.stop()
        raise FlinkClusterError(
            f"{self.taskmanager_count} TaskManager(s) not registered within {timeout_s:.0f} s\n{logs}"
        )

    def _save_state(self) -> None:
        state = {"rest_port": self.rest_port, "pids": sorted(self._pids | self.daemon_pids())}
        (self.work_dir / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def attach(cls, work_dir: Path) -> LocalFlinkCluster:
        """The cluster a previous ``start()`` left running in ``work_dir`` (e.g. from another process)."""
        try:
            state = json.loads((work_dir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FlinkClusterError(f"{work_dir / STATE_FILE}: no running cluster recorded ({exc})") from exc
        cluster = cls(work_dir)
        cluster.rest_port = int(state["rest_port"])
        cluster._pids = set(state["pids"])
        return cluster

    def daemon_pids(self) -> set[int]:
        pids: set[int] = set()
        for pid_file in self.pid_dir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(line) for line in pid_file.read_text().split()}
        return pids

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the daemons (as ``stop-cluster.sh`` does), then SIGKILL whatever survived, workers included."""
        self._pids |= self.daemon_pids()
        doomed = set(self._pids)
        for pid in list(doomed):
            doomed.update(_descendants(pid))
        # What stop-cluster.sh does (SIGTERM each daemon), without its two config-parsing JVM launches.
        for pid in self._pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_alive(p) for p in doomed) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in doomed:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._pids.clear()

    def taskmanager_cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system, the JVM and the Python it embeds) each TaskManager process has used,
        keyed ``taskmanager <n>: <the tasks it received>`` (from its log): with one task per
        TaskManager, the cost of each stage."""
        tick = os.sysconf("SC_CLK_TCK")
        # flink-daemon.sh appends instance n's pid as line n of the pid file and logs to "...-<n>-host.log".
        pids: list[int] = []
        for pid_file in self.pid_dir.glob("*taskexecutor*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids = [int(line) for line in pid_file.read_text().split()]
        out: dict[str, float] = {}
        for log in self.log_dir.glob("flink-*-taskexecutor-*.log"):
            match = re.search(r"taskexecutor-(\d+)-", log.name)
            if match is None or int(match.group(1)) >= len(pids):
                continue
            text = log.read_text(encoding="utf-8", errors="replace")
            tasks = sorted(set(re.findall(r"Received task (.+?) \(\d+/\d+\)", text)))
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pids[int(match.group(1))]}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                name = f"taskmanager {match.group(1)}: " + (" + ".join(tasks) or "(no task)")
                out[name] = round((int(fields[11]) + int(fields[12])) / tick, 2)
        return out

    def running_pids(self) -> list[int]:
        """Daemon pids (from the pid files, including already stopped ones) that are still alive."""
        return [pid for pid in self._pids | self.daemon_pids() if _alive(pid)]

    def cleanup(self) -> None:
        """Remove the work directory if this object created it."""
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_text(encoding="utf-8", errors="replace").splitlines()
            out.append(f"==> {log.name} <==\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    # --- REST ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.rest_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise FlinkClusterError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc
        return json.loads(raw) if raw else None

    def taskmanagers(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/taskmanagers").get("taskmanagers", []))

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/jobs").get("jobs", []))

    def job_status(self, job_id: str) -> str:
        """``RUNNING``, ``FINISHED``, ``FAILED``, ``CANCELED``, ... of ``job_id``."""
        return str(self._request("GET", f"/jobs/{job_id}")["state"])

    def job_exceptions(self, job_id: str) -> str:
        """The newest failure of the job as text ('' if none)."""
        info = self._request("GET", f"/jobs/{job_id}/exceptions?maxExceptions=1")
        if not isinstance(info, dict):
            return str(info)
        entries = (info.get("exceptionHistory") or {}).get("entries") or []
        if entries:
            return str(entries[0].get("stacktrace") or entries[0].get("exceptionName") or entries[0])
        return str(info.get("root-exception") or "")

    def wait_for_status(self, job_id: str, wanted: Sequence[str], timeout_s: float = 60.0) -> str:
        """Poll until the job reaches one of ``wanted`` (or a terminal state); raise on timeout."""
        deadline = time.monotonic() + timeout_s
        status = "UNKNOWN"
        while time.monotonic() < deadline:
            status = self.job_status(job_id)
            if status in wanted or status in TERMINAL_STATES:
                return status
            time.sleep(0.3)
        raise FlinkClusterError(f"job {job_id} still {status} after {timeout_s:.0f} s, wanted {list(wanted)}")

    def wait_until_running(self, job_id: str, timeout_s: float = 60.0) -> None:
        """Wait until every vertex of the job is RUNNING (the job state turns RUNNING before its tasks do)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self._request("GET", f"/jobs/{job_id}")
            if info["state"] in TERMINAL_STATES:
                raise FlinkClusterError(f"job {job_id} is {info['state']}: {self.job_exceptions(job_id)}")
            if info["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in info["vertices"]):
                return
            time.sleep(0.3)
        raise FlinkClusterError(f"job {job_id} tasks not all RUNNING after {timeout_s:.0f} s")

    def cancel(self, job_id: str, timeout_s: float = 30.0) -> str:
        self._request("PATCH", f"/jobs/{job_id}?mode=cancel")
        return self.wait_for_status(job_id, ["CANCELED"], timeout_s)

    def stop_with_savepoint(
        self, job_id: str, directory: str | Path, *, drain: bool = False, timeout_s: float = 60.0
    ) -> str:
        """Take a savepoint into ``directory`` (path or URI) and stop the job; return the savepoint location."""
        target = directory.resolve().as_uri() if isinstance(directory, Path) else directory
        trigger = self._request("POST", f"/jobs/{job_id}/stop", {"targetDirectory": target, "drain": drain})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self._request("GET", f"/jobs/{job_id}/savepoints/{trigger['request-id']}")
            if result["status"]["id"] == "COMPLETED":
                operation = result.get("operation") or {}
                if "location" in operation:
                    self.wait_for_status(job_id, ["FINISHED", "CANCELED"], timeout_s)
                    return str(operation["location"])
                raise FlinkClusterError(f"savepoint of {job_id} failed: {operation.get('failure-cause')}")
            time.sleep(0.3)
        raise FlinkClusterError(f"savepoint of {job_id} not done after {timeout_s:.0f} s")

    # --- submission ---------------------------------------------------------------------------------

    def submit(
        self,
        py_file: str | Path,
        args: Sequence[str] = (),
        pyexec: str | None = None,
        *,
        savepoint: str | None = None,
        parallelism: int | None = None,
        detached: bool = True,
        timeout_s: float = 120.0,
    ) -> str:
        """``flink run -py`` a Python job (detached by default) and return its job id.

        ``pyexec`` (default: this interpreter) runs both the client script and the Python workers;
        ``savepoint`` restores from a savepoint or retained checkpoint (``-s``).
        """
        python = pyexec or sys.executable
        cmd = [self._bin("flink"), "run"]
        if detached:
            cmd.append("-d")
        if savepoint:
            cmd += ["-s", savepoint]
        if parallelism:
            cmd += ["-p", str(parallelism)]
        cmd += ["-py", str(py_file), "-pyexec", python, "-pyclientexec", python, *args]
        env = self.script_env()
        env["PYFLINK_CLIENT_EXECUTABLE"] = python
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        match = _JOB_ID.search(proc.stdout + proc.stderr)
        if proc.returncode != 0 or match is None:
            raise FlinkClusterError(
                f"flink run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return match.group(1)
