"""Closed-loop evaluation of a policy step in the simulated drawer task (optional, in training)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


@torch.no_grad()
def evaluate_in_sim(
    step: torch.nn.Module,
    preprocessing: dict[str, Any],
    episodes: int,
    seed: int,
    max_steps: int,
    image_size: int,
) -> dict[str, float]:
    """Run ``episodes`` seeded episodes; the camera image goes through the dataset's own
    preprocessing, as on the robot. Returns the success rate and mean episode length."""
    from lompo_core.image import Preprocessing, preprocess
    from lompo_core.sim import DrawerCloseSim

    prep = Preprocessing.from_dict(preprocessing) if preprocessing else Preprocessing()
    device = next(step.parameters()).device
    sim = DrawerCloseSim(image_size=image_size, max_steps=max_steps)
    successes, lengths = [], []
    try:
        for i in range(episodes):
            obs = sim.reset(seed + i)
            deter = torch.zeros(1, step.deter_dim, device=device)
            stoch = torch.zeros(1, step.stoch_dim, device=device)
            prev = torch.zeros(1, step.action_dim, device=device)
            for _ in range(max_steps):
                image = torch.as_tensor(preprocess(obs.image, prep), device=device)[None]
                action, deter, stoch, *_ = step(image, prev, deter, stoch)
                obs = sim.step(action[0].cpu().numpy())
                prev = action
                if obs.terminal or obs.truncated:
                    break
            successes.append(obs.success)
            lengths.append(sim.t)
    finally:
        sim.close()
    return {"success_rate": float(np.mean(successes)), "mean_steps": float(np.mean(lengths))}
