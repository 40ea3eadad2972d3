"""Reading bags in slices by worker processes: the same dataset as one process, every message once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bagfactory import frame_colour

from lompo_core.data import bagread as br
from lompo_core.data import slices
from lompo_core.data.convert import convert
from lompo_core.data.convert_config import ConvertConfig
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.data.preprocess import Preprocessing
from lompo_core.errors import LompoError

BAGS = {
    "episodes, rewards, success": dict(n=40, reward="both", success_at=25, skip_images=(12, 13)),
    "faster camera": dict(n=15, camera_factor=3),
    "sqlite3 humble jpeg": dict(storage="sqlite3", distro="humble", encoding="jpeg", n=20),
    "ros1 float array": dict(storage="rosbag1", action="Float64MultiArray", n=20),
}


def _dataset(out: Path) -> tuple[dict, list[dict[str, np.ndarray]]]:
    ds = EpisodeDataset(out)
    return ds.meta, [ds.load(i) for i in range(len(ds))]


@pytest.mark.parametrize("case", BAGS, ids=list(BAGS))
def test_workers_write_the_dataset_one_process_writes(make_bag, tmp_path, monkeypatch, case):
    # Slices of 3 frames: every episode, reward window and rate probe spans several slices,
    # and the ring's slots are reused many times over.
    monkeypatch.setattr(slices, "SLICE_FRAMES", 3)
    path, _ = make_bag(**BAGS[case])
    reports = {w: convert([path], tmp_path / f"ds{w}", ConvertConfig(), workers=w) for w in (0, 2)}
    (meta0, eps0), (meta2, eps2) = _dataset(tmp_path / "ds0"), _dataset(tmp_path / "ds2")
    assert reports[0].episodes >= 1 and reports[0].frames_read == reports[2].frames_read
    for key in ("episodes", "counts", "sources", "rate_hz", "content_hash"):
        assert json.dumps(meta0[key]) == json.dumps(meta2[key]), key
    for a, b in zip(eps0, eps2, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_several_bags_give_the_same_dataset_with_workers(make_bag, tmp_path, monkeypatch):
    # The next bag's summary is fetched while the current one is read: order must not change.
    monkeypatch.setattr(slices, "SLICE_FRAMES", 4)
    for i, spec in enumerate(BAGS.values()):
        make_bag(f"bag{i}", **spec)
    reports = {
        w: convert([tmp_path / "bags"], tmp_path / f"ds{w}", ConvertConfig(), workers=w)
        for w in (0, 2)
    }
    assert reports[0].bags_converted == reports[2].bags_converted == len(BAGS)
    meta0, meta2 = EpisodeDataset(tmp_path / "ds0").meta, EpisodeDataset(tmp_path / "ds2").meta
    assert json.dumps(meta0["episodes"]) == json.dumps(meta2["episodes"])
    assert meta0["content_hash"] == meta2["content_hash"]  # the episodes' file hashes
    assert [s["path"] for s in meta2["sources"]] == [s["path"] for s in meta0["sources"]]


def test_slices_cover_the_bag_once_in_order(make_bag, monkeypatch) -> None:
    monkeypatch.setattr(slices, "SLICE_FRAMES", 4)
    path, spec = make_bag(n=30, reward="both")
    with br.Bag(path) as bag:
        summary = bag.summary()
        every = [(topic, t) for topic, _, t, _ in bag.raw_messages(list(summary.topics))]
    by_type = {"Image": "image", "TwistStamped": "action", "Float32": "reward", "Bool": "success"}
    kinds = {t: by_type[s.msgtype.rsplit("/", 1)[1]] for t, s in summary.topics.items()}
    fields = dict(
        bag=path, distro="jazzy", topics=kinds, preprocessing=Preprocessing(), action_fields=None
    )
    specs = slices.plan(summary, fields, spec.image_topic, workers=2)
    assert len(specs) % 2 == 0 and len(specs) >= 30 // 4
    assert specs[0].start == summary.start and specs[-1].stop == summary.stop
    assert all(a.stop == b.start for a, b in zip(specs, specs[1:], strict=False))
    with slices.SliceReader(2, path) as reader:
        got = [(topic, t) for piece in reader.read(specs) for topic, t, _, _ in piece.events]
    assert got == [(topic, t) for topic, t in every if topic in kinds]


def test_the_next_bags_slices_start_before_its_read(make_bag, monkeypatch) -> None:
    monkeypatch.setattr(slices, "SLICE_FRAMES", 2)
    paths = [make_bag(f"b{i}", n=12)[0] for i in range(2)]
    fields = dict(distro="jazzy", preprocessing=Preprocessing(), action_fields=None)

    def specs(reader: slices.SliceReader, path) -> list[slices.SliceSpec]:
        summary = reader.summary(path)
        topics = {t: "image" for t, s in summary.topics.items() if "Image" in s.msgtype}
        return slices.plan(summary, dict(bag=path, topics=topics, **fields), next(iter(topics)), 2)

    with slices.SliceReader(2, paths[0]) as reader:
        first, second = specs(reader, paths[0]), specs(reader, paths[1])
        got = [len(p.frames) for p in reader.read(first, then=lambda: second)]
        assert len(reader._queue) == reader._slots  # the second bag is being read already
        with pytest.raises(RuntimeError, match="not the slices started"):
            next(reader.read(first))  # what the workers are on is the second bag
        got += [len(p.frames) for p in reader.read(second)]
    assert sum(got) == 24 and len(got) == len(first) + len(second)


def test_frames_that_do_not_fit_the_ring_come_back_whole(make_bag) -> None:
    path, spec = make_bag(n=6)
    p = Preprocessing(size=8)
    with br.Bag(path) as bag:
        summary = bag.summary()
        one = slices.SliceSpec(
            path, "jazzy", {spec.image_topic: "image"}, p, None, summary.start, summary.stop
        )
        roomy = np.zeros((10, 8, 8, 3), np.uint8)
        fits = slices.read_slice(bag, one, roomy)
        small = slices.read_slice(bag, one, np.zeros((2, 8, 8, 3), np.uint8))
    assert fits.in_ring == 6 and fits.frames is None
    assert small.in_ring == 0 and small.frames is not None and len(small.frames) == 6
    np.testing.assert_array_equal(roomy[:6], small.frames)
    np.testing.assert_array_equal(small.frames[5, 0, 0], frame_colour(5))
    assert fits.camera == (spec.width, spec.height, "rgb8")


def test_frame_rows_are_handed_out_in_order_from_blocks() -> None:
    rows = slices.FrameRows((2, 2, 3), block=5)
    a, b, c, big = rows.take(3), rows.take(2), rows.take(2), rows.take(7)
    assert [len(x) for x in (a, b, c, big)] == [3, 2, 2, 7]
    assert b.base is a.base and b.ctypes.data == a.ctypes.data + a.nbytes  # the next rows
    assert c.base is not a.base and big.base is not c.base  # full: a new block, as big as asked


def test_worker_count_is_checked_and_defaults_to_the_cores(make_bag, tmp_path) -> None:
    path, _ = make_bag()
    with pytest.raises(LompoError, match="--workers must be 0 or more"):
        convert([path], tmp_path / "ds", ConvertConfig(), workers=-1)
    assert not (tmp_path / "ds").exists()
    assert 0 <= slices.default_workers() <= slices.MAX_WORKERS


def _die(*args: object) -> None:
    import os

    os._exit(3)


def test_a_worker_that_dies_is_an_error_naming_the_bag(make_bag, tmp_path, monkeypatch) -> None:
    path, _ = make_bag()
    monkeypatch.setattr(slices, "read_slice", _die)  # the forked workers inherit it
    with pytest.raises(LompoError, match=f"{path}: a worker process reading it died"):
        convert([path], tmp_path / "ds", ConvertConfig(), workers=2)
    assert [p.name for p in tmp_path.iterdir()] == ["bags"]


def test_a_container_cpu_quota_caps_the_workers(tmp_path, monkeypatch) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert slices.cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert slices.cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert slices.cpu_quota(v1.parent) is None
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    assert slices.cpu_quota(v1.parent) == 4.0
    assert slices.cpu_quota(tmp_path / "none") is None
    monkeypatch.setattr(slices, "cpu_quota", lambda: 1.5)
    assert slices.default_workers() == 0  # one CPU's worth: no workers
    monkeypatch.setattr(slices, "cpu_quota", lambda: None)
    cores = min(len(os.sched_getaffinity(0)), slices.MAX_WORKERS)
    assert slices.default_workers() == (cores if cores > 1 else 0)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="glibc malloc on Linux")
def test_workers_keep_freed_frames_mapped() -> None:
    # Two frame-sized blocks alive at once, then freed (a message and its decoded array): by
    # default glibc hands the heap's top back to the kernel every time, so every frame faults its
    # pages in again (4 KiB each); after keep_freed_memory they are reused.
    code = """
import resource
import numpy as np
from lompo_core.data.slices import keep_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        message, frame = np.ones(921_651, np.uint8), np.ones(921_600, np.uint8)
        del message, frame
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = faults()
keep_freed_memory()
faults()  # the blocks in use when the thresholds changed
print(default, faults())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    default, kept = map(int, out.stdout.split())
    assert default > 50 * 200 and kept < 50, (default, kept)
