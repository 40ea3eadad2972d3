"""``lompo demo``: the shipped drawer-closing policy in the sim, with a report and a video."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "The demo: run the shipped drawer-closing policy (models/drawer_close) in the MuJoCo sim "
    "through the same path as the ROS nodes, and write eval.json and rollout.gif. Where no "
    "trained policy is shipped, the scripted expert runs through the same path."
)
EXAMPLE = "lompo demo --episodes 10 --out demo/"

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "drawer_close"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        type=Path,
        default=SHIPPED,
        help="exported policy folder (default: the shipped models/drawer_close)",
    )
    p.add_argument(
        "--episodes", type=int, default=10, help="number of episodes (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=1000, help="first seed (default: %(default)s)")
    p.add_argument(
        "--out", type=Path, default=Path("demo"), help="output folder (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lompo_core.sim.evaluate import evaluate

    policy = args.policy if (args.policy / "policy.json").is_file() else None
    if policy is None:
        print(
            f"no exported policy at {args.policy}: running the scripted expert through the same path"
        )
    report = evaluate(
        policy, args.episodes, args.seed, out=args.out, video=True, progress=not args.quiet
    )
    print(report.summary())
    print(f"report: {args.out / 'eval.json'}   video: {args.out / 'rollout.gif'}")
    return 0
