"""The #17 spike (``jobs/bench/flink_fused_spike.py``) runs the real pipeline inside its one Flink operator:
on a MiniCluster it takes exactly the actions the replay takes on the same records, so its figures
measure the job's logic and not a shortcut."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamwarden.operators.evaluation.harness import traffic_from_spec
from streamwarden.operators.pipeline import Stages, StagesConfig, replay_actions
from streamwarden.operators.traffic import load_spec

pytestmark = [pytest.mark.engine]

RECORDS = 4_000


def test_the_spike_takes_the_replays_actions() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamwarden.jobs.bench.flink_fused_spike", "--n", str(RECORDS)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    payloads = traffic_from_spec(load_spec(None, seed=2)).payloads[:RECORDS]
    replay = replay_actions(iter(payloads), Stages.build(StagesConfig()), feature_records=False)
    assert figures["records"] == RECORDS
    assert figures["actions"] == len(replay.actions) > 0
    assert figures["events_per_s"] > 0 and figures["state_writes"] is True
