"""sim_node: the MuJoCo drawer task as a ROS node (camera out, commands in, reward and success).

The episode logic (lockstep or real time, resets, seeds) is lompo_core.nodes.sim.SimLoop's; the
command mapping is lompo_core.nodes.common.command_to_action, with the scaling the datasets use.
With ``policy_reset_service`` set, each episode's first frame waits until the policy's
``~/reset`` has answered, and until the policy listens to the camera.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32, Float64MultiArray, Int32
from std_srvs.srv import Trigger

from lompo_core import messages as m
from lompo_core.messages import MessageKit
from lompo_core.nodes.common import SERVO_TWIST, command_to_action
from lompo_core.nodes.sim import LOCKSTEP, SimFrame, SimLoop, SimNodeParams, sim_frame_messages
from lompo_ros.common import (
    declare_dataclass_parameters,
    now_ns,
    spin_until_stopped,
    stop_on_signals,
)

# Lockstep only checks for a stall on the timer, so it need not tick fast.
LOCKSTEP_TICK_S = 0.1
# Reliable keep-last drops unacknowledged samples once full: a slow recorder must not lose the
# episode's one success message, so the small event topics keep a deeper history.
EVENT_DEPTH = 100


class SimNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_node", **kwargs)
        values = declare_dataclass_parameters(self, SimNodeParams)
        self.params = p = SimNodeParams.from_mapping(values)
        from lompo_core.sim import DrawerCloseSim  # MuJoCo: import only once parameters are valid

        self.sim = DrawerCloseSim(image_size=p.image_size, max_steps=p.max_steps)
        # answer_final: policy_node answers every image, the episode's last one too.
        self.loop = SimLoop(
            self.sim,
            p.mode,
            p.seed,
            p.command_timeout_s,
            p.stall_timeout_s,
            answer_final=True,
            await_policy_reset=bool(p.policy_reset_service),
        )
        self._kit = MessageKit.from_ros()
        # Reliable, depth 1: lockstep must not lose the frame the policy answers to.
        qos = QoSProfile(depth=1)
        self._pubs = {
            "episode": self.create_publisher(Int32, p.episode_topic, EVENT_DEPTH),
            "image": self.create_publisher(Image, p.image_topic, qos),
            "reward": self.create_publisher(Float32, p.reward_topic, EVENT_DEPTH),
            "success": self.create_publisher(Bool, p.success_topic, EVENT_DEPTH),
        }
        cmd_type = TwistStamped if p.command_interface == SERVO_TWIST else Float64MultiArray
        self.create_subscription(cmd_type, p.resolved_command_topic, self._on_command, qos)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._policy_reset = (
            self.create_client(Trigger, p.policy_reset_service) if p.policy_reset_service else None
        )
        self._policy_reset_pending = False
        period = (
            LOCKSTEP_TICK_S if p.mode == LOCKSTEP else 1.0 / (p.rate_hz or self.sim.control_rate_hz)
        )
        self.create_timer(period, self._on_tick)
        self.get_logger().info(
            f"{p.mode} sim, {p.image_size}px camera on {p.image_topic}, commands "
            f"({p.command_interface}) on {p.resolved_command_topic}"
        )

    def _publish(self, frames: list[SimFrame]) -> None:
        for frame in frames:
            for role, msg in sim_frame_messages(self._kit, frame, now_ns(self)).items():
                self._pubs[role].publish(msg)
            if frame.done:
                self.get_logger().info(
                    f"episode {frame.episode}: {frame.reason} after {frame.t} steps "
                    f"({self.loop.successes} successes so far)"
                )
            if frame.reason.startswith("stalled"):
                self.get_logger().warn(
                    f"no command for {self.params.stall_timeout_s} s: frame republished "
                    f"(lockstep is no longer reproducible)"
                )
        if self.loop.awaiting_policy_reset:
            self._request_policy_reset()

    def _request_policy_reset(self) -> None:
        """Ask the policy to reset once it listens to the camera; retried on every tick."""
        client = self._policy_reset
        if self._policy_reset_pending or client is None:
            return
        if self._pubs["image"].get_subscription_count() == 0 or not client.service_is_ready():
            return
        self._policy_reset_pending = True
        client.call_async(Trigger.Request()).add_done_callback(self._on_policy_reset)

    def _on_policy_reset(self, future: Any) -> None:
        self._policy_reset_pending = False
        response = future.result()
        if response is None or not response.success:
            why = response.message if response is not None else "no response"
            self.get_logger().warn(
                f"policy reset refused ({why}); retrying", throttle_duration_sec=5.0
            )
            return
        self._publish(self.loop.policy_reset_done(self._now_s()))

    def _now_s(self) -> float:
        return now_ns(self) / 1e9

    def _on_command(self, msg: Any) -> None:
        action, reason = command_to_action(msg, self.sim.action_scaling)
        if reason != "ok":
            self.get_logger().warn(f"command ignored: {reason}", throttle_duration_sec=5.0)
        header = getattr(msg, "header", None)
        stamp_s = m.stamp_ns(header) / 1e9 if header is not None else None
        self._publish(self.loop.on_command(action, self._now_s(), reason, stamp_s))

    def _on_tick(self) -> None:
        self._publish(self.loop.on_tick(self._now_s()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._publish(self.loop.reset(self._now_s(), "reset by service"))
        response.success = True
        response.message = f"episode {self.loop.episode}"
        return response


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_on_signals()
    node = SimNode()
    try:
        spin_until_stopped(node)
    finally:
        node.sim.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
