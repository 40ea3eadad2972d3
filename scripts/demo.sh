#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the demo: the shipped drawer-closing policy in the MuJoCo
# sim, served the way the ROS node serves it; writes a success report and a rollout video.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec .venv/bin/lompo demo "$@"
