"""drawer_close.launch.py with use_sim:=true, for real: both nodes up, commands flow, drawer closes.

Needs launch_pytest (not on PyPI) and the built, sourced workspace: it runs in the Docker image
(docker/README.md) and is skipped elsewhere; test_nodes_over_dds.py starts the same nodes with
the same parameters without launch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
launch_pytest = pytest.importorskip("launch_pytest")

from ament_index_python.packages import (  # noqa: E402
    PackageNotFoundError,
    get_package_share_directory,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

import launch  # noqa: E402

pytestmark = pytest.mark.ros

# An episode lasts at most 150 steps; in lockstep on a CPU that is a few seconds. The limit
# leaves room for node start-up (policy load, MuJoCo) and a slow CI machine.
TIME_LIMIT_S = 120.0


def _share() -> Path:
    try:
        return Path(get_package_share_directory("lompo_ros"))
    except PackageNotFoundError:
        pytest.skip("lompo_ros is not built and sourced (colcon build; source install/setup.bash)")


def _policy() -> Path:
    share = _share()
    for path in (
        share / "models" / "drawer_close",
        Path(__file__).resolve().parents[4] / "models" / "drawer_close",
    ):
        if (path / "policy.json").is_file():
            return path
    pytest.skip("no shipped policy at models/drawer_close")


@launch_pytest.fixture(scope="module")
def drawer_close():
    source = PythonLaunchDescriptionSource(str(_share() / "launch" / "drawer_close.launch.py"))
    return launch.LaunchDescription(
        [
            launch.actions.IncludeLaunchDescription(
                source,
                launch_arguments={"use_sim": "true", "model_path": str(_policy())}.items(),
            ),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@pytest.fixture(scope="module")
def probe(rclpy_context):
    """A plain rclpy node that listens where a user would, with `ros2 topic echo`."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from std_msgs.msg import Bool, Int32

    node = rclpy.create_node("drawer_close_probe")
    seen: dict[str, list] = {"commands": [], "success": [], "episode": [], "diagnostics": []}
    node.create_subscription(
        TwistStamped, "/servo_node/delta_twist_cmds", seen["commands"].append, 10
    )
    node.create_subscription(Bool, "/drawer_sim/success", seen["success"].append, 10)
    node.create_subscription(Int32, "/drawer_sim/episode", seen["episode"].append, 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", seen["diagnostics"].append, 10)
    yield node, seen
    node.destroy_node()


def _spin_until(node, condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        if condition():
            return True
    return False


@pytest.mark.launch(fixture=drawer_close)
def test_policy_node_is_active(probe):
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState

    node, _ = probe
    client = node.create_client(GetState, "/policy_node/get_state")
    assert client.wait_for_service(timeout_sec=60.0), (
        "policy_node's lifecycle services never came up"
    )
    future = client.call_async(GetState.Request())
    assert _spin_until(node, future.done, 10.0)
    assert future.result().current_state.id == State.PRIMARY_STATE_ACTIVE


@pytest.mark.launch(fixture=drawer_close)
def test_commands_flow_and_the_drawer_closes(probe):
    node, seen = probe
    closed = _spin_until(node, lambda: any(m.data for m in seen["success"]), TIME_LIMIT_S)
    commands = seen["commands"]
    assert commands, "no command reached /servo_node/delta_twist_cmds"
    speeds = [
        math.dist((0, 0, 0), (c.twist.linear.x, c.twist.linear.y, c.twist.linear.z))
        for c in commands
    ]
    assert max(speeds) > 0.0, "the policy only ever sent zero commands"
    assert all(c.header.frame_id == "base_link" for c in commands)
    assert closed, (
        f"no success within {TIME_LIMIT_S:.0f} s: {len(commands)} commands, "
        f"episodes seen {sorted({m.data for m in seen['episode']})}"
    )


@pytest.mark.launch(fixture=drawer_close)
def test_diagnostics_report_the_controller(probe):
    node, seen = probe

    def policy_status():
        return [s for d in seen["diagnostics"] for s in d.status if "lompo policy" in s.name]

    assert _spin_until(node, lambda: bool(policy_status()), 10.0)
    values = {kv.key: kv.value for kv in policy_status()[-1].values}
    assert values["state"] == "active"
    assert float(values["input_rate_hz"]) > 0.0
    for key in ("image_age_s", "step_latency_s", "reason"):
        assert key in values
