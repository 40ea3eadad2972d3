"""lompo_core.agent.checkpoint and the run folder: state dicts only, one training at a time."""

from __future__ import annotations

import collections
import json

import pytest
import torch

from lompo_core.agent import checkpoint
from lompo_core.errors import LompoError


class Payload:
    """Any class: unpickling it means importing and running code named by the file."""


def test_a_pickled_object_is_refused_without_advising_to_run_it(tmp_path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"actor": collections.OrderedDict(w=Payload())}, path)
    with pytest.raises(LompoError) as info:
        checkpoint.load(path)
    text = str(info.value)
    assert str(path) in text and "refused" in text and len(text.splitlines()) == 1
    assert "weights_only=False" not in text


def test_state_dicts_load_and_garbage_is_named(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"actor": {"w": torch.ones(2)}, "step": 3}, good)
    assert checkpoint.load(good)["step"] == 3
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(LompoError, match="bad.pt: not a readable checkpoint") as info:
        checkpoint.load(bad)
    assert len(str(info.value).splitlines()) == 1 and "weights_only" not in str(info.value)


def test_a_second_training_on_one_run_folder_is_refused(tiny_dataset, tmp_path, capsys) -> None:
    from lompo_core.cli import main
    from lompo_core.files import exclusive

    run = tmp_path / "run"
    with exclusive(run, "lompo train"):  # what a running `lompo train` holds
        code = main(
            ["train", "--dataset", str(tiny_dataset), "--run", str(run), "--preset", "debug"]
        )
    assert code == 1
    err = capsys.readouterr().err
    assert "another lompo train is writing it" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def _train(dataset, run, stop_at=None):
    from lompo_core.agent.trainer import Trainer
    from lompo_core.config import resolve

    Trainer(dataset, run, resolve("debug"), log=lambda m: None).run(stop_at=stop_at)


def _logged(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(d["phase"], d["step"], sorted(d)) for d in map(json.loads, lines)]


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tiny_dataset, tmp_path):
    _train(tiny_dataset, tmp_path / "ref")
    run = tmp_path / "run"
    _train(tiny_dataset, run, stop_at=8)  # debug: metrics every 5 updates, a checkpoint every 10
    assert _logged(run) and not (run / "checkpoints").exists()
    _train(tiny_dataset, run)
    assert _logged(run) == _logged(tmp_path / "ref")


def test_a_start_killed_before_its_config_and_cut_checkpoints_are_recovered(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "dataset.json").write_text("{}")  # the config, written last, never came
    (run / ".config.yaml.x1y2.tmp").write_text("half")
    _train(tiny_dataset, run, stop_at=15)
    assert (run / "config.yaml").is_file()
    cut = run / "checkpoints" / ".ckpt-00000010.pt.abcd.tmp"  # a torch.save cut by a kill
    cut.write_bytes(b"partial")
    _train(tiny_dataset, run)
    assert not cut.exists() and (run / "checkpoints" / "last.pt").exists()
