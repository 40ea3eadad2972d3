"""``lompo inspect``: summarise a bag or an episode dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from lompo_core.errors import LompoError

HELP = (
    "Summarise a bag or a dataset. For a bag (rosbag2 folder or ROS 1 .bag): topics, types, "
    "message counts, rates, duration and gaps. For a dataset made by `lompo convert`: episodes, "
    "lengths, returns, success rate, per-axis action histograms, and a PNG contact sheet of frames "
    "(written beside the dataset as NAME_frames.png, or to --out)."
)
EXAMPLE = "lompo inspect bags/episode_000000   |   lompo inspect dataset/ --out frames.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="a bag or a dataset folder")
    p.add_argument("--out", type=Path, help="contact sheet PNG (datasets only)")
    p.add_argument(
        "--distro",
        default="jazzy",
        help="message definitions for old bags that store none (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from lompo_core.data.inspect import inspect_bag, inspect_dataset

    path: Path = args.path
    if not path.exists():
        raise LompoError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "meta.json").is_file():
        print(inspect_dataset(path, args.out).text())
    elif path.suffix == ".bag" or (path / "metadata.yaml").is_file():
        if args.out:
            raise LompoError("--out is for datasets (the contact sheet); a bag has no frames sheet")
        print(inspect_bag(path, args.distro).text())
    else:
        raise LompoError(
            f"{path}: neither a dataset (meta.json) nor a bag (.bag file, rosbag2 folder)"
        )
    return 0
