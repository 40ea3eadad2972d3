"""training/imagined_vs_real.py: a run's policy in the sim, read by its own world model."""

from __future__ import annotations

import json
import sys

import cv2
import torch

from lompo_core.agent import checkpoint
from lompo_core.cli import main as cli_main
from lompo_core.config import Config
from lompo_core.model.world_model import WorldModel


def test_replayed_actions_end_where_a_rollout_step_ends(tiny_dataset, tmp_path, training_script):
    run = tmp_path / "run"
    assert cli_main(["train", "--dataset", str(tiny_dataset), "--run", str(run), "--preset",
                     "debug", "agent.steps=10"]) == 0  # fmt: skip
    cfg = Config.load(run / "config.yaml")
    wm = WorldModel(cfg.model, 3)
    wm.load_state_dict(checkpoint.load(checkpoint.last_path(run))["world_model"])
    script = training_script("imagined_vs_real")
    feat, actions = torch.zeros(2, wm.feat_dim), torch.zeros(2, 4, 3)
    g = torch.Generator().manual_seed(0)

    def share(p_end: float) -> list[float]:
        wm.cont[-1].bias.fill_(float(torch.logit(torch.tensor(1.0 - p_end))))
        return script.replay(wm, cfg, feat, actions, 3, g).tolist()

    with torch.no_grad():
        wm.cont[-1].weight.zero_()
        assert share(0.99) == [1.0, 1.0]
        # P(end) 0.25 on every step: no rollout step ends (the sum over 4 steps would be 0.68).
        assert share(0.25) == [0.0, 0.0]
        assert share(0.55) == [1.0, 1.0]
        cfg.agent.success_threshold = 0.6
        assert share(0.55) == [0.0, 0.0]


def test_episodes_are_read_and_the_figure_drawn_in_the_sim(
    tiny_dataset, tmp_path, capsys, training_script
):
    run = tmp_path / "run"
    assert cli_main(["train", "--dataset", str(tiny_dataset), "--run", str(run), "--preset",
                     "debug", "agent.steps=10"]) == 0  # fmt: skip
    figure = tmp_path / "imagined.png"
    argv = [str(run), str(checkpoint.last_path(run)), "--episodes", "1", "--seed", "2000",
            "--figure", str(figure), "--figure-seed", "2001", "--t0", "2", "--image-size", "64"]  # fmt: skip
    capsys.readouterr()  # training's own output
    old, sys.argv = sys.argv, ["imagined_vs_real.py", *argv]
    try:
        assert training_script("imagined_vs_real").main() == 0
    finally:
        sys.argv = old
    lines = capsys.readouterr().out.splitlines()
    row = json.loads(lines[0])
    assert row["seed"] == 2000 and 1 <= row["steps"] <= 150
    for key in ("read", "openloop", "closedloop", "idle", "push", "reverse"):
        assert 0.0 <= row[key] <= 1.0
    assert lines[-1].startswith(("successful episodes: 1", "failed episodes: 1"))
    image = cv2.imread(str(figure))
    assert image is not None and image.shape[0] == 2 * (192 + 34)  # real and imagined rows
