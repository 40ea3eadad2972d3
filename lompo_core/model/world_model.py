"""The world model: encoder, RSSM, decoder, reward and continuation heads, and the ELBO."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lompo_core.config import ModelConfig
from lompo_core.model.dists import bernoulli_log_prob, gaussian_kl, unit_normal_log_prob
from lompo_core.model.networks import Decoder, Encoder, image_to_input, mlp
from lompo_core.model.rssm import RSSM, State

# In a refit of the continuation head (WorldModel.refit_cont) an episode's end, about one
# transition in a hundred in the drawer data, counts this many times in the loss.
REFIT_END_WEIGHT = 4.0


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

    def refit_cont(
        self,
        feat: torch.Tensor,
        terminal: torch.Tensor,
        steps: int,
        seed: int,
        batch: int = 256,
        lr: float = 3e-4,
    ) -> dict[str, float]:
        """Fit the continuation head afresh on ``feat`` [N, F] (``terminal`` [N], 1 where the
        episode ends): ``steps`` Adam updates on batches drawn with ``seed``, an end weighted
        ``REFIT_END_WEIGHT``. The global random stream is left as it was.

        The model phase fits the head on posterior samples of short windows; the policy reads it
        on posterior means of whole episodes (``encode_dataset``, the exported filter). Fitted on
        those, it reads a drawer at rest short of closed as not ended (docs/training.md)."""
        end = terminal.reshape(-1) > 0.5
        target = (~end).to(feat.dtype)  # the head's output is the logit of P(continue)
        weight = 1.0 + (REFIT_END_WEIGHT - 1.0) * end.to(feat.dtype)
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            for m in self.cont.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
            opt = torch.optim.Adam(self.cont.parameters(), lr=lr)
            for _ in range(steps):
                i = torch.randint(len(feat), (batch,), generator=g).to(feat.device)
                logits = self.cont(feat[i]).squeeze(-1)
                loss = F.binary_cross_entropy_with_logits(logits, target[i], weight[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        ends = self.ends(feat)
        return {
            "refit/loss": float(loss.detach()) if steps else float("nan"),
            "refit/ends_read": float(ends[end].float().mean()) if end.any() else float("nan"),
            "refit/false_ends": float(ends[~end].float().mean()) if (~end).any() else 0.0,
        }
