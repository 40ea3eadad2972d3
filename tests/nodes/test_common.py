"""lompo_core.nodes.common and the message kit on rosbags' real message classes and CDR bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nodekit import NOW_NS, SCALING, wire

from lompo_core import messages as m
from lompo_core.errors import LompoError
from lompo_core.messages import MessageKit
from lompo_core.nodes.common import (
    JOINT_GROUP,
    SERVO_TWIST,
    command_message,
    command_to_action,
    command_type,
)


def test_command_messages_survive_the_wire(ts, kit):
    twist = wire(ts, command_message(kit, [0.1, -0.2, 0.3], SERVO_TWIST, NOW_NS, "tool0"))
    assert twist.__msgtype__ == m.TWIST_STAMPED_TYPE == command_type(SERVO_TWIST)
    np.testing.assert_allclose(m.twist_linear(twist), [0.1, -0.2, 0.3])
    assert (twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) == (0, 0, 0)
    assert twist.header.frame_id == "tool0" and m.stamp_ns(twist.header) == NOW_NS

    joints = wire(ts, command_message(kit, [0.5, 0.25, -1.0, 2.0], JOINT_GROUP, NOW_NS, "x"))
    assert joints.__msgtype__ == m.FLOAT64_MULTI_ARRAY_TYPE == command_type(JOINT_GROUP)
    np.testing.assert_array_equal(joints.data, [0.5, 0.25, -1.0, 2.0])


def test_servo_twist_refuses_a_policy_that_is_not_a_linear_velocity(kit):
    with pytest.raises(LompoError, match="joint_group"):
        command_message(kit, np.zeros(7), SERVO_TWIST, NOW_NS, "base_link")
    with pytest.raises(LompoError, match="command_interface"):
        command_message(kit, np.zeros(3), "servo", NOW_NS, "base_link")


def test_image_messages_round_trip_and_decode(ts, kit):
    from lompo_core.image import decode_image

    rgb = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    msg = wire(ts, kit.image(rgb, NOW_NS, "cam"))
    assert (msg.height, msg.width, msg.encoding, msg.step) == (48, 80, "rgb8", 240)
    np.testing.assert_array_equal(decode_image(msg), rgb)
    import cv2

    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    compressed = wire(ts, kit.compressed_image(png.tobytes(), "png", NOW_NS))
    assert compressed.format == "png" and m.stamp_ns(compressed.header) == NOW_NS
    np.testing.assert_array_equal(decode_image(compressed), rgb)


def test_diagnostics_levels_and_values(ts, kit):
    msg = wire(
        ts,
        kit.diagnostic_array(
            NOW_NS, [("WARN", "policy", "active: watchdog", "lompo", {"a": 1.5, "b": math.nan})]
        ),
    )
    (status,) = msg.status
    Status = ts.types["diagnostic_msgs/msg/DiagnosticStatus"]
    assert status.level == Status.WARN and status.message == "active: watchdog"
    assert {kv.key: kv.value for kv in status.values} == {"a": "1.5", "b": "nan"}


def test_ros_kit_builds_sequences_rclpy_accepts():
    # rclpy's setters take array.array and reject numpy arrays; rosbags wants numpy.
    import array

    kit = MessageKit.from_ros()
    assert kit.uint8_seq(np.arange(6, dtype=np.uint8).reshape(2, 3)) == array.array("B", range(6))
    assert kit.float64_seq(np.array([0.5, -1.0])) == array.array("d", [0.5, -1.0])


def test_command_to_action_inverts_the_policys_scaling(ts, kit):
    action = np.array([0.5, -0.25, 1.0])
    twist = wire(ts, command_message(kit, SCALING.to_physical(action), SERVO_TWIST, NOW_NS, "b"))
    got, reason = command_to_action(twist, SCALING)
    assert reason == "ok"
    np.testing.assert_allclose(got, action)
    joints = wire(ts, kit.float64_array(SCALING.to_physical(action)))
    np.testing.assert_allclose(command_to_action(joints, SCALING)[0], action)
    # Faster than the data's maximum: clipped, as the sim does.
    fast = wire(ts, kit.twist_stamped([4.0, 0, 0], NOW_NS, "b"))
    np.testing.assert_allclose(command_to_action(fast, SCALING)[0], [1.0, 0, 0])


@pytest.mark.parametrize(
    "values, why", [([0.1, 0.2], "2 values"), ([0.1, math.nan, 0.0], "non-finite")]
)
def test_bad_commands_stop_the_sim_with_a_reason(kit, values, why):
    action, reason = command_to_action(kit.float64_array(np.array(values)), SCALING)
    assert why in reason
    np.testing.assert_array_equal(action, np.zeros(3))
