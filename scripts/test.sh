#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: unit tests, sim-in-the-loop tests
# and the ROS package: a colcon build, and policy_node and sim_node over Fast DDS on loopback
# (rclpy from PyPI; LOMPO_REQUIRE_ROS makes a missing rclpy a failure, not a skip). Only the
# launch_pytest test skips here (launch is not on PyPI); it runs in docker/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
export LOMPO_REQUIRE_ROS=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
