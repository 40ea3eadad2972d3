"""Offline selection signals: how good a policy looks on held-out dataset episodes, without a sim.

A robot team has no simulator to pick a checkpoint with. These signals read only episodes that
neither the model nor the policy trained on (``data.holdout``), encoded by the posterior, and the
run's own model, actor and critics. Deterministic (fixed head draws, the actor's mode), so a
resumed run logs the same values.
"""

from __future__ import annotations

import torch

from lompo_core.agent.replay import LatentBuffer
from lompo_core.agent.rollout import latent_step, penalised_reward
from lompo_core.agent.sac import SAC
from lompo_core.config import AgentConfig
from lompo_core.model.rssm import State
from lompo_core.model.world_model import WorldModel


def _min_q(sac: SAC, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    q1, q2 = sac.critic(feat, action)
    return torch.min(q1, q2)


@torch.no_grad()
def heldout_signals(
    wm: WorldModel, sac: SAC, heldout: LatentBuffer, cfg: AgentConfig, u_offset: float
) -> dict[str, float]:
    """From ``cfg.select_starts`` held-out states (evenly spaced), with the acting policy (the
    actor's mode, as exported):

    - ``offline/model_return``: discounted penalised reward (as training charges it) over
      ``cfg.select_horizon`` imagined steps, stopped at predicted terminals;
    - ``offline/model_value``: the same plus the critics' min Q at the last imagined state;
    - ``offline/q``: min Q(s, pi(s)) at the held-out states themselves;
    - ``offline/bc_mse``: ||pi(s) - a||^2 against the held-out episodes' logged actions;
    - ``offline/uncertainty``: mean u along the imagined steps;
    - ``offline/terminal``: the fraction of imagined rollouts that reach a predicted terminal.
    """
    device = heldout.data["feat"].device
    n = min(cfg.select_starts, len(heldout))
    idx = torch.linspace(0, len(heldout) - 1, n, device=device).round().long()
    feat, data_action = heldout.data["feat"][idx], heldout.data["action"][idx]
    actor = sac.acting_actor
    action = actor.mode(feat)
    q0 = _min_q(sac, feat, action)
    g = torch.Generator(device=device).manual_seed(0)
    s_dim = wm.cfg.stoch
    state = State(feat[:, :s_dim], feat[:, s_dim:])
    alive = torch.ones(n, device=device)
    ret = torch.zeros(n, device=device)
    u_sum, steps, disc = 0.0, 0.0, 1.0
    f = feat
    clip = cfg.reward_clip or cfg.success_ends
    for _ in range(cfg.select_horizon):
        state, u = latent_step(wm, state, actor.mode(f), cfg.penalty, generator=g)
        f = state.feat()
        reward, reward_hat = penalised_reward(wm, f, u, cfg.lmbda, u_offset, clip)
        ret += disc * alive * reward
        u_sum += float((alive * u).sum())
        steps += float(alive.sum())
        alive = alive * (wm.cont_prob(f) >= 0.5).float()
        if cfg.success_ends:  # the probability that the imagined episode goes on
            alive = alive * (1.0 - reward_hat)
        disc *= cfg.discount
    value = ret + disc * alive * _min_q(sac, f, actor.mode(f))
    return {
        "offline/model_return": float(ret.mean()),
        "offline/model_value": float(value.mean()),
        "offline/q": float(q0.mean()),
        "offline/bc_mse": float((action - data_action).square().sum(-1).mean()),
        "offline/uncertainty": u_sum / max(steps, 1.0),
        "offline/terminal": float(1.0 - alive.mean()),
    }
