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


@pytest.mark.slow
def test_baselines_share_the_world_model_and_resume(tmp_path):
    """training/baselines.sh on the debug preset: two methods, one seed, a 4-episode dataset."""
    results = tmp_path / "results"
    cmd = [str(REPO / "training" / "baselines.sh"), "--work", str(tmp_path / "work"),
           "--results", str(results), "--preset", "debug", "--episodes", "4",
           "--eval-episodes", "2", "--seeds", "3", "--datasets", "mixed",
           "--methods", "lompo", "bc"]  # fmt: skip
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = json.loads((results / "baselines.json").read_text())
    assert [(r["method"], r["dataset"], r["seed"]) for r in records] == [
        ("lompo", "mixed", 3), ("bc", "mixed", 3)
    ]  # fmt: skip
    assert all(r["episodes"] == 2 and r["selection"] in ("offline", "last") for r in records)
    assert (results / "baselines.png").stat().st_size > 1000
    page = (tmp_path / "results.md").read_text()
    assert "| mixed | lompo | 1 |" in page and "| mixed | bc | 1 |" in page
    assert all(r["stage_s"].get("eval mixed seed 3 " + r["method"], 0) > 0 for r in records)
    data_stages = json.loads((tmp_path / "work" / "mixed" / "stage_s.json").read_text())
    assert set(data_stages) == {"collect mixed", "convert mixed"}
    seed = tmp_path / "work" / "mixed" / "seed3"
    bc = json.loads((seed / "bc" / "policy" / "policy.json").read_text())["training"]
    assert bc["algo"] == "bc" and bc["config"]["agent"]["learner"] == "bc"
    # bc branched from lompo's model-phase checkpoint: the same world model weights.
    import torch

    def model_weights(run: Path) -> dict:
        return torch.load(run / "checkpoints" / "ckpt-00000030.pt", weights_only=True)[
            "world_model"
        ]

    a, b = model_weights(seed / "lompo"), model_weights(seed / "bc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Again: everything is kept, nothing re-evaluated, the table is printed.
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "== eval" not in again.stdout, again.stdout[-2000:]
    assert "| mixed | bc | 1 |" in again.stdout
