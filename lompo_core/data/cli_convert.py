"""``lompo convert``: rosbags (rosbag2 mcap/sqlite3, ROS 1) -> a LOMPO episode dataset."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from lompo_core.data.convert_config import ConvertConfig
from lompo_core.errors import LompoError
from lompo_core.image import Preprocessing

HELP = (
    "Convert robot bags into a LOMPO episode dataset (64x64 RGB images, normalised actions, "
    "rewards). Reads rosbag2 folders (mcap or sqlite3, Humble or Jazzy) and ROS 1 .bag files; a "
    "folder of bags is walked. Images are resampled at the control rate and aligned by header "
    "stamp so that action[t] is the command that led to image[t]. With no options it converts "
    "what `lompo collect` writes; --config FILE describes another robot (see docs/convert.md) "
    "and the options below override it. The dataset is written atomically."
)
EXAMPLE = (
    "lompo convert bags/ --out dataset/\n"
    "  lompo convert robot_bags/ --out ds/ --config training/convert_drawer.yaml "
    "--success-topic /task/success --rate 10"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "bags", nargs="+", type=Path, help="bags (rosbag2 folders, .bag files) or folders"
    )
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--config", type=Path, help="YAML conversion config (docs/convert.md)")
    p.add_argument("--image-topic", help="camera topic (Image or CompressedImage)")
    p.add_argument(
        "--action-topic", help="command topic (TwistStamped, Twist, Float64/Float32MultiArray)"
    )
    reward = p.add_mutually_exclusive_group()
    reward.add_argument("--reward-topic", help="std_msgs/Float32 reward topic")
    reward.add_argument(
        "--success-topic", help="std_msgs/Bool success topic: sparse reward 1 on success"
    )
    reward.add_argument(
        "--labels", type=Path, help="YAML file 'bag[#episode]: success|failure' per episode"
    )
    reward.add_argument(
        "--reward", choices=["none"], help="no reward (data for the world model only)"
    )
    p.add_argument("--rate", type=float, help="control rate in Hz (default: the action topic's)")
    p.add_argument(
        "--stamps",
        choices=["header", "log"],
        help="message times: header stamps (default) or the recorder's log times (for a camera "
        "whose clock is not the robot's, or sim time recorded without use_sim_time)",
    )
    p.add_argument(
        "--crop",
        help="crop before the resize, fractions x0,y0,x1,y1 of width and height (e.g. 0.2,0,0.8,1)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--append",
        action="store_true",
        help="add bags to an existing dataset; bags already in it (same hash) are skipped",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    config = ConvertConfig.from_yaml(args.config) if args.config else ConvertConfig()
    over: dict = {}
    if args.image_topic:
        over["image_topic"] = args.image_topic
    if args.action_topic:
        over["action_topic"] = args.action_topic
    if args.reward_topic:
        over.update(reward="topic", reward_topic=args.reward_topic)
    if args.success_topic:
        over.update(reward="success", success_topic=args.success_topic)
    if args.labels:
        over.update(reward="labels", labels=args.labels)
    if args.reward == "none":
        over["reward"] = "none"
    if args.rate is not None:
        over["rate_hz"] = args.rate
    if args.stamps is not None:
        over["stamps"] = args.stamps
    if args.crop:
        try:
            crop = tuple(float(v) for v in args.crop.split(","))
        except ValueError:
            raise LompoError(f"--crop {args.crop!r}: expected four numbers x0,y0,x1,y1") from None
        over["preprocessing"] = Preprocessing(crop=crop, size=config.preprocessing.size)
    return replace(config, **over)


def run(args: argparse.Namespace) -> int:
    from lompo_core.data.convert import convert

    report = convert(
        args.bags,
        args.out,
        config_from_args(args),
        overwrite=args.overwrite,
        append=args.append,
        progress=not args.quiet,
    )
    print(report.summary())
    return 0
