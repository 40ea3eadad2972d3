"""Training speed of the ``cpu`` and ``paper`` presets on this machine.

Prints, per preset: model updates/s and frames/s (batch x length per update), policy (SAC)
updates/s, model-rollout transitions/s, and the peak memory of a process doing only that. Each
preset runs in its own process so that peak memory is its own. Data are random (speed does not
depend on content); the sizes are the preset's.

    python benchmarks/train_speed.py                 # both presets, a few updates each
    python benchmarks/train_speed.py --preset cpu --model-updates 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(preset: str, model_updates: int, agent_updates: int, threads: int, device: str) -> dict:
    import torch

    from lompo_core.agent.replay import LatentBuffer
    from lompo_core.agent.rollout import model_rollouts
    from lompo_core.agent.sac import SAC, speed_limit
    from lompo_core.config import resolve
    from lompo_core.data.convert_config import COLLECT_MAX_SPEED
    from lompo_core.model.world_model import WorldModel

    cfg = resolve(preset, [f"threads={threads}", f"device={device}"])
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))  # fmt: skip
    torch.manual_seed(0)
    a_dim = 3
    wm = WorldModel(cfg.model, a_dim).to(dev)
    opt = torch.optim.Adam(wm.parameters(), lr=cfg.world.lr)
    b, t = cfg.world.batch, cfg.world.length
    batch = {
        "image": torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8, device=dev),
        "action": torch.rand(b, t, a_dim, device=dev) * 2 - 1,
        "reward": torch.zeros(b, t, device=dev),
        "is_first": torch.zeros(b, t, dtype=torch.bool, device=dev),
        "is_terminal": torch.zeros(b, t, dtype=torch.bool, device=dev),
        "mask": torch.ones(b, t, device=dev),
    }
    batch["is_first"][:, 0] = True

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def model_update(i: int) -> None:
        loss, _ = wm(batch, [(i + s) % cfg.model.heads for s in range(t)])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), cfg.world.grad_clip)
        opt.step()

    model_update(0)  # warm-up: allocator, kernels
    sync()
    t0 = time.perf_counter()
    for i in range(model_updates):
        model_update(i)
    sync()
    model_s = (time.perf_counter() - t0) / model_updates

    drawer = {"unit": "m/s", "max": [COLLECT_MAX_SPEED] * a_dim}  # the drawer data's scaling
    sac = SAC(cfg.agent, wm.feat_dim, a_dim, speed_limit(cfg.agent, drawer)).to(dev)
    aopt = sac.make_optimizers()
    n = 20_000
    buf = LatentBuffer(n, wm.feat_dim, a_dim, dev)
    feat = torch.randn(n, wm.feat_dim, device=dev)
    buf.add(
        feat=feat,
        action=torch.rand(n, a_dim, device=dev),
        reward=torch.zeros(n, device=dev),
        next_feat=feat,
        terminal=torch.zeros(n, device=dev),
    )
    sac.update(buf.sample(cfg.agent.batch), aopt)
    sync()
    t0 = time.perf_counter()
    for _ in range(agent_updates):
        sac.update(buf.sample(cfg.agent.batch), aopt)
    sync()
    agent_s = (time.perf_counter() - t0) / agent_updates

    mbuf = LatentBuffer(n, wm.feat_dim, a_dim, dev)
    t0 = time.perf_counter()
    stats = model_rollouts(
        wm, sac.actor, buf.sample(cfg.agent.rollout_batch)["feat"], cfg.agent.horizon,
        cfg.agent.lmbda, cfg.agent.penalty, mbuf, reward_clip=cfg.agent.reward_clip,
        success_ends=cfg.agent.success_ends, success_reward=cfg.agent.success_reward,
        end_threshold=cfg.agent.success_threshold,
    )  # fmt: skip
    sync()
    rollout_s = time.perf_counter() - t0

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    out = {
        "preset": preset,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "model_batch": f"{b}x{t}",
        "model_updates_per_s": 1.0 / model_s,
        "frames_per_s": b * t / model_s,
        "agent_batch": cfg.agent.batch,
        "policy_updates_per_s": 1.0 / agent_s,
        "rollout_transitions_per_s": stats["rollout/transitions"] / rollout_s,
        "peak_rss_mib": peak,
        # What a whole run of the preset would take at these rates (model + policy phases).
        "est_run_min": (cfg.world.steps * model_s + cfg.agent.steps * agent_s) / 60,
    }
    if dev.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", action="append", help="cpu and paper unless given (repeatable)")
    p.add_argument("--model-updates", type=int, default=0, help="default: 5 (cpu), 2 (paper)")
    p.add_argument("--agent-updates", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--device", default="auto")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    presets = args.preset or ["cpu", "paper"]
    if args.child:
        n = args.model_updates or (2 if presets[0] == "paper" else 5)
        res = measure(presets[0], n, args.agent_updates, args.threads, args.device)
        print(json.dumps(res))
        return 0
    rows = []
    for preset in presets:
        cmd = [sys.executable, __file__, "--child", "--preset", preset,
               "--model-updates", str(args.model_updates), "--agent-updates",
               str(args.agent_updates), "--threads", str(args.threads), "--device", args.device]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    keys = ["preset", "device", "threads", "model_batch", "model_updates_per_s", "frames_per_s",
            "agent_batch", "policy_updates_per_s", "rollout_transitions_per_s", "peak_rss_mib",
            "est_run_min"]  # fmt: skip
    for r in rows:
        print(
            "  ".join(f"{k}={r[k]:.3g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys)
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
