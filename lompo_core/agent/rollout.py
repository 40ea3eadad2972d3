"""Latent data for the policy: posterior-encoded dataset transitions and penalised model rollouts."""

from __future__ import annotations

import torch

from lompo_core.agent.replay import LatentBuffer
from lompo_core.agent.sac import Actor
from lompo_core.config import PENALTY_QUANTILES, AgentConfig
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.model.rssm import State, uncertainty
from lompo_core.model.world_model import WorldModel


@torch.no_grad()
def encode_dataset(
    wm: WorldModel,
    dataset: EpisodeDataset,
    indices: list[int],
    buffer: LatentBuffer,
    chunk: int,
    device: torch.device,
) -> int:
    """Filter every episode with the posterior and store its transitions
    (feat_t, a_{t+1}, r_{t+1}, feat_{t+1}, terminal_{t+1}, and whether t is the episode's first
    step); return how many.

    Posterior means, not samples as in the reference: the exported policy filters with means,
    and an actor trained on sampled features (the sample noise is ~60% of the stochastic
    state's spread at cpu sizes) would act on inputs unlike any it was trained on."""
    n = 0
    for i in indices:
        ep = dataset.load(i)
        if len(ep["image"]) < 2:
            continue
        image = torch.as_tensor(ep["image"], device=device)
        action = torch.as_tensor(ep["action"], device=device)
        feat = wm.encode_episode(image, action, chunk, sample=False).feat()
        buffer.add(
            feat=feat[:-1],
            action=action[1:],
            reward=torch.as_tensor(ep["reward"][1:], device=device),
            next_feat=feat[1:],
            terminal=torch.as_tensor(ep["is_terminal"][1:], device=device).float(),
            success=torch.full((len(feat) - 1,), float(dataset.episodes[i].success), device=device),
            first=(torch.arange(len(feat) - 1, device=device) == 0).float(),
        )
        n += len(feat) - 1
    return n


@torch.no_grad()
def rest_states(
    wm: WorldModel,
    dataset: EpisodeDataset,
    indices: list[int],
    steps: int,
    chunk: int,
    device: torch.device,
) -> torch.Tensor:
    """Feats [N, F] of the episodes' frames at rest: every frame but an episode's last (its
    success) held still for ``steps`` posterior steps under zero actions, from a fresh state
    (posterior means, as ``encode_dataset``). The logs show the arm moving nearly everywhere; a
    policy on the robot can stop anywhere, and these are the states it then starts again from."""
    feats = []
    for i in indices:
        image = torch.as_tensor(dataset.load(i)["image"][:-1], device=device)
        for s in range(0, len(image), chunk):
            embed = wm.encoder(image[s : s + chunk])
            n = embed.shape[0]
            is_first = torch.zeros(n, steps, dtype=torch.bool, device=device)
            is_first[:, 0] = True
            out = wm.rssm.observe(
                embed[:, None].expand(n, steps, embed.shape[-1]),
                torch.zeros(n, steps, dataset.action_dim, device=device),
                is_first,
                [0] * steps,
                sample=False,
            )
            feats.append(torch.cat([out["stoch"][:, -1], out["deter"][:, -1]], -1))
    return torch.cat(feats) if feats else torch.zeros(0, wm.feat_dim, device=device)


def transitions(dataset: EpisodeDataset, indices: list[int]) -> int:
    """How many transitions ``encode_dataset`` stores for episodes ``indices``."""
    return int(sum(max(int(dataset.lengths[i]) - 1, 0) for i in indices))


def encode_episodes(
    wm: WorldModel, dataset: EpisodeDataset, indices: list[int], chunk: int, device: torch.device
) -> LatentBuffer:
    """A buffer sized for the transitions of episodes ``indices``, filled by ``encode_dataset``:
    the held-out episodes of the selection signals, or a run's training episodes re-encoded."""
    n = transitions(dataset, indices)
    buffer = LatentBuffer(max(n, 1), wm.feat_dim, dataset.action_dim, device)
    encode_dataset(wm, dataset, indices, buffer, chunk, device)
    return buffer


def latent_step(
    wm: WorldModel,
    state: State,
    action: torch.Tensor,
    penalty: str,
    heads: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[State, torch.Tensor]:
    """One imagined step: each sample's next stochastic state is the **mean** of one prior head
    (``heads`` [B], else drawn at random), and u(s, a) is scored at that next state.

    Means, like the real buffer's posterior means and the exported policy's filter: the actor and
    critics see one kind of state in both halves of the batch and on the robot. The penalty
    offset u0 is calibrated with this same step (``data_uncertainty``), so it offsets the
    quantity the rollouts are charged."""
    deter = wm.rssm.deter_step(state.stoch, state.deter, action)
    mean, std = wm.rssm.prior_all(deter)  # [K, B, S]
    b = deter.shape[0]
    if heads is None:
        heads = torch.randint(wm.rssm.heads, (b,), device=deter.device, generator=generator)
    stoch = mean[heads, torch.arange(b, device=deter.device)]
    return State(stoch, deter), uncertainty(mean, std, stoch, penalty)


def penalised_reward(
    wm: WorldModel,
    next_feat: torch.Tensor,
    u: torch.Tensor,
    lmbda: float,
    u_offset: float,
    reward_clip: bool,
    success_reward: bool = False,
    end_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_hat(s') - lmbda * max(u - u_offset, 0), r_hat(s')), r_hat clipped to [0, 1] if asked;
    ``success_reward``: r_hat is 1 where the continuation head ends the episode (P(end) above
    ``end_threshold``), else 0."""
    if success_reward:
        reward_hat = wm.ends(next_feat, end_threshold).float()
    else:
        reward_hat = wm.reward_mean(next_feat)
    if reward_clip:
        reward_hat = reward_hat.clamp(0.0, 1.0)
    return reward_hat - lmbda * (u - u_offset).clamp(min=0.0), reward_hat


@torch.no_grad()
def model_rollouts(
    wm: WorldModel,
    actor: Actor,
    starts: torch.Tensor,
    horizon: int,
    lmbda: float,
    penalty: str,
    buffer: LatentBuffer,
    *,
    u_offset: float = 0.0,
    reward_clip: bool = False,
    success_ends: bool = False,
    success_reward: bool = False,
    end_threshold: float = 0.5,
) -> dict[str, float]:
    """Roll the model out from ``starts`` (feats [N, F]) with the actor's sampled actions, one
    random head per sample and step (``latent_step``), storing the penalised reward. A rollout
    stops after a step the continuation head calls terminal (success ends episodes in our
    data; P(end) above ``end_threshold``). ``success_ends``: r_hat clipped to [0, 1] is also the
    stored terminal weight; ``success_reward``: a step pays 1 where it ends
    (``penalised_reward``)."""
    s_dim = wm.cfg.stoch
    state = State(starts[:, :s_dim], starts[:, s_dim:])
    alive = torch.ones(len(starts), dtype=torch.bool, device=starts.device)
    feat = starts
    total, u_sum, r_sum = 0, 0.0, 0.0
    clip = reward_clip or success_ends
    for _ in range(horizon):
        action, _ = actor(feat)
        state, u = latent_step(wm, state, action, penalty)
        next_feat = state.feat()
        reward, reward_hat = penalised_reward(
            wm, next_feat, u, lmbda, u_offset, clip, success_reward, end_threshold
        )
        terminal = wm.ends(next_feat, end_threshold)
        weight = terminal.float()
        if success_ends:
            weight = torch.maximum(weight, reward_hat)
        buffer.add(
            feat=feat[alive],
            action=action[alive],
            reward=reward[alive],
            next_feat=next_feat[alive],
            terminal=weight[alive],
        )
        total += int(alive.sum())
        u_sum += float(u[alive].sum())
        r_sum += float(reward_hat[alive].sum())
        alive = alive & ~terminal
        feat = next_feat
        if not bool(alive.any()):
            break
    return {
        "rollout/transitions": float(total),
        "rollout/uncertainty": u_sum / max(total, 1),
        "rollout/reward_hat": r_sum / max(total, 1),
    }


@torch.no_grad()
def data_uncertainty(
    wm: WorldModel, buffer: LatentBuffer, penalty: str, chunk: int = 4096, seed: int = 0
) -> torch.Tensor:
    """u(s, a) on the dataset's own transitions (posterior-mean state, logged action), scored by
    ``latent_step`` exactly as a rollout step is: how much the heads disagree where the data is.
    The heads are drawn from a fixed seed, so a resumed run recomputes exactly the same values
    from its restored buffer, whatever the chunk size."""
    s_dim = wm.cfg.stoch
    device = buffer.data["feat"].device
    g = torch.Generator().manual_seed(seed)
    heads = torch.randint(wm.rssm.heads, (len(buffer),), generator=g).to(device)
    out = []
    for i in range(0, len(buffer), chunk):
        feat = buffer.data["feat"][i : i + chunk]
        state = State(feat[:, :s_dim], feat[:, s_dim:])
        action = buffer.data["action"][i : i + chunk]
        out.append(latent_step(wm, state, action, penalty, heads[i : i + chunk])[1])
    return torch.cat(out)


def penalty_offset(wm: WorldModel, real: LatentBuffer, cfg: AgentConfig) -> float:
    """u0, what the penalty subtracts from u: 0 (``penalty_offset: none``) or a quantile of u on the
    dataset's own transitions (``data_median``, ``data_p90``, ``data_p99``). Derived from the real
    buffer, which checkpoints restore, so a resumed run and a re-scored checkpoint get the value
    training used."""
    if cfg.penalty_offset == "none":
        return 0.0
    return data_quantile(data_uncertainty(wm, real, cfg.penalty), cfg.penalty_offset)


def data_quantile(u: torch.Tensor, offset: str) -> float:
    """The ``offset`` quantile (``data_median``, ``data_p90``, ``data_p99``) of the data's u."""
    # "lower": a value of u itself (the lower middle one for the median, as Tensor.median).
    return float(torch.quantile(u, PENALTY_QUANTILES[offset], interpolation="lower"))
