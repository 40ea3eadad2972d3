"""The whole pipeline end to end on the debug preset: bags, dataset, run, export, eval."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lompo_core.data.convert_config import ConvertConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reproduce_pipeline_debug(tmp_path):
    env = dict(
        os.environ,
        PRESET="debug",
        EPISODES="4",
        IMAGE_SIZE="96",
        EVAL_EPISODES="2",
        EVAL_SEED="500",
        TRAIN_ARGS="agent.select=offline",  # offline.pt (held-out signal), then exported
        LOMPO=str(Path(sys.executable).parent / "lompo"),
    )

    def reproduce() -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(REPO / "training" / "reproduce.sh"), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    proc = reproduce()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("collect", "convert", "train", "export", "eval"):
        assert f"== {stage} done in" in proc.stdout

    bags = sorted((tmp_path / "bags").glob("episode_*"))
    assert len(bags) == 4
    meta = json.loads((tmp_path / "dataset" / "meta.json").read_text())
    config = ConvertConfig.from_yaml(REPO / "training" / "convert_drawer.yaml")
    assert meta["counts"]["episodes"] == 4
    assert meta["preprocessing"]["crop"] == list(config.preprocessing.crop)
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert list((tmp_path / "run").rglob("*.pt")), "no checkpoint written"

    sidecar = json.loads((tmp_path / "policy" / "policy.json").read_text())
    assert sidecar["dataset"]["hash"] == meta["content_hash"]
    assert sidecar["dataset"]["camera"]["width"] == 96
    assert sidecar["training"]["checkpoint"].endswith("checkpoints/offline.pt")
    assert sidecar["training"]["selection"] == "offline:model_return"
    assert math.isfinite(sidecar["uncertainty_threshold"]) and sidecar["uncertainty_threshold"] > 0

    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["episodes"] == 2 and [e["seed"] for e in report["per_episode"]] == [500, 501]
    assert 0.0 <= report["success_rate"] <= 1.0
    assert math.isfinite(report["step_latency_ms_p50"]) and math.isfinite(report["mean_return"])
    assert (tmp_path / "eval" / "rollout.gif").is_file()

    # Running it again resumes: the bags and dataset are kept, the finished run is not retrained.
    again = reproduce()
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "keeping the bags" in again.stdout and "keeping the dataset" in again.stdout
