"""Bags written by the tests themselves with rosbags: every storage, encoding and action type.

Frame k of a test bag is a uniform colour that encodes k (``frame_colour``), so a converted image
says which camera frame it came from, even after jpeg, a crop and the resize. Command k is a known
vector (``command_value``), so the alignment of actions can be checked exactly.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from lompo_core import messages as m

T0 = 1_700_000_000 * 1_000_000_000


def frame_colour(k: int) -> np.ndarray:
    """A colour unique per frame (k < 40), far enough apart to survive jpeg."""
    return np.array([(k * 6) % 240 + 8, 200 - (k * 6) % 190, 60 + (k % 3) * 60], np.uint8)


def frame_index(img: np.ndarray) -> int:
    """Inverse of frame_colour for a converted (uniform) image."""
    c = img.reshape(-1, 3).mean(axis=0)
    best = min(range(40), key=lambda k: float(np.abs(frame_colour(k) - c).sum()))
    return best


def command_value(k: int, dim: int = 3) -> np.ndarray:
    """Command k in physical units (m/s): distinct per k and per axis, within +-0.8."""
    return np.array(
        [0.02 * k - 0.35, -0.01 * k + 0.2, 0.03 * ((k % 7) - 3)][:dim] + [0.1] * (dim - 3)
    )


@dataclass
class BagSpec:
    storage: str = "mcap"  # mcap | sqlite3 | rosbag1
    distro: str = "jazzy"  # jazzy | humble (rosbag1 always noetic)
    encoding: str = "rgb8"  # rgb8 bgr8 rgba8 bgra8 mono8 mono16 jpeg png (or anything: raw)
    width: int = 40
    height: int = 30
    pad: int = 0  # bytes of padding at the end of each row (step = row + pad)
    action: str = "TwistStamped"  # TwistStamped | Twist | Float64MultiArray | Float32MultiArray
    n: int = 20  # images
    rate_hz: float = 10.0
    camera_factor: int = 1  # camera rate = rate_hz * camera_factor
    command_factor: int = 1  # commands per camera frame (a teleop faster than the camera)
    reward: str = "float32"  # float32 | success | both | none
    success_at: int | None = None  # control step at which success is published
    skip_images: tuple[int, ...] = ()  # control steps whose images are missing (gaps)
    command_stamp: str = "after"  # after: t_k + dt/4; image: stamped with image k's stamp
    image_topic: str = m.IMAGE_TOPIC
    action_topic: str = m.COMMAND_TOPIC
    image_offset_s: float = 0.0  # shift all image stamps (never-overlap test)
    image_clock_s: float = 0.0  # the camera's header stamps run this far ahead of the log times
    reverse_images_at: int | None = None  # swap two image stamps (out-of-order test)
    zstd: str = ""  # rosbag2 compression: "" none, "storage" (zstd chunks), "message"
    lz4: bool = False  # mcap chunks lz4-compressed (rosbags writes none: rewritten with mcap)
    commands: list[np.ndarray] = field(default_factory=list)  # filled by write_bag


def _ros1_header(ts, stamp: int, frame: str):
    Time = ts.types["builtin_interfaces/msg/Time"]
    sec, nsec = divmod(stamp, 1_000_000_000)
    return ts.types["std_msgs/msg/Header"](seq=0, stamp=Time(sec=sec, nanosec=nsec), frame_id=frame)


def image_message(ts, spec: BagSpec, rgb: np.ndarray, stamp: int, ros1: bool):
    hdr = (
        _ros1_header(ts, stamp, "cam")
        if ros1
        else m.MessageKit.from_typestore(ts).header(stamp, "cam")
    )
    enc = spec.encoding
    if enc in ("jpeg", "png"):
        ok, buf = cv2.imencode("." + ("jpg" if enc == "jpeg" else "png"), rgb[..., ::-1])
        assert ok
        return ts.types[m.COMPRESSED_IMAGE_TYPE](header=hdr, format=enc, data=buf.reshape(-1))
    conv = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)]),
        "mono8": rgb[..., 1],
        "mono16": rgb[..., 1].astype(np.uint16) * 256 + 77,
    }
    pix = conv.get(enc, rgb)
    h, w = pix.shape[:2]
    rows = np.ascontiguousarray(pix).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, spec.pad), 0xAB, np.uint8)], axis=1)
    return ts.types[m.IMAGE_TYPE](
        header=hdr,
        height=h,
        width=w,
        encoding=enc,
        is_bigendian=0,
        step=rows.shape[1],
        data=rows.reshape(-1),
    )


def action_message(ts, spec: BagSpec, value: np.ndarray, stamp: int, ros1: bool):
    V = ts.types["geometry_msgs/msg/Vector3"]
    twist = ts.types["geometry_msgs/msg/Twist"](
        linear=V(x=value[0], y=value[1], z=value[2]), angular=V(x=0.0, y=0.0, z=0.0)
    )
    if spec.action == "TwistStamped":
        hdr = (
            _ros1_header(ts, stamp, "base")
            if ros1
            else m.MessageKit.from_typestore(ts).header(stamp, "base")
        )
        return ts.types["geometry_msgs/msg/TwistStamped"](header=hdr, twist=twist)
    if spec.action == "Twist":
        return twist
    layout = ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    dtype = np.float64 if spec.action == "Float64MultiArray" else np.float32
    return ts.types[f"std_msgs/msg/{spec.action}"](layout=layout, data=value.astype(dtype))


def write_bag(path: Path, spec: BagSpec) -> BagSpec:
    """Write a bag following ``spec``: images on a grid, commands dt/4 after each image."""
    ros1 = spec.storage == "rosbag1"
    ts = m.typestore("noetic" if ros1 else spec.distro)
    dt = int(1e9 / spec.rate_hz)
    cam_dt = dt // spec.camera_factor
    events = []  # (log time, order, topic, msgtype, message)
    n_cam = (spec.n - 1) * spec.camera_factor + 1
    img_type = m.COMPRESSED_IMAGE_TYPE if spec.encoding in ("jpeg", "png") else m.IMAGE_TYPE
    for j in range(n_cam):
        k, sub = divmod(j, spec.camera_factor)
        if sub == 0 and k in spec.skip_images:
            continue
        log_time = stamp = T0 + j * cam_dt + int(spec.image_offset_s * 1e9)
        stamp += int(spec.image_clock_s * 1e9)
        if spec.reverse_images_at is not None and j == spec.reverse_images_at:
            stamp -= 2 * cam_dt  # the header goes back in time, the arrival order does not
        rgb = np.empty((spec.height, spec.width, 3), np.uint8)
        rgb[:] = frame_colour(j)
        events.append(
            (log_time, 0, spec.image_topic, img_type, image_message(ts, spec, rgb, stamp, ros1))
        )
    spec.commands = []
    atype = {
        "TwistStamped": "geometry_msgs/msg/TwistStamped",
        "Twist": "geometry_msgs/msg/Twist",
    }.get(spec.action, f"std_msgs/msg/{spec.action}")
    cmd_dt = dt // spec.command_factor
    for k in range(spec.n - 1):
        value = command_value(k)
        spec.commands.append(value)  # the last command before image k + 1: its action
        for c in range(spec.command_factor):
            t_img = T0 + k * dt + c * cmd_dt
            stamp = t_img + cmd_dt // 4 if spec.command_stamp == "after" else t_img
            held = value if c == spec.command_factor - 1 else value * 0.5
            events.append(
                (
                    t_img + cmd_dt // 4,
                    2,
                    spec.action_topic,
                    atype,
                    action_message(ts, spec, held, stamp, ros1),
                )
            )
    for k in range(spec.n):
        t = T0 + k * dt
        success = spec.success_at is not None and k >= spec.success_at
        if spec.reward in ("float32", "both"):
            msg = ts.types[m.FLOAT32_TYPE](data=1.0 if k == spec.success_at else 0.0)
            events.append((t, 1, m.REWARD_TOPIC, m.FLOAT32_TYPE, msg))
        if spec.reward in ("success", "both"):
            msg = ts.types[m.BOOL_TYPE](data=success)
            events.append((t, 1, m.SUCCESS_TOPIC, m.BOOL_TYPE, msg))
    events.sort(key=lambda e: (e[0], e[1]))
    if ros1:
        from rosbags.rosbag1 import Writer as Writer1

        with Writer1(path) as w:
            conns = {}
            for _, _, topic, mtype, _ in events:
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, mtype, typestore=ts)
            for t, _, topic, mtype, msg in events:
                w.write(conns[topic], t, ts.serialize_ros1(msg, mtype))
    else:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if spec.storage == "mcap" else StoragePlugin.SQLITE3
        version = 9 if spec.distro == "jazzy" else 8
        writer = Writer(path, version=version, storage_plugin=plugin)
        if spec.zstd:
            writer.set_compression(CompressionMode[spec.zstd.upper()], CompressionFormat.ZSTD)
        with writer as w:
            conns = {}
            for _, _, topic, mtype, _ in events:
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, mtype, typestore=ts)
            for t, _, topic, mtype, msg in events:
                w.write(conns[topic], t, ts.serialize_cdr(msg, mtype))
        if spec.lz4:
            lz4_chunks(next(path.glob("*.mcap")))
    return spec


def lz4_chunks(mcap_file: Path, chunk_size: int = 16 * 1024) -> None:
    """Rewrite an mcap file with lz4-compressed chunks, as other mcap writers may record them:
    the same schemas, channels (ids kept), messages and metadata records."""
    import io

    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    reader = make_reader(io.BytesIO(mcap_file.read_bytes()))
    header, summary = reader.get_header(), reader.get_summary()
    out = io.BytesIO()
    w = Writer(out, chunk_size=chunk_size, compression=CompressionType.LZ4)
    w.start(profile=header.profile, library=header.library)
    for sid, schema in sorted(summary.schemas.items()):
        assert w.register_schema(schema.name, schema.encoding, schema.data) == sid
    for cid, ch in sorted(summary.channels.items()):
        assert w.register_channel(ch.topic, ch.message_encoding, ch.schema_id, ch.metadata) == cid
    for _, channel, msg in reader.iter_messages(log_time_order=False):
        w.add_message(channel.id, msg.log_time, msg.data, msg.publish_time, msg.sequence)
    for record in reader.iter_metadata():
        w.add_metadata(record.name, record.metadata)
    w.finish()
    mcap_file.write_bytes(out.getvalue())


@pytest.fixture
def make_bag(tmp_path: Path):
    """make_bag(name, **BagSpec fields) -> (path, spec)."""

    def make(name: str = "bag", **kw) -> tuple[Path, BagSpec]:
        spec = BagSpec(**kw)
        folder = tmp_path / "bags"
        folder.mkdir(exist_ok=True)
        path = folder / (name + ".bag" if spec.storage == "rosbag1" else name)
        return path, write_bag(path, spec)

    return make


@pytest.fixture(scope="session")
def collect_bags(tmp_path_factory) -> Path:
    """Two episodes from the real `lompo collect` (the scripted expert, one mcap, one sqlite3)."""
    out = tmp_path_factory.mktemp("collect")
    for seed, storage, distro in ((0, "mcap", "jazzy"), (1, "sqlite3", "humble")):
        cmd = [sys.executable, "-m", "lompo_core.cli", "collect", "--policy", "expert"]
        cmd += ["--episodes", "1", "--seed", str(seed), "--out", str(out / "bags"), "--quiet"]
        cmd += ["--storage", storage, "--distro", distro]
        subprocess.run(cmd, check=True, capture_output=True)
    return out / "bags"
