from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The policy fixtures live beside the export tests; the runtime tests serve what they export.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

from policy_fixtures import shared_policy  # noqa: E402


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, policy) of a randomly initialised debug-size PolicyStep, exported once."""
    return shared_policy(tmp_path_factory.getbasetemp())
