"""bagread: the bag fingerprint, bags without definitions, damaged definitions."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from lompo_core import messages as m
from lompo_core.data import bagread as br
from lompo_core.errors import BagError

TS = m.typestore("jazzy")


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
    # distribution's.
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

    with_definitions = messages(path)
    without = messages(bare)
    assert without[0].defined == with_definitions[0].defined
    assert len(without[1]) > 20 and without[1] == with_definitions[1]


def test_a_broken_definition_is_refused_at_open_naming_the_bag(tmp_path) -> None:
    path, msgtype = tmp_path / "broken", "std_msgs/msg/Int32"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/count", msgtype, msgdef="int32 data ###", rihs01="RIHS01_00")
        w.write(conn, 1, TS.serialize_cdr(TS.types[msgtype](data=3), msgtype))
    with pytest.raises(BagError, match=f"{path}: cannot open bag"), br.Bag(path):
        pass
