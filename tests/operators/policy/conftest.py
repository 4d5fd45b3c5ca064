"""Golden-file support for the policy tests: ``pytest --update-golden`` rewrites the expected files.

The option is registered in ``tests/conftest.py``; the environment variable
``STREAMWARDEN_UPDATE_GOLDEN=1`` works too.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture()
def update_golden(request: pytest.FixtureRequest) -> bool:
    try:
        flag = bool(request.config.getoption("--update-golden"))
    except ValueError:
        flag = False
    return flag or os.environ.get("STREAMWARDEN_UPDATE_GOLDEN") == "1"
