"""bagread: the CDR readers against rosbags, what opening a bag costs, the bag fingerprint."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from bagfactory import BagSpec, image_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from lompo_core import messages as m
from lompo_core.data import bagread as br
from lompo_core.data.preprocess import decode_image
from lompo_core.errors import BagError

TS = m.typestore("jazzy")
FIELDS = ("height", "width", "encoding", "is_bigendian", "step")


@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "camera", "camera_optical_frame"])
@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "bgra8", "mono16"])
@pytest.mark.parametrize("pad", [0, 1, 3])
def test_parse_image_cdr_matches_rosbags(frame_id: str, encoding: str, pad: int) -> None:
    # The frame id and encoding lengths move every later field across the 4-byte alignment.
    rgb = np.random.default_rng(pad).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    msg = image_message(
        TS, BagSpec(encoding=encoding, pad=pad), rgb, 1_700_000_000_123_456_789, False
    )
    msg.header.frame_id = frame_id
    raw = bytes(TS.serialize_cdr(msg, m.IMAGE_TYPE))
    ref, fast = TS.deserialize_cdr(raw, m.IMAGE_TYPE), br.parse_image_cdr(raw)
    assert fast is not None
    assert (fast.header.stamp.sec, fast.header.stamp.nanosec, fast.header.frame_id) == (
        ref.header.stamp.sec,
        ref.header.stamp.nanosec,
        ref.header.frame_id,
    )
    assert [getattr(fast, f) for f in FIELDS] == [getattr(ref, f) for f in FIELDS]
    np.testing.assert_array_equal(fast.data, ref.data)
    np.testing.assert_array_equal(decode_image(fast), decode_image(ref))
    assert br.header_stamp(fast, 0) == 1_700_000_000_123_456_789


@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "base", "tool0_frame", "x" * 13])
def test_parse_twist_cdr_matches_rosbags(frame_id: str) -> None:
    # Every frame id length lands the six doubles on another 8-byte alignment.
    values = np.random.default_rng(len(frame_id)).normal(size=6)
    ref_msg = m.MessageKit.from_typestore(TS).twist_stamped(values[:3], 1_700_000_000_987_654_321)
    ref_msg.header.frame_id = frame_id
    ref_msg.twist.angular.x, ref_msg.twist.angular.y, ref_msg.twist.angular.z = values[3:]
    raw = bytes(TS.serialize_cdr(ref_msg, m.TWIST_STAMPED_TYPE))
    fast, ref = br.parse_twist_stamped_cdr(raw), TS.deserialize_cdr(raw, m.TWIST_STAMPED_TYPE)
    assert fast is not None and fast.header.frame_id == ref.header.frame_id == frame_id
    assert br.header_stamp(fast, 0) == br.header_stamp(ref, 0) == 1_700_000_000_987_654_321
    for part in ("linear", "angular"):
        for axis in "xyz":
            got = getattr(getattr(fast.twist, part), axis)
            assert got == getattr(getattr(ref.twist, part), axis)
    bare = bytes(TS.serialize_cdr(ref.twist, "geometry_msgs/msg/Twist"))
    twist = br.parse_twist_cdr(bare)
    assert twist is not None and (twist.angular.z, twist.linear.y) == (values[5], values[1])
    get, _ = br.action_reader(m.TWIST_STAMPED_TYPE, ("linear.x", "angular.z"))
    np.testing.assert_array_equal(get(fast), get(ref))
    big = TS.serialize_cdr(ref_msg, m.TWIST_STAMPED_TYPE, little_endian=False)
    assert br.parse_twist_stamped_cdr(big) is None  # rosbags reads it
    with pytest.raises(struct.error):  # Bag.deserialize names bag and topic (READ_ERRORS)
        br.parse_twist_stamped_cdr(raw[:40])


@pytest.mark.parametrize(
    ("msgtype", "value"),
    [
        ("std_msgs/msg/Float32", 0.25),
        ("std_msgs/msg/Float64", -1.5e-7),
        ("std_msgs/msg/Bool", True),
    ],
)
def test_scalar_cdr_matches_rosbags(msgtype: str, value: float | bool) -> None:
    raw = bytes(TS.serialize_cdr(TS.types[msgtype](data=value), msgtype))
    fast = br._FAST_CDR[msgtype](raw)
    assert fast is not None and fast.data == TS.deserialize_cdr(raw, msgtype).data == value
    assert type(fast.data) is type(value)


@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "camera_optical_frame"])
@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_parse_compressed_image_cdr_matches_rosbags(frame_id: str, encoding: str) -> None:
    rgb = np.random.default_rng(len(frame_id)).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    msg = image_message(TS, BagSpec(encoding=encoding), rgb, 1_700_000_000_000_000_007, False)
    msg.header.frame_id = frame_id
    for fmt in (encoding, f"rgb8; {encoding} compressed bgr8"):  # what image_transport writes
        msg.format = fmt
        raw = bytes(TS.serialize_cdr(msg, m.COMPRESSED_IMAGE_TYPE))
        fast, ref = br.parse_compressed_image_cdr(raw), TS.deserialize_cdr(raw, msg.__msgtype__)
        assert fast is not None and (fast.format, fast.header.frame_id) == (fmt, frame_id)
        assert br.header_stamp(fast, 0) == br.header_stamp(ref, 0)
        np.testing.assert_array_equal(fast.data, ref.data)
        np.testing.assert_array_equal(decode_image(fast), decode_image(ref))
    big = TS.serialize_cdr(msg, msg.__msgtype__, little_endian=False)
    assert br.parse_compressed_image_cdr(big) is None  # rosbags reads it
    with pytest.raises(ValueError, match="runs past"):
        br.parse_compressed_image_cdr(raw[:-3])


@pytest.mark.parametrize(
    "msgtype", ["std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray"]
)
@pytest.mark.parametrize("labels", [(), ("",), ("joints",), ("a", "xyz"), ("rows", "c", "cols1")])
@pytest.mark.parametrize("n", [0, 1, 3, 7])
def test_multi_array_cdr_matches_rosbags(msgtype: str, labels: tuple[str, ...], n: int) -> None:
    # Each label's length moves the values across their 4- or 8-byte alignment.
    dim = TS.types["std_msgs/msg/MultiArrayDimension"]
    layout = TS.types["std_msgs/msg/MultiArrayLayout"](
        dim=[dim(label=lb, size=n, stride=n + i) for i, lb in enumerate(labels)],
        data_offset=len(labels),
    )
    dtype = np.float64 if "64" in msgtype else np.float32
    values = np.random.default_rng(n).normal(size=n).astype(dtype)
    raw = bytes(TS.serialize_cdr(TS.types[msgtype](layout=layout, data=values), msgtype))
    fast, ref = br._FAST_CDR[msgtype](raw), TS.deserialize_cdr(raw, msgtype)
    assert fast is not None and fast.data.dtype == ref.data.dtype
    np.testing.assert_array_equal(fast.data, ref.data)
    get, _ = br.action_reader(msgtype, None)
    np.testing.assert_array_equal(get(fast), get(ref))
    assert br._FAST_CDR[msgtype](TS.serialize_cdr(ref, msgtype, little_endian=False)) is None
    if n:
        with pytest.raises(ValueError, match="run past"):
            br._FAST_CDR[msgtype](raw[:-1])


def test_parse_image_cdr_leaves_big_endian_to_rosbags_and_refuses_truncation() -> None:
    msg = image_message(TS, BagSpec(), np.zeros((4, 4, 3), np.uint8), 5, False)
    assert br.parse_image_cdr(TS.serialize_cdr(msg, m.IMAGE_TYPE, little_endian=False)) is None
    raw = bytes(TS.serialize_cdr(msg, m.IMAGE_TYPE))
    with pytest.raises(ValueError, match="runs past"):
        br.parse_image_cdr(raw[:-5])
    with pytest.raises((ValueError, struct.error)):
        br.parse_image_cdr(raw[:20])


def test_fingerprint_names_a_recording_not_a_path(tmp_path) -> None:
    bag = tmp_path / "rec"
    bag.mkdir()
    big = np.random.default_rng(0).integers(0, 256, 10 << 20, dtype=np.uint8)
    (bag / "rec_0.mcap").write_bytes(big.tobytes())
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    fp = br.bag_fingerprint(bag)
    assert fp.startswith("xxh3_128-sampled:") and len(fp.split(":")[1]) == 32
    copy = tmp_path / "elsewhere" / "rec"
    shutil.copytree(bag, copy)
    assert br.bag_fingerprint(copy) == fp
    for change in ("metadata", "first byte", "last byte", "size"):
        other = tmp_path / change.replace(" ", "_")
        shutil.copytree(bag, other)
        data = bytearray(big.tobytes())
        if change == "metadata":
            (other / "metadata.yaml").write_text("rosbag2_bagfile_information: {x: 1}\n")
        else:
            if change == "first byte":
                data[0] ^= 1
            elif change == "last byte":
                data[-1] ^= 1
            else:
                data.append(0)
            (other / "rec_0.mcap").write_bytes(bytes(data))
        assert br.bag_fingerprint(other) != fp, change


def test_a_bag_without_definitions_is_read_with_the_distributions(make_bag, tmp_path) -> None:
    # Humble's sqlite3 recordings store no message definitions: rosbags then needs the
    # distribution's. Building that store takes ~200 ms, so only such a bag builds it.
    path, _ = make_bag(storage="sqlite3", distro="humble", reward="both", success_at=12)
    bare = tmp_path / "bare"
    shutil.copytree(path, bare)
    db = sqlite3.connect(next(bare.glob("*.db3")))
    with db:
        db.execute("DELETE FROM message_definitions")
    db.close()

    def messages(bag_path: Path) -> tuple[br.BagSummary, list[tuple[str, int, str]]]:
        with br.Bag(bag_path, "humble") as bag:
            summary = bag.summary()
            read = [
                (topic, t, repr(bag.deserialize(raw, msgtype, topic)))
                for topic, msgtype, t, raw in bag.raw_messages(list(summary.topics))
            ]
        return summary, read

    m.typestore.cache_clear()
    with_definitions = messages(path)
    assert m.typestore.cache_info().currsize == 0  # the bag's own definitions were enough
    without = messages(bare)
    assert m.typestore.cache_info().currsize == 1
    assert without[0].defined == with_definitions[0].defined
    assert len(without[1]) > 20 and without[1] == with_definitions[1]


@pytest.fixture
def store_opens(monkeypatch) -> list[Path]:
    """The bags that rosbags' AnyReader (and so its message store) is opened for."""
    opened: list[Path] = []

    def counted(paths, **kw):
        opened.extend(paths)
        return AnyReader(paths, **kw)

    monkeypatch.setattr("rosbags.highlevel.AnyReader", counted)
    return opened


@pytest.mark.parametrize(
    ("encoding", "action"),
    [
        ("rgb8", "TwistStamped"),
        ("jpeg", "Twist"),
        ("rgb8", "Float64MultiArray"),
        ("png", "Float32MultiArray"),
    ],
)
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_rosbag2_bag_of_types_read_from_cdr_needs_no_message_store(
    make_bag, store_opens, storage, encoding, action
) -> None:
    # rosbags' AnyReader parses and generates every stored definition at each open: half of
    # opening a bag. Images, commands, rewards and success flags never need it.
    path, _ = make_bag(
        storage=storage, encoding=encoding, action=action, reward="both", success_at=12
    )
    with br.Bag(path) as bag:
        summary = bag.summary()
        image = m.IMAGE_TYPE if encoding == "rgb8" else m.COMPRESSED_IMAGE_TYPE
        assert {image, f"{'std' if 'Array' in action else 'geometry'}_msgs/msg/{action}"} <= (
            summary.defined
        )
        read = [
            bag.deserialize(raw, msgtype, topic)
            for topic, msgtype, _, raw in bag.raw_messages(list(summary.topics))
        ]
    assert len(read) > 40 and store_opens == []


def test_another_type_opens_rosbags_message_store_once(tmp_path, store_opens) -> None:
    path, msgtype = tmp_path / "counts", "std_msgs/msg/Int32"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/count", msgtype, typestore=TS)
        for i in range(5):
            w.write(conn, i, TS.serialize_cdr(TS.types[msgtype](data=i * 7), msgtype))
    with br.Bag(path) as bag:
        assert bag.summary().defined == {msgtype} and store_opens == []
        read = [
            bag.deserialize(raw, t, topic).data for topic, t, _, raw in bag.raw_messages(["/count"])
        ]
    assert read == [0, 7, 14, 21, 28] and store_opens == [path]


def test_a_broken_definition_is_reported_when_the_store_needs_it(tmp_path) -> None:
    # Not at open any more: a bag whose camera and commands we parse ourselves converts anyway.
    path, msgtype = tmp_path / "broken", "std_msgs/msg/Int32"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/count", msgtype, msgdef="int32 data ###", rihs01="RIHS01_00")
        w.write(conn, 1, TS.serialize_cdr(TS.types[msgtype](data=3), msgtype))
    with br.Bag(path) as bag:
        assert bag.summary().defined == {msgtype}
        ((topic, t, _, raw),) = bag.raw_messages(["/count"])
        with pytest.raises(BagError, match=f"{path}: topic '/count': cannot deserialise a {t}"):
            bag.deserialize(raw, t, topic)
