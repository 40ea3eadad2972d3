"""Checkpoints: state dicts only, written atomically, the newest named by a ``last.pt`` link.

Loading uses ``weights_only=True``: a checkpoint holds tensors, numbers, strings, lists and dicts,
never pickled objects, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from lompo_core.errors import LompoError

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
_NAME = re.compile(r"^(model|agent)-(\d{8})\.pt$")


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / CHECKPOINTS


def save(run: Path, name: str, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``checkpoints/<name>`` atomically, point ``last.pt`` at it, prune older ones."""
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
            (folder / old).unlink()


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
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise LompoError(f"{path}: not a readable checkpoint ({exc})") from None
