"""The ROS 2 messages lompo reads and writes, and the one builder that makes them.

:class:`MessageKit` builds every message lompo sends from one source of message classes:
rosbags' typestore for the collector, the evaluator and the tests (:func:`kit`), the generated
rclpy classes in the ROS nodes (:meth:`MessageKit.from_ros`). The field names are the same in
both; the few representations that differ (uint8[] and float64[] sequences) are the kit's job.
"""

from __future__ import annotations

import array
import importlib
import math
from collections.abc import Callable, Mapping
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

INT32_TYPE = "std_msgs/msg/Int32"
FLOAT64_MULTI_ARRAY_TYPE = "std_msgs/msg/Float64MultiArray"
DIAGNOSTIC_ARRAY_TYPE = "diagnostic_msgs/msg/DiagnosticArray"

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


def stamp_ns(msg_header: Any) -> int:
    return int(msg_header.stamp.sec) * 1_000_000_000 + int(msg_header.stamp.nanosec)


def twist_linear(msg: Any) -> np.ndarray:
    """The linear velocity of a Twist or TwistStamped, in m/s."""
    twist = getattr(msg, "twist", msg)
    v = twist.linear
    return np.array([v.x, v.y, v.z], np.float64)


@cache
def kit(distro: str = "jazzy") -> MessageKit:
    """The message builder over rosbags' typestore of ``distro`` (no ROS installation needed)."""
    return MessageKit.from_typestore(typestore(distro))


class MessageKit:
    """Builds ROS messages from one source of message classes.

    ``resolve`` maps a type name such as ``"geometry_msgs/msg/TwistStamped"`` to its class. rosbags
    holds primitive sequences as numpy arrays; rclpy's generated setters accept ``array.array``
    (and reject numpy arrays, which are not ``Sequence``), so the sequence conversions differ.
    """

    def __init__(
        self,
        resolve: Callable[[str], Any],
        uint8_seq: Callable[[np.ndarray], Any],
        float64_seq: Callable[[np.ndarray], Any],
    ) -> None:
        self.resolve = resolve
        self.uint8_seq = uint8_seq
        self.float64_seq = float64_seq

    @classmethod
    def from_typestore(cls, ts: Any) -> MessageKit:
        return cls(
            resolve=lambda name: ts.types[name],
            uint8_seq=lambda a: np.ascontiguousarray(a, np.uint8).reshape(-1),
            float64_seq=lambda a: np.asarray(a, np.float64).reshape(-1),
        )

    @classmethod
    def from_ros(cls) -> MessageKit:
        """The installed ROS message packages (``geometry_msgs.msg`` ...), as rclpy uses them."""

        def resolve(name: str) -> Any:
            package, kind, type_name = name.split("/")
            return getattr(importlib.import_module(f"{package}.{kind}"), type_name)

        return cls(
            resolve=resolve,
            # array.array from bytes: one memcpy, where a list would be checked element by element.
            uint8_seq=lambda a: array.array("B", np.ascontiguousarray(a, np.uint8).tobytes()),
            float64_seq=lambda a: array.array("d", np.asarray(a, np.float64).tobytes()),
        )

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        Time = self.resolve("builtin_interfaces/msg/Time")
        return self.resolve("std_msgs/msg/Header")(
            stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id
        )

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = CAMERA_FRAME) -> Any:
        """A ``sensor_msgs/msg/Image`` in rgb8 from an [H, W, 3] uint8 array."""
        rgb = np.ascontiguousarray(rgb, np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
        h, w, _ = rgb.shape
        return self.resolve(IMAGE_TYPE)(
            header=self.header(stamp_ns, frame_id),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=self.uint8_seq(rgb),
        )

    def compressed_image(
        self, data: bytes | np.ndarray, fmt: str, stamp_ns: int, frame_id: str = CAMERA_FRAME
    ) -> Any:
        """A ``sensor_msgs/msg/CompressedImage`` holding encoded bytes (``fmt``: "jpeg", ...)."""
        return self.resolve(COMPRESSED_IMAGE_TYPE)(
            header=self.header(stamp_ns, frame_id),
            format=fmt,
            data=self.uint8_seq(np.frombuffer(bytes(data), np.uint8)),
        )

    def twist_stamped(
        self, linear: np.ndarray, stamp_ns: int, frame_id: str = COMMAND_FRAME
    ) -> Any:
        """A ``geometry_msgs/msg/TwistStamped`` with a linear velocity and zero angular one."""
        Vector3 = self.resolve("geometry_msgs/msg/Vector3")
        x, y, z = (float(v) for v in np.asarray(linear, np.float64).reshape(3))
        return self.resolve(TWIST_STAMPED_TYPE)(
            header=self.header(stamp_ns, frame_id),
            twist=self.resolve("geometry_msgs/msg/Twist")(
                linear=Vector3(x=x, y=y, z=z), angular=Vector3(x=0.0, y=0.0, z=0.0)
            ),
        )

    def float64_array(self, values: np.ndarray) -> Any:
        Layout = self.resolve("std_msgs/msg/MultiArrayLayout")
        return self.resolve(FLOAT64_MULTI_ARRAY_TYPE)(
            layout=Layout(dim=[], data_offset=0), data=self.float64_seq(values)
        )

    def float32(self, value: float) -> Any:
        return self.resolve(FLOAT32_TYPE)(data=float(value))

    def int32(self, value: int) -> Any:
        return self.resolve(INT32_TYPE)(data=int(value))

    def bool(self, value: bool) -> Any:
        return self.resolve(BOOL_TYPE)(data=bool(value))

    def diagnostic_array(
        self, stamp_ns: int, statuses: list[tuple[str, str, str, str, Mapping[str, Any]]]
    ) -> Any:
        """``statuses``: (level name OK/WARN/ERROR/STALE, name, message, hardware_id, values)."""
        Status = self.resolve("diagnostic_msgs/msg/DiagnosticStatus")
        KeyValue = self.resolve("diagnostic_msgs/msg/KeyValue")
        out = [
            Status(
                # The class constant, not a literal: byte is an int in rosbags, bytes in rclpy.
                level=getattr(Status, level),
                name=name,
                message=message,
                hardware_id=hardware_id,
                values=[KeyValue(key=k, value=_diag_value(v)) for k, v in values.items()],
            )
            for level, name, message, hardware_id, values in statuses
        ]
        return self.resolve(DIAGNOSTIC_ARRAY_TYPE)(header=self.header(stamp_ns, ""), status=out)


def _diag_value(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
