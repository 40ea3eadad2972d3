"""lompo export on a really trained (debug preset) run, and the export's guarantees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from policy_fixtures import debug_policy_step, info_for, write_dataset

from lompo_core.agent.select import CHECK_KEYS, world_model_warning
from lompo_core.cli import main
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.errors import DatasetError, LompoError
from lompo_core.export.export import export_onnx, export_policy_step, export_run, verify
from lompo_core.runtime import PolicyRuntime
from lompo_core.runtime.sidecar import sha256_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run): the debug preset trained for real on a small dataset (seconds)."""
    from lompo_core.agent.trainer import train

    root = tmp_path_factory.mktemp("trained")
    dataset = write_dataset(root / "dataset", episodes=4, length=20, seed=1)
    run = train(dataset, root / "run", "debug", ["log.progress=false"])
    return dataset, Path(run)


@pytest.fixture(scope="module")
def policy(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "policy"
    assert main(["export", str(trained[1]), "--out", str(out), "--verify"]) == 0
    return out


def test_export_writes_a_verified_self_contained_policy(policy, trained):
    import onnx
    import yaml

    assert sorted(os.listdir(policy)) == ["policy.json", "policy.onnx"]  # weights inside
    assert not [p for p in policy.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    sidecar = json.loads((policy / "policy.json").read_text())
    model = onnx.load(str(policy / "policy.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["image", "prev_action", "deter", "stoch"]
    assert sidecar["onnx_sha256"] == sha256_file(policy / "policy.onnx")
    assert sidecar["inputs"][0] == {"name": "image", "shape": [1, 64, 64, 3], "dtype": "uint8"}
    assert [o["name"] for o in sidecar["outputs"]] == [
        "action",
        "deter_next",
        "stoch_next",
        "uncertainty",
        "surprise",
        "reconstruction_error",
        "reconstruction_patch_error",
    ]
    dataset = EpisodeDataset(trained[0])
    assert sidecar["dataset"]["hash"] == dataset.hash
    assert sidecar["preprocessing"] == {"crop": None, "size": 64, "resize": "area", "color": "rgb"}
    assert sidecar["action"] == {
        "names": ["linear.x", "linear.y", "linear.z"],
        "unit": "m/s",
        "max": [0.1] * 3,
    }
    assert sidecar["control_rate_hz"] == 10.0
    run_config = yaml.safe_load((trained[1] / "config.yaml").read_text())
    assert sidecar["training"]["config"]["model"] == run_config["model"]
    assert sidecar["training"]["step"] > 0
    assert sidecar["training"]["selection"] == "last"  # the debug preset's agent.select
    # world.select=last: the world model is the model phase's end.
    assert sidecar["training"]["world_model_step"] == run_config["world"]["steps"]
    # ... and the held-out check of that model, as the run logged it.
    lines = [json.loads(ln) for ln in (trained[1] / "metrics.jsonl").read_text().splitlines()]
    final = [d for d in lines if "heldout/open_loop_brier" in d][-1]
    check = sidecar["training"]["world_model_check"]
    assert final["model_step"] == run_config["world"]["steps"]
    assert check == {k.removeprefix("heldout/"): final[k] for k in final if k in CHECK_KEYS}
    assert "open_loop_brier" in check
    assert sidecar["code_version"]["lompo"] and sidecar["code_version"]["git_commit"]
    assert sidecar["uncertainty_calibration"]["steps"] == dataset.total_steps
    rt = PolicyRuntime(policy)
    assert rt.uncertainty_threshold == sidecar["uncertainty_threshold"]
    assert rt.signal_thresholds == {
        "surprise": sidecar["surprise_threshold"],
        "reconstruction_error": sidecar["reconstruction_error_threshold"],
        "reconstruction_patch_error": sidecar["reconstruction_patch_error_threshold"],
    }
    assert not rt.warnings
    assert sidecar["reconstruction_error_calibration"]["steps"] == dataset.total_steps
    assert sidecar["surprise_calibration"]["steps"] == dataset.total_steps - len(dataset)
    for name in ("surprise", "reconstruction_error", "reconstruction_patch_error"):
        assert sidecar[f"{name}_calibration"]["percentile"] == 99.9


def test_threshold_is_the_percentile_of_torch_uncertainty_along_the_data(policy, trained):
    """Recompute the calibration independently in torch, the dataset's actions fed back."""
    import torch

    from lompo_core.model.policy_step import load_policy_step

    step, _ = load_policy_step(trained[1])
    values = []
    with torch.no_grad():
        for ep in EpisodeDataset(trained[0]):
            deter, stoch = torch.zeros(1, step.deter_dim), torch.zeros(1, step.stoch_dim)
            for t in range(len(ep["image"])):
                prev = torch.from_numpy(ep["action"][t : t + 1])
                _, deter, stoch, u, *_ = step(
                    torch.from_numpy(ep["image"][t : t + 1]), prev, deter, stoch
                )
                values.append(float(u))
    threshold = json.loads((policy / "policy.json").read_text())["uncertainty_threshold"]
    assert threshold == pytest.approx(np.percentile(values, 99), rel=1e-5)


def test_image_signal_thresholds_are_percentiles_of_kl_and_mse_along_the_data(policy, trained):
    """Surprise and reconstruction errors (image-wide, worst 8x8 patch) recomputed from the
    world model's parts with torch's own Normal KL and MSE, the dataset's actions fed back: the sidecar's thresholds are their
    99.9th percentiles (the surprise without each episode's first step)."""
    import torch
    from torch.distributions import Normal, kl_divergence
    from torch.nn.functional import mse_loss

    from lompo_core.model.policy_step import load_policy_step

    step, _ = load_policy_step(trained[1])
    rssm = step.rssm
    kls, errors, patches = [], [], []
    with torch.no_grad():
        for ep in EpisodeDataset(trained[0]):
            deter, stoch = torch.zeros(1, step.deter_dim), torch.zeros(1, step.stoch_dim)
            for t in range(len(ep["image"])):
                image = torch.from_numpy(ep["image"][t : t + 1])
                deter = rssm.deter_step(stoch, deter, torch.from_numpy(ep["action"][t : t + 1]))
                stoch, post_std = rssm.posterior(deter, step.encoder(image))
                prior_mean, prior_std = rssm.prior_all(deter)
                kl = kl_divergence(Normal(stoch, post_std), Normal(prior_mean, prior_std))
                if t > 0:  # the first step's prior is the initial state's: not calibrated on
                    kls.append(float(kl.sum(-1).mean()))
                target = image.float().div(255).sub(0.5).permute(0, 3, 1, 2)
                decoded = step.decoder(torch.cat([stoch, deter], -1))
                errors.append(float(mse_loss(decoded, target)))
                per_patch = [
                    float(
                        mse_loss(
                            decoded[..., y : y + 8, x : x + 8], target[..., y : y + 8, x : x + 8]
                        )
                    )
                    for y in range(0, 64, 8)
                    for x in range(0, 64, 8)
                ]
                patches.append(max(per_patch))
    sidecar = json.loads((policy / "policy.json").read_text())
    assert sidecar["surprise_threshold"] == pytest.approx(np.percentile(kls, 99.9), rel=1e-4)
    assert sidecar["reconstruction_error_threshold"] == pytest.approx(
        np.percentile(errors, 99.9), rel=1e-4
    )
    assert sidecar["surprise_calibration"]["max"] == pytest.approx(max(kls), rel=1e-4)
    assert sidecar["reconstruction_patch_error_threshold"] == pytest.approx(
        np.percentile(patches, 99.9), rel=1e-4
    )


def test_verify_catches_a_different_model(exported):
    dataset, policy_dir = exported
    same, _ = debug_policy_step(seed=0)
    other, _ = debug_policy_step(seed=1)
    assert verify(same, policy_dir, EpisodeDataset(dataset), trials=2).ok
    report = verify(other, policy_dir, EpisodeDataset(dataset), trials=2)
    assert not report.ok and "FAILED" in report.summary()


def test_existing_out_is_refused_unless_overwrite(trained, policy, capsys):
    before = sha256_file(policy / "policy.onnx")
    assert main(["export", str(trained[1]), "--out", str(policy)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert sha256_file(policy / "policy.onnx") == before


def test_overwrite_replaces_the_folder_whole(exported, tmp_path):
    dataset, _ = exported
    out = tmp_path / "policy"
    out.mkdir()
    (out / "stale.txt").write_text("from an older export")
    step, cfg = debug_policy_step(seed=2)
    result = export_policy_step(step, info_for(cfg, dataset), out, overwrite=True)
    assert sorted(os.listdir(out)) == ["policy.json", "policy.onnx"]
    assert result.onnx_sha256 == sha256_file(out / "policy.onnx")
    assert os.listdir(tmp_path) == ["policy"]  # no staging or old folder left behind


def test_moved_dataset_is_named_and_dataset_flag_fixes_it(trained, tmp_path, capsys):
    dataset, run = trained
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    record = json.loads((moved / "dataset.json").read_text())
    record["path"] = str(tmp_path / "gone")
    (moved / "dataset.json").write_text(json.dumps(record))
    assert main(["export", str(moved), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "gone: dataset folder not found" in err and "--dataset" in err
    assert not (tmp_path / "p").exists()
    # another dataset is refused by its hash
    other = write_dataset(tmp_path / "other", episodes=2, length=10, seed=9)
    assert main(["export", str(moved), "--out", str(tmp_path / "p"), "--dataset", str(other)]) == 1
    assert "is not the run's training dataset" in capsys.readouterr().err
    copy = shutil.copytree(dataset, tmp_path / "copy")
    assert main(["export", str(moved), "--out", str(tmp_path / "p"), "--dataset", str(copy)]) == 0
    assert (tmp_path / "p" / "policy.json").is_file()


def test_missing_dataset_without_path_errors(exported, tmp_path):
    step, cfg = debug_policy_step()
    info = info_for(cfg, exported[0])
    info["dataset"].pop("path")
    with pytest.raises(DatasetError, match="pass --dataset"):
        export_policy_step(step, info, tmp_path / "p")


def test_cpu_preset_policy_fits_in_20_mb(tmp_path):
    import torch

    from lompo_core.agent.sac import Actor
    from lompo_core.config import resolve
    from lompo_core.model.policy_step import PolicyStep
    from lompo_core.model.world_model import WorldModel

    cfg = resolve("cpu")
    wm = WorldModel(cfg.model, 3)
    actor = Actor(cfg.model.stoch + cfg.model.deter, 3, cfg.agent.hidden, cfg.agent.actor_layers)
    step = PolicyStep(wm, actor, cfg.agent.penalty).eval()
    step.requires_grad_(False)
    torch.manual_seed(0)
    export_onnx(step, tmp_path / "policy.onnx")
    assert os.listdir(tmp_path) == ["policy.onnx"]
    assert (tmp_path / "policy.onnx").stat().st_size <= 20e6


def test_checkpoint_flag_exports_an_earlier_checkpoint_of_the_same_run(trained, policy, tmp_path):
    import torch

    run = trained[1]
    older = sorted((run / "checkpoints").glob("ckpt-*.pt"))[0]
    out = tmp_path / "older"
    assert main(["export", str(run), "--out", str(out), "--checkpoint", str(older)]) == 0
    training = json.loads((out / "policy.json").read_text())["training"]
    latest = json.loads((policy / "policy.json").read_text())["training"]
    assert training["checkpoint"] == str(older) and training["step"] < latest["step"]
    assert training["selection"] == "manual"  # a file the user named: no rule chose it
    assert sha256_file(out / "policy.onnx") != sha256_file(policy / "policy.onnx")

    state = torch.load(older, weights_only=False)
    state["config"]["seed"] += 1  # another run's checkpoint: its config differs
    stranger = tmp_path / "stranger.pt"
    torch.save(state, stranger)
    with pytest.raises(LompoError, match="not a checkpoint of"):
        export_run(run, tmp_path / "x", checkpoint=stranger)
    with pytest.raises(LompoError, match="no such checkpoint"):
        export_run(run, tmp_path / "y", checkpoint=tmp_path / "missing.pt")


def test_the_gate_lets_the_training_data_through_and_holds_a_covered_camera(policy, trained):
    """The trained policy through PolicyRuntime and Controller: a dataset episode replayed as
    camera frames is never held; black frames after it are, by the ``ood_patience``-th."""
    from lompo_core.runtime import Controller, ControllerConfig

    rt = PolicyRuntime(policy)
    c = Controller(
        ControllerConfig(ood_patience=2),
        rt.action_scaling,
        rt.uncertainty_threshold,
        rt.signal_thresholds,
    )
    assert c.ood_gate
    ep = EpisodeDataset(trained[0]).load(0)
    for t, image in enumerate(ep["image"]):
        d = c.on_result(rt.step(image), 0.1 * t)
        assert not d.reason.startswith("hold: out of distribution"), (t, d.reason)
        rt.set_prev_action(ep["action"][min(t + 1, len(ep["action"]) - 1)])
    black = np.zeros((64, 64, 3), np.uint8)
    reasons = [c.on_result(rt.step(black), 10 + 0.1 * t).reason for t in range(3)]
    assert not reasons[0].startswith("hold: out of distribution"), reasons
    assert all(r.startswith("hold: out of distribution") for r in reasons[1:]), reasons


def test_a_speed_limited_run_exports_a_policy_the_controller_lets_through(trained, tmp_path):
    """agent.max_linear_speed inside the actor reaches the ONNX graph: trained with a limit below
    the data's speeds, the exported policy's commands stay within it, some at it, and the
    controller with the same limit never slows one down."""
    from lompo_core.agent.trainer import train
    from lompo_core.runtime import Controller, ControllerConfig

    limit = 0.004  # m/s; the debug run's policy asks for ~0.01 without a limit
    run = train(
        trained[0],
        tmp_path / "run",
        "debug",
        ["log.progress=false", f"agent.max_linear_speed={limit}"],
    )
    out = tmp_path / "policy"
    assert main(["export", str(run), "--out", str(out)]) == 0
    rt = PolicyRuntime(out)
    c = Controller(
        ControllerConfig(max_linear_speed=limit, uncertainty_threshold=float("inf")),
        rt.action_scaling,
        rt.uncertainty_threshold,
        {name: float("inf") for name in rt.signal_thresholds},
    )
    norms, reasons = [], []
    for t, image in enumerate(EpisodeDataset(trained[0]).load(0)["image"]):
        result = rt.step(image)
        norms.append(float(np.linalg.norm(rt.action_scaling.to_physical(result.action))))
        reasons.append(c.on_result(result, 0.1 * t).reason)
    assert max(norms) <= limit and max(norms) > 0.99 * limit, norms
    assert not [r for r in reasons if "speed limited" in r], reasons


def test_a_world_model_that_believes_failed_actions_succeed_is_warned_of():
    """Seed 44's world model (false success 0.52) gave a policy whose last checkpoint dropped to
    9 of 20; seeds 40-43 and 45 (0.008-0.169) gave none."""
    line = world_model_warning({"open_loop_brier": 0.436, "false_success": 0.52})
    assert line is not None and "52%" in line and "false_success" in line
    assert world_model_warning({"open_loop_brier": 0.093, "false_success": 0.159}) is None
    assert world_model_warning({"false_success": float("nan")}) is None
    assert world_model_warning({}) is None and world_model_warning(None) is None
