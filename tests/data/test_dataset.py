"""dataset.write_dataset: episodes in memory become a folder that EpisodeDataset reads back."""

from __future__ import annotations

import numpy as np

from lompo_core.data.dataset import EpisodeDataset, content_hash, file_sha256, write_dataset


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
