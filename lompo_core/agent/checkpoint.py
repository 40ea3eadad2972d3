"""Checkpoints: state dicts only, written atomically, the newest named by a ``last.pt`` link.

Loading uses ``weights_only=True``: a checkpoint holds tensors, numbers, strings, lists and dicts,
never pickled objects, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from lompo_core.errors import LompoError

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"  # the policy of the best in-training sim evaluation (Trainer._save_best)
OFFLINE = "offline.pt"  # the policy of the best held-out signal (Trainer._offline_selection)
AVERAGE = "average.pt"  # the actor averaged over the last third's checkpoints (Trainer._average)
MODEL = "model.pt"  # the world model of the best held-out open-loop check (Trainer._keep_model)
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def name_for(step: int) -> str:
    """The checkpoint after ``step`` updates in all (model updates, then agent updates)."""
    return f"ckpt-{step:08d}.pt"


def local_path(main: Path, rank: int) -> Path:
    """Where rank ``rank`` > 0 keeps its own part (RNG, sampler, buffers) of checkpoint ``main``."""
    return main.with_name(main.name.replace(".pt", f".rank{rank}.pt"))


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / CHECKPOINTS


def write(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_partial(run: Path) -> None:
    """Remove the temporary files of writes a killed run cut short (``.<name>.*.tmp``)."""
    folder = checkpoint_dir(run)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def save(run: Path, name: str, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``checkpoints/<name>`` atomically, point ``last.pt`` at it, prune older ones."""
    folder = checkpoint_dir(run)
    path = folder / name
    write(path, state)
    # A symlink swapped in by rename: readers see the old or the new target, never none.
    link_tmp = folder / f".{LAST}.{os.getpid()}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(name, link_tmp)
    os.replace(link_tmp, folder / LAST)
    _prune(folder, keep, protect=name)
    return path


def _prune(folder: Path, keep: int, protect: str) -> None:
    names = sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))
    for old in names[: max(0, len(names) - max(keep, 1))]:
        if old != protect:
            stem = old.removesuffix(".pt")
            for p in folder.glob(f"{stem}.*"):
                p.unlink()


def last_path(run: Path) -> Path | None:
    link = checkpoint_dir(run) / LAST
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    if not target.is_file():
        raise LompoError(f"{link}: points at a missing checkpoint {target.name}")
    return target


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            # torch's message advises weights_only=False, i.e. running the file's code: never.
            raise LompoError(
                f"{path}: refused: it holds Python objects, not only tensors and plain data "
                "(lompo writes state dicts; a file from elsewhere may run code when unpickled)"
            ) from None
        raise LompoError(f"{path}: not a readable checkpoint (not a torch state dict)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise LompoError(f"{path}: not a readable checkpoint ({exc})") from None
