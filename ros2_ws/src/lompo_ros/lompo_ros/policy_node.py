"""policy_node: a lifecycle node that serves an exported lompo policy.

configure: read parameters, load and verify the policy (lompo_core.nodes.policy.PolicyCore).
activate: subscribe to images. deactivate: unsubscribe, then publish a zero command.
The watchdog runs in every state on a thread of its own, so that a slow policy step (or a busy
executor) never delays it; /diagnostics on a timer in every state. Every decision is PolicyCore's.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.duration import Duration
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import Trigger

from lompo_core.errors import LompoError
from lompo_core.messages import MessageKit
from lompo_core.nodes.common import SERVO_TWIST
from lompo_core.nodes.policy import (
    COMPRESSED,
    PolicyCore,
    PolicyNodeParams,
    unconfigured_diagnostics,
)
from lompo_ros.common import (
    declare_dataclass_parameters,
    image_qos,
    now_ns,
    spin_until_stopped,
    stop_on_signals,
)


class PolicyNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("policy_node", **kwargs)
        self.declare_parameter("autostart", True)
        self._values = declare_dataclass_parameters(self, PolicyNodeParams)
        self._kit = MessageKit.from_ros()
        self.core: PolicyCore | None = None
        self._why_unconfigured = "not configured yet"
        self._image_sub: Any = None
        self.lifecycle = "unconfigured"
        # Held while a command is published and while the node stops, so that no command from
        # an image callback still running can follow the stop's zero.
        self._publishing = threading.Lock()
        self._guard_lifecycle_service()
        self.create_service(Trigger, "~/reset", self._on_reset)
        # Not a lifecycle publisher: a monitor hears the node in every state.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        try:  # the timers' rates; any bad parameter fails configure, with its reason
            p = PolicyNodeParams.from_mapping({**self._values, "model_path": "-"})
        except LompoError:
            p = PolicyNodeParams()
        self.create_timer(1.0 / p.diagnostics_rate_hz, self._on_diagnostics)
        # The watchdog: a plain thread, not an executor callback (rclpy's multi-threaded executor
        # delayed images by 50-500 ms on two cores).
        self._watchdog_stop = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watchdog_loop, args=(1.0 / p.watchdog_rate_hz,), daemon=True
        )
        self._watchdog.start()

    def _guard_lifecycle_service(self) -> None:
        """Answer an invalid transition request with success=False instead of dying.

        rclpy's change_state callback catches an unknown label but not a transition that the
        current state does not offer: its RCLError (a RuntimeError; rclpy exports no name for it)
        would end the executor's spin.
        """
        service = next(s for s in self.services if s.srv_name.endswith("/change_state"))
        handle = service.callback

        def change_state(request: Any, response: Any) -> Any:
            try:
                return handle(request, response)
            except RuntimeError as exc:
                label = request.transition.label or request.transition.id
                self.get_logger().warn(f"lifecycle transition {label!r} refused: {exc}")
                response.success = False
                return response

        service.callback = change_state

    # -- lifecycle --------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        values = {name: self.get_parameter(name).value for name in self._values}
        try:
            params = PolicyNodeParams.from_mapping(values)
            self.core = PolicyCore.load(params, self._kit)
        except LompoError as e:
            self._why_unconfigured = f"configure failed: {e}"
            self.get_logger().error(self._why_unconfigured)
            return TransitionCallbackReturn.FAILURE
        msg_type = TwistStamped if params.command_interface == SERVO_TWIST else Float64MultiArray
        # Reliable, depth 1: a controller wants the newest command, and every one of them.
        self._command_pub = self.create_lifecycle_publisher(
            msg_type, params.resolved_command_topic, 1
        )
        self._uncertainty_pub = self.create_lifecycle_publisher(Float32, "~/uncertainty", 10)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", 1)
        sidecar = self.core.runtime.sidecar
        for warning in self.core.warnings:
            self.get_logger().warn(warning)
        self.get_logger().info(
            f"loaded {params.model_path} (code {sidecar.get('code_version', '?')}); commands: "
            f"{params.command_interface} on {params.resolved_command_topic}"
        )
        self.lifecycle = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        assert self.core is not None
        p = self.core.params
        self.core.activate()
        image_type = CompressedImage if p.image_transport == COMPRESSED else Image
        self._image_sub = self.create_subscription(
            image_type, p.image_topic, self._on_image, image_qos(p.image_reliability)
        )
        self.lifecycle = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self.lifecycle = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for pub in (self._command_pub, self._uncertainty_pub, self._debug_pub):
            self.destroy_lifecycle_publisher(pub)
        self.core = None
        self._why_unconfigured = "cleaned up"
        self.lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self._image_sub is not None:  # shutting down while active: stop the arm first
            self._stop()
        self.core = None
        self._why_unconfigured = "shut down"
        self.lifecycle = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        assert self.core is not None
        with self._publishing:
            if self._image_sub is not None:
                self.destroy_subscription(self._image_sub)
                self._image_sub = None
            self.core.deactivate()
            # Published while the publisher is still active: the last word to the arm is "stop".
            self._command_pub.publish(self.core.zero_command(now_ns(self)))

    def await_zero_delivered(self, timeout_s: float = 1.0) -> None:
        """Before the process exits, wait until every subscriber has acknowledged the zero.

        The command publisher is reliable, but a sample lost on its first send is only repaired
        while the writer lives: destroyed at once, the controller's last command could be the
        one before the zero.
        """
        if not self._command_pub.wait_for_all_acked(Duration(seconds=timeout_s)):
            self.get_logger().warn(f"the last zero command was not acknowledged in {timeout_s} s")

    # -- callbacks --------------------------------------------------------------------------

    def _on_image(self, msg: Any) -> None:
        core = self.core
        if core is None:
            return
        want_debug = self._debug_pub.get_subscription_count() > 0
        out = core.on_image(msg, now_ns(self), want_debug)
        with self._publishing:
            if self._image_sub is None:  # stopped while this image was stepped
                return
            self._command_pub.publish(out.command)
        self._uncertainty_pub.publish(out.uncertainty)
        if out.debug_image is not None:
            self._debug_pub.publish(out.debug_image)
        if not out.result.ok:
            self.get_logger().warn(out.result.reason, throttle_duration_sec=5.0)

    def _watchdog_loop(self, period_s: float) -> None:
        while not self._watchdog_stop.wait(period_s):
            self._on_watchdog()

    def stop_watchdog(self) -> None:
        self._watchdog_stop.set()
        self._watchdog.join(5.0)

    def _on_watchdog(self) -> None:
        core = self.core
        if core is None:
            return
        with self._publishing:
            command = core.on_timer(now_ns(self))
            if command is not None and self._image_sub is not None:
                self._command_pub.publish(command)

    def _on_diagnostics(self) -> None:
        name = f"{self.get_fully_qualified_name()}: lompo policy"
        core, stamp = self.core, now_ns(self)
        if core is None:
            msg = unconfigured_diagnostics(self._kit, stamp, name, self._why_unconfigured)
        else:
            msg = core.diagnostics(stamp, name, self.lifecycle)
        self._diag_pub.publish(msg)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        core = self.core
        if core is None:
            response.success, response.message = False, "not configured"
        else:
            core.reset()
            response.success = True
            response.message = f"reset; controller {core.controller.state}"
        return response


def main(args: list[str] | None = None) -> int:
    # Without rclpy's signal handlers the context is still valid after Ctrl-C (launch's SIGINT)
    # or SIGTERM (docker stop, systemd): the spin ends and the zero command is still published.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_on_signals()
    node = PolicyNode()
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                code = 1  # the reason is logged; under launch the node's exit shows it
            else:
                node.trigger_activate()
        if code == 0:
            spin_until_stopped(node)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node._image_sub is not None:
            node.trigger_deactivate()  # sends the zero command, the last one
            node.await_zero_delivered()
        node.stop_watchdog()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
