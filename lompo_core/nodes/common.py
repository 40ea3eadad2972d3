"""What both nodes share: parameter checks, and commands out of the policy and into the sim.

Mirrors ``lompo_ros/common.py``. No rclpy, no torch: this runs on the robot computer and in CI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from lompo_core import messages as m
from lompo_core.actions import ActionScaling
from lompo_core.errors import LompoError
from lompo_core.messages import MessageKit

SERVO_TWIST = "servo_twist"
JOINT_GROUP = "joint_group"
COMMAND_INTERFACES = (SERVO_TWIST, JOINT_GROUP)
# Where each interface's consumer listens by default: MoveIt Servo, and a ros2_control
# forward_command_controller named as in ros2_controllers' examples.
DEFAULT_COMMAND_TOPICS = {
    SERVO_TWIST: m.COMMAND_TOPIC,
    JOINT_GROUP: "/forward_velocity_controller/commands",
}


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise LompoError(f"parameter {name}={value!r}: choose one of {', '.join(choices)}")
    return value


def params_from_mapping(cls: type, values: Mapping[str, Any], node: str) -> Any:
    """A node's parameter dataclass from a mapping; unknown names are refused, not ignored."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise LompoError(f"unknown {node} parameter(s): {', '.join(sorted(unknown))}")
    p = cls(**values)
    p.validate()
    return p


def command_topic(interface: str, topic: str = "") -> str:
    """The topic to use for ``interface``: ``topic`` if given, else that interface's default."""
    check_choice("command_interface", interface, COMMAND_INTERFACES)
    return topic or DEFAULT_COMMAND_TOPICS[interface]


def command_type(interface: str) -> str:
    check_choice("command_interface", interface, COMMAND_INTERFACES)
    return m.TWIST_STAMPED_TYPE if interface == SERVO_TWIST else m.FLOAT64_MULTI_ARRAY_TYPE


def command_message(
    kit: MessageKit, command: np.ndarray, interface: str, stamp_ns: int, frame_id: str
) -> Any:
    """A physical command (``Decision.command``) as the message ``interface`` publishes.

    servo_twist: the three values are the end-effector's linear velocity in m/s (MoveIt Servo).
    joint_group: the values in the sidecar's action order, for a forward command controller.
    """
    command = np.asarray(command, np.float64).reshape(-1)
    if interface == SERVO_TWIST:
        if command.size != 3:
            raise LompoError(
                f"command_interface servo_twist needs a 3-d linear velocity; this policy has "
                f"{command.size} actions (use joint_group)"
            )
        return kit.twist_stamped(command, stamp_ns, frame_id)
    check_choice("command_interface", interface, COMMAND_INTERFACES)
    return kit.float64_array(command)


def command_to_action(msg: Any, scaling: ActionScaling) -> tuple[np.ndarray, str]:
    """A received command (TwistStamped, Twist or Float64MultiArray) as a normalised sim action.

    The inverse of what the collector and the policy do (``scaling.to_physical``), clipped to
    [-1, 1] as the sim would. A malformed command becomes a zero action with the reason, so a bad
    publisher stops the arm instead of crashing the sim.
    """
    dim = len(scaling.max_speed)
    if hasattr(msg, "twist") or hasattr(msg, "linear"):
        physical = m.twist_linear(msg)
        if dim != 3:
            return np.zeros(dim), f"a twist carries 3 values, the sim takes {dim}"
    elif hasattr(msg, "data") and hasattr(msg, "layout"):
        physical = np.asarray(msg.data, np.float64).reshape(-1)
        if physical.size != dim:
            return np.zeros(dim), f"command has {physical.size} values, the sim takes {dim}"
    else:
        return np.zeros(dim), f"unsupported command message {type(msg).__name__}"
    if not np.all(np.isfinite(physical)):
        return np.zeros(dim), f"non-finite command {physical.tolist()}"
    return np.clip(scaling.to_normalised(physical), -1.0, 1.0), "ok"
