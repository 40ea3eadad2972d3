"""Small synthetic datasets: a square that moves with the actions, success when it reaches a goal.

The images depend on the actions, so the model has something learnable, and the data are built in
milliseconds without the simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lompo_core.data import dataset


def make_episode(rng: np.random.Generator, length: int, succeed: bool) -> dict[str, np.ndarray]:
    pos = rng.uniform(16, 48, size=2)
    images, actions, rewards, terminal = [], [], [], []
    for t in range(length):
        a = np.zeros(3, np.float32) if t == 0 else rng.uniform(-1, 1, 3).astype(np.float32)
        pos = np.clip(pos + 4 * a[:2], 4, 60)
        img = np.zeros((64, 64, 3), np.uint8)
        x, y = int(pos[0]), int(pos[1])
        img[y - 4 : y + 4, x - 4 : x + 4] = (255, 200, 50)
        img[:, :, 2] = np.uint8(40 + 50 * (a[2] + 1))
        images.append(img)
        actions.append(a)
        done = succeed and t == length - 1
        rewards.append(1.0 if done else 0.0)
        terminal.append(done)
    is_first = np.zeros(length, bool)
    is_first[0] = True
    is_last = np.zeros(length, bool)
    is_last[-1] = True
    return {
        "image": np.stack(images),
        "action": np.stack(actions),
        "reward": np.array(rewards, np.float32),
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": np.array(terminal),
    }


def write_dataset(root: Path, episodes: int = 6, length: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    eps = [make_episode(rng, length + (i % 3), succeed=i % 2 == 0) for i in range(episodes)]
    action = {"names": ["linear.x", "linear.y", "linear.z"], "unit": "m/s", "max": [1.0] * 3}
    preprocessing = {"crop": None, "size": 64}
    return dataset.write_dataset(root, eps, action, preprocessing, name="ep_{:04d}.npz")
