"""The shipped example config is valid, and every config file the README's commands name exists."""

from __future__ import annotations

import re
from pathlib import Path

from streamwarden.jobs.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_example_job_config_loads_with_the_documented_values() -> None:
    job = load_config(REPO / "examples" / "job.yaml", environ={})
    assert job.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert job.schema_registry.framing == "auto"
    assert job.topics.events == "events"


def test_readme_commands_name_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    configs = set(re.findall(r"(?<!\[)--config\s+(\S+\.ya?ml)", readme))  # [--config X]: a placeholder
    assert "examples/job.yaml" in configs
    missing = sorted(c for c in configs if not (REPO / c).is_file())
    assert not missing, missing
