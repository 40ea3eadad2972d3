#!/usr/bin/env bash
# Sets up everything lompo needs on a fresh Debian/Ubuntu machine with Python >= 3.10:
# the system libraries for headless MuJoCo rendering, a virtual environment in .venv,
# PyTorch first (so that no other package drags in a multi-GB CUDA build), then lompo with
# all extras, ROS 2 Jazzy's rclpy from PyPI included. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${LOMPO_TORCH_SPEC:-torch==2.13.0}

"$PYTHON" - <<'PY' || { echo "lompo needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

# EGL with Mesa renders MuJoCo headless on the CPU.
apt_packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 libgles2)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "$TORCH_SPEC"
# ros: Jazzy's rclpy from PyPI, so that the ROS nodes run and are tested without a ROS install.
.venv/bin/python -m pip install -q -e ".[all,ros,dev]"
echo "lompo is set up in .venv (activate with: . .venv/bin/activate)"
