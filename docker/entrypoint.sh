#!/usr/bin/env bash
# Sources ROS, the built workspace and the venv, then runs the command (default: the launch file).
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /opt/lompo/install/setup.bash
source /opt/venv/bin/activate
exec "$@"
