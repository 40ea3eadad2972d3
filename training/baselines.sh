#!/usr/bin/env bash
# LOMPO against behaviour cloning, filtered BC, no model rollouts and lambda=0 (issue 18):
# two 200-episode datasets (mixed, explore), three training seeds, every policy chosen offline
# and evaluated on fresh seeds 5000-5049. Resumable: run it again to continue. Options are
# training/baselines.py's (--help); results land in docs/results/baselines.{json,png}.
#
#   training/baselines.sh [--work runs/baselines] [--datasets mixed] [--seeds 11 12 13] ...
#
# Two processes at once on two cores: e.g. one with --datasets mixed, one with --datasets explore.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "${PYTHON:-.venv/bin/python}" training/baselines.py "$@"
