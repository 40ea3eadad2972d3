"""The world model: encoder, RSSM, decoder, reward and continuation heads, and the ELBO."""

from __future__ import annotations

import torch
from torch import nn

from lompo_core.config import ModelConfig
from lompo_core.model.dists import bernoulli_log_prob, gaussian_kl, unit_normal_log_prob
from lompo_core.model.networks import Decoder, Encoder, image_to_input, mlp
from lompo_core.model.rssm import RSSM, State


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig, action_dim: int) -> None:
        super().__init__()
        self.cfg, self.action_dim = cfg, action_dim
        self.encoder = Encoder(cfg.depth)
        self.rssm = RSSM(
            action_dim,
            self.encoder.out_dim,
            cfg.deter,
            cfg.stoch,
            cfg.hidden,
            cfg.heads,
            cfg.min_std,
        )
        self.feat_dim = cfg.stoch + cfg.deter
        self.decoder = Decoder(self.feat_dim, cfg.depth)
        self.reward = mlp(self.feat_dim, cfg.hidden, 1, cfg.reward_layers)
        # The data ends episodes at success: the continuation head lets rollouts stop there too.
        self.cont = mlp(self.feat_dim, cfg.hidden, 1, cfg.cont_layers)

    def forward(
        self, batch: dict[str, torch.Tensor], heads: list[int]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negative ELBO of a batch of sequences, masked and averaged over batch x time.

        ``batch``: image uint8 [B,T,64,64,3], action [B,T,A], reward [B,T], is_first and
        is_terminal bool [B,T], mask float [B,T] (0 on padding). ``heads[t]``: the prior head of
        step t. It is ``forward`` so that DistributedDataParallel sees the whole loss.
        """
        image = batch["image"]
        post = self.rssm.observe(self.encoder(image), batch["action"], batch["is_first"], heads)
        feat = torch.cat([post["stoch"], post["deter"]], -1)
        image_lp = unit_normal_log_prob(image_to_input(image), self.decoder(feat), 3)
        head_feat = feat.detach() if self.cfg.detach_heads else feat
        reward_lp = unit_normal_log_prob(batch["reward"], self.reward(head_feat).squeeze(-1), 0)
        cont_target = (~batch["is_terminal"]).to(feat.dtype)
        cont_logits = self.cont(head_feat).squeeze(-1)
        cont_lp = bernoulli_log_prob(cont_logits, cont_target)
        kl = gaussian_kl(post["post_mean"], post["post_std"], post["prior_mean"], post["prior_std"])
        per_step = (
            self.cfg.kl_scale * kl
            - image_lp
            - self.cfg.reward_scale * reward_lp
            - self.cfg.cont_scale * cont_lp
        )
        mask = batch["mask"]
        n = mask.sum().clamp(min=1.0)

        def avg(x: torch.Tensor) -> torch.Tensor:
            return (x * mask).sum() / n

        loss = avg(per_step)
        with torch.no_grad():
            cont_acc = avg(((cont_logits > 0).to(feat.dtype) == cont_target).to(feat.dtype))
            metrics = {
                "model/loss": loss.detach(),
                "model/kl": avg(kl),
                "model/image_nll": avg(-image_lp),
                "model/reward_nll": avg(-reward_lp),
                "model/cont_nll": avg(-cont_lp),
                "model/cont_acc": cont_acc,
                "model/post_std": avg(post["post_std"].mean(-1)),
            }
        return loss, metrics

    @torch.no_grad()
    def encode_episode(
        self, image: torch.Tensor, action: torch.Tensor, chunk: int, sample: bool = True
    ) -> State:
        """Posterior states [T, ...] of one episode (image [T,64,64,3], action [T,A]), encoded in
        chunks so that memory stays bounded for long episodes."""
        t_len = image.shape[0]
        state = self.rssm.initial(1, image.device)
        stochs, deters = [], []
        for s in range(0, t_len, chunk):
            e = min(s + chunk, t_len)
            embed = self.encoder(image[None, s:e])
            is_first = torch.zeros(1, e - s, dtype=torch.bool, device=image.device)
            is_first[0, 0] = s == 0
            # The posterior does not read the prior heads: which head is named does not matter.
            out = self.rssm.observe(
                embed, action[None, s:e], is_first, [0] * (e - s), state, sample=sample
            )
            state = State(out["stoch"][:, -1], out["deter"][:, -1])
            stochs.append(out["stoch"][0])
            deters.append(out["deter"][0])
        return State(torch.cat(stochs), torch.cat(deters))

    @torch.no_grad()
    def reward_mean(self, feat: torch.Tensor) -> torch.Tensor:
        return self.reward(feat).squeeze(-1)

    @torch.no_grad()
    def cont_prob(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cont(feat).squeeze(-1))

    @torch.no_grad()
    def ends(self, feat: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Where the continuation head calls the state terminal (P(end) = 1 - P(continue) above
        ``threshold``): where model rollouts stop and the held-out signals count an imagined or
        real success."""
        return self.cont_prob(feat) < 1.0 - threshold
