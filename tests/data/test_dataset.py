"""dataset: episodes in memory become files and folders that read back as they were."""

from __future__ import annotations

import numpy as np
import pytest

from lompo_core import files
from lompo_core.data.dataset import (
    EpisodeDataset,
    content_hash,
    file_sha256,
    load_episode,
    save_episode,
    write_dataset,
)
from lompo_core.errors import DatasetError


def episode(length: int, success: bool) -> dict[str, np.ndarray]:
    reward = np.zeros(length, np.float32)
    reward[-1] = float(success)
    return {
        "image": np.full((length, 64, 64, 3), length, np.uint8),
        "action": np.zeros((length, 2), np.float32),
        "reward": reward,
        "is_first": np.arange(length) == 0,
        "is_last": np.arange(length) == length - 1,
        "is_terminal": (np.arange(length) == length - 1) & success,
    }


def test_write_dataset_round_trip(tmp_path) -> None:
    action = {"names": ["a", "b"], "unit": "m/s", "max": [0.5, 0.5]}
    prep = {"crop": None, "size": 64}
    root = write_dataset(
        tmp_path / "ds", [episode(5, True), episode(7, False)], action, prep, rate_hz=12.5
    )
    ds = EpisodeDataset(root)
    assert len(ds) == 2 and ds.total_steps == 12 and ds.action_dim == 2
    assert ds.meta["rate_hz"] == 12.5 and ds.meta["action"] == action
    records = ds.meta["episodes"]
    assert [r["file"] for r in records] == ["episode_000000.npz", "episode_000001.npz"]
    assert [(r["length"], r["return"], r["success"]) for r in records] == [
        (5, 1.0, True),
        (7, 0.0, False),
    ]
    hashes = [file_sha256(root / r["file"]) for r in records]
    assert [r["sha256"] for r in records] == hashes
    assert ds.meta["content_hash"] == content_hash(hashes)
    np.testing.assert_array_equal(ds.load(1)["image"], np.full((7, 64, 64, 3), 7, np.uint8))


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_save_episode_returns_the_hash_of_the_file_it_wrote(tmp_path, compress):
    ep = episode(200, True)  # 2.4 MB of images
    ep["image"] = np.random.default_rng(0).integers(0, 256, ep["image"].shape, np.uint8)
    ep["action"] = np.random.default_rng(1).normal(size=(200, 2)).astype(np.float32)
    path = tmp_path / "ep.npz"
    assert save_episode(path, ep, compress=compress) == file_sha256(path)
    back = load_episode(path)
    for key in ep:
        np.testing.assert_array_equal(back[key], ep[key], err_msg=key)
    assert [p.name for p in tmp_path.iterdir()] == ["ep.npz"]  # no temporary file left


def test_a_failed_save_leaves_no_file(tmp_path, monkeypatch) -> None:
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        save_episode(tmp_path / "ep.npz", episode(200, True))
    assert list(tmp_path.iterdir()) == []


def _two_episodes(tmp_path):
    action = {"names": ["a", "b"], "unit": "m/s", "max": [0.5, 0.5]}
    return write_dataset(
        tmp_path / "ds", [episode(5, True), episode(7, False)], action, {"crop": None, "size": 64}
    )


def test_a_corrupt_episode_file_is_named(tmp_path) -> None:
    root = _two_episodes(tmp_path)
    path = root / "episode_000001.npz"
    data = bytearray(path.read_bytes())
    data[:4] = b"XXXX"  # no longer a zip archive
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="episode_000001.npz: not a readable .npz episode"):
        EpisodeDataset(root).load(1)


def test_a_changed_episode_is_refused_when_verified(tmp_path) -> None:
    root = _two_episodes(tmp_path)
    ds = EpisodeDataset(root)
    ep = ds.load(1)
    ep["reward"][-1] = 1.0  # a valid episode, other than the one the converter wrote
    np.savez(root / "episode_000001.npz", **ep)
    assert ds.load(1)["reward"][-1] == 1.0  # unverified loads (the sampler's) read it
    ds.load(0, verify=True)
    with pytest.raises(DatasetError, match="episode_000001.npz: its content changed"):
        ds.load(1, verify=True)
