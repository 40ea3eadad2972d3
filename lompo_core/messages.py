"""ROS 2 messages without ROS: the topics lompo reads and writes, built from rosbags' typestores.

The field names are those of rclpy's message classes, so the code that fills these in serves the
collector, the evaluator and the ROS nodes alike.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

IMAGE_TOPIC = "/overhead_camera/image_raw"
COMMAND_TOPIC = "/servo_node/delta_twist_cmds"
REWARD_TOPIC = "/drawer_sim/reward"
SUCCESS_TOPIC = "/drawer_sim/success"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
TWIST_STAMPED_TYPE = "geometry_msgs/msg/TwistStamped"
FLOAT32_TYPE = "std_msgs/msg/Float32"
BOOL_TYPE = "std_msgs/msg/Bool"

DISTROS = ("jazzy", "humble")
CAMERA_FRAME = "overhead_camera"
COMMAND_FRAME = "base_link"


@cache
def typestore(distro: str = "jazzy"):
    """The message definitions of a ROS distribution ("jazzy", "humble" or "noetic")."""
    from rosbags.typesys import Stores, get_typestore

    stores = {
        "jazzy": Stores.ROS2_JAZZY,
        "humble": Stores.ROS2_HUMBLE,
        "noetic": Stores.ROS1_NOETIC,
    }
    if distro not in stores:
        raise ValueError(f"unknown ROS distribution {distro!r}; choose one of {', '.join(stores)}")
    return get_typestore(stores[distro])


def header(ts, stamp_ns: int, frame_id: str) -> Any:
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns(msg_header: Any) -> int:
    return int(msg_header.stamp.sec) * 1_000_000_000 + int(msg_header.stamp.nanosec)


def image_msg(ts, rgb: np.ndarray, stamp: int, frame_id: str = CAMERA_FRAME) -> Any:
    """A ``sensor_msgs/msg/Image`` in rgb8 from an [H, W, 3] uint8 array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    h, w, _ = rgb.shape
    return ts.types[IMAGE_TYPE](
        header=header(ts, stamp, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=rgb.reshape(-1),
    )


def twist_msg(ts, linear_mps: np.ndarray, stamp: int, frame_id: str = COMMAND_FRAME) -> Any:
    """A ``geometry_msgs/msg/TwistStamped`` with a linear velocity and zero angular velocity."""
    Vector3 = ts.types["geometry_msgs/msg/Vector3"]
    Twist = ts.types["geometry_msgs/msg/Twist"]
    x, y, z = (float(v) for v in np.asarray(linear_mps, np.float64).reshape(3))
    return ts.types[TWIST_STAMPED_TYPE](
        header=header(ts, stamp, frame_id),
        twist=Twist(linear=Vector3(x=x, y=y, z=z), angular=Vector3(x=0.0, y=0.0, z=0.0)),
    )


def twist_linear(msg: Any) -> np.ndarray:
    """The linear velocity of a Twist or TwistStamped, in m/s."""
    twist = getattr(msg, "twist", msg)
    v = twist.linear
    return np.array([v.x, v.y, v.z], np.float64)


def float32_msg(ts, value: float) -> Any:
    return ts.types[FLOAT32_TYPE](data=float(value))


def bool_msg(ts, value: bool) -> Any:
    return ts.types[BOOL_TYPE](data=bool(value))
