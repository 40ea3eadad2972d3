"""The recurrent state-space model with an ensemble of K prior heads on one shared GRU.

As in the reference (research-lompo.md section 1): the heads share the input layer and the GRU and
differ only in the last two layers that map the deterministic state to the next stochastic state's
Gaussian. Training draws one head per time step; the heads' disagreement is the uncertainty.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from lompo_core.model.dists import gaussian_log_prob
from lompo_core.model.networks import EnsembleLinear, GRUCell


class State(NamedTuple):
    stoch: torch.Tensor  # [..., S]
    deter: torch.Tensor  # [..., D]

    def feat(self) -> torch.Tensor:
        """The feature the actor, critics and heads read: [stoch, deter], as in the reference."""
        return torch.cat([self.stoch, self.deter], -1)


class RSSM(nn.Module):
    def __init__(
        self,
        action_dim: int,
        embed_dim: int,
        deter: int,
        stoch: int,
        hidden: int,
        heads: int,
        min_std: float,
    ) -> None:
        super().__init__()
        self.action_dim, self.deter_dim, self.stoch_dim = action_dim, deter, stoch
        self.heads, self.min_std = heads, min_std
        self.img_in = nn.Sequential(nn.Linear(stoch + action_dim, hidden), nn.ELU())
        self.gru = GRUCell(hidden, deter)
        self.img_hidden = EnsembleLinear(heads, deter, hidden)
        self.img_stats = EnsembleLinear(heads, hidden, 2 * stoch)
        self.obs_hidden = nn.Sequential(nn.Linear(deter + embed_dim, hidden), nn.ELU())
        self.obs_stats = nn.Linear(hidden, 2 * stoch)

    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        return State(
            torch.zeros(batch, self.stoch_dim, device=device),
            torch.zeros(batch, self.deter_dim, device=device),
        )

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = x.chunk(2, -1)
        return mean, F.softplus(raw) + self.min_std

    def deter_step(
        self, stoch: torch.Tensor, deter: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        return self.gru(self.img_in(torch.cat([stoch, action], -1)), deter)

    def prior_all(self, deter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every head's Gaussian over the next stochastic state: mean, std [K, B, S]."""
        return self._stats(self.img_stats(F.elu(self.img_hidden(deter))))

    def prior_one(self, deter: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.elu(self.img_hidden.member(deter, k))
        return self._stats(self.img_stats.member(h, k))

    def posterior(
        self, deter: torch.Tensor, embed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._stats(self.obs_stats(self.obs_hidden(torch.cat([deter, embed], -1))))

    def observe(
        self,
        embed: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        heads: list[int],
        state: State | None = None,
        sample: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Filter a batch of sequences [B, T, ...] with the posterior, the prior of step t drawn from
        head ``heads[t]``. The state is reset to zeros where ``is_first``; ``action[:, t]`` is the
        action that led to observation t (zeros at the first step)."""
        b, t_len = embed.shape[:2]
        stoch, deter = state if state is not None else self.initial(b, embed.device)
        keep = (~is_first).to(embed.dtype)
        out: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("stoch", "deter", "post_mean", "post_std", "prior_mean", "prior_std")
        }
        for t in range(t_len):
            m = keep[:, t, None]
            deter = self.deter_step(stoch * m, deter * m, action[:, t] * m)
            prior_mean, prior_std = self.prior_one(deter, heads[t])
            post_mean, post_std = self.posterior(deter, embed[:, t])
            stoch = post_mean + post_std * torch.randn_like(post_std) if sample else post_mean
            for k, v in zip(
                out, (stoch, deter, post_mean, post_std, prior_mean, prior_std), strict=True
            ):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def imagine_mean(self, state: State, actions: torch.Tensor) -> torch.Tensor:
        """Open-loop features [B, T, F] under ``actions`` [B, T, A], taking the ensemble's mean
        prediction at each step (what the figures show)."""
        stoch, deter = state
        feats = []
        for t in range(actions.shape[1]):
            deter = self.deter_step(stoch, deter, actions[:, t])
            stoch = self.prior_all(deter)[0].mean(0)
            feats.append(torch.cat([stoch, deter], -1))
        return torch.stack(feats, 1)

    def img_step_random_head(
        self,
        state: State,
        action: torch.Tensor,
        penalty: str,
        generator: torch.Generator | None = None,
    ) -> tuple[State, torch.Tensor]:
        """One model step for rollouts: each sample draws its own head, its next stochastic state is
        sampled from that head, and the uncertainty of the transition is returned with it."""
        deter = self.deter_step(state.stoch, state.deter, action)
        mean, std = self.prior_all(deter)  # [K, B, S]
        b = deter.shape[0]
        idx = torch.randint(self.heads, (b,), device=deter.device, generator=generator)
        rows = torch.arange(b, device=deter.device)
        noise = torch.randn(std.shape[1:], device=deter.device, generator=generator)
        stoch = mean[idx, rows] + std[idx, rows] * noise
        return State(stoch, deter), uncertainty(mean, std, stoch, penalty)


def uncertainty(
    mean: torch.Tensor, std: torch.Tensor, next_stoch: torch.Tensor, kind: str = "log_prob"
) -> torch.Tensor:
    """Disagreement of the K prior heads ([K, B, S]) about one transition -> [B].

    ``log_prob``: std over heads of log p_k(next_stoch) (the reference's default);
    ``mean``: mean over heads of the distance of each head's mean to the ensemble mean.
    Zero when all heads agree. No data-dependent control flow: it exports to ONNX.
    """
    if kind == "log_prob":
        lp = gaussian_log_prob(next_stoch.unsqueeze(0), mean, std)  # [K, B]
        return (lp - lp.mean(0, keepdim=True)).square().mean(0).sqrt()
    if kind == "mean":
        return (mean - mean.mean(0, keepdim=True)).square().sum(-1).sqrt().mean(0)
    raise ValueError(f"unknown penalty {kind!r}; choose log_prob or mean")
