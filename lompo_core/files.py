"""What every stage needs of the file system: outputs that appear whole, one writer at a time.

``atomic_writer`` and ``atomic_write_bytes`` write a file, ``atomic_folder`` builds a folder
(a dataset, an exported policy), hidden beside the output and renamed into place only when it is
complete: a failure or a kill leaves the old output, or none, never a half-written one.

``read_yaml`` reads every settings file lompo takes (presets, a run's config, a convert config,
a labels file) and refuses a missing file, bad YAML or another top level in one line naming it.

``exclusive`` holds an advisory lock (``flock``) on a hidden file beside the output for as long
as a command writes it: a second ``lompo convert`` into the same dataset, or a second
``lompo train`` on the same run folder, is refused by name instead of interleaving with the
first. The lock file is removed when the lock is released; a lock left by a killed process is
released by the kernel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lompo_core.errors import LompoError


def lock_path(output: Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.lock"


@contextlib.contextmanager
def exclusive(output: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock on ``output`` (``what``: the command, for the error) or raise LompoError;
    ``wait``: block until the holder releases it instead (for short writes)."""
    import fcntl

    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LompoError(
                f"{output}: another {what} is writing it (pid {holder}); wait for it to finish"
            ) from None
        # The holder before us may have removed the file after we opened it: lock the live one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` whole, synced, when the block ends without error;
    readers see either nothing (or the old file) or all of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it."""
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_folder(out: Path, before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """``with atomic_folder(out) as tmp:`` fill ``tmp``; it becomes ``out`` when the block ends.

    ``tmp`` is ``.NAME.partial-PID`` beside ``out``. On success an existing ``out`` is moved
    aside (``.NAME.old-PID``), ``tmp`` renamed into place and the old one deleted
    (``before_replace`` is called first: the caller's last word on replacing it); on any error
    ``tmp`` is removed and ``out`` is as it was. Leftovers of a killed build into the same
    ``out`` (their process is gone) are removed first.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = stale.name[len(out.name) + 2 :].rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists() or out.is_symlink():
            if before_replace is not None:
                before_replace()
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None:
                old.rename(out)  # put the previous output back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_yaml(path: Path, what: str = "file", empty_ok: bool = True) -> dict[str, Any]:
    """The mapping a YAML settings file holds (``{}`` for an empty file, if ``empty_ok``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LompoError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LompoError(f"{path}: cannot read the {what} ({exc})") from None
    except yaml.YAMLError as exc:
        raise LompoError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise LompoError(f"{path}: expected a mapping at the top level of the {what}")
    return data
