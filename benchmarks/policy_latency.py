"""Latency of one full policy step on one thread: decode, preprocess, model, controller.

For a ROS ``sensor_msgs/Image`` (rgb8) of 64x64 and of 640x480, it times the path the policy
node runs (PolicyRuntime.step on the message, then Controller.on_result) with onnxruntime, and
the same step with the same model in torch eager (same decode and preprocessing, torch instead of
onnxruntime), in the same process, interleaved so that both see the same machine load.

    python benchmarks/policy_latency.py                 # cpu-preset sizes, random weights
    python benchmarks/policy_latency.py --run runs/drawer --steps 5000 --json

Targets (issue 5): p50 <= 1 ms and p99 <= 2 ms at 64x64, and >= 3x faster than torch eager.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_dataset(root: Path, steps: int = 32) -> Path:
    """One episode of noise images: enough for the exporter's calibration, nothing more."""
    from lompo_core.data.dataset import write_dataset
    from lompo_core.image import Preprocessing

    rng = np.random.default_rng(0)
    ep = {
        "image": rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8),
        "action": np.vstack([np.zeros((1, 3)), rng.uniform(-1, 1, (steps - 1, 3))]).astype(
            np.float32
        ),
        "reward": np.zeros(steps, np.float32),
        "is_first": np.arange(steps) == 0,
        "is_last": np.arange(steps) == steps - 1,
        "is_terminal": np.zeros(steps, bool),
    }
    action = {"names": ["linear.x", "linear.y", "linear.z"], "unit": "m/s", "max": [0.1] * 3}
    return write_dataset(root, [ep], action, Preprocessing().as_dict(), name="ep.npz")


def policy_and_export(args: argparse.Namespace, tmp: Path):
    """(PolicyStep, policy folder, description) for --run, or cpu-preset sizes at random."""
    import torch

    from lompo_core.export.export import export_policy_step

    if args.run:
        from lompo_core.model.policy_step import load_policy_step

        step, info = load_policy_step(args.run)
        where = f"run {args.run}"
        dataset = args.dataset
    else:
        from lompo_core.agent.sac import Actor
        from lompo_core.config import resolve
        from lompo_core.model.policy_step import PolicyStep
        from lompo_core.model.world_model import WorldModel

        torch.manual_seed(0)
        cfg = resolve(args.preset)
        wm = WorldModel(cfg.model, 3)
        feat = cfg.model.stoch + cfg.model.deter
        actor = Actor(feat, 3, cfg.agent.hidden, cfg.agent.actor_layers)
        step = PolicyStep(wm, actor, cfg.agent.penalty).eval()
        step.requires_grad_(False)
        dataset = synthetic_dataset(tmp / "dataset")
        info = {"config": cfg.to_dict(), "dataset": {"path": str(dataset)}, "step": 0, "seed": 0}
        where = f"{args.preset} preset sizes, random weights"
    out = tmp / "policy"
    export_policy_step(step, info, out, dataset_dir=dataset)
    return step, out, where


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def bench(step, policy: Path, size: tuple[int, int], steps: int, warmup: int) -> dict:
    import torch

    from lompo_core.image import to_model_image
    from lompo_core.messages import kit
    from lompo_core.runtime import Controller, ControllerConfig, PolicyRuntime, RuntimeResult

    h, w = size
    rng = np.random.default_rng(1)
    # Pixel values do not change the arithmetic of decode, resize or the network.
    frames = [
        kit().image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), i)
        for i in range(8)
    ]
    runtime = PolicyRuntime(policy, threads=1)
    ctrl_onnx, ctrl_torch = (
        Controller(
            ControllerConfig(),
            runtime.action_scaling,
            runtime.uncertainty_threshold,
            runtime.signal_thresholds,
        )
        for _ in range(2)
    )
    pre = runtime.preprocessing

    a_dim = runtime.action_dim
    state = {
        "prev": torch.zeros(1, a_dim),
        "deter": torch.zeros(1, step.deter_dim),
        "stoch": torch.zeros(1, step.stoch_dim),
    }

    def torch_step(msg) -> None:
        start = time.perf_counter()
        img = torch.from_numpy(to_model_image(msg, pre)[None])
        with torch.inference_mode():
            action, deter, stoch, u, surprise, error, patch_error = step(
                img, state["prev"], state["deter"], state["stoch"]
            )
        state.update(prev=action, deter=deter, stoch=stoch)
        result = RuntimeResult(
            ok=True,
            reason="ok",
            action=action[0].numpy(),
            uncertainty=float(u[0]),
            surprise=float(surprise[0]),
            reconstruction_error=float(error[0]),
            reconstruction_patch_error=float(patch_error[0]),
            model_image=None,
            latency_s=time.perf_counter() - start,
        )
        ctrl_torch.on_result(result, 0.0)

    times: dict[str, list[float]] = {
        k: [] for k in ("onnx", "torch", "onnx_model_only", "onnx_cpu", "torch_cpu")
    }
    feeds = None
    for i in range(warmup + steps):
        msg = frames[i % len(frames)]
        # Interleaved: both paths see the same moments of machine load.
        c0, t0 = time.thread_time(), time.perf_counter()
        r = runtime.step(msg)
        ctrl_onnx.on_result(r, 0.0)
        c1, t1 = time.thread_time(), time.perf_counter()
        torch_step(msg)
        c2, t2 = time.thread_time(), time.perf_counter()
        if feeds is None:
            feeds = {
                "image": r.model_image[None],
                "prev_action": np.zeros((1, a_dim), np.float32),
                **{k: v for k, v in runtime.state.items() if k != "prev_action"},
            }
        runtime.session.run(None, feeds)
        t3 = time.perf_counter()
        if i >= warmup:
            times["onnx"].append(t1 - t0)
            times["torch"].append(t2 - t1)
            times["onnx_model_only"].append(t3 - t2)
            # CPU time of this thread (both engines compute in the calling thread with one
            # thread): what the step costs without the waits a loaded machine adds to wall time.
            times["onnx_cpu"].append(c1 - c0)
            times["torch_cpu"].append(c2 - c1)
        if not r.ok:
            raise RuntimeError(f"runtime step failed: {r.reason}")
    result = {name: percentiles(v) for name, v in times.items()}
    result["speedup_p50"] = result["torch"]["p50_ms"] / result["onnx"]["p50_ms"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a trained run (default: random weights)")
    parser.add_argument("--dataset", type=Path, help="the run's dataset, if it has moved")
    parser.add_argument("--preset", default="cpu", help="sizes for random weights (default cpu)")
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU core")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    with tempfile.TemporaryDirectory(prefix="lompo-bench-") as tmp:
        step, policy, where = policy_and_export(args, Path(tmp))
        report = {
            "model": where,
            "onnx_bytes": (policy / "policy.onnx").stat().st_size,
            "threads": 1,
            "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "load_average_1m_before": os.getloadavg()[0],
            "sizes": {},
        }
        for h, w in ((64, 64), (480, 640)):
            report["sizes"][f"{w}x{h}"] = bench(step, policy, (h, w), args.steps, args.warmup)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"policy step latency, one thread, {args.steps} steps; model: {where}")
    print(
        f"onnx {report['onnx_bytes'] / 1e6:.2f} MB; {report['cpu']} ({report['cores']} cores, "
        f"load average {report['load_average_1m_before']:.1f} before); {report['versions']}"
    )
    print(f"{'input (rgb8 Image)':<20}{'path':<36}{'p50 ms':>8}{'p99 ms':>8}{'mean ms':>9}")
    labels = {
        "onnx": "full step, onnxruntime",
        "torch": "full step, torch eager",
        "onnx_model_only": "onnxruntime session.run only",
        "onnx_cpu": "full step, onnxruntime, CPU time",
        "torch_cpu": "full step, torch eager, CPU time",
    }
    for size, res in report["sizes"].items():
        for key, label in labels.items():
            r = res[key]
            print(f"{size:<20}{label:<36}{r['p50_ms']:8.3f}{r['p99_ms']:8.3f}{r['mean_ms']:9.3f}")
        print(f"{size:<20}{'speedup (torch p50 / onnx p50)':<36}{res['speedup_p50']:8.1f}x")
    small = report["sizes"]["64x64"]
    for key, label in (("onnx", "wall time"), ("onnx_cpu", "CPU time")):
        met = small[key]["p50_ms"] <= 1 and small[key]["p99_ms"] <= 2 and small["speedup_p50"] >= 3
        print(
            f"targets at 64x64 (p50 <= 1 ms, p99 <= 2 ms, >= 3x torch), {label}: "
            f"{'met' if met else 'NOT met'}"
        )
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


if __name__ == "__main__":
    sys.exit(main())
