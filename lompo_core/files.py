"""What every stage needs of the file system: one writer at a time on an output.

``exclusive`` holds an advisory lock (``flock``) on a hidden file beside the output for as long
as a command writes it: a second ``lompo convert`` into the same dataset, or a second
``lompo train`` on the same run folder, is refused by name instead of interleaving with the
first. The lock file is removed when the lock is released; a lock left by a killed process is
released by the kernel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from lompo_core.errors import LompoError


def lock_path(output: Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.lock"


@contextlib.contextmanager
def exclusive(output: Path, what: str) -> Iterator[None]:
    """Hold the lock on ``output`` (``what``: the command, for the error) or raise LompoError."""
    import fcntl

    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
