"""``lompo eval``: an exported policy in the sim, through the ROS nodes' own logic."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HELP = (
    "Run an exported policy (policy.onnx + policy.json) in the simulated drawer task, exactly as "
    "policy_node and sim_node would serve it (PolicyRuntime, Controller, CDR-serialised messages), "
    "and write eval.json: success rate with its 95% interval, return, steps to success, step "
    "latency and controller interventions. Seeds S .. S+N-1."
)
EXAMPLE = "lompo eval models/drawer_close --episodes 50 --seed 1000 --out eval/ --video"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lompo_core.nodes.policy import PolicyNodeParams
    from lompo_core.sim.shifts import SHIFTS

    p.add_argument("policy", type=Path, help="exported policy folder (from lompo export)")
    p.add_argument(
        "--episodes", type=int, default=20, help="number of episodes (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="first seed (default: %(default)s; training data from lompo collect "
        "starts at 0, so keep evaluation seeds apart)",
    )
    p.add_argument("--out", type=Path, help="folder for eval.json (and rollout.gif)")
    p.add_argument(
        "--video",
        action="store_true",
        help="also write rollout.gif: the camera beside what the model sees",
    )
    p.add_argument(
        "--video-episodes", type=int, default=3, help="episodes in the video (default: %(default)s)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="camera resolution the sim renders (default: that of the policy's training data, "
        "from its sidecar, so that its crop sees the same picture)",
    )
    p.add_argument("--max-steps", type=int, default=150, help="time limit (default: %(default)s)")
    p.add_argument(
        "--shift",
        choices=SHIFTS,
        default=None,
        help="change what the camera shows from step --shift-onset of each episode on, to test "
        "the out-of-distribution gate: black, white, uniform noise, a frozen frame, the camera "
        "moved 2 cm or turned 5 degrees, the lights at half, a distractor box on the table",
    )
    p.add_argument(
        "--shift-onset",
        type=int,
        default=10,
        help="the episode step the shift starts at (default: %(default)s)",
    )
    p.add_argument(
        "--max-linear-speed",
        type=float,
        default=PolicyNodeParams.max_linear_speed,
        help="m/s: the controller's speed limit, policy_node's max_linear_speed (default: "
        "%(default)s, the node's); a deployment measures at its own",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lompo_core.errors import LompoError
    from lompo_core.sim.evaluate import evaluate

    if args.video and args.out is None:
        raise LompoError("--video needs --out DIR to write rollout.gif into")
    if args.shift_onset < 0:
        raise LompoError(f"--shift-onset must be >= 0, got {args.shift_onset}")
    if not (math.isfinite(args.max_linear_speed) and args.max_linear_speed > 0):
        raise LompoError(f"--max-linear-speed must be a number > 0, got {args.max_linear_speed}")
    report = evaluate(
        args.policy,
        args.episodes,
        args.seed,
        out=args.out,
        video=args.video,
        video_episodes=args.video_episodes,
        image_size=args.image_size,
        max_steps=args.max_steps,
        progress=not args.quiet,
        shift=args.shift,
        shift_onset=args.shift_onset,
        node_params={"max_linear_speed": args.max_linear_speed},
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report.summary())
    if args.out is not None:
        print(
            f"wrote {args.out / 'eval.json'}"
            + (f" and {args.out / 'rollout.gif'}" if args.video else "")
        )
    return 0
