from __future__ import annotations

from pathlib import Path

import pytest
from policy_fixtures import shared_policy


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, policy) of a randomly initialised debug-size PolicyStep, exported once."""
    return shared_policy(tmp_path_factory.getbasetemp())
