"""Wiring shared by the nodes: parameters from dataclass defaults, QoS, the clock."""

from __future__ import annotations

import signal
from dataclasses import fields
from typing import Any

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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGINT and SIGTERM (launch, ``docker stop``, systemd) both end ``main`` as Ctrl-C does.

    rclpy's own handlers are off (``SignalHandlerOptions.NO``) so that the context is still
    valid when ``main`` publishes its last command. SIGINT is set explicitly: a process started
    in the background by a non-interactive shell inherits it ignored.
    """
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
