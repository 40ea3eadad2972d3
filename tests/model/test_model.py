import dataclasses
import math

import pytest
import torch
from torch import distributions as D

from lompo_core.config import resolve
from lompo_core.model.dists import gaussian_kl, gaussian_log_prob, unit_normal_log_prob
from lompo_core.model.networks import Decoder, Encoder
from lompo_core.model.policy_step import PolicyStep
from lompo_core.model.rssm import uncertainty
from lompo_core.model.world_model import WorldModel


def _cfg():
    return resolve("debug").model


def test_gaussian_kl_and_log_prob_match_closed_forms():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    sq, sp = torch.rand(5, 4, generator=g) + 0.1, torch.rand(5, 4, generator=g) + 0.1
    ref = D.kl_divergence(D.Normal(mq, sq), D.Normal(mp, sp)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), ref)
    # 1-D by hand: KL(N(0,1) || N(1,2)) = log 2 + (1 + 1) / 8 - 1/2
    one = gaussian_kl(torch.zeros(1), torch.ones(1), torch.ones(1), 2 * torch.ones(1))
    assert one.item() == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-6)
    assert gaussian_kl(mq, sq, mq, sq).abs().max() < 1e-6
    x = torch.randn(5, 4, generator=g)
    torch.testing.assert_close(gaussian_log_prob(x, mq, sq), D.Normal(mq, sq).log_prob(x).sum(-1))
    img = torch.randn(2, 3, 4, 4, generator=g)
    torch.testing.assert_close(
        unit_normal_log_prob(img, torch.zeros_like(img), 3),
        D.Normal(0.0, 1.0).log_prob(img).flatten(1).sum(-1),
    )


def test_shapes():
    cfg = _cfg()
    b, t, a = 2, 5, 3
    wm = WorldModel(cfg, a)
    image = torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8)
    embed = wm.encoder(image)
    assert embed.shape == (b, t, 32 * cfg.depth)
    assert Encoder(32)(image[:, 0]).shape == (b, 1024)  # the reference's 1024 at depth 32
    assert Decoder(10, 32)(torch.zeros(b, t, 10)).shape == (b, t, 3, 64, 64)
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    out = wm.rssm.observe(embed, torch.rand(b, t, a), is_first, [0, 1, 2, 0, 1])
    assert out["stoch"].shape == (b, t, cfg.stoch) and out["deter"].shape == (b, t, cfg.deter)
    assert out["prior_mean"].shape == (b, t, cfg.stoch)
    mean, std = wm.rssm.prior_all(out["deter"][:, 1])
    assert mean.shape == (cfg.heads, b, cfg.stoch) and bool((std > cfg.min_std - 1e-6).all())
    m1, s1 = wm.rssm.prior_one(out["deter"][:, 1], 1)
    torch.testing.assert_close(m1, mean[1])
    torch.testing.assert_close(s1, std[1])
    batch = {
        "image": image,
        "action": torch.rand(b, t, a),
        "reward": torch.zeros(b, t),
        "is_first": is_first,
        "is_terminal": torch.zeros(b, t, dtype=torch.bool),
        "mask": torch.ones(b, t),
    }
    loss, metrics = wm(batch, [0] * t)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in wm.parameters())  # every head's tensor gets a gradient


def _heads(k=5, b=8, s=6, spread=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean0, std0 = torch.randn(1, b, s, generator=g), torch.rand(1, b, s, generator=g) + 0.5
    mean = mean0 + spread * torch.randn(k, b, s, generator=g)
    std = std0 * torch.exp(spread * torch.randn(k, b, s, generator=g))
    return mean, std, mean0[0] + std0[0] * torch.randn(b, s, generator=g)


@pytest.mark.parametrize("kind", ["log_prob", "mean"])
def test_penalty_zero_when_heads_agree_and_grows_with_disagreement(kind):
    mean, std, x = _heads(spread=0.0)
    assert uncertainty(mean, std, x, kind).abs().max() < 1e-6  # float rounding only
    values = [uncertainty(*_heads(spread=s), kind).mean().item() for s in (0.01, 0.1, 0.5, 2.0)]
    assert values == sorted(values) and values[0] > 0.0


def test_penalty_log_prob_is_std_over_heads():
    mean, std, x = _heads(spread=0.3)
    lp = torch.stack([D.Normal(mean[k], std[k]).log_prob(x).sum(-1) for k in range(len(mean))])
    torch.testing.assert_close(uncertainty(mean, std, x), lp.std(0, unbiased=False))


def test_policy_step_shapes_range_and_determinism():
    from lompo_core.agent.sac import Actor

    cfg = _cfg()
    torch.manual_seed(0)
    wm = WorldModel(cfg, 3)
    actor = Actor(cfg.stoch + cfg.deter, 3, 16, 2)
    with torch.no_grad():  # a large output layer drives tanh to its bounds: range must hold
        actor.net[-1].weight.mul_(100.0)
    step = PolicyStep(wm, actor).eval()
    assert (step.action_dim, step.deter_dim, step.stoch_dim) == (3, cfg.deter, cfg.stoch)
    b = 4
    image = torch.randint(0, 256, (b, 64, 64, 3), dtype=torch.uint8)
    args = (image, torch.rand(b, 3) * 2 - 1, torch.zeros(b, cfg.deter), torch.zeros(b, cfg.stoch))
    with torch.no_grad():
        out1, out2 = step(*args), step(*args)
    action, deter, stoch, u, surprise, rec_error, patch_error = out1
    assert (
        action.shape == (b, 3) and deter.shape == (b, cfg.deter) and stoch.shape == (b, cfg.stoch)
    )
    assert u.shape == (b,) and bool((u >= 0).all())
    # The image signals of the OOD gate: a KL and mean squared errors, one per row; the worst
    # 8x8 patch's error is at least the image-wide mean of the patches.
    for signal in (surprise, rec_error, patch_error):
        assert signal.shape == (b,) and bool((signal >= 0).all())
    assert bool((patch_error >= rec_error * (1 - 1e-6)).all())
    assert action.dtype == torch.float32 and bool((action.abs() <= 1.0).all())
    for x, y in zip(out1, out2, strict=True):
        assert torch.equal(x, y)
    # Batch rows are independent: row 0 alone gives the same result.
    with torch.no_grad():
        single = step(*(a[:1] for a in args))
    for x, y in zip(single, out1, strict=True):
        torch.testing.assert_close(x[0], y[0])


@pytest.mark.parametrize("detach", [False, True])
def test_detach_heads_keeps_the_success_heads_from_shaping_the_state(detach):
    """With model.detach_heads the reward and continuation losses reach only their own heads."""
    b, t, a = 2, 4, 3
    is_first = torch.zeros(b, t, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {
        "image": torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8),
        "action": torch.rand(b, t, a),
        "reward": torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0] * 4]),
        "is_first": is_first,
        "is_terminal": torch.tensor([[False, False, False, True], [False] * 4]),
        "mask": torch.ones(b, t),
    }
    torch.manual_seed(0)
    wm = WorldModel(dataclasses.replace(_cfg(), detach_heads=detach), a)

    def grads(head_scale: float) -> list[torch.Tensor]:
        wm.cfg = dataclasses.replace(wm.cfg, reward_scale=head_scale, cont_scale=head_scale)
        torch.manual_seed(1)  # the same posterior samples in both passes
        loss, _ = wm(batch, [0] * t)
        return list(torch.autograd.grad(loss, [*wm.encoder.parameters(), *wm.cont.parameters()]))

    with_heads, without_heads = grads(10.0), grads(0.0)
    n_enc = len(list(wm.encoder.parameters()))
    assert all(float(g.abs().sum()) > 0 for g in with_heads[n_enc:])  # the head learns either way
    pairs = zip(with_heads[:n_enc], without_heads[:n_enc], strict=True)
    moved = sum(float((g1 - g0).abs().sum()) for g1, g0 in pairs)
    assert (moved == 0.0) == detach


def test_refit_cont_learns_the_ends_given_and_leaves_the_rest_as_it_was():
    wm = WorldModel(_cfg(), 3)
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2000, wm.feat_dim, generator=g)
    terminal = (feat[:, 0] > 2.0).float()  # ~2% ends, on one side of a plane
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    rng = torch.get_rng_state()
    m = wm.refit_cont(feat, terminal, 400, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    changed = {k for k, v in wm.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("cont.") for k in changed)
    ends = wm.ends(feat)
    assert m["refit/ends_read"] == float(ends[terminal > 0].float().mean()) > 0.8
    assert m["refit/false_ends"] == float(ends[terminal == 0].float().mean()) < 0.02
    again = WorldModel(_cfg(), 3)
    again.load_state_dict(before)
    again.refit_cont(feat, terminal, 400, seed=3)
    pairs = zip(again.cont.parameters(), wm.cont.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
