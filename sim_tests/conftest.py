import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "drawer_close"


@pytest.fixture(scope="session")
def shipped_policy() -> Path:
    if not (SHIPPED / "policy.json").is_file():
        pytest.fail(f"no shipped policy at {SHIPPED}: the README's demo needs one")
    return SHIPPED
