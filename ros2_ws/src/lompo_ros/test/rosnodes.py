"""policy_node and sim_node as processes over Fast DDS, and a probe node that watches them.

The nodes run from a real ``colcon build``, started the way ``ros2 launch lompo_ros
drawer_close.launch.py`` starts them: the installed parameter file, then the launch file's
argument defaults as parameter overrides. DDS stays on loopback with a fixed domain id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rosbuild import LAUNCH, REPO, LaunchFile

DOMAIN_ID = "77"
SHIPPED_POLICY = REPO / "models" / "drawer_close"


def ros_environment(install: Path) -> dict[str, str]:
    """What ``source install/setup.bash`` would add, plus DDS on loopback in our domain."""
    site = next((install / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=DOMAIN_ID,
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")])),
        AMENT_PREFIX_PATH=os.pathsep.join(
            filter(None, [str(install), env.get("AMENT_PREFIX_PATH", "")])
        ),
        PYTHONUNBUFFERED="1",
        MUJOCO_GL=env.get("MUJOCO_GL", "egl"),
    )
    return env


def launch_arguments(**overrides: str) -> dict[str, str]:
    """The launch file's argument defaults (model_path: the shipped policy), then overrides."""
    args = LaunchFile(LAUNCH).defaults()
    args["model_path"] = str(SHIPPED_POLICY)
    args.update(overrides)
    return args


def node_command(install: Path, executable: str, args: dict[str, str]) -> list[str]:
    """The command line launch builds for one of drawer_close.launch.py's nodes."""
    interface = args["command_interface"]
    command_topic = args["command_topic"] or (
        "/servo_node/delta_twist_cmds"
        if interface == "servo_twist"
        else "/forward_velocity_controller/commands"
    )
    params = [
        f"image_topic:={args['image_topic']}",
        f"command_topic:={command_topic}",
        f"command_interface:={interface}",
    ]
    if executable == "policy_node":
        params.append(f"model_path:={args['model_path']}")
    cmd = [
        str(install / "lib" / "lompo_ros" / executable),
        "--ros-args",
        "-r",
        f"__node:={executable}",
        "--params-file",
        str(install / "share" / "lompo_ros" / "config" / "drawer_close.yaml"),
    ]
    for p in params:
        cmd += ["-p", p]
    return cmd + ["--log-level", args["log_level"]]


class NodeProcess:
    """One node as a process; SIGINT restored, as a terminal or launch would leave it."""

    def __init__(self, install: Path, executable: str, log_dir: Path, **overrides: str) -> None:
        self.name = executable
        self.log_path = log_dir / f"{executable}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            node_command(install, executable, launch_arguments(**overrides)),
            env=ros_environment(install),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> int:
        """Send ``sig`` and wait; returns the exit code (killed after the timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Probe:
    """A plain rclpy node that listens and calls where a user would (``ros2 topic echo``...)."""

    def __init__(self, rclpy: Any, name: str = "lompo_test_probe") -> None:
        self.rclpy = rclpy
        self.node = rclpy.create_node(name)
        self.seen: dict[str, list] = {}

    def listen(self, key: str, msg_type: Any, topic: str, depth: int = 10_000, **qos: Any) -> list:
        from rclpy.qos import QoSProfile

        self.seen[key] = []
        self.node.create_subscription(
            msg_type, topic, self.seen[key].append, QoSProfile(depth=depth, **qos)
        )
        return self.seen[key]

    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
            if condition():
                return True
        return False

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 30.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout_s), f"{name} never came up"
            future = client.call_async(request)
            assert self.spin_until(future.done, timeout_s), f"{name} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds
