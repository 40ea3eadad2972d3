"""Wiring shared by the nodes: parameters from dataclass defaults, QoS, the clock."""

from __future__ import annotations

import signal
from dataclasses import fields
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data


def declare_dataclass_parameters(node: Node, params_cls: type) -> dict[str, Any]:
    """Declare one ROS parameter per field (its default as in lompo_core) and read them back."""
    values = {}
    for f in fields(params_cls):
        node.declare_parameter(f.name, f.default)
        values[f.name] = node.get_parameter(f.name).value
    return values


def image_qos(reliability: str) -> QoSProfile:
    """Sensor-data QoS (keep last 5, volatile) with the reliability the parameter chose."""
    qos = QoSProfile(
        history=qos_profile_sensor_data.history,
        depth=qos_profile_sensor_data.depth,
        durability=qos_profile_sensor_data.durability,
        reliability=qos_profile_sensor_data.reliability,
    )
    if reliability == "reliable":
        qos.reliability = ReliabilityPolicy.RELIABLE
    return qos


def now_ns(node: Node) -> int:
    return node.get_clock().now().nanoseconds


# Set by SIGINT/SIGTERM; "wake" is the spinning node's guard condition, which ends its wait.
_STOP: dict[str, Any] = {"requested": False, "wake": None}


def _request_stop(signum: int, frame: Any) -> None:
    _STOP["requested"] = True
    if _STOP["wake"] is not None:
        _STOP["wake"].trigger()


def stop_on_signals() -> None:
    """SIGINT and SIGTERM (launch, ``docker stop``, systemd) both end :func:`spin_until_stopped`.

    The handlers only set a flag and wake the executor: an exception raised from a handler can
    land inside rclpy's conversion of a message, where pybind11 turns it into a RuntimeError
    that ends the node with a traceback. rclpy's own handlers are off
    (``SignalHandlerOptions.NO``) so that the context is still valid when ``main`` publishes its
    last command. SIGINT is set explicitly: a process started in the background by a
    non-interactive shell inherits it ignored.
    """
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)


def spin_until_stopped(node: Node) -> None:
    """Run the node's callbacks, one thread, until a signal asks to stop (at once if one has)."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    _STOP["wake"] = node.create_guard_condition(lambda: None)
    try:
        while not _STOP["requested"] and node.context.ok():
            executor.spin_once(timeout_sec=1.0)
    finally:
        wake, _STOP["wake"] = _STOP["wake"], None
        node.destroy_guard_condition(wake)
        executor.remove_node(node)
