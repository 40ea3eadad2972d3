"""Bags converted side by side by worker processes: the same dataset as one process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lompo_core.data import convert as conv
from lompo_core.data.convert import convert
from lompo_core.data.convert_config import ConvertConfig
from lompo_core.data.dataset import EpisodeDataset
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


def _dataset(out: Path) -> tuple[dict, list[dict[str, np.ndarray]]]:
    ds = EpisodeDataset(out)
    return ds.meta, [ds.load(i) for i in range(len(ds))]


def test_several_bags_give_the_same_dataset_with_workers(make_bag, tmp_path):
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
    eps0, eps2 = _dataset(tmp_path / "ds0")[1], _dataset(tmp_path / "ds2")[1]
    for a, b in zip(eps0, eps2, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_worker_count_is_checked_and_defaults_to_the_cores(make_bag, tmp_path) -> None:
    path, _ = make_bag()
    with pytest.raises(LompoError, match="--workers must be 0 or more"):
        convert([path], tmp_path / "ds", ConvertConfig(), workers=-1)
    assert not (tmp_path / "ds").exists()
    assert 0 <= conv.default_workers() <= conv.MAX_WORKERS


def _die(*args: object) -> None:
    import os

    os._exit(3)


def test_a_worker_that_dies_is_an_error_naming_the_bag(make_bag, tmp_path, monkeypatch) -> None:
    path, _ = make_bag()
    other, _ = make_bag("other")
    monkeypatch.setattr(conv, "_convert_bag", _die)  # the forked workers inherit it
    with pytest.raises(LompoError, match=f"{other}: the worker process converting it died"):
        convert([other, path], tmp_path / "ds", ConvertConfig(), workers=2)
    assert [p.name for p in tmp_path.iterdir()] == ["bags"]


def test_a_container_cpu_quota_caps_the_workers(tmp_path, monkeypatch) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert conv.cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert conv.cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert conv.cpu_quota(v1.parent) is None
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    assert conv.cpu_quota(v1.parent) == 4.0
    assert conv.cpu_quota(tmp_path / "none") is None
    monkeypatch.setattr(conv, "cpu_quota", lambda: 1.5)
    assert conv.default_workers() == 0  # one CPU's worth: no workers
    monkeypatch.setattr(conv, "cpu_quota", lambda: None)
    cores = min(len(os.sched_getaffinity(0)), conv.MAX_WORKERS)
    assert conv.default_workers() == (cores if cores > 1 else 0)
