"""lompo_core.files: outputs that appear whole, one writer at a time, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lompo_core.errors import LompoError
from lompo_core.files import atomic_folder, exclusive, lock_path


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


def _hold(out: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds the lock on ``out`` for ``seconds`` (it prints 'held')."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import time; from lompo_core.files import exclusive\n"
         f"with exclusive({str(out)!r}, 'lompo convert'):\n"
         f"    print('held', flush=True); time.sleep({seconds})"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_lock_held_by_another_process_refuses_and_a_killed_holder_frees_it(tmp_path) -> None:
    out = tmp_path / "ds"
    holder = _hold(out, 60.0)
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


def test_a_folder_appears_whole_and_replaces_the_old_one_only_at_the_end(tmp_path) -> None:
    out = tmp_path / "ds"
    with atomic_folder(out) as tmp:
        (tmp / "a").write_text("1")
        assert not out.exists() and tmp.parent == tmp_path and tmp.name.startswith(".ds.")
    assert (out / "a").read_text() == "1"
    with atomic_folder(out) as tmp:
        (tmp / "b").write_text("2")
        assert (out / "a").exists()  # the old folder stays until the new one is done
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_failed_build_leaves_the_old_folder_and_nothing_else(tmp_path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep").write_text("mine")
    with pytest.raises(RuntimeError, match="half way"), atomic_folder(out) as tmp:
        (tmp / "new").write_text("x")
        raise RuntimeError("half way")
    refused = LompoError("not replaced")

    def refuse() -> None:
        raise refused

    with pytest.raises(LompoError, match="not replaced"), atomic_folder(out, refuse) as tmp:
        (tmp / "new").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert (out / "keep").read_text() == "mine"


def test_the_leftovers_of_a_killed_build_are_collected_not_a_live_ones(tmp_path) -> None:
    out = tmp_path / "ds"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    for name in (f".ds.partial-{dead}", f".ds.old-{dead}", f".ds.partial-{os.getppid()}",
                 ".ds.notes-1", "other"):  # fmt: skip
        (tmp_path / name).mkdir()
    with atomic_folder(out):
        pass
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".ds.notes-1", f".ds.partial-{os.getppid()}", "ds", "other"]


def test_every_settings_file_is_read_by_one_loader_that_names_it(tmp_path, capsys) -> None:
    from lompo_core import cli
    from lompo_core.config import Config
    from lompo_core.files import read_yaml

    good, empty = tmp_path / "good.yaml", tmp_path / "empty.yaml"
    good.write_text("a: 1\n")
    empty.write_text("")
    assert read_yaml(good) == {"a": 1} and read_yaml(empty) == {}
    cases = {
        "missing.yaml": (None, "missing.yaml: run config not found"),
        "bad.yaml": ("a: [1\n", "bad.yaml: not valid YAML"),
        "list.yaml": ("- 1\n- 2\n", "list.yaml: expected a mapping at the top level of the run"),
        "binary.yaml": (b"\xff\xfe\x00", "binary.yaml: cannot read the run config"),
    }
    for name, (text, words) in cases.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text)
        with pytest.raises(LompoError, match=words):
            Config.load(path)
    # On the command line: one line naming the file, exit 1 (a run's config.yaml was read
    # without a check, so a damaged one ended `lompo export` with a traceback).
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("agent: {select: [\n")
    assert cli.main(["export", str(run), "--out", str(tmp_path / "policy")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'config.yaml'}: not valid YAML" in err


def test_a_waiting_lock_takes_over_when_the_holder_ends(tmp_path) -> None:
    out = tmp_path / "results.json"
    holder = _hold(out, 1.0)
    try:
        assert holder.stdout.readline().strip() == "held"
        with exclusive(out, "x", wait=True):  # blocks until the holder's block ends
            assert holder.poll() is not None or holder.wait(5) == 0
            assert lock_path(out).read_text() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()
    assert not lock_path(out).exists()
