"""Every bad input of issue 3: a one-line error naming bag and topic, exit 1, no dataset left."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from lompo_core import cli
from lompo_core import messages as m


def _storage_file(bag: Path, suffix: str) -> Path:
    return next(p for p in bag.rglob(f"*{suffix}") if p.is_file())


def truncate(fraction: float, suffix: str) -> Callable[[Path], None]:
    def damage(bag: Path) -> None:
        f = _storage_file(bag, suffix) if bag.is_dir() else bag
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * fraction)])

    return damage


def scramble_sqlite(bag: Path) -> None:
    f = _storage_file(bag, ".db3")
    data = bytearray(f.read_bytes())
    data[len(data) // 3 :] = bytes(len(data) - len(data) // 3)  # zero the last two thirds
    f.write_bytes(bytes(data))


def garble_middle(suffix: str) -> Callable[[Path], None]:
    """Random bytes over the middle tenth of the storage file (a bad disk block)."""

    def damage(bag: Path) -> None:
        import numpy as np

        f = _storage_file(bag, suffix)
        data = bytearray(f.read_bytes())
        n = len(data) // 10
        start = len(data) // 2 - n // 2
        data[start : start + n] = np.random.default_rng(0).integers(0, 256, n, np.uint8).tobytes()
        f.write_bytes(bytes(data))

    return damage


def drop_image_definition(bag: Path) -> None:
    # A recorder that lacked the type: the bag keeps definitions for the other types only.
    db = sqlite3.connect(_storage_file(bag, ".db3"))
    with db:
        db.execute("DELETE FROM message_definitions WHERE topic_type = ?", (m.IMAGE_TYPE,))
    db.close()


def lose_one_image(bag: Path) -> None:
    # A storage that lost a message its index (metadata.yaml) still counts.
    db = sqlite3.connect(_storage_file(bag, ".db3"))
    with db:
        (topic_id,) = db.execute(
            "SELECT id FROM topics WHERE name = ?", (m.IMAGE_TOPIC,)
        ).fetchone()
        db.execute(
            "DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE topic_id = ? "
            "ORDER BY timestamp LIMIT 1 OFFSET 7)",
            (topic_id,),
        )
    db.close()


CASES = {
    "truncated mcap": (
        dict(storage="mcap"),
        truncate(0.5, ".mcap"),
        "truncated or corrupt|cannot open",
    ),
    "truncated ros1": (
        dict(storage="rosbag1"),
        truncate(0.6, ".bag"),
        "truncated or corrupt|cannot open",
    ),
    "corrupt sqlite3": (
        dict(storage="sqlite3"),
        scramble_sqlite,
        "truncated or corrupt|cannot open",
    ),
    "garbage mid-file sqlite3": (
        dict(storage="sqlite3", n=200),
        garble_middle(".db3"),
        "truncated or corrupt|cannot open|cannot read",
    ),
    "garbage in a zstd chunk": (
        dict(storage="mcap", zstd="storage", n=200),
        garble_middle(".mcap"),
        "truncated or corrupt|cannot open|cannot read",
    ),
    "garbage in an lz4 chunk": (
        dict(storage="mcap", lz4=True, n=200),
        garble_middle(".mcap"),
        "truncated or corrupt|cannot open|cannot read",
    ),
    "garbage in zstd messages": (
        dict(storage="mcap", zstd="message", n=200),
        garble_middle(".mcap"),
        "truncated or corrupt|cannot open|cannot read|cannot deserialise",
    ),
    "a message lost": (
        dict(storage="sqlite3"),
        lose_one_image,
        "topic '/overhead_camera/image_raw': 19 messages read, the bag's index lists 20",
    ),
    "no definition": (
        dict(storage="sqlite3"),
        drop_image_definition,
        "'/overhead_camera/image_raw': type sensor_msgs/msg/Image has no definition",
    ),
    "missing topic": (
        dict(image_topic="/camera/color/image_raw"),
        None,
        "no image topic '/overhead_camera/image_raw' \\(set it with --image-topic\\); topics: ",
    ),
    "missing reward": (
        dict(reward="none"),
        None,
        "no reward topic '/drawer_sim/reward' \\(set it with --reward-topic, or choose",
    ),
    "unsupported encoding": (
        dict(encoding="yuv422"),
        None,
        "topic '/overhead_camera/image_raw': image at \\d+ ns: unsupported image encoding 'yuv422'",
    ),
    "stamps out of order": (
        dict(reverse_images_at=7),
        None,
        "topic '/overhead_camera/image_raw': header stamps out of order",
    ),
    "never overlap": (
        dict(image_offset_s=100.0),
        None,
        "images on '/overhead_camera/image_raw' .* and actions on "
        "'/servo_node/delta_twist_cmds' .* never overlap in time",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_bag_is_refused_by_name(make_bag, tmp_path: Path, capsys, case: str) -> None:
    spec, damage, pattern = CASES[case]
    good, _ = make_bag("good")  # a good bag beside it: the whole conversion still fails
    bad, _ = make_bag("zz_bad", **spec)
    if damage is not None:
        damage(bad)
    out = tmp_path / "ds"
    args = ["convert", str(good.parent), "--out", str(out), "--quiet"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"lompo convert: error: {bad.resolve()}"), err
    assert __import__("re").search(pattern, err), err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bags"]  # no hidden partial folder either


def test_empty_bag(tmp_path: Path, capsys) -> None:
    bag = tmp_path / "empty"
    ts = m.typestore("jazzy")
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=ts)
        w.add_connection(m.COMMAND_TOPIC, m.TWIST_STAMPED_TYPE, typestore=ts)
    assert cli.main(["convert", str(bag), "--out", str(tmp_path / "ds"), "--quiet"]) == 1
    assert f"{bag.resolve()}: the bag is empty" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_no_bags_and_interrupted_recording(tmp_path: Path, capsys) -> None:
    (tmp_path / "nothing").mkdir()
    assert cli.main(["convert", str(tmp_path / "nothing"), "--out", str(tmp_path / "ds")]) == 1
    assert "no bags found" in capsys.readouterr().err
    rec = tmp_path / "rec" / "rosbag2_2026"
    rec.mkdir(parents=True)
    (rec / "rosbag2_2026_0.mcap").write_bytes(b"\x89MCAP0\r\n")
    assert cli.main(["convert", str(tmp_path / "rec"), "--out", str(tmp_path / "ds")]) == 1
    assert "without metadata.yaml" in capsys.readouterr().err


def test_images_without_any_command_overlap_when_flags_are_wrong(make_bag, tmp_path, capsys):
    bag, _ = make_bag()
    args = ["convert", str(bag), "--out", str(tmp_path / "ds"), "--quiet"]
    assert cli.main([*args, "--action-topic", m.REWARD_TOPIC]) == 1
    assert "has type std_msgs/msg/Float32; supported: geometry_msgs" in capsys.readouterr().err


def test_array_fields_beyond_the_commands_are_refused_by_name(make_bag, tmp_path):
    from lompo_core.data.convert import convert
    from lompo_core.data.convert_config import ActionSpec, ConvertConfig
    from lompo_core.errors import BagError

    bag, _ = make_bag(action="Float64MultiArray")  # 3 values per command
    config = ConvertConfig(action=ActionSpec(fields=("data[0]", "data[5]"), max=1.0))
    with pytest.raises(BagError, match=f"{bag}: action topic .*: a command has 3 values, fewer"):
        convert([bag], tmp_path / "ds", config)
    assert not (tmp_path / "ds").exists()
