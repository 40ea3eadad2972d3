"""policy_node: a lifecycle node that serves an exported lompo policy.

configure: read parameters, load and verify the policy (lompo_core.nodes.PolicyCore.load).
activate: subscribe to images and start the watchdog and diagnostics timers.
deactivate: publish a zero command, then stop. Every decision is PolicyCore's.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, Float64MultiArray, Int32
from std_srvs.srv import Trigger

from lompo_core.errors import LompoError
from lompo_core.nodes import COMPRESSED, SERVO_TWIST, MessageKit, PolicyCore, PolicyNodeParams
from lompo_ros.common import declare_dataclass_parameters, image_qos, now_ns


class PolicyNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("policy_node", **kwargs)
        self.declare_parameter("autostart", True)
        self._values = declare_dataclass_parameters(self, PolicyNodeParams)
        self._kit = MessageKit.from_ros()
        self.core: PolicyCore | None = None
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)

    # -- lifecycle --------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        values = {name: self.get_parameter(name).value for name in self._values}
        try:
            params = PolicyNodeParams.from_mapping(values)
            self.core = PolicyCore.load(params, self._kit)
        except LompoError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        msg_type = TwistStamped if params.command_interface == SERVO_TWIST else Float64MultiArray
        # Reliable, depth 1: a controller wants the newest command, and every one of them.
        self._command_pub = self.create_lifecycle_publisher(
            msg_type, params.resolved_command_topic, 1
        )
        self._uncertainty_pub = self.create_lifecycle_publisher(Float32, "~/uncertainty", 10)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", 1)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        sidecar = self.core.runtime.sidecar
        self.get_logger().info(
            f"loaded {params.model_path} (code {sidecar.get('code_version', '?')}); commands: "
            f"{params.command_interface} on {params.resolved_command_topic}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.core is not None
        p = self.core.params
        self.core.reset()
        self.core.controller.activate()
        image_type = CompressedImage if p.image_transport == COMPRESSED else Image
        self._subs = [
            self.create_subscription(
                image_type, p.image_topic, self._on_image, image_qos(p.image_reliability)
            )
        ]
        if p.episode_topic:
            self._subs.append(
                self.create_subscription(
                    Int32, p.episode_topic, self._on_episode, QoSProfile(depth=10)
                )
            )
        self._timers = [
            self.create_timer(1.0 / p.watchdog_rate_hz, self._on_watchdog),
            self.create_timer(1.0 / p.diagnostics_rate_hz, self._on_diagnostics),
        ]
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for pub in (self._command_pub, self._uncertainty_pub, self._debug_pub, self._diag_pub):
            self.destroy_lifecycle_publisher(pub)
        self.core = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self._subs:  # shutting down while active: stop the arm first
            self._stop()
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        assert self.core is not None
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        self._subs, self._timers = [], []
        self.core.controller.deactivate()
        # Published while the publisher is still active: the last word to the arm is "stop".
        self._command_pub.publish(self.core.zero_command(now_ns(self)))

    # -- callbacks --------------------------------------------------------------------------

    def _on_image(self, msg: Any) -> None:
        assert self.core is not None
        want_debug = self._debug_pub.get_subscription_count() > 0
        out = self.core.on_image(msg, now_ns(self), want_debug)
        self._command_pub.publish(out.command)
        self._uncertainty_pub.publish(out.uncertainty)
        if out.debug_image is not None:
            self._debug_pub.publish(out.debug_image)
        if not out.result.ok:
            self.get_logger().warn(out.result.reason, throttle_duration_sec=5.0)

    def _on_watchdog(self) -> None:
        assert self.core is not None
        command = self.core.on_timer(now_ns(self))
        if command is not None:
            self._command_pub.publish(command)

    def _on_diagnostics(self) -> None:
        assert self.core is not None
        name = f"{self.get_fully_qualified_name()}: lompo policy"
        self._diag_pub.publish(self.core.diagnostics(now_ns(self), name))

    def _on_episode(self, msg: Int32) -> None:
        assert self.core is not None
        if self.core.on_episode(msg.data):
            self.get_logger().info(f"episode {msg.data}: policy state reset")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.core is None:
            response.success, response.message = False, "not configured"
        else:
            self.core.reset()
            response.success = True
            response.message = f"reset; controller {self.core.controller.state}"
        return response


def main(args: list[str] | None = None) -> int:
    # Without rclpy's signal handlers Ctrl-C (or launch's SIGINT) arrives as KeyboardInterrupt
    # while the context is still valid, so the zero command can still be published.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = PolicyNode()
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1  # the reason is logged; under launch the node's exit shows it
            node.trigger_activate()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        if node._subs:
            node.trigger_deactivate()  # sends the zero command
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
