"""The latent data the policy learns from: window sampling, the penalty and its offset."""

from __future__ import annotations

import torch

from lompo_core.agent.replay import LatentBuffer, SequenceSampler
from lompo_core.agent.rollout import data_uncertainty, model_rollouts
from lompo_core.agent.sac import Actor
from lompo_core.config import ModelConfig
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.model.world_model import WorldModel


def test_final_frames_are_sampled_as_often_as_the_middle(tiny_dataset):
    ds = EpisodeDataset(tiny_dataset)
    length = 8
    sampler = SequenceSampler(ds, list(range(len(ds))), length, seed=0)
    batch = sampler.sample(4000)
    # Success is the last frame of an episode: it must not be rarer in training windows than a
    # typical frame, or the reward and continuation heads never learn it.
    terminal_frames = sum(bool(ds.load(i)["is_terminal"].any()) for i in range(len(ds)))
    assert terminal_frames > 0
    windows_with_terminal = batch["is_terminal"].any(axis=1).mean()
    # If every frame were equally likely to be in a window, this is the expected rate.
    uniform = length * terminal_frames / ds.total_steps
    assert windows_with_terminal >= uniform, (windows_with_terminal, uniform)


def _model() -> tuple[WorldModel, Actor]:
    torch.manual_seed(0)
    cfg = ModelConfig(depth=4, deter=16, stoch=4, hidden=16, heads=3)
    return WorldModel(cfg, 3), Actor(cfg.stoch + cfg.deter, 3, 16, 2)


def _real_buffer(n: int = 64) -> LatentBuffer:
    buf = LatentBuffer(n, 20, 3, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    buf.add(
        feat=torch.randn(n, 20, generator=g),
        action=torch.rand(n, 3, generator=g) * 2 - 1,
        reward=torch.zeros(n),
        next_feat=torch.randn(n, 20, generator=g),
        terminal=torch.zeros(n),
    )
    return buf


def test_data_uncertainty_is_deterministic_and_nonnegative():
    wm, _ = _model()
    buf = _real_buffer()
    u1, u2 = data_uncertainty(wm, buf, "log_prob"), data_uncertainty(wm, buf, "log_prob")
    assert u1.shape == (64,) and torch.equal(u1, u2) and bool((u1 >= 0).all())
    torch.testing.assert_close(data_uncertainty(wm, buf, "log_prob", chunk=10), u1)


def test_penalty_offset_removes_in_distribution_penalty():
    wm, actor = _model()
    starts = _real_buffer().data["feat"]

    def rewards(u_offset: float) -> torch.Tensor:
        torch.manual_seed(3)
        out = LatentBuffer(1000, 20, 3, torch.device("cpu"))
        model_rollouts(wm, actor, starts, 1, 5.0, "log_prob", out, u_offset)
        return out.data["reward"][: len(out)], out.data["next_feat"][: len(out)]

    plain, feats = rewards(0.0)
    none, _ = rewards(1e9)
    r_hat = wm.reward_mean(feats)
    torch.testing.assert_close(none, r_hat)  # an offset above every u: no penalty at all
    assert bool((plain < none).all())  # the reference's penalty is positive everywhere
