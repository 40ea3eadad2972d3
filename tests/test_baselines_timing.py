"""training/baselines.py times a training by the trainer's own clock, across resumes, and shares
a dataset's runs between two processes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _baselines(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "training"))  # it imports ablate.py beside it
    spec = importlib.util.spec_from_file_location("baselines", ROOT / "training" / "baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(run: Path, lines: list[tuple[str, float]]) -> None:
    run.mkdir()
    text = "".join(json.dumps({"phase": p, "wall_s": w}) + "\n" for p, w in lines)
    (run / "metrics.jsonl").write_text(text)


def test_a_resumed_run_is_timed_over_all_its_processes(tmp_path, monkeypatch):
    seconds = _baselines(monkeypatch).training_seconds
    # Model phase in a first process (to 100 s), resumed: the rest of it and the policy phase.
    _metrics(tmp_path / "a", [("model", 50), ("model", 100), ("model", 30), ("agent", 80),
                              ("agent", 200)])  # fmt: skip
    assert seconds(tmp_path / "a") == 300.0
    # A branch: its model-phase lines are its base's, copied; it trained the policy alone.
    _metrics(tmp_path / "b", [("model", 50), ("model", 100), ("agent", 40), ("agent", 90)])
    assert seconds(tmp_path / "b", with_model=False) == 90.0
    assert seconds(tmp_path / "b") == 190.0


def test_a_run_held_by_another_process_is_skipped(tmp_path, monkeypatch):
    claim = _baselines(monkeypatch).claim
    run = tmp_path / "seed11" / "bc"
    with claim(run) as first:
        assert first
        with claim(run) as second, claim(tmp_path / "seed11" / "lambda0") as other:
            assert not second  # bc is taken: the second process goes on to the next method
            assert other
    with claim(run) as again:
        assert again  # released when the first process is done with it
    assert not run.exists()  # the claim does not create the run folder that branch() checks for
