"""lompo_core.files: one writer at a time on an output, and nothing left when it is done."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lompo_core.errors import LompoError
from lompo_core.files import exclusive, lock_path


def test_a_second_writer_is_refused_and_the_lock_file_goes(tmp_path) -> None:
    out = tmp_path / "run"
    with exclusive(out, "lompo train"):
        assert lock_path(out).read_text() == str(os.getpid())
        busy = r"run: another lompo train is writing it \(pid \d+\)"
        with pytest.raises(LompoError, match=busy), exclusive(out, "lompo train"):
            pass
    assert not lock_path(out).exists()
    with exclusive(out, "lompo train"):  # free again
        pass


def test_a_lock_held_by_another_process_refuses_and_a_killed_holder_frees_it(tmp_path) -> None:
    out = tmp_path / "ds"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from lompo_core.files import exclusive\n"
         f"with exclusive({str(out)!r}, 'lompo convert'):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LompoError, match=f"pid {holder.pid}"), exclusive(out, "x"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(out, "lompo convert"):  # the kernel released the dead holder's lock
        pass
    assert not lock_path(out).exists()
