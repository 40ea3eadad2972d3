"""The ``lompo`` command line: one subcommand per stage of the flow.

Each subcommand lives beside its stage, in a module offering ``HELP`` (one line), ``EXAMPLE``,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command
runs, so ``lompo --help`` and the robot-side commands never import torch or MuJoCo.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from lompo_core.errors import LompoError

# Order is the order of the flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "lompo_core.sim.cli_demo",
        "run the shipped drawer policy in the sim: report and video",
    ),
    "collect": ("lompo_core.sim.cli_collect", "record sim episodes as rosbag2 bags"),
    "convert": ("lompo_core.data.cli_convert", "turn rosbags into a LOMPO episode dataset"),
    "inspect": (
        "lompo_core.data.cli_inspect",
        "summarise a bag or a dataset (and draw its frames)",
    ),
    "train": ("lompo_core.agent.cli_train", "train the latent model and the policy offline"),
    "export": ("lompo_core.export.cli_export", "export a trained run to ONNX with its sidecar"),
    "eval": (
        "lompo_core.sim.cli_eval",
        "run an exported policy in the sim through the node's path",
    ),
}

EPILOG = """examples:
  lompo collect --policy medium --episodes 50 --out bags/
  lompo convert bags/ --out dataset/
  lompo train --dataset dataset/ --run runs/drawer --preset cpu
  lompo export runs/drawer --out policy/ --verify
  lompo eval policy/ --episodes 20 --seed 1000 --video

Run `lompo COMMAND --help` for a command's options."""


def _main_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="lompo",
        description="Offline RL from camera images (LOMPO): rosbags -> dataset -> policy -> ROS 2.\n\n"
        f"commands:\n{lines}",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="see above")
    return parser


def _version() -> str:
    from lompo_core import __version__

    return f"lompo {__version__}"


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"lompo {name}",
        description=getattr(module, "HELP", help_),
        epilog=f"example:\n  {module.EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _main_parser().parse_args(argv[:1] or ["--help"])
        return 2
    parser, module = command_parser(argv[0])
    args = parser.parse_args(argv[1:])
    # SIGTERM (kill, docker stop, systemd) and SIGHUP (a closed terminal) end a command as Ctrl-C
    # does: what it was writing is removed.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (LompoError, FileNotFoundError, FileExistsError) as exc:
        # Expected failures (bad input, refused overwrite) get one clear line, not a traceback.
        print(f"lompo {argv[0]}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The machine said no (a full disk, a read-only folder, no permission): what was being
        # written has been removed by the command's own cleanup; say what and where.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"lompo {argv[0]}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
