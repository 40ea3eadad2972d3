"""Soft actor-critic in latent space: tanh-Gaussian actor, N critics (two by default), learned
temperature, an optional behaviour-cloning term on the dataset's transitions (TD3+BC style) and an
optional conservative term on the critics (CQL(H)). ``agent.critics`` > 2 takes the minimum over
more critics (SAC-N): a more pessimistic target where the critics disagree.

The reference code used a deterministic actor with twin critics (TD3-like, research-lompo.md
section 2.6). We use SAC, the paper's framing: its entropy bonus keeps the actor exploring inside the
model rollouts, which the reference got from fixed action noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lompo_core.config import AgentConfig
from lompo_core.model.networks import mlp
from lompo_core.runtime.controller import JOINT_UNIT, LINEAR_UNIT

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# The actor stays this far inside the limit, so that the controller's own check (in float32
# after the ONNX graph) never finds a policy action above it.
SPEED_MARGIN = 1e-3


class SpeedLimit(nn.Module):
    """The deployment's physical speed limit in normalised action units, inside the actor: the
    policy learns, and the critics and the model rollouts see, the motion the runtime's
    controller lets through. An m/s action's Euclidean norm is scaled down to the limit (its
    direction kept, as the controller does); a rad/s action's every axis is scaled so that its
    joint stays within the limit."""

    def __init__(self, unit: str, maxima: Sequence[float], limit: float) -> None:
        super().__init__()
        self.linear = unit == LINEAR_UNIT
        m = torch.tensor([float(v) for v in maxima])
        bound = limit * (1.0 - SPEED_MARGIN)
        scale = m / bound if self.linear else (bound / m).clamp(max=1.0)
        # Not persistent: it comes from the config and the dataset, not from checkpoints.
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        if self.linear:
            return action / (action * self.scale).norm(dim=-1, keepdim=True).clamp(min=1.0)
        return action * self.scale


def speed_limit(cfg: AgentConfig, action: Mapping[str, Any]) -> SpeedLimit | None:
    """The actor's speed limit for a dataset's action scaling (``names``, ``unit``, ``max``):
    ``agent.max_linear_speed`` for m/s actions, ``agent.max_joint_speed`` for rad/s; None where
    that value is 0 (the whole [-1, 1] box) or the unit has no limit in the runtime."""
    limit = {LINEAR_UNIT: cfg.max_linear_speed, JOINT_UNIT: cfg.max_joint_speed}.get(
        str(action.get("unit", "")), 0.0
    )
    return SpeedLimit(str(action["unit"]), action["max"], limit) if limit > 0 else None


class Actor(nn.Module):
    def __init__(
        self,
        feat_dim: int,
        action_dim: int,
        hidden: int,
        layers: int,
        speed: SpeedLimit | None = None,
    ) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.net = mlp(feat_dim, hidden, 2 * action_dim, layers)
        self.speed = speed if speed is not None else nn.Identity()

    def _dist(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(feat).chunk(2, -1)
        # A smooth squash keeps the std in range without a dead gradient at the bounds.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)
        return mean, log_std

    def forward(
        self,
        feat: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample in [-1, 1], within the speed limit, and its log-probability
        (tanh-corrected; the limit's scaling is left out of it, as a clip would be, so the
        entropy bonus reads the sample before the limit); ``deterministic``: the mode, with no
        log-probability (a forward call, for DDP)."""
        if deterministic:
            action = self.mode(feat)
            return action, torch.zeros(action.shape[:-1], device=action.device)
        mean, log_std = self._dist(feat)
        std = log_std.exp()
        noise = torch.randn(mean.shape, device=mean.device, generator=generator)
        u = mean + std * noise
        action = torch.tanh(u)
        logp = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form.
        logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return self.speed(action), logp

    def mode(self, feat: torch.Tensor) -> torch.Tensor:
        """The deterministic action used when acting: tanh of the mean, within the limit."""
        return self.speed(torch.tanh(self._dist(feat)[0]))


class Critics(nn.Module):
    """``n`` independent Q networks (``q1`` ... ``qn``) on the same (feature, action) input."""

    def __init__(
        self,
        feat_dim: int,
        action_dim: int,
        hidden: int,
        layers: int,
        norm: bool = False,
        n: int = 2,
    ) -> None:
        super().__init__()
        self.n = n
        for i in range(1, n + 1):
            self.add_module(f"q{i}", mlp(feat_dim + action_dim, hidden, 1, layers, norm=norm))

    def forward(self, feat: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = torch.cat([feat, action], -1)
        return tuple(getattr(self, f"q{i}")(x).squeeze(-1) for i in range(1, self.n + 1))

    def min(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The pessimistic value: the smallest of the ``n`` critics' Q."""
        return torch.stack(self(feat, action)).min(0).values


class SAC(nn.Module):
    """Holds the networks and the temperature; ``update`` is one gradient step on a batch.

    ``actor`` and ``critic`` may be swapped for DistributedDataParallel wrappers of themselves
    (see ``wrap``): the update calls them through ``self._fwd`` so that
    gradients are averaged across ranks, and uses the bare modules where no gradient is wanted.
    """

    def __init__(
        self, cfg: AgentConfig, feat_dim: int, action_dim: int, speed: SpeedLimit | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.actor = Actor(feat_dim, action_dim, cfg.hidden, cfg.actor_layers, speed)
        critic = (feat_dim, action_dim, cfg.hidden, cfg.critic_layers, cfg.critic_norm, cfg.critics)
        self.critic = Critics(*critic)
        self.critic_target = Critics(*critic)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        if cfg.actor_ema > 0:
            self.actor_ema = Actor(feat_dim, action_dim, cfg.hidden, cfg.actor_layers, speed)
            self.actor_ema.load_state_dict(self.actor.state_dict())
            self.actor_ema.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        te = cfg.target_entropy
        self.target_entropy = float(-action_dim if te is None else te)
        # A plain dict, not attributes: a wrapper must not add keys to the state dict.
        self._fwd: dict[str, nn.Module] = {"actor": self.actor, "critic": self.critic}
        self._allreduce = None

    @property
    def acting_actor(self) -> Actor:
        """The policy that acts (held-out signals, evaluation, export): the average with
        ``actor_ema``, else the learning actor."""
        return self.actor_ema if self.cfg.actor_ema > 0 else self.actor

    @staticmethod
    def acting_prefix(cfg: AgentConfig) -> str:
        """The state-dict prefix of ``acting_actor``'s weights, for readers of a checkpoint."""
        return "actor_ema." if cfg.actor_ema > 0 else "actor."

    def actor_lr(self, step: int) -> float:
        """The actor's learning rate at policy update ``step`` (0-based): ``actor_lr``, falling
        linearly to 0 over the last ``actor_lr_decay`` share of ``steps``."""
        c = self.cfg
        span = c.actor_lr_decay * c.steps
        if span <= 0:
            return c.actor_lr
        return c.actor_lr * min(1.0, max(c.steps - step, 0) / span)

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        return {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=c.alpha_lr),
        }

    def wrap(self, wrapper, allreduce) -> None:
        """Route the gradient-carrying calls through ``wrapper(module)`` (DDP); ``allreduce``
        averages the temperature's gradient, which no module owns."""
        self._fwd = {"actor": wrapper(self.actor), "critic": wrapper(self.critic)}
        self._allreduce = allreduce

    def average_rate(self, step: int) -> float:
        """How far the acting copy moves towards the learning actor after policy update ``step``
        (1-based): ``1 - actor_ema``; in the last ``actor_swa`` share of ``steps``, 1/n after its
        n-th update, which makes the copy the uniform average of the actor over that share."""
        c = self.cfg
        start = c.steps - round(c.actor_swa * c.steps)
        if c.actor_swa > 0 and step > start:
            return 1.0 / (step - start)
        return 1.0 - c.actor_ema

    def update(
        self,
        batch: dict[str, torch.Tensor],
        opt: dict[str, torch.optim.Optimizer],
        n_real: int | None = None,
        step: int = 0,
    ) -> dict[str, torch.Tensor]:
        """One step of critics, actor and temperature, the ``step``-th (1-based; it sets the
        acting copy's rate, ``average_rate``). The first ``n_real`` transitions (all when None)
        are the dataset's: the behaviour term (``bc_weight``) reads only them."""
        c = self.cfg
        n_real = len(batch["feat"]) if n_real is None else n_real
        if c.learner == "bc":
            return self._bc_update(batch, opt, step)
        feat, action, reward = batch["feat"], batch["action"], batch["reward"]
        next_feat, terminal = batch["next_feat"], batch["terminal"]
        alpha = self.log_alpha.exp().detach()

        with torch.no_grad():
            next_action, next_logp = self.actor(next_feat)
            next_v = self.critic_target.min(next_feat, next_action)
            if c.backup_entropy:
                next_v = next_v - alpha * next_logp
            target = reward + c.discount * (1.0 - terminal) * next_v
        if c.cql_weight > 0:
            qs, gap = self._conservative_q(feat, action, n_real)
            conservative = {"agent/cql_gap": gap.detach()}
        else:
            qs = self._fwd["critic"](feat, action)
            gap, conservative = 0.0, {}
        q = torch.stack(qs)
        td = (q - target).square().mean()
        critic_loss = td + c.cql_weight * gap
        opt["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        nn.utils.clip_grad_norm_(self.critic.parameters(), c.grad_clip)
        opt["critic"].step()

        # The actor's loss goes through the critic, whose weights must not move with it.
        self.critic.requires_grad_(False)
        new_action, logp = self._fwd["actor"](feat)
        new_q = self.critic.min(feat, new_action)
        actor_loss = (alpha * logp - new_q).mean()
        sq = (new_action[:n_real] - action[:n_real]).square().sum(-1)
        if c.bc_successful:
            w = batch["success"][:n_real]
            bc = (w * sq).sum() / w.sum().clamp(min=1.0)
        else:
            bc = sq.mean()
        if c.bc_weight > 0:
            # TD3+BC's normalisation: the BC weight means the same whatever the scale of Q.
            q_scale = new_q.abs().mean().detach().clamp(min=1e-6)
            actor_loss = actor_loss / q_scale + c.bc_weight * bc
        opt["actor"].zero_grad(set_to_none=True)
        actor_loss.backward()
        self.critic.requires_grad_(True)
        nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        opt["actor"].step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        opt["alpha"].zero_grad(set_to_none=True)
        alpha_loss.backward()
        if self._allreduce is not None:
            self._allreduce(self.log_alpha.grad)
        opt["alpha"].step()

        _polyak(self.critic_target, self.critic, c.tau)
        self._update_ema(step)
        return conservative | {
            "agent/critic_loss": critic_loss.detach(),
            "agent/actor_loss": actor_loss.detach(),
            "agent/alpha": alpha,
            "agent/entropy": -logp.detach().mean(),
            "agent/bc_mse": bc.detach(),
            "agent/q": q.detach().min(0).values.mean(),
            "agent/target": target.mean(),
        }

    def _conservative_q(
        self, feat: torch.Tensor, action: torch.Tensor, n_real: int
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Every critic at the batch's (s, a), and CQL(H)'s gap on its first ``n_real`` (the
        dataset's) states: the soft maximum over ``cql_samples`` uniform actions and the actor's
        action, minus Q at the logged action, summed over the critics. One critic call, so
        that a DDP wrapper sees one forward per backward."""
        k, n = self.cfg.cql_samples, n_real
        states = feat[:n]
        with torch.no_grad():
            own, _ = self.actor(states)
        uniform = torch.rand(k, n, action.shape[-1], device=feat.device) * 2.0 - 1.0
        probes = torch.cat([uniform, own[None]]).flatten(0, 1)
        qs = self._fwd["critic"](
            torch.cat([feat, states.repeat(k + 1, 1)]), torch.cat([action, probes])
        )
        m = len(feat)

        def gap(q: torch.Tensor) -> torch.Tensor:
            soft_max = torch.logsumexp(q[m:].view(k + 1, n), 0) - math.log(k + 1)
            return (soft_max - q[:n]).mean()

        return tuple(q[:m] for q in qs), sum(gap(q) for q in qs)

    def _bc_update(
        self, batch: dict[str, torch.Tensor], opt: dict[str, torch.optim.Optimizer], step: int
    ) -> dict[str, torch.Tensor]:
        """Behaviour cloning: the acting action (the mode) regressed onto the logged one. The
        critics and the temperature stay as initialised."""
        mode, _ = self._fwd["actor"](batch["feat"], deterministic=True)
        bc = (mode - batch["action"]).square().sum(-1).mean()
        opt["actor"].zero_grad(set_to_none=True)
        bc.backward()
        nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.grad_clip)
        opt["actor"].step()
        self._update_ema(step)
        return {"agent/actor_loss": bc.detach(), "agent/bc_mse": bc.detach()}

    def _update_ema(self, step: int) -> None:
        if self.cfg.actor_ema > 0:
            _polyak(self.actor_ema, self.actor, self.average_rate(step))


@torch.no_grad()
def _polyak(average: nn.Module, source: nn.Module, rate: float) -> None:
    """Move each of ``average``'s weights ``rate`` of the way to ``source``'s."""
    for p, ap in zip(source.parameters(), average.parameters(), strict=True):
        ap.lerp_(p, rate)
