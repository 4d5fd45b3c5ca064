"""A real standalone Flink cluster from PyFlink's bin/ scripts, with the smoke job submitted to it.

One cluster, two thread-mode jobs on the same TaskManager (the second one fails with pemja's
``loadedLibraryNames`` on Java 17 unless flink-python is in lib/), stop-with-savepoint and restore
(per-key counts continue), exactly-once output across the stop, and no process left after ``stop()``.
"""

from __future__ import annotations

import time

import pytest

from streamwarden.jobs.flink.cluster import LocalFlinkCluster, _alive
from streamwarden.jobs.flink.smoke_check import (
    SMOKE_JOB,
    check_outputs,
    produce_smoke_input,
    read_committed,
    smoke_job_args,
)

pytestmark = [pytest.mark.engine, pytest.mark.integration, pytest.mark.slow]


def _wait_for_outputs(kafka, topic, partitions, n, cluster, job_id, timeout_s=90.0):
    deadline = time.monotonic() + timeout_s
    values: list[tuple[bytes | None, bytes]] = []
    while time.monotonic() < deadline:
        values = read_committed(kafka, topic, partitions, n, timeout_s=5, settle_s=0)
        if len(values) >= n:
            return values
        status = cluster.job_status(job_id)
        assert status == "RUNNING", f"job {status}: {cluster.job_exceptions(job_id)}"
    pytest.fail(f"{len(values)}/{n} outputs after {timeout_s} s")


def test_flink_cluster_thread_mode_savepoint_restore(kafka_config, kafka_topics, tmp_path):
    partitions = 2
    source, sink = kafka_topics("flink-cl-in", "flink-cl-out", partitions=partitions)
    args = smoke_job_args(
        kafka_config, source, sink, mode="thread", checkpoint_dir=tmp_path / "ckpt", ship_jars=False
    )
    first, second = range(0, 3000), range(3000, 6000)

    cluster = LocalFlinkCluster(tmp_path / "cluster")
    try:
        cluster.start()
        produce_smoke_input(kafka_config, source, first, partitions)
        job1 = cluster.submit(SMOKE_JOB, args)
        _wait_for_outputs(kafka_config, sink, partitions, len(first), cluster, job1)
        savepoint = cluster.stop_with_savepoint(job1, tmp_path / "savepoints")
        assert cluster.job_status(job1) == "FINISHED"

        produce_smoke_input(kafka_config, source, second, partitions)
        job2 = cluster.submit(SMOKE_JOB, args, savepoint=savepoint)
        values = _wait_for_outputs(kafka_config, sink, partitions, len(first) + len(second), cluster, job2)
        assert cluster.cancel(job2) == "CANCELED"
    finally:
        pids = cluster.running_pids()
        cluster.stop()

    assert len(pids) == 2, f"expected JobManager and TaskManager pids, got {pids}"
    assert not [p for p in pids if _alive(p)], "cluster processes survived stop()"
    result = check_outputs(read_committed(kafka_config, sink, partitions, 6000), range(6000))
    assert result.problems == ()
    assert len(values) >= 6000
