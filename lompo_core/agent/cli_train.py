"""``lompo train``: the model phase, then the latent policy phase, into a resumable run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from lompo_core.config import ALGOS

HELP = (
    "Train LOMPO offline on an episode dataset: the latent model with its ensemble of prior heads "
    "(model phase), then a SAC policy in latent space on dataset states and uncertainty-penalised "
    "model rollouts (policy phase). Running the same command again resumes the run."
)
EXAMPLE = "lompo train --dataset dataset/ --run runs/drawer --preset cpu agent.lmbda=5"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder (lompo convert)")
    # --run-dir: torchrun's own parser takes a bare --run for an abbreviation of its --run-path.
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        type=Path,
        required=True,
        help="run folder (created, or resumed); spell it --run-dir under torchrun",
    )
    p.add_argument(
        "--preset",
        default="cpu",
        help="named preset in lompo_core/presets.yaml: debug, cpu, paper (default: %(default)s)",
    )
    p.add_argument(
        "--algo",
        choices=list(ALGOS),
        help="the method: lompo (default), lambda0 (no uncertainty penalty), no_rollouts "
        "(dataset transitions only), bc (behaviour cloning), filtered_bc (BC on successes)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides with dotted keys, e.g. world.steps=3000 agent.lmbda=0 "
        "agent.rollouts=false device=cuda",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from lompo_core.config import resolve

    algo = [] if args.algo is None else [f"algo={args.algo}"]
    cfg = resolve(args.preset, [*algo, *args.overrides])
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from lompo_core.agent.trainer import Trainer
    from lompo_core.files import exclusive

    with exclusive(args.run, "lompo train"):
        Trainer(args.dataset, args.run, cfg).run()
    return 0
