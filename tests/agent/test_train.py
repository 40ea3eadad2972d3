"""End-to-end runs of the trainer on the debug preset (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lompo_core.agent.select import CHECK_KEYS, checkpoint_signals
from lompo_core.agent.trainer import Trainer, train
from lompo_core.cli import main as cli_main
from lompo_core.config import resolve
from lompo_core.errors import DatasetError, LompoError
from lompo_core.model.policy_step import load_policy_step


def _metrics(run: Path, key: str) -> list[float]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [ln[key] for ln in lines if key in ln]


def test_debug_run_lowers_model_loss_and_writes_the_run_folder(tiny_dataset, tmp_path):
    run = train(tiny_dataset, tmp_path / "run", "debug", ["world.steps=60"])
    loss = _metrics(run, "model/loss")
    assert np.mean(loss[-2:]) < np.mean(loss[:2]) - 20.0, loss
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())
    ds = json.loads((run / "dataset.json").read_text())
    assert ds["hash"] and ds["action"]["names"] == ["linear.x", "linear.y", "linear.z"]
    assert ds["preprocessing"] == {"crop": None, "size": 64}
    figures = sorted((run / "figures").glob("model-*.png"))
    assert len(figures) == 6  # every 10 model updates
    import cv2

    fig = cv2.imread(str(figures[-1]))
    assert fig.shape[1] == 8 * 64 and fig.shape[0] == 2 * 3 * 64 + 4  # 2 sequences x 3 rows
    assert (run / "checkpoints" / "last.pt").is_symlink()
    assert _metrics(run, "agent/q") and _metrics(run, "rollout/uncertainty")
    # The held-out open-loop check at every model checkpoint, a probability in [0, 1].
    brier = _metrics(run, "heldout/open_loop_brier")
    assert len(brier) == 6 and all(0.0 <= b <= 1.0 for b in brier)


def _finish(dataset, run, overrides=(), stop_at=None, log=None) -> Trainer:
    t = Trainer(dataset, run, resolve("debug", list(overrides)), log=log or (lambda m: None))
    t.run(stop_at=stop_at)
    return t


def _timeless(run: Path) -> list[dict]:
    out = []
    for ln in (run / "metrics.jsonl").read_text().splitlines():
        d = json.loads(ln)
        out.append({k: v for k, v in d.items() if k != "wall_s" and not k.startswith("speed/")})
    return out


def test_resume_continues_exactly_as_the_uninterrupted_run(tiny_dataset, tmp_path):
    ref = _finish(tiny_dataset, tmp_path / "ref")
    run = tmp_path / "cut"
    # Interrupted in the model phase (after checkpoints 10 and 20), then in the policy phase
    # (after 30 and 40); each resume starts from the last checkpoint and redoes what was lost.
    _finish(tiny_dataset, run, stop_at=25)
    assert Path((run / "checkpoints" / "last.pt").readlink()).name == "ckpt-00000020.pt"
    _finish(tiny_dataset, run, stop_at=47)
    logs: list[str] = []
    resumed = _finish(tiny_dataset, run, log=logs.append)
    assert any("resuming" in m and "ckpt-00000040.pt" in m for m in logs)
    a, b = ref.params_for_check(), resumed.params_for_check()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k, v in ref.agent_opt["actor"].state_dict()["state"].items():
        assert torch.equal(
            v["exp_avg"], resumed.agent_opt["actor"].state_dict()["state"][k]["exp_avg"]
        )
    assert _timeless(run) == _timeless(tmp_path / "ref")
    logs.clear()
    _finish(tiny_dataset, run, log=logs.append)
    assert any("finished" in m for m in logs)


def test_heldout_world_model_selection_starts_the_policy_phase_from_the_best_check(
    tiny_dataset, tmp_path
):
    over = ["world.steps=30", "world.select=heldout", "seed=3"]
    logs: list[str] = []
    ref = _finish(tiny_dataset, tmp_path / "ref", over, log=logs.append)
    lines = [json.loads(ln) for ln in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    checks = [(d["heldout/open_loop_brier"], d["model_step"]) for d in lines
              if "heldout/open_loop_brier" in d]  # fmt: skip
    assert [s for _, s in checks] == [10, 20, 30]
    best, step = min(checks)  # the lowest Brier, the earliest of equals
    assert step < 30  # on this seed the check prefers an earlier model: a real choice
    kept = torch.load(tmp_path / "ref" / "checkpoints" / "model.pt", weights_only=True)
    assert kept["model_step"] == step and kept["select_score"] == best
    assert any(f"after {step} updates" in m for m in logs)
    # The policy phase learnt in that model, and its checkpoints (and export) say which.
    for k, v in kept["world_model"].items():
        assert torch.equal(ref.wm.state_dict()[k], v), k
    _, info = load_policy_step(tmp_path / "ref")
    assert info["world_model_step"] == step
    # ... and carry that model's held-out check, not the last model's.
    logged = next(
        d for d in lines if d.get("model_step") == step and "heldout/open_loop_brier" in d
    )
    check = {k.removeprefix("heldout/"): v for k, v in logged.items() if k in CHECK_KEYS}
    assert info["world_model_check"] == check and check["open_loop_brier"] == best
    # A run cut between the model phase's end and its first policy checkpoint still starts its
    # policy phase from the kept model, exactly as the uninterrupted run.
    _finish(tiny_dataset, tmp_path / "cut", over, stop_at=35)
    resumed = _finish(tiny_dataset, tmp_path / "cut", over)
    a, b = ref.params_for_check(), resumed.params_for_check()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_rollouts_zero_penalty_and_conservative_variants(tiny_dataset, tmp_path):
    t = _finish(tiny_dataset, tmp_path / "a", ["agent.rollouts=false"])
    assert t.model_buf is None and len(t.real) > 0
    assert not _metrics(tmp_path / "a", "rollout/uncertainty")
    t = _finish(tiny_dataset, tmp_path / "b", ["agent.lmbda=0", "agent.penalty=mean"])
    assert t.model_buf is not None and len(t.model_buf) >= 64
    _finish(tiny_dataset, tmp_path / "c", ["agent.cql_weight=1.0"])
    gap = _metrics(tmp_path / "c", "agent/cql_gap")
    assert gap and all(np.isfinite(gap)), gap


def test_still_windows_rest_starts_and_a_refitted_end_train_and_resume_exactly(
    tiny_dataset, tmp_path
):
    over = ["world.still_fraction=0.25", "agent.rest_starts=0.5", "agent.refit_end_steps=50"]
    logs: list[str] = []
    ref = _finish(tiny_dataset, tmp_path / "ref", over, log=logs.append)
    assert any("frames at rest" in m for m in logs)
    assert any("continuation head refitted on" in m for m in logs)
    assert ref.sampler.still_fraction == 0.25
    # The agent checkpoints carry the refitted head; the rest of the world model is the model
    # phase's, as in the same run without the refit.
    plain = _finish(tiny_dataset, tmp_path / "plain", over[:2])
    last = torch.load(tmp_path / "ref/checkpoints/last.pt", weights_only=False)["world_model"]
    for k, v in plain.wm.state_dict().items():
        assert torch.equal(v, last[k]) != k.startswith("cont."), k
    assert 0.0 <= _metrics(tmp_path / "ref", "refit/false_ends")[0] <= 1.0
    # Cut in the policy phase: the resumed run computes the rest states again, and exactly.
    _finish(tiny_dataset, tmp_path / "cut", over, stop_at=45)
    resumed = _finish(tiny_dataset, tmp_path / "cut", over)
    a, b = ref.params_for_check(), resumed.params_for_check()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_actor_lr_decay_and_the_last_share_average_resume_exactly(tiny_dataset, tmp_path):
    # debug: 30 updates; the rate constant for 15, then linear; the acting copy the uniform
    # average of the last 10 (the cut at 52 lies in both)
    over = ["agent.actor_lr_decay=0.5", "agent.actor_ema=0.9", "agent.actor_swa=0.34"]
    ref = _finish(tiny_dataset, tmp_path / "ref", over)
    assert [ref.sac.actor_lr(s) for s in (0, 14, 15, 20, 29, 30)] == pytest.approx(
        [3e-4, 3e-4, 3e-4, 2e-4, 2e-5, 0.0]
    )
    logged = _metrics(tmp_path / "ref", "agent/actor_lr")  # means over 5 updates each
    assert logged == pytest.approx([3e-4, 3e-4, 3e-4, 2.6e-4, 1.6e-4, 6e-5])
    assert ref.agent_opt["critic"].param_groups[0]["lr"] == 3e-4
    _finish(tiny_dataset, tmp_path / "cut", over, stop_at=52)
    resumed = _finish(tiny_dataset, tmp_path / "cut", over)
    a, b = ref.params_for_check(), resumed.params_for_check()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not _metrics(_finish(tiny_dataset, tmp_path / "flat").run_dir, "agent/actor_lr")


def test_policy_step_loads_from_a_run(tiny_dataset, tmp_path):
    t = _finish(tiny_dataset, tmp_path / "run")
    step, info = load_policy_step(tmp_path / "run")
    assert info["step"] == 30 and info["seed"] == 0
    assert info["config"]["model"]["deter"] == step.deter_dim
    assert info["dataset"]["action"]["names"] == ["linear.x", "linear.y", "linear.z"]
    feat = torch.randn(5, step.stoch_dim + step.deter_dim)
    torch.testing.assert_close(step.actor.mode(feat), t.sac.actor.mode(feat))
    image = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    action, deter, stoch, u, *_ = step(
        image, torch.zeros(1, 3), torch.zeros(1, step.deter_dim), torch.zeros(1, step.stoch_dim)
    )
    assert action.shape == (1, 3) and u.shape == (1,) and float(action.abs().max()) <= 1.0


def test_in_training_eval_keeps_the_best_policy_for_export(tiny_dataset, tmp_path, monkeypatch):
    import lompo_core.agent.evaluate as ev

    # The real sim evaluation (MuJoCo) on the first and last call; a scripted score in between,
    # so that the best is known: 0.0 at update 10, 0.5 at 20, 0.5 at 30 (an equal keeps the first).
    scores = iter([None, 0.5, None])
    real = ev.evaluate_in_sim

    def scripted(*args, **kw):
        out = real(*args, **kw)
        score = next(scores)
        return out if score is None else {**out, "success_rate": score}

    monkeypatch.setattr(ev, "evaluate_in_sim", scripted)
    overrides = ["eval.every=10", "eval.episodes=1", "eval.max_steps=3", "eval.keep_best=true"]
    _finish(tiny_dataset, tmp_path / "run", overrides)
    evals = _metrics(tmp_path / "run", "eval/success")
    assert len(evals) == 3 and evals[1] == 0.5
    step, info = load_policy_step(tmp_path / "run", "best")
    assert info["step"] == 20 and info["checkpoint"].endswith("checkpoints/best.pt")
    out = tmp_path / "policy"
    assert (
        cli_main(["export", str(tmp_path / "run"), "--out", str(out), "--checkpoint", "best"]) == 0
    )
    training = json.loads((out / "policy.json").read_text())["training"]
    assert training["step"] == 20 and training["selection"] == "sim"
    with pytest.raises(LompoError, match="no best.pt"):
        load_policy_step(_finish(tiny_dataset, tmp_path / "plain").run_dir, "best")


def test_resume_refuses_another_config_or_dataset_and_foreign_folders(tiny_dataset, tmp_path):
    from agent_datasets import write_dataset

    run = tmp_path / "run"
    _finish(tiny_dataset, run, ["world.steps=10", "agent.steps=10"])
    with pytest.raises(LompoError, match="another config.*world.steps"):
        _finish(tiny_dataset, run, ["world.steps=20", "agent.steps=10"])
    other = write_dataset(tmp_path / "other", seed=5)
    with pytest.raises(LompoError, match="dataset"):
        _finish(other, run, ["world.steps=10", "agent.steps=10"])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LompoError, match="not a lompo run folder"):
        _finish(tiny_dataset, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def _break(root: Path, how: str) -> None:
    path = root / "ep_0003.npz"
    with np.load(path) as z:
        ep = {k: z[k] for k in z.files}
    if how == "missing key":
        del ep["reward"]
    elif how == "dtype":
        ep["image"] = ep["image"].astype(np.float32)
    elif how == "shape":
        ep["image"] = ep["image"][:, :32]
    elif how == "empty":
        ep = {k: v[:0] for k, v in ep.items()}
    np.savez(path, **ep)


@pytest.mark.parametrize(
    "how, match",
    [
        ("missing key", "ep_0003.npz: missing key.*reward"),
        ("dtype", "ep_0003.npz: key 'image' has dtype float32"),
        ("shape", "ep_0003.npz: key 'image' has shape"),
        ("empty", "ep_0003.npz: empty episode"),
    ],
)
def test_bad_dataset_gives_a_clear_error(tmp_path, how, match):
    from agent_datasets import write_dataset

    root = write_dataset(tmp_path / "ds")
    _break(root, how)
    with pytest.raises(DatasetError, match=match):
        train(root, tmp_path / "run", "debug")
    assert not (tmp_path / "run").exists()


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    rc = cli_main(["train", "--dataset", str(tmp_path / "nope"), "--run", str(tmp_path / "r")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dataset folder not found" in err
    rc = cli_main(
        [
            "train",
            "--dataset",
            "x",
            "--run",
            "y",
            "--preset",
            "debug",
            "--print-config",
            "agent.lmbda=0",
        ]
    )
    assert rc == 0 and "lmbda: 0.0" in capsys.readouterr().out


def test_offline_signal_per_checkpoint_chooses_what_export_takes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    t = _finish(tiny_dataset, run, ["agent.select=offline", "agent.bc_weight=1"])
    # The held-out episodes feed only the signal: the real buffer holds the training episodes.
    ds = t.dataset
    assert t.holdout and not set(t.holdout) & set(t.encode_idx)
    assert len(t.real) == sum(int(ds.lengths[i]) - 1 for i in t.encode_idx)
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    signal = {ln["agent_step"]: ln["offline/model_return"] for ln in lines if "offline/q" in ln}
    assert sorted(signal) == [10, 20, 30]  # every agent checkpoint, the last included
    best = max(signal, key=lambda s: (signal[s], -s))  # the earliest of equals
    out = tmp_path / "policy"
    assert cli_main(["export", str(run), "--out", str(out)]) == 0
    training = json.loads((out / "policy.json").read_text())["training"]
    assert training["selection"] == "offline:model_return" and training["step"] == best
    assert training["checkpoint"].endswith("checkpoints/offline.pt")
    last = ["--checkpoint", "last", "--overwrite"]
    assert cli_main(["export", str(run), "--out", str(out), *last]) == 0
    training = json.loads((out / "policy.json").read_text())["training"]
    assert training["selection"] == "last" and training["step"] == 30
    # A resumed (here: finished) run restores the offline choice's score from offline.pt.
    resumed = _finish(tiny_dataset, run, ["agent.select=offline", "agent.bc_weight=1"])
    assert resumed.best_offline == signal[best]
    # The signals recomputed from a saved checkpoint (training/ablate.py) are the logged ones.
    logged = next(ln for ln in lines if ln["agent_step"] == 30 and "offline/q" in ln)
    ckpt = run / "checkpoints" / f"ckpt-{t.cfg.world.steps + 30:08d}.pt"  # the final one
    again = checkpoint_signals(ckpt, ds)
    assert set(again) == {k for k in logged if k.startswith("offline/")}
    for k, v in again.items():
        assert v == pytest.approx(logged[k], rel=1e-5, abs=1e-6), k
    with pytest.raises(LompoError, match="not an agent-phase training checkpoint"):
        checkpoint_signals(run / "checkpoints" / "offline.pt", ds)  # the policy alone


def test_a_run_with_actor_ema_exports_the_average(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    t = _finish(tiny_dataset, run, ["agent.actor_ema=0.9", "agent.critic_norm=true"])
    step, info = load_policy_step(run)
    assert info["step"] == 30
    for name, value in t.sac.actor_ema.state_dict().items():
        assert torch.equal(step.actor.state_dict()[name], value), name
    assert not torch.equal(step.actor.net[0].weight, t.sac.actor.net[0].weight)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_average_of_the_last_third_is_what_export_takes(tiny_dataset, tmp_path, ema):
    over = ["agent.select=average", f"agent.actor_ema={ema}"]
    prefix = "actor_ema." if ema else "actor."
    ref = _finish(tiny_dataset, tmp_path / "ref", over)
    folder = tmp_path / "ref" / "checkpoints"
    # Agent checkpoints at 10, 20 and 30 updates of 30: the last third's are 20 and 30.
    ckpts = [torch.load(folder / f"ckpt-{ref.cfg.world.steps + s:08d}.pt", weights_only=True)
             for s in (20, 30)]  # fmt: skip
    average = torch.load(folder / "average.pt", weights_only=True)
    assert average["average_count"] == 2 and average["agent_step"] == 30
    actor = [k for k in average["sac"] if k.startswith(prefix)]
    assert actor
    for k in actor:
        mean = (ckpts[0]["sac"][k] + ckpts[1]["sac"][k]) / 2
        assert torch.allclose(average["sac"][k], mean, atol=1e-7), k
        assert not torch.equal(average["sac"][k], ckpts[1]["sac"][k]), k
    # The critics are the last checkpoint's; only the acting actor is averaged.
    assert torch.equal(average["sac"]["critic.q1.0.weight"], ckpts[1]["sac"]["critic.q1.0.weight"])
    out = tmp_path / "policy"
    assert cli_main(["export", str(tmp_path / "ref"), "--out", str(out)]) == 0
    training = json.loads((out / "policy.json").read_text())["training"]
    assert training["selection"] == "average" and training["checkpoint"].endswith("average.pt")
    step, _ = load_policy_step(tmp_path / "ref", folder / "average.pt")
    for k, v in step.actor.state_dict().items():
        assert torch.equal(v, average["sac"][prefix + k]), k
    # Cut after the first averaged checkpoint and resumed: the same average as without the cut.
    _finish(tiny_dataset, tmp_path / "cut", over, stop_at=ref.cfg.world.steps + 25)
    _finish(tiny_dataset, tmp_path / "cut", over)
    again = torch.load(tmp_path / "cut" / "checkpoints" / "average.pt", weights_only=True)
    assert again["average_count"] == 2
    assert all(torch.equal(again["sac"][k], average["sac"][k]) for k in actor)


def test_filtered_bc_reads_the_successes_steps_no_critic_and_exports_its_early_stop(
    tiny_dataset, tmp_path
):
    run = tmp_path / "run"
    assert cli_main(["train", "--dataset", str(tiny_dataset), "--run", str(run), "--preset",
                     "debug", "--algo", "filtered_bc", "agent.steps=60"]) == 0  # fmt: skip
    t = Trainer(tiny_dataset, run, resolve("debug", ["algo=filtered_bc", "agent.steps=60"]))
    t.run()  # finished: restores the state
    ds = t.dataset
    assert t.encode_idx and all(ds.episodes[i].success for i in t.encode_idx)
    assert len(t.real) == sum(int(ds.lengths[i]) - 1 for i in t.encode_idx)
    assert t.model_buf is None
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    updates = [ln for ln in lines if "agent/bc_mse" in ln]
    assert len(updates) == 60 // 5 and not any("agent/critic_loss" in ln for ln in updates)
    # No critic step: the critics are their initial weights (the seed's).
    fresh = Trainer(tiny_dataset, tmp_path / "fresh", resolve("debug", ["algo=filtered_bc"]))
    for name, value in fresh.sac.critic.state_dict().items():
        assert torch.equal(t.sac.critic.state_dict()[name], value), name
    out = tmp_path / "policy"
    assert cli_main(["export", str(run), "--out", str(out)]) == 0
    training = json.loads((out / "policy.json").read_text())["training"]
    assert training["algo"] == "filtered_bc" and training["selection"] == "offline:bc_mse"
    # The exported checkpoint: the lowest held-out action error (the earliest of equals).
    error = {ln["agent_step"]: ln["offline/bc_mse"] for ln in lines if "offline/bc_mse" in ln}
    assert training["step"] == min(error, key=lambda s: (error[s], s))


def test_filtered_bc_without_a_successful_episode_is_refused(tmp_path):
    from agent_datasets import write_dataset

    ds = write_dataset(tmp_path / "fails", episodes=4)
    meta = json.loads((ds / "meta.json").read_text())
    for e in meta["episodes"]:
        e["success"] = False
    (ds / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="no successful training episode"):
        Trainer(ds, tmp_path / "run", resolve("debug", ["algo=filtered_bc"]))
