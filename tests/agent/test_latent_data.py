"""The latent data the policy learns from: window sampling, the penalty, its offset, the reward
bound, the behaviour and conservative terms, the actor's speed limit and the held-out selection
signals."""

from __future__ import annotations

import math

import pytest
import torch

from lompo_core.agent.replay import LatentBuffer, SequenceSampler
from lompo_core.agent.rollout import (
    data_uncertainty,
    encode_dataset,
    latent_step,
    model_rollouts,
    penalty_offset,
    rest_states,
)
from lompo_core.agent.sac import SAC, Actor, speed_limit
from lompo_core.agent.select import heldout_signals, imagined_success, open_loop_success
from lompo_core.config import AgentConfig, ModelConfig
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.model.rssm import State
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


def test_still_windows_hold_one_frame_under_zero_actions_and_only_where_asked(tiny_dataset):
    ds = EpisodeDataset(tiny_dataset)
    idx = list(range(len(ds)))
    plain = SequenceSampler(ds, idx, 8, seed=0).sample(64)
    same = SequenceSampler(ds, idx, 8, seed=0, still_fraction=0.0).sample(64)
    assert all((plain[k] == same[k]).all() for k in plain)
    batch = SequenceSampler(ds, idx, 8, seed=0, still_fraction=0.5).sample(400)
    held = (batch["image"] == batch["image"][:, :1]).all(axis=(1, 2, 3, 4))
    held &= (batch["action"] == 0).all(axis=(1, 2))
    assert 0.4 < held.mean() < 0.6, held.mean()
    assert batch["is_first"][held, 0].all() and not batch["is_first"][held, 1:].any()
    assert not batch["reward"][held].any() and not batch["is_terminal"][held].any()
    assert batch["mask"][held].all()
    # A held frame is never an episode's last (its success): at rest, nothing ends.
    last = {ds.load(i)["image"][-1].tobytes() for i in idx}
    assert not any(batch["image"][i, 0].tobytes() in last for i in held.nonzero()[0])


def test_rest_states_are_the_filter_of_each_frame_held_still_but_the_last(tiny_dataset):
    ds = EpisodeDataset(tiny_dataset)
    wm, _ = _model()
    idx = [0, 1]
    rest = rest_states(wm, ds, idx, 5, 3, torch.device("cpu"))
    assert rest.shape == (sum(int(ds.lengths[i]) - 1 for i in idx), wm.feat_dim)
    ep = ds.load(1)
    t = int(ds.lengths[1]) // 2
    held = torch.as_tensor(ep["image"][t : t + 1]).expand(5, 64, 64, 3)
    post = wm.encode_episode(held, torch.zeros(5, 3), 64, sample=False)
    assert torch.allclose(rest[int(ds.lengths[0]) - 1 + t], post.feat()[-1], atol=1e-5)
    # A frame held longer is another state: the count of still steps matters.
    assert not torch.allclose(rest[0], rest_states(wm, ds, [0], 2, 3, torch.device("cpu"))[0])


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
        model_rollouts(wm, actor, starts, 1, 5.0, "log_prob", out, u_offset=u_offset)
        return out.data["reward"][: len(out)], out.data["next_feat"][: len(out)]

    plain, feats = rewards(0.0)
    none, _ = rewards(1e9)
    r_hat = wm.reward_mean(feats)
    torch.testing.assert_close(none, r_hat)  # an offset above every u: no penalty at all
    assert bool((plain < none).all())  # the reference's penalty is positive everywhere


def test_penalty_offset_is_a_quantile_of_the_data_own_uncertainty():
    wm, _ = _model()
    buf = _real_buffer()
    u = data_uncertainty(wm, buf, "log_prob")
    offsets = {
        name: penalty_offset(wm, buf, AgentConfig(penalty_offset=name))
        for name in ("none", "data_median", "data_p90", "data_p99")
    }
    assert offsets["none"] == 0.0
    assert offsets["data_median"] == float(u.median())  # the value resumed runs recompute
    for name, q in (("data_p90", 0.9), ("data_p99", 0.99)):
        assert offsets[name] in u.tolist()  # a value of u itself
        assert abs(float((u <= offsets[name]).float().mean()) - q) <= 1 / len(u)
    assert offsets["data_median"] < offsets["data_p90"] < offsets["data_p99"]


def test_penalty_offset_is_calibrated_on_the_quantity_rollouts_are_charged():
    # u0 comes from data_uncertainty; a rollout step from the same state, action and head must
    # score the same u, at the same kind of next state (one head's mean, as the real buffer's
    # posterior means), or the offset shifts another quantity than the one it offsets.
    wm, _ = _model()
    buf = _real_buffer()
    u_data = data_uncertainty(wm, buf, "log_prob")
    feat, action = buf.data["feat"], buf.data["action"]
    heads = torch.randint(3, (64,), generator=torch.Generator().manual_seed(0))
    state, u_step = latent_step(wm, State(feat[:, :4], feat[:, 4:]), action, "log_prob", heads)
    torch.testing.assert_close(u_step, u_data)
    deter = wm.rssm.deter_step(feat[:, :4], feat[:, 4:], action)
    mean, _ = wm.rssm.prior_all(deter)
    torch.testing.assert_close(state.stoch, mean[heads, torch.arange(64)])
    # A sampled next state (what rollouts used to score) gives other values.
    assert not torch.allclose(wm.rssm.img_step_random_head(state, action, "log_prob")[1], u_data)


def test_model_rollout_states_are_head_means_and_reward_clip_bounds_r_hat():
    wm, actor = _model()
    starts = _real_buffer().data["feat"]
    with torch.no_grad():  # a reward head that pays far outside [0, 1]
        wm.reward[-1].bias.fill_(3.0)
    out = {}
    for clip in (False, True):
        torch.manual_seed(3)
        buf = LatentBuffer(1000, 20, 3, torch.device("cpu"))
        model_rollouts(wm, actor, starts, 2, 0.0, "log_prob", buf, reward_clip=clip)
        out[clip] = buf
    assert float(out[False].data["reward"][: len(out[False])].max()) > 1.5
    clipped = out[True].data["reward"][: len(out[True])]
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0
    first = out[True].data["next_feat"][:64]
    deter = wm.rssm.deter_step(starts[:, :4], starts[:, 4:], out[True].data["action"][:64])
    mean, _ = wm.rssm.prior_all(deter)  # [K, B, S]
    dist = (mean - first[:, :4].unsqueeze(0)).abs().amax(-1).amin(0).detach()
    assert float(dist.max()) < 1e-6  # every next state is exactly one head's mean


def test_success_ends_makes_r_hat_the_terminal_weight_and_bounds_the_held_out_return():
    wm, actor = _model()
    starts = _real_buffer().data["feat"]
    with torch.no_grad():  # a reward head that says "success" everywhere
        wm.reward[-1].bias.fill_(0.7)
        wm.reward[-1].weight.zero_()
    bufs = {}
    for ends in (False, True):
        torch.manual_seed(3)
        bufs[ends] = LatentBuffer(1000, 20, 3, torch.device("cpu"))
        model_rollouts(wm, actor, starts, 3, 0.0, "log_prob", bufs[ends], success_ends=ends)
    n = len(bufs[True])
    terminal = bufs[True].data["terminal"][:n]
    reward = bufs[True].data["reward"][:n]
    torch.testing.assert_close(terminal, torch.maximum(reward, bufs[False].data["terminal"][:n]))
    assert float(terminal.min()) >= 0.7 - 1e-6


def test_success_reward_pays_only_the_steps_the_continuation_head_ends():
    """A state next to success (r_hat 0.3, the continuation head saying "go on") pays on every
    step with r_hat as reward, nothing with success_reward; a state the head ends pays 1 once."""
    wm, actor = _model()
    starts = _real_buffer().data["feat"]
    paid = {}
    for p_end in (0.3, 0.9):
        with torch.no_grad():
            wm.reward[-1].weight.zero_()
            wm.reward[-1].bias.fill_(0.3)
            wm.cont[-1].weight.zero_()
            wm.cont[-1].bias.fill_(float(torch.logit(torch.tensor(1.0 - p_end))))
        for success_reward in (False, True):
            buf = LatentBuffer(1000, 20, 3, torch.device("cpu"))
            model_rollouts(wm, actor, starts, 3, 0.0, "log_prob", buf,
                           success_reward=success_reward)  # fmt: skip
            n = len(buf)
            paid[p_end, success_reward] = (buf.data["reward"][:n], buf.data["terminal"][:n])
    hover_reward, hover_terminal = paid[0.3, False]
    assert len(hover_reward) == 3 * len(starts) and float(hover_terminal.max()) == 0.0
    torch.testing.assert_close(hover_reward, torch.full_like(hover_reward, 0.3))
    reward, _ = paid[0.3, True]
    assert len(reward) == 3 * len(starts) and float(reward.abs().max()) == 0.0
    reward, terminal = paid[0.9, True]  # every rollout ends on its first step, paid 1
    assert len(reward) == len(starts)
    torch.testing.assert_close(reward, torch.ones_like(reward))
    torch.testing.assert_close(terminal, torch.ones_like(terminal))
    # The held-out return charges the same: 1 at the first step where the head ends, else 0.
    cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2, select_horizon=4,
                      lmbda=0.0, success_reward=True)  # fmt: skip
    sac = SAC(cfg, 20, 3)
    assert heldout_signals(wm, sac, _real_buffer(), cfg, 0.0)["offline/model_return"] == 1.0
    with torch.no_grad():
        wm.cont[-1].bias.fill_(float(torch.logit(torch.tensor(0.7))))
    assert heldout_signals(wm, sac, _real_buffer(), cfg, 0.0)["offline/model_return"] == 0.0


def test_success_threshold_ends_and_pays_only_above_it_in_rollouts_and_heldout_return():
    """P(end) 0.6 everywhere: at the default 0.5 every rollout ends on its first step, paid 1; at
    0.7 none ends and none is paid, in the rollouts and in the held-out return alike."""
    wm, actor = _model()
    starts = _real_buffer().data["feat"]
    with torch.no_grad():
        wm.cont[-1].weight.zero_()
        wm.cont[-1].bias.fill_(float(torch.logit(torch.tensor(0.4))))
    for threshold, ended in ((0.5, True), (0.7, False)):
        buf = LatentBuffer(1000, 20, 3, torch.device("cpu"))
        model_rollouts(wm, actor, starts, 3, 0.0, "log_prob", buf,
                       success_reward=True, end_threshold=threshold)  # fmt: skip
        reward, terminal = buf.data["reward"][: len(buf)], buf.data["terminal"][: len(buf)]
        assert len(buf) == (1 if ended else 3) * len(starts)
        assert float(reward.min()) == float(reward.max()) == float(terminal.max()) == float(ended)
        cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2, select_horizon=4, lmbda=0.0,
                          success_reward=True, success_threshold=threshold)  # fmt: skip
        signals = heldout_signals(wm, SAC(cfg, 20, 3), _real_buffer(), cfg, 0.0)
        assert signals["offline/model_return"] == signals["offline/terminal"] == float(ended)


def _sac_batch(n: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "feat": torch.randn(n, 20, generator=g),
        "action": torch.rand(n, 3, generator=g) * 2 - 1,
        "reward": torch.rand(n, generator=g),
        "next_feat": torch.randn(n, 20, generator=g),
        "terminal": torch.zeros(n),
    }


def _trained_sac(batch: dict, n_real: int, steps: int, **cfg) -> SAC:
    """A small SAC after ``steps`` updates on ``batch`` (the first ``n_real`` transitions real)."""
    torch.manual_seed(0)
    sac = SAC(AgentConfig(hidden=32, actor_layers=2, critic_layers=2, **cfg), 20, 3)
    opt = sac.make_optimizers()
    for _ in range(steps):
        sac.update(batch, opt, n_real)
    return sac


def test_behaviour_term_pulls_the_actor_to_the_real_halfs_actions_only():
    batch = _sac_batch()
    n_real = 32
    result = {}
    for w in (0.0, 10.0):
        sac = _trained_sac(batch, n_real, 150, actor_lr=1e-3, bc_weight=w)
        with torch.no_grad():
            mode = sac.actor.mode(batch["feat"])
        err = (mode - batch["action"]).square().sum(-1)
        result[w] = (float(err[:n_real].mean()), float(err[n_real:].mean()))
    assert result[10.0][0] < 0.5 * result[0.0][0], result  # the real half's actions are learnt
    assert result[10.0][0] < 0.5 * result[10.0][1], result  # not the model half's


def test_without_entropy_backup_the_critics_learn_the_task_return_only():
    """No reward anywhere: the soft target's entropy bonus alone makes Q positive; without it
    (``backup_entropy=False``) Q stays at the task's return, 0."""
    batch = _sac_batch() | {"reward": torch.zeros(64)}
    q = {}
    for backup in (True, False):
        sac = _trained_sac(
            batch,
            32,
            300,
            critic_lr=1e-3,
            alpha_lr=0.0,
            discount=0.9,
            tau=0.05,
            backup_entropy=backup,
        )
        with torch.no_grad():
            q[backup] = float(sac.critic.min(batch["feat"], batch["action"]).mean())
    assert q[True] > 0.5, q  # heading for alpha * H / (1 - discount)
    assert abs(q[False]) < 0.1, q


def test_heldout_signals_are_the_imagined_penalised_return_and_the_critics_value():
    wm, _ = _model()
    cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2, select_horizon=1, lmbda=2.0)
    sac = SAC(cfg, 20, 3)
    buf = _real_buffer()
    m = heldout_signals(wm, sac, buf, cfg, 0.1)
    assert m == heldout_signals(wm, sac, buf, cfg, 0.1)  # deterministic: a resume logs the same
    with torch.no_grad():  # horizon 1 by hand, with the signal's own head draws
        feat = buf.data["feat"]
        g = torch.Generator().manual_seed(0)
        a = sac.actor.mode(feat)
        state, u = latent_step(wm, State(feat[:, :4], feat[:, 4:]), a, "log_prob", generator=g)
        f = state.feat()
        ret = wm.reward_mean(f) - 2.0 * (u - 0.1).clamp(min=0.0)
        alive = (wm.cont_prob(f) >= 0.5).float()
        value = ret + cfg.discount * alive * sac.critic.min(f, sac.actor.mode(f))
    assert abs(m["offline/model_return"] - float(ret.mean())) < 1e-5
    assert abs(m["offline/model_value"] - float(value.mean())) < 1e-5
    # bc_mse: zero for a policy that plays the held-out episodes' own (constant) action.
    with torch.no_grad():
        sac.actor.net[-1].weight.zero_()
        sac.actor.net[-1].bias.zero_()
        sac.actor.net[-1].bias[:3] = 0.5
        buf.data["action"][:] = torch.tanh(torch.tensor(0.5))
    assert heldout_signals(wm, sac, buf, cfg, 0.1)["offline/bc_mse"] < 1e-10


def test_imagined_success_accumulates_the_terminal_probability_from_episode_starts():
    wm, actor = _model()
    with torch.no_grad():  # a continuation head that predicts success with p = 0.1 every step
        wm.cont[-1].weight.zero_()
        wm.cont[-1].bias.fill_(float(torch.logit(torch.tensor(0.9))))
    starts = torch.randn(3, 20)
    got = imagined_success(wm, actor, starts, horizon=10, samples=4, penalty="log_prob")
    assert got == pytest.approx(1 - 0.9**10, rel=1e-5)
    # In heldout_signals: from the episodes' first states, as long as the longest episode.
    cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2)
    sac = SAC(cfg, 20, 3)
    buf = LatentBuffer(12, 20, 3, torch.device("cpu"))
    lengths = (3, 7, 2)
    for n in lengths:
        buf.add(
            feat=torch.randn(n, 20), action=torch.zeros(n, 3), reward=torch.zeros(n),
            next_feat=torch.randn(n, 20), terminal=torch.zeros(n),
            first=(torch.arange(n) == 0).float(),
        )  # fmt: skip
    m = heldout_signals(wm, sac, buf, cfg, 0.0)
    assert m["offline/model_success"] == pytest.approx(1 - 0.9 ** max(lengths), rel=1e-5)
    with torch.no_grad():  # a head that predicts success on the first imagined step
        wm.cont[-1].weight.zero_()
        wm.cont[-1].bias.fill_(-30.0)
    assert heldout_signals(wm, sac, buf, cfg, 0.0)["offline/model_success"] == pytest.approx(1.0)


def test_open_loop_success_scores_the_imagined_outcome_of_the_logged_actions(tiny_dataset):
    wm, _ = _model()
    ds = EpisodeDataset(tiny_dataset)
    episodes = [0, 1, 2, 3]  # the tiny data alternate success and failure
    with torch.no_grad():  # a continuation head that predicts success with p = 0.1 every step
        wm.cont[-1].weight.zero_()
        wm.cont[-1].bias.fill_(float(torch.logit(torch.tensor(0.9))))
    m = open_loop_success(wm, ds, episodes, stride=5, samples=2, chunk=64, penalty="log_prob")
    assert m == open_loop_success(wm, ds, episodes, 5, 2, 64, "log_prob")  # deterministic
    # From step k of an episode of T frames, T - 1 - k imagined steps of the logged actions.
    p, y = [], []
    for i in episodes:
        t_len = int(ds.lengths[i])
        for k in range(0, t_len - 1, 5):
            p.append(1 - 0.9 ** (t_len - 1 - k))
            y.append(float(ds.episodes[i].success))
    p_t, y_t = torch.tensor(p), torch.tensor(y)
    assert m["heldout/open_loop_brier"] == pytest.approx(float((p_t - y_t).square().mean()), 1e-5)
    assert m["heldout/false_success"] == pytest.approx(float(p_t[y_t == 0].mean()), 1e-5)
    assert m["heldout/true_success"] == pytest.approx(float(p_t[y_t == 1].mean()), 1e-5)
    # No real frame reads as a success at p = 0.1: no false alarm, no detection.
    assert m["heldout/false_alarm"] == 0.0 and m["heldout/detection"] == 0.0
    with torch.no_grad():  # a model that foresees success after any actions at all
        wm.cont[-1].bias.fill_(-30.0)
    m = open_loop_success(wm, ds, episodes, 5, 2, 64, "log_prob")
    assert m["heldout/false_success"] == pytest.approx(1.0)
    assert m["heldout/false_alarm"] == 1.0 and m["heldout/detection"] == 1.0
    assert m["heldout/open_loop_brier"] == pytest.approx(float((y_t == 0).float().mean()))


def test_encoded_episodes_mark_their_first_state(tiny_dataset):
    wm, _ = _model()
    ds = EpisodeDataset(tiny_dataset)
    buf = LatentBuffer(10_000, 20, ds.action_dim, torch.device("cpu"))
    n = encode_dataset(wm, ds, [0, 1], buf, 64, torch.device("cpu"))
    first = torch.nonzero(buf.data["first"][:n]).flatten().tolist()
    assert first == [0, int(ds.lengths[0]) - 1]


def test_actor_ema_is_the_acting_policy_and_the_polyak_average_of_the_learner():
    batch = _sac_batch()
    torch.manual_seed(0)
    cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2, actor_lr=1e-3, actor_ema=0.9)
    sac = SAC(cfg, 20, 3)
    opt = sac.make_optimizers()
    assert sac.acting_actor is sac.actor_ema
    expected = [p.detach().clone() for p in sac.actor.parameters()]
    for _ in range(5):
        sac.update(batch, opt)
        for e, p in zip(expected, sac.actor.parameters(), strict=True):
            e.mul_(0.9).add_(0.1 * p.detach())
    for e, p in zip(expected, sac.actor_ema.parameters(), strict=True):
        assert torch.allclose(e, p, atol=1e-6)
    assert not torch.equal(sac.actor.net[0].weight, sac.actor_ema.net[0].weight)
    assert not any(p.requires_grad for p in sac.actor_ema.parameters())
    plain = SAC(AgentConfig(hidden=16), 20, 3)
    assert plain.acting_actor is plain.actor and not hasattr(plain, "actor_ema")


def test_conservative_term_lowers_q_off_the_logged_actions_of_the_real_half():
    batch = _sac_batch()
    n_real = 32
    probes = torch.rand(8, n_real, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    result = {}
    for w in (0.0, 2.0):
        sac = _trained_sac(batch, n_real, 200, critic_lr=1e-3, cql_weight=w)
        with torch.no_grad():
            feat = batch["feat"][:n_real]
            logged = sac.critic(feat, batch["action"][:n_real])[0]
            off = sac.critic(feat.expand(8, -1, -1), probes)[0].mean(0)
        result[w] = float((logged - off).mean())
        assert ("agent/cql_gap" in sac.update(batch, sac.make_optimizers(), n_real)) == (w > 0)
    # Without the term the critic has no reason to prefer the logged actions; with it, they
    # stand clearly above random ones on the dataset's states.
    assert result[2.0] > 0.5 and result[2.0] > result[0.0] + 0.5, result


def test_conservative_gap_is_the_soft_maximum_over_the_probes_minus_the_logged_q():
    batch = _sac_batch()
    torch.manual_seed(0)
    sac = SAC(AgentConfig(hidden=16, critic_layers=2, cql_weight=1.0, cql_samples=3), 20, 3)
    feat, action = batch["feat"], batch["action"]
    torch.manual_seed(7)
    (q1, q2), gap = sac._conservative_q(feat, action, 16)
    plain = sac.critic(feat, action)
    assert torch.allclose(q1, plain[0]) and torch.allclose(q2, plain[1])
    torch.manual_seed(7)
    with torch.no_grad():
        own, _ = sac.actor(feat[:16])
        uniform = torch.rand(3, 16, 3) * 2 - 1
        expected = 0.0
        for q in sac.critic.q1, sac.critic.q2:
            values = [q(torch.cat([feat[:16], a], -1)).squeeze(-1) for a in (*uniform, own)]
            soft = torch.logsumexp(torch.stack(values), 0) - math.log(4)
            logged = q(torch.cat([feat[:16], action[:16]], -1)).squeeze(-1)
            expected += float((soft - logged).mean())
    assert float(gap.detach()) == pytest.approx(expected, abs=1e-5)


def test_more_critics_take_the_minimum_over_all_of_them_and_value_lower():
    batch = _sac_batch()
    cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2, critics=4, backup_entropy=False)
    sac = SAC(cfg, 20, 3)
    assert [name for name, _ in sac.critic.named_children()] == ["q1", "q2", "q3", "q4"]
    torch.manual_seed(3)
    with torch.no_grad():
        next_action, _ = sac.actor(batch["next_feat"])
        qs = torch.stack(sac.critic_target(batch["next_feat"], next_action))
    expected = batch["reward"] + cfg.discount * qs.min(0).values
    torch.manual_seed(3)
    metrics = sac.update(batch, sac.make_optimizers())
    torch.testing.assert_close(metrics["agent/target"], expected.mean())
    # Pessimism grows with the number of critics: where the data pins nothing down (the actor's
    # own actions), six critics value lower than two.
    value = {}
    for n in (2, 6):
        trained = _trained_sac(batch, 32, 200, critic_lr=1e-3, critics=n)
        with torch.no_grad():
            feat = batch["feat"]
            value[n] = float(trained.critic.min(feat, trained.actor.mode(feat)).mean())
    assert value[6] < value[2], value


def test_critic_norm_puts_a_layer_norm_before_each_activation():
    cfg = AgentConfig(hidden=16, critic_layers=2, critic_norm=True)
    norms = [m for m in SAC(cfg, 20, 3).critic.q1 if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in SAC(AgentConfig(), 20, 3).critic.q1)


def test_bc_learner_regresses_the_mode_onto_the_logged_actions_and_leaves_the_critics():
    batch = _sac_batch()
    batch["action"] = torch.tanh(batch["feat"][:, :3])  # a function of the state
    torch.manual_seed(0)
    sac = SAC(AgentConfig(hidden=32, actor_layers=2, critic_layers=2, learner="bc"), 20, 3)
    critic = {k: v.clone() for k, v in sac.critic.state_dict().items()}
    opt = sac.make_optimizers()
    first = float(sac.update(batch, opt)["agent/bc_mse"])
    for _ in range(200):
        last = float(sac.update(batch, opt)["agent/bc_mse"])
    with torch.no_grad():
        err = (sac.actor.mode(batch["feat"]) - batch["action"]).square().sum(-1).mean()
    assert last < 0.2 * first and abs(float(err) - last) < 0.05, (first, last, float(err))
    assert all(torch.equal(v, sac.critic.state_dict()[k]) for k, v in critic.items())


def test_the_acting_actor_is_the_uniform_average_over_the_swa_share():
    batch = _sac_batch()
    torch.manual_seed(0)
    cfg = AgentConfig(hidden=16, actor_layers=2, critic_layers=2, steps=8, actor_ema=0.9,
                      actor_swa=0.375)  # fmt: skip
    sac = SAC(cfg, 20, 3)
    opt = sac.make_optimizers()
    assert [sac.average_rate(s) for s in range(1, 9)] == pytest.approx(
        [0.1] * 5 + [1, 1 / 2, 1 / 3]
    )
    learnt = []
    for step in range(1, 9):
        sac.update(batch, opt, step=step)
        learnt.append(torch.cat([p.detach().flatten() for p in sac.actor.parameters()]))
    acting = torch.cat([p.flatten() for p in sac.actor_ema.parameters()])
    torch.testing.assert_close(acting, torch.stack(learnt[5:]).mean(0))  # updates 6, 7 and 8
    assert not torch.allclose(acting, learnt[-1])


def test_behaviour_term_on_successes_reads_only_the_successful_episodes_transitions():
    batch = _sac_batch()
    n = len(batch["feat"])
    batch["success"] = (torch.arange(n) < n // 4).float()  # the first quarter succeeded
    result = {}
    for only in (False, True):
        torch.manual_seed(0)
        cfg = AgentConfig(hidden=32, actor_layers=2, critic_layers=2, actor_lr=1e-3,
                          bc_weight=10.0, bc_successful=only)  # fmt: skip
        sac = SAC(cfg, 20, 3)
        opt = sac.make_optimizers()
        for _ in range(150):
            sac.update(batch, opt)
        with torch.no_grad():
            err = (sac.actor.mode(batch["feat"]) - batch["action"]).square().sum(-1)
        result[only] = (float(err[: n // 4].mean()), float(err[n // 4 :].mean()))
    assert result[True][0] < 0.5 * result[True][1], result  # successes learnt, the rest not
    assert result[True][0] < result[False][0], result


def test_speed_limit_scales_as_the_controller_does():
    """m/s: the physical norm is scaled down to the limit, the direction kept, a slower action
    left alone; rad/s: each joint within the limit; 0 or a unit the runtime cannot limit: off."""
    from lompo_core.actions import ActionScaling
    from lompo_core.runtime import Controller, ControllerConfig
    from lompo_core.runtime.result import RuntimeResult

    linear = {"names": ["x", "y", "z"], "unit": "m/s", "max": [0.8, 0.8, 0.4]}
    limit = speed_limit(AgentConfig(max_linear_speed=0.5), linear)
    fast, slow = torch.tensor([1.0, -1.0, 1.0]), torch.tensor([0.3, 0.0, -0.2])
    scale = torch.tensor(linear["max"])
    out = limit(torch.stack([fast, slow]))
    assert (out[0] * scale).norm() == pytest.approx(0.5, rel=2e-3)
    assert (out[0] * scale).norm() < 0.5
    assert torch.allclose(out[0] / out[0].norm(), fast / fast.norm())
    assert torch.equal(out[1], slow)
    # The controller with the same limit finds nothing to slow down in what the actor gives.
    scaling = ActionScaling(("x", "y", "z"), "m/s", tuple(linear["max"]))
    c = Controller(ControllerConfig(max_linear_speed=0.5), scaling, float("inf"))
    for action in limit(torch.rand(64, 3) * 2 - 1).numpy():
        result = RuntimeResult(ok=True, reason="ok", action=action, uncertainty=0.0)
        decision = c.on_result(result, 0.0)
        assert decision.reason == "ok" and not decision.intervened, decision.reason

    joint = {"names": ["a", "b"], "unit": "rad/s", "max": [2.0, 0.5]}
    out = speed_limit(AgentConfig(max_joint_speed=1.0), joint)(torch.tensor([[1.0, -1.0]]))
    assert torch.allclose(out, torch.tensor([[0.5 * (1 - 1e-3), -1.0]]))
    assert speed_limit(AgentConfig(), linear) is None
    assert speed_limit(AgentConfig(max_linear_speed=0.5), linear | {"unit": ""}) is None


def test_actor_samples_and_mode_are_within_the_limit_and_learn_through_it():
    cfg = {"unit": "m/s", "max": [0.8, 0.8, 0.8]}
    torch.manual_seed(0)
    actor = Actor(20, 3, 16, 2, speed_limit(AgentConfig(max_linear_speed=0.2), cfg))
    feat = torch.randn(256, 20) * 3
    sample, logp = actor(feat)
    assert torch.isfinite(logp).all()
    for action in (sample, actor.mode(feat)):
        assert ((action * 0.8).norm(dim=-1) <= 0.2).all()
    sample.sum().backward()  # the actor's loss reaches its weights through the limit
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
