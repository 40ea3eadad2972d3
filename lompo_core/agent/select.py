"""Offline selection signals: how good a policy looks on held-out dataset episodes, without a sim.

A robot team has no simulator to pick a checkpoint with. These signals read only episodes that
neither the model nor the policy trained on (``data.holdout``), encoded by the posterior, and the
run's own model, actor and critics. Deterministic (fixed head draws, the actor's mode), so a
resumed run logs the same values.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from lompo_core.agent import checkpoint
from lompo_core.agent.replay import LatentBuffer
from lompo_core.agent.rollout import encode_episodes, latent_step, penalised_reward, penalty_offset
from lompo_core.agent.sac import SAC, Actor, speed_limit
from lompo_core.config import AgentConfig, Config
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.errors import LompoError
from lompo_core.model.rssm import State
from lompo_core.model.world_model import WorldModel


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
    - ``offline/terminal``: the fraction of imagined rollouts that reach a predicted terminal;
    - ``offline/model_success``: the probability that a whole imagined episode from a held-out
      episode's first state ends in a predicted success (``imagined_success``).
    """
    device = heldout.data["feat"].device
    n = min(cfg.select_starts, len(heldout))
    idx = torch.linspace(0, len(heldout) - 1, n, device=device).round().long()
    feat, data_action = heldout.data["feat"][idx], heldout.data["action"][idx]
    actor = sac.acting_actor
    action = actor.mode(feat)
    q0 = sac.critic.min(feat, action)
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
        reward, reward_hat = penalised_reward(
            wm, f, u, cfg.lmbda, u_offset, clip, cfg.success_reward, cfg.success_threshold
        )
        ret += disc * alive * reward
        u_sum += float((alive * u).sum())
        steps += float(alive.sum())
        alive = alive * (~wm.ends(f, cfg.success_threshold)).float()
        if cfg.success_ends:  # the probability that the imagined episode goes on
            alive = alive * (1.0 - reward_hat)
        disc *= cfg.discount
    value = ret + disc * alive * sac.critic.min(f, actor.mode(f))
    size = len(heldout)
    first = heldout.data["first"][:size] > 0
    horizon = cfg.select_success_horizon or _longest_episode(first)
    starts = heldout.data["feat"][:size][first]
    success = imagined_success(wm, actor, starts, horizon, cfg.select_success_samples, cfg.penalty)
    return {
        "offline/model_return": float(ret.mean()),
        "offline/model_value": float(value.mean()),
        "offline/q": float(q0.mean()),
        "offline/bc_mse": float((action - data_action).square().sum(-1).mean()),
        "offline/uncertainty": u_sum / max(steps, 1.0),
        "offline/terminal": float(1.0 - alive.mean()),
        "offline/model_success": success,
    }


def _longest_episode(first: torch.Tensor) -> int:
    """The most transitions of one episode in a buffer that holds whole episodes in order."""
    starts = torch.nonzero(first).flatten().tolist() + [len(first)]
    return max((b - a for a, b in pairwise(starts)), default=1)


@torch.no_grad()
def imagined_success(
    wm: WorldModel, actor: Actor, starts: torch.Tensor, horizon: int, samples: int, penalty: str
) -> float:
    """The probability that an imagined episode ends in success within ``horizon`` steps: from
    each start state, ``samples`` rollouts (the actor's mode, a random prior head per step from a
    fixed seed) accumulate the continuation head's terminal probability, the dataset's success.

    A success takes 24-150 steps in the drawer data (median 79), longer than ``model_return``'s
    horizon sees: this asks the model whether the policy finishes the task, not whether it starts
    well. It ranked new seeds' checkpoints no better than ``model_return``
    (docs/training-measurements.md)."""
    if len(starts) == 0:
        return 0.0
    g = torch.Generator(device=starts.device).manual_seed(1)
    f = starts.repeat_interleave(samples, 0)
    s_dim = wm.cfg.stoch
    state = State(f[:, :s_dim], f[:, s_dim:])
    alive = torch.ones(len(f), device=f.device)
    success = torch.zeros(len(f), device=f.device)
    for _ in range(horizon):
        state, _ = latent_step(wm, state, actor.mode(f), penalty, generator=g)
        f = state.feat()
        p_end = 1.0 - wm.cont_prob(f)
        success += alive * p_end
        alive = alive * (1.0 - p_end)
    return float(success.mean())


# What open_loop_success logs: the world model's held-out check, kept with the policy it trains.
CHECK_KEYS = (
    "heldout/open_loop_brier",
    "heldout/false_success",
    "heldout/true_success",
    "heldout/false_alarm",
    "heldout/detection",
)


@torch.no_grad()
def open_loop_success(
    wm: WorldModel,
    dataset: EpisodeDataset,
    episodes: list[int],
    stride: int,
    samples: int,
    chunk: int,
    penalty: str,
) -> dict[str, float]:
    """Whether the world model foresees the held-out episodes' outcomes from their logged actions.

    From the posterior state at every ``stride``-th step of each episode, ``samples`` open-loop
    imaginations (a random prior head per step from a fixed seed) replay the episode's own
    remaining actions; the continuation head's terminal probability, accumulated, is the
    imagined chance of success by the episode's end, compared with what really happened (the
    data ends an episode at its success). A model that imagines failed action sequences
    succeeding is one a policy will exploit, and the ensemble's disagreement does not show it
    (all heads share the error):

    - ``heldout/open_loop_brier``: the mean squared error of that chance against the outcome;
    - ``heldout/false_success``: its mean over the failed episodes' starts;
    - ``heldout/true_success``: its mean over the successful episodes' starts;
    - ``heldout/false_alarm``: the fraction of failed episodes in which a real frame, filtered by
      the posterior, already reads as a success (``WorldModel.ends``, where rollouts stop): a
      success detector that memorised the training successes;
    - ``heldout/detection``: the fraction of successful episodes whose success frame reads so.

    A value without episodes to average (no failed held-out episode, say) is left out.
    """
    device = next(wm.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(2)
    err, false_p, true_p, alarm, detect = [], [], [], [], []
    for i in episodes:
        ep = dataset.load(i)
        t_len = len(ep["image"])
        if t_len < 2:
            continue
        image = torch.as_tensor(ep["image"], device=device)
        action = torch.as_tensor(ep["action"], device=device)
        post = wm.encode_episode(image, action, chunk, sample=False)
        read_end = wm.ends(post.feat())
        outcome = float(dataset.episodes[i].success)
        if outcome:
            detect.append(read_end[-1:].float())
        else:
            alarm.append(read_end.any()[None].float())
        starts = torch.arange(0, t_len - 1, stride, device=device).repeat_interleave(samples)
        state = State(post.stoch[starts], post.deter[starts])
        alive = torch.ones(len(starts), device=device)
        success = torch.zeros(len(starts), device=device)
        for j in range(1, t_len):
            t = starts + j
            live = (t < t_len).float()
            a = action[t.clamp(max=t_len - 1)]
            heads = torch.randint(wm.rssm.heads, (len(starts),), generator=g).to(device)
            state, _ = latent_step(wm, state, a, penalty, heads)
            p_end = (1.0 - wm.cont_prob(state.feat())) * live
            success += alive * p_end
            alive = alive * (1.0 - p_end)
        p = success.view(-1, samples).mean(1)
        err.append((p - outcome).square())
        (true_p if outcome else false_p).append(p)

    out = {
        "open_loop_brier": err,
        "false_success": false_p,
        "true_success": true_p,
        "false_alarm": alarm,
        "detection": detect,
    }
    return {f"heldout/{k}": float(torch.cat(v).mean()) for k, v in out.items() if v}


# The world models whose held-out check gave the failed episodes' actions a mean chance of success
# of 0.5 or more gave the weakest policies of the runs measured, and the one late drop among the
# cpu preset's seven new training seeds (docs/training-measurements.md, "fresher imagined data").
FALSE_SUCCESS_WARNING = 0.5


def world_model_warning(check: dict[str, float] | None) -> str | None:
    """A warning line when the world model's held-out check shows the error a policy exploits:
    it believes actions that failed would succeed (``false_success``); None otherwise."""
    false_success = (check or {}).get("false_success")
    if false_success is None or not false_success >= FALSE_SUCCESS_WARNING:
        return None
    return (
        f"warning: the world model gives the failed held-out episodes' actions a "
        f"{false_success:.0%} chance of success (training.world_model_check.false_success >= "
        f"{FALSE_SUCCESS_WARNING}); policies trained in such models closed fewer drawers and "
        "their late checkpoints dropped: prefer the offline pick and try the policy with care"
    )


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The held-out and the training episode indices of a run: a ``fraction`` of the ``n``
    episodes (at least one, and one left to train, where ``fraction`` > 0), drawn by ``seed``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_hold = min(max(n_hold, 1), n - 1)
    return sorted(int(i) for i in perm[:n_hold]), sorted(int(i) for i in perm[n_hold:])


def checkpoint_signals(path: Path, dataset: EpisodeDataset) -> dict[str, float]:
    """The held-out signals of a saved agent checkpoint, recomputed by this code on the CPU: a
    run's history scored with a signal it did not log (``training/ablate.py``)."""
    device = torch.device("cpu")
    state = checkpoint.load(path, device)
    cfg = Config.from_dict(state["config"])
    if state.get("phase") not in ("agent", "done") or state.get("local", {}).get("real") is None:
        raise LompoError(f"{path}: not an agent-phase training checkpoint")
    wm = WorldModel(cfg.model, dataset.action_dim)
    wm.load_state_dict(state["world_model"])
    wm.eval()
    sac = SAC(
        cfg.agent, wm.feat_dim, dataset.action_dim, speed_limit(cfg.agent, dataset.meta["action"])
    )
    sac.load_state_dict(state["sac"])
    real = state["local"]["real"]
    buffer = LatentBuffer(len(real["feat"]), wm.feat_dim, dataset.action_dim, device)
    buffer.load_state_dict(real)
    u_offset = penalty_offset(wm, buffer, cfg.agent)
    holdout, _ = holdout_split(len(dataset), cfg.data.holdout, cfg.seed)
    if not holdout:
        raise LompoError(f"{path}: its run holds no episode out (data.holdout=0)")
    heldout = encode_episodes(wm, dataset, holdout, cfg.agent.encode_chunk, device)
    return heldout_signals(wm, sac, heldout, cfg.agent, u_offset)
