"""One recurrent step of the trained policy, the module that ``lompo export`` traces to ONNX.

Image in, action out, with the latent state carried by the caller. The step filters with the
posterior *mean* and acts with the actor's *mode*: no sampling and no Python branches on tensor
values, so the traced graph is the whole computation and the same inputs give the same outputs.

Beside the ensemble's disagreement (dynamics uncertainty) it reports two signals about the image
itself, which the controller's out-of-distribution gate reads: the posterior's ``surprise``,
KL(posterior || prior) averaged over the prior heads (how far the image moved the belief from
what the model predicted; a frozen or blanked camera contradicts the predicted motion), and the
``reconstruction_error``, the decoder's mean squared error on the 64x64 model image in the
model's [-0.5, 0.5] pixel scale (how unlike the training images the frame looks), and the
``reconstruction_patch_error``, the same error averaged over each 8x8 patch, the worst patch's
(a small object the data never had, which the image-wide mean dilutes 64-fold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lompo_core.errors import LompoError
from lompo_core.model.dists import gaussian_kl
from lompo_core.model.networks import image_to_input
from lompo_core.model.rssm import uncertainty

PATCH = 8  # pixels per side of the patches of reconstruction_patch_error


class PolicyStep(nn.Module):
    def __init__(self, world_model: nn.Module, actor: nn.Module, penalty: str = "log_prob") -> None:
        super().__init__()
        self.encoder = world_model.encoder
        self.rssm = world_model.rssm
        self.decoder = world_model.decoder
        self.actor = actor
        self.penalty = penalty
        self.action_dim: int = int(world_model.rssm.action_dim)
        self.deter_dim: int = int(world_model.rssm.deter_dim)
        self.stoch_dim: int = int(world_model.rssm.stoch_dim)

    def forward(
        self,
        image: torch.Tensor,
        prev_action: torch.Tensor,
        deter: torch.Tensor,
        stoch: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """image uint8 [B,64,64,3], prev_action [B,A], deter [B,D], stoch [B,S] (zeros at the start
        of an episode, as in training) -> action [B,A] in [-1,1], deter' [B,D], stoch' [B,S]
        (posterior mean), the uncertainty [B] of the transition that led to this image, its
        surprise [B], and the reconstruction error [B] of the image and of its worst 8x8 patch
        [B]."""
        embed = self.encoder(image)
        deter = self.rssm.deter_step(stoch, deter, prev_action)
        prior_mean, prior_std = self.rssm.prior_all(deter)
        stoch, post_std = self.rssm.posterior(deter, embed)
        u = uncertainty(prior_mean, prior_std, stoch, self.penalty)
        surprise = gaussian_kl(stoch.unsqueeze(0), post_std.unsqueeze(0), prior_mean, prior_std)
        feat = torch.cat([stoch, deter], -1)
        error = (self.decoder(feat) - image_to_input(image)).square().mean(-3)  # [B, 64, 64]
        patches = F.avg_pool2d(error.unsqueeze(-3), PATCH).flatten(1)
        action = self.actor.mode(feat)
        return (
            action,
            deter,
            stoch,
            u,
            surprise.mean(0),
            error.flatten(1).mean(-1),
            patches.max(-1).values,
        )


def load_policy_step(
    run_dir: str | Path, checkpoint_path: str | Path | None = None
) -> tuple[PolicyStep, dict[str, Any]]:
    """The policy of a run's latest checkpoint, or of ``checkpoint_path`` (a checkpoint written
    by the same run, or "best" for checkpoints/best.pt), in eval mode on the CPU, and what export
    needs about it.

    ``info``: ``config`` (the resolved config dict), ``dataset`` (path, hash, preprocessing,
    action: names, unit, max), ``step`` (agent updates done), ``world_model_step`` (the model
    update its world model comes from), ``world_model_check`` (that model's held-out check, empty
    without held-out episodes), ``seed``, ``checkpoint`` (its path).
    """
    from lompo_core.agent import checkpoint
    from lompo_core.agent.sac import SAC, Actor, speed_limit
    from lompo_core.config import Config, differences
    from lompo_core.model.world_model import WorldModel

    run = Path(run_dir)
    cfg_path, ds_path = run / "config.yaml", run / "dataset.json"
    for p in (cfg_path, ds_path):
        if not p.is_file():
            raise LompoError(f"{p}: missing; is {run} a run folder made by lompo train?")
    cfg = Config.load(cfg_path)
    dataset = json.loads(ds_path.read_text())
    if checkpoint_path is not None:
        path = Path(checkpoint_path)
        if str(checkpoint_path) == "best":
            path = checkpoint.checkpoint_dir(run) / checkpoint.BEST
            if not path.is_file():
                raise LompoError(
                    f"{run}: no best.pt: it is written by in-training evaluation "
                    "(train with eval.every > 0)"
                )
        if not path.is_file():
            raise LompoError(f"{path}: no such checkpoint")
    else:
        path = checkpoint.last_path(run)
        if path is None:
            raise LompoError(f"{run}: no checkpoint yet; train first (lompo train --run {run} ...)")
    state = checkpoint.load(path)
    if checkpoint_path is not None:
        saved = Config.from_dict(state.get("config") or {}, where=str(path))
        if differences(saved, cfg):
            raise LompoError(
                f"{path}: not a checkpoint of {run} (its config differs from {cfg_path})"
            )
    if state.get("phase") == "model":
        raise LompoError(
            f"{path}: the run is still in its model phase and has no trained policy yet"
        )
    action_dim = len(dataset["action"]["names"])
    wm = WorldModel(cfg.model, action_dim)
    wm.load_state_dict(state["world_model"])
    feat = cfg.model.stoch + cfg.model.deter
    speed = speed_limit(cfg.agent, dataset["action"])
    actor = Actor(feat, action_dim, cfg.agent.hidden, cfg.agent.actor_layers, speed)
    # The acting policy: the weight average where the run kept one (agent.actor_ema).
    prefix = SAC.acting_prefix(cfg.agent)
    actor.load_state_dict(
        {k.removeprefix(prefix): v for k, v in state["sac"].items() if k.startswith(prefix)}
    )
    step = PolicyStep(wm, actor, cfg.agent.penalty).eval()
    step.requires_grad_(False)
    info = {
        "config": cfg.to_dict(),
        "dataset": dataset,
        "step": int(state["agent_step"]),
        "world_model_step": int(state.get("world_model_step", state["model_step"])),
        "world_model_check": {
            str(k): float(v) for k, v in (state.get("world_model_check") or {}).items()
        },
        "seed": cfg.seed,
        "checkpoint": str(path),
    }
    return step, info
