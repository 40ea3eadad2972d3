"""Policy-phase variants on one trained world model, every agent checkpoint evaluated afterwards.

    python training/ablate.py BASE_RUN NAME [key=value ...] [--episodes 20] [--seed 2000]
        [--max-linear-speed M] [--average]

BASE_RUN is a `lompo train --preset cpu` run (with log.keep_checkpoints high enough to keep its
last model-phase checkpoint). NAME's run folder, beside it, starts from that checkpoint with the
base config plus the overrides, so variants share the model and differ only in the policy phase
(the model phase is ~2/3 of a cpu run's time). Then each agent checkpoint is exported and run in
the sim (`lompo export --checkpoint FILE` + `lompo eval`), and one table line per checkpoint is
printed and written to NAME/ablation.jsonl: success beside the held-out signals, recomputed from
the checkpoint by this code (so an older run gets the signals added since). `--average` adds one
line for the last third's weight average (`checkpoints/average.pt`). The sim reports here; it
chooses nothing inside the run. Use development seeds (2000-2019, 3000-3049) to compare designs,
fresh ones (5000 and up) to report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from lompo_core.agent import checkpoint
from lompo_core.agent.sac import SAC, speed_limit
from lompo_core.agent.select import checkpoint_signals
from lompo_core.config import Config, _flatten, apply_overrides, validate
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.files import read_yaml

LOMPO = [sys.executable, "-m", "lompo_core.cli"]


def _policy_init_for(cfg: Config, state: dict, base: Path) -> dict:
    """The model-phase checkpoint with the variant's (not yet trained) networks: the base's
    initial weights wherever the shapes agree, so variants differ only in what they change."""
    action = json.loads((base / "dataset.json").read_text())["action"]
    torch.manual_seed(cfg.seed)
    feat = cfg.model.stoch + cfg.model.deter
    sac = SAC(cfg.agent, feat, len(action["names"]), speed_limit(cfg.agent, action))
    fresh, old = sac.state_dict(), state["sac"]
    for key, value in fresh.items():
        src = old.get(key, old.get(key.replace("actor_ema.", "actor.", 1)))
        if src is not None and src.shape == value.shape:
            fresh[key] = src
    sac.load_state_dict(fresh)
    opts = sac.make_optimizers()
    return state | {"sac": fresh, "agent_opt": {k: o.state_dict() for k, o in opts.items()}}


def model_end(base: Path) -> Path:
    """The base run's model-phase end checkpoint, what its branches start from."""
    steps = Config.load(base / "config.yaml").world.steps
    return checkpoint.checkpoint_dir(base) / checkpoint.name_for(steps)


def branch(base: Path, run: Path, overrides: list[str]) -> int:
    """NAME's folder: the base run's config with ``overrides``, its model-phase end checkpoint."""
    cfg = Config.load(base / "config.yaml")
    apply_overrides(cfg, overrides)
    validate(cfg)
    start = model_end(base)
    if not start.is_file():
        raise SystemExit(f"{start}: missing (train the base with log.keep_checkpoints=100)")
    if not run.exists():
        (run / checkpoint.CHECKPOINTS).mkdir(parents=True)
        shutil.copy(base / "dataset.json", run / "dataset.json")
        (run / "config.yaml").write_text(cfg.to_yaml())
        state = _policy_init_for(cfg, checkpoint.load(start), base)
        checkpoint.write(run / checkpoint.CHECKPOINTS / start.name, state)
        kept = base / checkpoint.CHECKPOINTS / checkpoint.MODEL  # world.select=heldout's model
        if kept.is_file():
            shutil.copy(kept, run / checkpoint.CHECKPOINTS / checkpoint.MODEL)
        os.symlink(start.name, run / checkpoint.CHECKPOINTS / checkpoint.LAST)
        lines = (base / "metrics.jsonl").read_text().splitlines()
        model = [ln for ln in lines if json.loads(ln)["phase"] == "model"]
        (run / "metrics.jsonl").write_text("".join(ln + "\n" for ln in model))
    return cfg.world.steps


def saved_overrides(run: Path) -> list[str]:
    """The run's own config.yaml as ``key=value`` overrides: what resumes it unchanged."""
    saved = read_yaml(run / "config.yaml", "run config")
    return [f"{k}={v}" for k, v in _flatten(saved).items() if v is not None]


def score(run: Path, which: str, out: Path, args: argparse.Namespace) -> dict:
    """``lompo export --checkpoint which`` into ``out`` and its ``lompo eval`` report, kept there
    (a report already there is read, not run again)."""
    speed = (
        [] if args.max_linear_speed is None else ["--max-linear-speed", str(args.max_linear_speed)]
    )
    suffix = "" if args.max_linear_speed is None else f"-v{args.max_linear_speed:g}"
    policy, ev = out / "policy", out / f"eval-s{args.seed}-n{args.episodes}{suffix}"
    if not (ev / "eval.json").is_file():
        subprocess.run(
            [*LOMPO, "export", str(run), "--out", str(policy), "--checkpoint", which,
             "--overwrite"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        subprocess.run(
            [*LOMPO, "eval", str(policy), "--episodes", str(args.episodes), "--seed",
             str(args.seed), "--out", str(ev), "--quiet", *speed], check=True,
            stdout=subprocess.DEVNULL)  # fmt: skip
    return json.loads((ev / "eval.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", type=Path)
    p.add_argument("name")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--min-step", type=int, default=0, help="evaluate agent checkpoints from here")
    p.add_argument("--dataset", type=Path, default=Path("runs/dataset"))
    p.add_argument(
        "--max-linear-speed", type=float, help="m/s, lompo eval's limit (default: the node's)"
    )
    p.add_argument(
        "--average", action="store_true",
        help="also score checkpoints/average.pt, the last third's weight average (one line)",
    )  # fmt: skip
    args = p.parse_args()
    run = args.base.parent / args.name if args.name != "." else args.base
    model_steps = branch(args.base, run, args.overrides) if run != args.base else None
    saved = read_yaml(run / "config.yaml", "run config")
    train = [*LOMPO, "train", "--dataset", str(args.dataset), "--run", str(run), "--preset", "cpu"]
    subprocess.run([*train, *saved_overrides(run), "log.progress=false"], check=True)
    model_steps = model_steps or int(saved["world"]["steps"])
    dataset = EpisodeDataset(args.dataset)
    rows = []
    for ckpt in sorted((run / checkpoint.CHECKPOINTS).glob("ckpt-*.pt")):
        agent_step = int(ckpt.stem.split("-")[1]) - model_steps
        if agent_step <= max(args.min_step - 1, 0):
            continue
        res = score(run, str(ckpt), run / "ablation" / f"{agent_step:06d}", args)
        row = {"agent_step": agent_step, "success": res["success_rate"]}
        row |= {"episodes": res["episodes"], "seed": args.seed} | checkpoint_signals(ckpt, dataset)
        if args.max_linear_speed is not None:
            row["max_linear_speed"] = args.max_linear_speed
        rows.append(row)
        print(json.dumps(row), flush=True)
    (run / "ablation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.average and (run / checkpoint.CHECKPOINTS / checkpoint.AVERAGE).is_file():
        res = score(run, "average", run / "ablation" / "average", args)
        row = {"checkpoint": "average", "success": res["success_rate"]}
        print(json.dumps(row | {"episodes": res["episodes"], "seed": args.seed}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
