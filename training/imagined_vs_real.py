"""Where a world model misleads its policy: the policy's real sim episodes beside the model's view.

    python training/imagined_vs_real.py RUN CHECKPOINT [--episodes 20] [--seed 2000]
        [--figure PNG --figure-seed S --t0 20] [--image-size 128]

A research diagnostic (it needs the simulator, so a robot team cannot run it; nothing in
training reads it). The checkpoint's acting policy runs in the sim as exported (posterior means,
the actor's mode; no controller), and on each episode these readings of the same world model are
compared with what really happened:

- ``read``: the continuation head on the real frames (posterior-filtered): the largest P(success)
  it reads anywhere in the episode. High in a failed episode: the success detector errs on the
  states the policy visits.
- ``openloop``: from every 10th real state, the model replays the policy's actual remaining
  actions (a random prior head per step, 8 draws): the share of draws in which an imagined step
  ends in success as in the rollouts (P(end) above ``agent.success_threshold``). High in a failed
  episode: the model imagines those actions closing the drawer.
- ``closedloop``: the policy acting in imagination from the same states (60 steps,
  ``select.imagined_success``, the run's own ``offline/model_success``: P(end) accumulated).
- ``idle``: as ``openloop`` with the hand held still (zero action, for the held-out signals'
  ``agent.select_horizon`` steps, 15 in the presets). High in a failed episode: the model ends
  the episode in success where no motion does, and pays the policy for staying where it is.
- ``push``: the same with a steady push towards the closed drawer (+0.4 on the y axis, the
  drawer's axis in the sim). High where ``idle`` is low: the model knows the drawer needs a push.
- ``reverse``: the same with the policy's own action at that state reversed and held.

Per episode also the hand's height and the drawer handle's final y (Meta-World's observation;
the drawer is closed at ~0.69) and the mean |action|. ``--figure`` draws one episode's real
frames beside the model's decoded open-loop imagination of the same actions from step ``t0``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from lompo_core.agent import checkpoint
from lompo_core.agent.rollout import latent_step
from lompo_core.agent.select import imagined_success
from lompo_core.config import Config
from lompo_core.image import Preprocessing, preprocess
from lompo_core.model.policy_step import PolicyStep, load_policy_step
from lompo_core.model.rssm import State
from lompo_core.model.world_model import WorldModel
from lompo_core.sim import DrawerCloseSim

KEYS = (
    "read",
    "openloop",
    "closedloop",
    "idle",
    "push",
    "reverse",
    "u",
    "hand_z",
    "handle_y_end",
    "action_abs",
)


def run_episode(step: PolicyStep, sim: DrawerCloseSim, prep: Preprocessing, seed: int) -> dict:
    """One sim episode of the policy: its model images, posterior features, actions (``action[t]``
    taken after frame t), u, hand positions and drawer handle positions."""
    obs = sim.reset(seed)
    deter, stoch = torch.zeros(1, step.deter_dim), torch.zeros(1, step.stoch_dim)
    prev = torch.zeros(1, step.action_dim)
    ep: dict[str, list] = {k: [] for k in ("image", "feat", "action", "u", "hand", "handle")}
    for _ in range(sim.max_steps):
        image = preprocess(obs.image, prep)
        action, deter, stoch, u, *_ = step(torch.as_tensor(image)[None], prev, deter, stoch)
        for key, value in zip(ep, (image, torch.cat([stoch, deter], -1)[0], action[0],
                                   float(u[0]), obs.state[0:3], obs.state[4:7]), strict=True):  # fmt: skip
            ep[key].append(value)
        obs = sim.step(action[0].numpy())
        prev = action
        if obs.terminal or obs.truncated:
            break
    return ep | {"success": bool(obs.success)}


def replay(
    wm: WorldModel,
    cfg: Config,
    feat: torch.Tensor,
    actions: torch.Tensor,
    samples: int,
    g: torch.Generator,
) -> torch.Tensor:
    """The share of draws per start state [N] in which an imagined step of ``actions``
    [N, H, A], replayed from ``feat`` [N, F] (a random prior head per step and draw), ends in
    success as a model rollout's step does (``WorldModel.ends`` at the run's threshold). Not the
    continuation head's P(end) summed over the steps: a state read at P(end) 0.1 adds up to 0.8
    over 15 steps without any imagined motion."""
    s_dim = cfg.model.stoch
    f = feat.repeat_interleave(samples, 0)
    actions = actions.repeat_interleave(samples, 0)
    state = State(f[:, :s_dim], f[:, s_dim:])
    ended = torch.zeros(len(f), dtype=torch.bool)
    for j in range(actions.shape[1]):
        state, _ = latent_step(wm, state, actions[:, j], cfg.agent.penalty, generator=g)
        ended |= wm.ends(state.feat(), cfg.agent.success_threshold)
    return ended.float().view(-1, samples).mean(1)


def readings(wm: WorldModel, cfg: Config, actor: torch.nn.Module, ep: dict, g) -> dict:
    feat, action = torch.stack(ep["feat"]), torch.stack(ep["action"])
    starts = list(range(0, max(len(feat) - 1, 1), 10))
    openloop = [replay(wm, cfg, feat[i : i + 1], action[i:][None], 8, g) for i in starts]
    still = torch.zeros(len(starts), cfg.agent.select_horizon, action.shape[-1])
    back = -action[starts][:, None].expand(-1, cfg.agent.select_horizon, -1)
    push = still.clone()
    push[..., 1] = 0.4
    hand, handle = np.array(ep["hand"]), np.array(ep["handle"])
    return {
        "success": ep["success"],
        "steps": len(feat),
        "read": float((1.0 - wm.cont_prob(feat)).max()),
        "openloop": float(torch.cat(openloop).mean()),
        "closedloop": imagined_success(wm, actor, feat[starts], 60, 8, cfg.agent.penalty),
        "idle": float(replay(wm, cfg, feat[starts], still, 8, g).mean()),
        "push": float(replay(wm, cfg, feat[starts], push, 8, g).mean()),
        "reverse": float(replay(wm, cfg, feat[starts], back, 8, g).mean()),
        "u": float(np.mean(ep["u"])),
        "hand_z": float(hand[:, 2].mean()),
        "handle_y_end": float(handle[-1, 1]),
        "action_abs": float(action.abs().mean()),
    }


def figure(wm: WorldModel, cfg: Config, ep: dict, t0: int, path: Path) -> None:
    """Real frames (top) and the decoded open-loop imagination of the same actions from ``t0``
    (bottom, prior head 0), with the handle's y and the imagined P(success) so far."""
    s_dim, n = cfg.model.stoch, len(ep["feat"])
    f = ep["feat"][t0][None]
    state = State(f[:, :s_dim], f[:, s_dim:])
    imagined, p_success, alive, success = {t0: f}, {t0: 0.0}, 1.0, 0.0
    for t in range(t0 + 1, n):
        state, _ = latent_step(wm, state, ep["action"][t - 1][None], cfg.agent.penalty,
                               heads=torch.zeros(1, dtype=torch.long))  # fmt: skip
        imagined[t] = state.feat()
        p = float(1.0 - wm.cont_prob(imagined[t])[0])
        success, alive = success + alive * p, alive * (1.0 - p)
        p_success[t] = success
    tile, top = 192, 34
    rows = []
    for real in (True, False):
        cells = []
        for t in [t0 + k for k in (0, 10, 20, 40, 70, 110) if t0 + k < n]:
            if real:
                image, text = ep["image"][t], f"t={t} handle y {ep['handle'][t][1]:.3f}"
            else:
                decoded = wm.decoder(imagined[t])[0].clamp(-0.5, 0.5) + 0.5
                image = (decoded * 255).byte().permute(1, 2, 0).numpy()
                text = f"imagined P(success) {p_success[t]:.2f}"
            cell = np.full((tile + top, tile + 6, 3), 255, np.uint8)
            cell[top:, :tile] = cv2.resize(np.ascontiguousarray(image), (tile, tile),
                                           interpolation=cv2.INTER_NEAREST)  # fmt: skip
            cv2.putText(
                cell, text, (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
            )
            cells.append(cell)
        rows.append(np.concatenate(cells, 1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=2000, help="sim seeds seed .. seed+episodes-1")
    p.add_argument("--figure", type=Path, help="PNG of one episode, real against imagined")
    p.add_argument("--figure-seed", type=int, default=2000)
    p.add_argument("--t0", type=int, default=20, help="the figure's imagination starts here")
    p.add_argument("--image-size", type=int, default=128, help="the camera of the training data")
    args = p.parse_args()
    torch.set_num_threads(1)
    step, info = load_policy_step(args.run, args.checkpoint)
    cfg = Config.from_dict(info["config"])
    wm = WorldModel(cfg.model, step.action_dim)
    wm.load_state_dict(checkpoint.load(args.checkpoint)["world_model"])
    wm.eval()
    prep = Preprocessing.from_dict(info["dataset"].get("preprocessing") or {})
    sim = DrawerCloseSim(image_size=args.image_size, max_steps=150)
    g = torch.Generator().manual_seed(0)
    rows = []
    try:
        with torch.no_grad():
            if args.figure:
                figure(
                    wm, cfg, run_episode(step, sim, prep, args.figure_seed), args.t0, args.figure
                )
            for seed in range(args.seed, args.seed + args.episodes):
                row = {"seed": seed} | readings(
                    wm, cfg, step.actor, run_episode(step, sim, prep, seed), g
                )
                rows.append(row)
                print(
                    json.dumps(
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                    ),
                    flush=True,
                )
    finally:
        sim.close()
    for outcome in (True, False):
        group = [r for r in rows if r["success"] == outcome]
        if group:
            means = {k: round(float(np.mean([r[k] for r in group])), 3) for k in KEYS}
            print(
                f"{'successful' if outcome else 'failed'} episodes: {len(group)}", json.dumps(means)
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
