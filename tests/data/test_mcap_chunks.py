"""Uncompressed mcap chunks read without rosbags' copies: the same messages, in rosbags' order."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from lompo_core import messages as m
from lompo_core.data import bagread as br
from lompo_core.data import mcap_chunks
from lompo_core.data.convert import convert
from lompo_core.data.convert_config import ConvertConfig
from lompo_core.errors import BagError

# Frames of 320x240 rgb8 (230 KB): rosbags closes a chunk past 1 MiB, so these bags hold many
# chunks, and messages logged at the same time (image, reward, success) fall on both sides of
# a chunk boundary.
MCAP_BAGS = {
    "many chunks, ties at boundaries": dict(width=320, height=240, n=24, reward="both"),
    "faster camera, float array": dict(
        width=320, height=240, n=10, camera_factor=3, action="Float64MultiArray"
    ),
    "jpeg, humble": dict(encoding="jpeg", distro="humble", n=30),
    "one small chunk": dict(n=12, reward="success", success_at=8),
}


def _rosbags(reader: AnyReader, topics: list[str], start=None, stop=None) -> list[tuple]:
    conns = [c for c in reader.connections if c.topic in topics]
    return [
        (c.topic, c.msgtype, t, bytes(raw))
        for c, t, raw in reader.messages(connections=conns, start=start, stop=stop)
    ]


def _ours(reader: AnyReader, topics: list[str], start=None, stop=None) -> list[tuple]:
    it = mcap_chunks.messages(reader, topics, start, stop)
    assert it is not None, "the uncompressed mcap bag was left to rosbags"
    return [(topic, msgtype, t, bytes(raw)) for topic, msgtype, t, raw in it]


@pytest.mark.parametrize("case", MCAP_BAGS, ids=list(MCAP_BAGS))
def test_same_messages_as_rosbags(make_bag, case) -> None:
    path, _ = make_bag(**MCAP_BAGS[case])
    with AnyReader([path]) as reader:
        topics = sorted(reader.topics)
        chunks = reader.readers[0].storage.storages[0].chunks
        if case.startswith("many"):
            assert len(chunks) >= 5
        every = _rosbags(reader, topics)
        assert _ours(reader, topics) == every
        # Windows that start and stop on message times, inside chunks and across them.
        times = sorted({t for _, _, t, _ in every})
        rng = np.random.default_rng(0)
        for _ in range(12):
            a, b = sorted(rng.choice(len(times), 2, replace=False))
            start, stop = times[a], times[b]
            for subset in (topics, topics[:1], topics[1:]):
                assert _ours(reader, subset, start, stop) == _rosbags(
                    reader, subset, start, stop
                ), (subset, start, stop)
        assert _ours(reader, topics, times[-1] + 1) == []


def test_images_are_views_everything_else_is_copied(make_bag) -> None:
    # A decoded Float64MultiArray holds a view of its raw bytes: those must not be the chunk
    # buffer that the next chunk overwrites.
    path, _ = make_bag(width=320, height=240, n=8, action="Float64MultiArray")
    with AnyReader([path]) as reader:
        kinds = {
            msgtype: type(raw)
            for _, msgtype, _, raw in mcap_chunks.messages(reader, list(reader.topics))
        }
    assert kinds[m.IMAGE_TYPE] is memoryview
    assert kinds["std_msgs/msg/Float64MultiArray"] is bytes
    assert kinds[m.FLOAT32_TYPE] is bytes


@pytest.mark.parametrize(
    "kw", [dict(storage="sqlite3"), dict(storage="rosbag1")], ids=["sqlite3", "rosbag1"]
)
def test_other_storages_are_left_to_rosbags(make_bag, kw) -> None:
    path, _ = make_bag(**kw)
    with AnyReader([path]) as reader:
        assert mcap_chunks.messages(reader, list(reader.topics)) is None


def _write(path: Path, times: list[int], mode: CompressionMode | None = None) -> None:
    """A bag of 640x480 frames logged at ``times`` (ns), in that order."""
    ts = m.typestore("jazzy")
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    if mode is not None:
        writer.set_compression(mode, CompressionFormat.ZSTD)
    with writer as w:
        conn = w.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=ts)
        for k, t in enumerate(times):
            frame = np.full((480, 640, 3), k, np.uint8)
            w.write(conn, t, ts.serialize_cdr(m.kit().image(frame, t), m.IMAGE_TYPE))


@pytest.mark.parametrize("mode", [CompressionMode.STORAGE, CompressionMode.MESSAGE])
def test_compressed_bags_are_left_to_rosbags(tmp_path, mode) -> None:
    _write(tmp_path / "bag", [10**9 + k for k in range(4)], mode)
    with AnyReader([tmp_path / "bag"]) as reader:
        assert mcap_chunks.messages(reader, [m.IMAGE_TOPIC]) is None


def test_messages_out_of_order_inside_a_chunk_come_sorted(tmp_path) -> None:
    # Two 921 KB frames fill a chunk: the first chunk holds 2 s + 1 ns, then 2 s.
    _write(tmp_path / "bag", [2 * 10**9 + 1, 2 * 10**9, 3 * 10**9, 4 * 10**9])
    with AnyReader([tmp_path / "bag"]) as reader:
        ours = _ours(reader, [m.IMAGE_TOPIC])
        assert ours == _rosbags(reader, [m.IMAGE_TOPIC])
    assert [t for _, _, t, _ in ours] == [2 * 10**9, 2 * 10**9 + 1, 3 * 10**9, 4 * 10**9]


def test_chunks_that_overlap_in_time_are_left_to_rosbags(tmp_path) -> None:
    # Two 921 KB frames fill a chunk; the third, logged earlier, starts the next one.
    _write(tmp_path / "bag", [3 * 10**9, 4 * 10**9, 2 * 10**9, 5 * 10**9])
    with AnyReader([tmp_path / "bag"]) as reader:
        assert mcap_chunks.messages(reader, [m.IMAGE_TOPIC]) is None
        # ... and rosbags orders them: what Bag.raw_messages gives.
    with br.Bag(tmp_path / "bag") as bag:
        times = [t for _, _, t, _ in bag.raw_messages([m.IMAGE_TOPIC])]
    assert times == sorted(times) and len(times) == 4


def _chunk(bag: Path, index: int) -> tuple[Path, Any]:
    """The mcap file of a one-file bag and its index'th chunk (rosbags' ChunkInfo)."""
    with AnyReader([bag]) as reader:
        storage = reader.readers[0].storage.storages[0]
        return Path(storage.path), storage.chunks[index]


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def _refused(bag: Path, match: str) -> None:
    with br.Bag(bag) as reading, pytest.raises(BagError, match=match):
        list(reading.raw_messages([m.IMAGE_TOPIC]))


def test_a_corrupt_record_is_a_bag_error_naming_the_bag(tmp_path) -> None:
    _write(tmp_path / "bag", [10**9 + k for k in range(6)])
    mcap, chunk = _chunk(tmp_path / "bag", 1)
    # The first record's length (after the chunk's 49-byte header) now runs past the chunk.
    _patch(mcap, chunk.chunk_start_offset + 49 + 1, struct.pack("<Q", 2**40))
    _refused(tmp_path / "bag", r"bag.*truncated or corrupt.*record cut")


def test_a_chunk_checksum_is_checked(tmp_path) -> None:
    # rosbag2 writes no chunk CRC (noChunkCRC) and neither does rosbags; other writers may.
    _write(tmp_path / "bag", [10**9 + k for k in range(4)])
    mcap, chunk = _chunk(tmp_path / "bag", 0)
    with mcap.open("rb") as f:
        f.seek(chunk.chunk_start_offset + 49)
        crc = zlib.crc32(f.read(chunk.uncompressed_size))
    _patch(mcap, chunk.chunk_start_offset + 9 + 24, struct.pack("<I", crc))
    with AnyReader([tmp_path / "bag"]) as reader:
        assert _ours(reader, [m.IMAGE_TOPIC]) == _rosbags(reader, [m.IMAGE_TOPIC])
    _patch(mcap, chunk.chunk_start_offset + 9 + 24, struct.pack("<I", crc ^ 1))
    _refused(tmp_path / "bag", r"bag.*truncated or corrupt.*checksum mismatch")


def test_a_chunk_index_past_the_end_of_the_file_is_a_bag_error(tmp_path) -> None:
    # The summary's chunk index claims an uncompressed size of 1 PiB: refused by name, not read.
    _write(tmp_path / "bag", [10**9 + k for k in range(4)])
    mcap, chunk = _chunk(tmp_path / "bag", 0)
    data = mcap.read_bytes()
    key = struct.pack(
        "<QQQ", chunk.message_start_time, chunk.message_end_time, chunk.chunk_start_offset
    )
    at = data.index(key, chunk.chunk_start_offset + chunk.chunk_length)  # the index record
    (length,) = struct.unpack_from("<Q", data, at - 8)
    _patch(mcap, at + length - 8, struct.pack("<Q", 2**50))  # its last field
    assert _chunk(tmp_path / "bag", 0)[1].uncompressed_size == 2**50
    _refused(tmp_path / "bag", r"bag.*truncated or corrupt.*runs past the end of the file")


def test_a_bag_split_over_several_files(tmp_path) -> None:
    # `ros2 bag record --max-bag-size` splits a recording: one folder, files read in turn.
    parts = [[10**9 + k * 10**8 for k in range(5)], [2 * 10**9 + k * 10**8 for k in range(4)]]
    split = tmp_path / "split"
    split.mkdir()
    files = []
    for i, times in enumerate(parts):
        _write(tmp_path / f"part{i}", times)
        (tmp_path / f"part{i}" / f"part{i}.mcap").rename(split / f"part{i}.mcap")
        meta = yaml.safe_load((tmp_path / f"part{i}" / "metadata.yaml").read_text())
        files.append(meta["rosbag2_bagfile_information"])
    info = files[0]
    info["relative_file_paths"] = [f"part{i}.mcap" for i in range(len(parts))]
    info["files"] = [f["files"][0] for f in files]
    info["message_count"] = sum(f["message_count"] for f in files)
    info["topics_with_message_count"][0]["message_count"] = info["message_count"]
    info["duration"]["nanoseconds"] = parts[-1][-1] - parts[0][0]
    (split / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}))
    with AnyReader([split]) as reader:
        assert len(reader.readers[0].storage.storages) == 2
        every = _rosbags(reader, [m.IMAGE_TOPIC])
        assert [t for _, _, t, _ in every] == parts[0] + parts[1]
        assert _ours(reader, [m.IMAGE_TOPIC]) == every
        window = (parts[0][3], parts[1][2])  # across the file boundary
        assert _ours(reader, [m.IMAGE_TOPIC], *window) == _rosbags(reader, [m.IMAGE_TOPIC], *window)


def test_without_preadv_rosbags_reads(make_bag, monkeypatch) -> None:
    path, _ = make_bag()
    monkeypatch.delattr(os, "preadv")  # Windows, older macOS
    with AnyReader([path]) as reader:
        assert mcap_chunks.messages(reader, list(reader.topics)) is None
    with br.Bag(path) as bag:
        assert len(list(bag.raw_messages([m.IMAGE_TOPIC]))) == 20


def test_lompo_collect_bags_convert_to_the_same_dataset_through_rosbags(
    collect_bags, tmp_path, monkeypatch
) -> None:
    # End to end on real recordings (one mcap, one sqlite3): the dataset does not depend on who
    # read the chunks.
    mcap = next(p.parent for p in collect_bags.rglob("*.mcap"))
    with AnyReader([mcap]) as reader:
        assert mcap_chunks.messages(reader, list(reader.topics)) is not None
    direct = convert([collect_bags], tmp_path / "direct", ConvertConfig(), workers=0)
    monkeypatch.setattr(mcap_chunks, "messages", lambda *args: None)
    through = convert([collect_bags], tmp_path / "rosbags", ConvertConfig(), workers=0)
    assert direct.steps == through.steps > 0
    meta = [json.loads((tmp_path / d / "meta.json").read_text()) for d in ("direct", "rosbags")]
    assert meta[0]["content_hash"] == meta[1]["content_hash"]
