#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: unit tests, sim-in-the-loop tests
# and the ROS package checks (the tests that need rclpy skip here; they run in docker/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
