"""Small real artefacts for the export and runtime tests: a dataset folder and a PolicyStep.

The dataset is written with the dataset module's own writers; the policy is the real PolicyStep
built from the ``debug`` preset's sizes (untrained weights, except where a test trains one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lompo_core.data.dataset import write_dataset as write_episodes
from lompo_core.image import Preprocessing

ACTION = {"names": ["linear.x", "linear.y", "linear.z"], "unit": "m/s", "max": [0.1, 0.1, 0.1]}


def write_dataset(
    root: Path, episodes: int = 3, length: int = 12, seed: int = 0, crop=None
) -> Path:
    """A dataset of smooth moving-blob images with random actions, as ``lompo convert`` lays out."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    eps = []
    for _ in range(episodes):
        cx, cy = rng.uniform(10, 54, 2)
        images = np.empty((length, 64, 64, 3), np.uint8)
        actions = np.zeros((length, 3), np.float32)
        for t in range(length):
            if t:
                actions[t] = rng.uniform(-1, 1, 3)
                cx = float(np.clip(cx + 3 * actions[t, 0], 5, 59))
                cy = float(np.clip(cy + 3 * actions[t, 1], 5, 59))
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 40.0)
            images[t] = (np.stack([blob, 0.5 * blob, 1 - blob], -1) * 255).astype(np.uint8)
        eps.append(
            {
                "image": images,
                "action": actions,
                "reward": np.zeros(length, np.float32),
                "is_first": np.arange(length) == 0,
                "is_last": np.arange(length) == length - 1,
                "is_terminal": np.zeros(length, bool),
            }
        )
    preprocessing = Preprocessing(crop=crop).as_dict()
    return write_episodes(root, eps, ACTION, preprocessing, name="episode_{:04d}.npz", rate_hz=10.0)


def debug_policy_step(seed: int = 0) -> Any:
    """The real PolicyStep at the ``debug`` preset's sizes, randomly initialised."""
    import torch

    from lompo_core.agent.sac import Actor
    from lompo_core.config import resolve
    from lompo_core.model.policy_step import PolicyStep
    from lompo_core.model.world_model import WorldModel

    torch.manual_seed(seed)
    cfg = resolve("debug")
    wm = WorldModel(cfg.model, 3)
    actor = Actor(cfg.model.stoch + cfg.model.deter, 3, cfg.agent.hidden, cfg.agent.actor_layers)
    step = PolicyStep(wm, actor, cfg.agent.penalty).eval()
    step.requires_grad_(False)
    return step, cfg


def info_for(step_cfg: Any, dataset: Path) -> dict[str, Any]:
    """What load_policy_step returns as ``info`` for a run trained on ``dataset``."""
    from lompo_core.data.dataset import EpisodeDataset

    ds = EpisodeDataset(dataset)
    return {
        "config": step_cfg.to_dict(),
        "dataset": {
            "path": str(dataset),
            "hash": ds.hash,
            "preprocessing": ds.preprocessing,
            "action": ACTION,
        },
        "step": 0,
        "seed": 0,
        "checkpoint": None,
    }


def shared_policy(base: Path) -> tuple[Path, Path]:
    """(dataset, policy folder) exported once per test session under ``base``.

    Both test folders' conftests call this with pytest's session base temp, so the export (a few
    seconds of tracing) runs once however the tests are selected.
    """
    from lompo_core.export.export import export_policy_step

    dataset = base / "shared_dataset"
    policy = base / "shared_policy"
    if not (policy / "policy.json").is_file():
        write_dataset(dataset, episodes=3, length=12)
        step, cfg = debug_policy_step()
        export_policy_step(step, info_for(cfg, dataset), policy, overwrite=True)
    return dataset, policy
