"""Fixtures of the lompo_ros tests: one colcon-built install, and a probe node on rclpy."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ros_install(tmp_path_factory) -> Path:
    from rosbuild import colcon_build

    return colcon_build(tmp_path_factory.mktemp("colcon_nodes"))


@pytest.fixture(scope="session")
def rclpy_context():
    """rclpy in this process, on the nodes' domain and on loopback only."""
    if importlib.util.find_spec("rclpy") is None:
        if os.environ.get("LOMPO_REQUIRE_ROS"):
            pytest.fail(
                "LOMPO_REQUIRE_ROS is set but rclpy is not installed (pip install '.[ros]')"
            )
        pytest.skip("rclpy is not installed (pip install '.[ros]')")
    from rosnodes import DOMAIN_ID

    os.environ["ROS_DOMAIN_ID"] = DOMAIN_ID
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


@pytest.fixture
def probe(rclpy_context):
    from rosnodes import Probe

    p = Probe(rclpy_context)
    yield p
    p.node.destroy_node()
