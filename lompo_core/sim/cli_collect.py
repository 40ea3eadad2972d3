"""``lompo collect``: record sim episodes as rosbag2 bags, one folder per episode."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lompo_core.errors import LompoError
from lompo_core.messages import DISTROS
from lompo_core.sim.policies import POLICIES

HELP = (
    "Run a behaviour policy in the simulated drawer task and record each episode as a rosbag2 with "
    "the topics a real robot logs: the overhead camera (sensor_msgs/Image, rgb8), the arm commands "
    "(geometry_msgs/TwistStamped), the reward and the success flag."
)
EXAMPLE = "lompo collect --policy medium --episodes 50 --out bags/medium --seed 0"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        choices=POLICIES,
        default="medium",
        help="behaviour: the scripted expert, a faulty expert (about half succeed), "
        "random, a per-episode mix of the three (20/50/30%%), or explore: the faulty expert "
        "and random only, half each (default: %(default)s)",
    )
    p.add_argument(
        "--episodes", type=int, default=10, help="number of episodes (default: %(default)s)"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the bags (created)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first seed; episode i uses seed+i, which fixes the drawer position",
    )
    p.add_argument(
        "--storage",
        choices=("mcap", "sqlite3"),
        default="mcap",
        help="rosbag2 storage plugin (default: %(default)s)",
    )
    p.add_argument(
        "--distro",
        choices=DISTROS,
        default="jazzy",
        help="message definitions and bag format of this ROS 2 release (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=64,
        help="camera resolution in pixels, square (default: %(default)s); larger makes "
        "the converter's crop and resize do real work",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=150,
        help="time limit in control steps (default: %(default)s)",
    )
    p.add_argument(
        "--max-linear-speed",
        type=float,
        default=None,
        help="m/s: scale each command's norm down to this before it is sent and recorded, as "
        "policy_node's controller does (its default is 0.5); default: the sim's whole range, "
        "0.8 m/s per axis",
    )
    p.add_argument("--overwrite", action="store_true", help="replace bags that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lompo_core.sim.collect import collect

    if args.episodes < 1:
        raise LompoError("--episodes must be at least 1")
    speed = args.max_linear_speed
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise LompoError(f"--max-linear-speed must be a number > 0, got {speed}")
    records = collect(
        args.policy,
        args.episodes,
        args.out,
        seed=args.seed,
        storage=args.storage,
        distro=args.distro,
        image_size=args.image_size,
        max_steps=args.max_steps,
        overwrite=args.overwrite,
        progress=not args.quiet,
        max_linear_speed=speed,
    )
    n_ok = sum(r.success for r in records)
    print(
        f"wrote {len(records)} bags to {args.out}: {n_ok}/{len(records)} episodes succeeded "
        f"({n_ok / len(records):.0%})"
    )
    return 0
