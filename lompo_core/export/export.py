"""``lompo export``: a trained run -> ``policy.onnx`` (one recurrent step) + ``policy.json``.

The ONNX graph is ``PolicyStep`` traced once: uint8 image (normalised inside the graph), previous
action and latent state in; action, next latent state, uncertainty and the image signals
(surprise, reconstruction error image-wide and of the worst 8x8 patch) out. The sidecar says how
to feed it (names, shapes, preprocessing), how to read it (action scaling, the thresholds of the
uncertainty and of each image signal, calibrated here on the training data) and where it came
from (config, dataset hash, code version, the onnx file's sha256). Both files are written to a
hidden folder beside ``--out`` and renamed into place, so a reader never sees half an export.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lompo_core.data.dataset import EpisodeDataset
from lompo_core.errors import DatasetError, PolicyError
from lompo_core.files import atomic_folder
from lompo_core.image import Preprocessing
from lompo_core.runtime.sidecar import (
    FIRST_FRAME_EXEMPT,
    IMAGE_SIGNALS,
    INPUT_NAMES,
    MANIFEST_FIELD,
    ONNX_FILE,
    OUTPUT_NAMES,
    SCHEMA_VERSION,
    SIDECAR_FILE,
    manifest_sha256,
    sha256_file,
)

OPSET = 18  # torch's exporter implements >= 18; onnxruntime >= 1.14 runs it
TOLERANCE = 1e-5  # torch vs onnxruntime: |a - b| <= TOLERANCE * max(1, |torch|)
DEFAULT_PERCENTILE = 99.0
# The image signals gate every frame (a hold after a few frames in a row above), so their
# threshold sits further out than the uncertainty's, to keep false holds rare in distribution.
DEFAULT_SIGNAL_PERCENTILE = 99.9
DEFAULT_CALIBRATION_STEPS = 20_000

Log = Callable[[str], None]


@dataclass
class VerifyReport:
    """Largest scaled difference torch vs onnxruntime per output, on random and real inputs."""

    random_trials: int
    random_max_diff: dict[str, float]
    episode_file: str
    episode_steps: int
    episode_max_diff: dict[str, float]
    tolerance: float

    @property
    def ok(self) -> bool:
        diffs = [*self.random_max_diff.values(), *self.episode_max_diff.values()]
        return all(d <= self.tolerance for d in diffs)

    def summary(self) -> str:
        worst_r = max(self.random_max_diff.values())
        worst_e = max(self.episode_max_diff.values())
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"verify {verdict}: torch vs onnxruntime max diff {worst_r:.2e} on "
            f"{self.random_trials} random inputs, {worst_e:.2e} along {self.episode_file} "
            f"({self.episode_steps} steps, state carried); tolerance {self.tolerance:.0e}"
        )


@dataclass
class ExportResult:
    out: Path
    onnx_sha256: str
    onnx_bytes: int
    uncertainty_threshold: float
    calibration: dict[str, Any]
    verify: VerifyReport | None
    signal_thresholds: dict[str, float] = field(default_factory=dict)
    signal_calibration: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- ONNX ---------------------------------------------------------------------------------------


def example_inputs(step: Any, batch: int = 1, seed: int = 0) -> tuple[Any, ...]:
    """Random inputs of the step's shapes (torch tensors): an image, an action in [-1, 1], and
    latent states of a plausible scale."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, generator=g),
        torch.rand(batch, step.action_dim, generator=g) * 2 - 1,
        torch.randn(batch, step.deter_dim, generator=g),
        torch.randn(batch, step.stoch_dim, generator=g),
    )


def export_onnx(step: Any, path: Path) -> None:
    """Trace one recurrent step of ``step`` (a PolicyStep) into a single self-contained file."""
    import logging
    import warnings

    import torch

    # The exporter reports progress and benign version notes on stdout, stderr and logging.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            step.eval(),
            example_inputs(step),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            external_data=False,
            verbose=False,
            optimize=True,
        )
    program.save(str(path), external_data=False)
    if not path.is_file():
        raise PolicyError(f"{path}: the ONNX exporter wrote nothing")


def _session(model: Path | bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _io_specs(session: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    types = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}

    def spec(arg: Any) -> dict[str, Any]:
        if not all(isinstance(d, int) for d in arg.shape) or arg.type not in types:
            raise PolicyError(f"exported ONNX {arg.name!r} is {arg.type} {arg.shape}: not static")
        return {"name": arg.name, "shape": list(arg.shape), "dtype": types[arg.type]}

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


# -- calibration and parity ---------------------------------------------------------------------


def _episode_indices(dataset: EpisodeDataset, max_steps: int) -> list[int]:
    """Episodes spread evenly over the dataset, as many as fit in ``max_steps``."""
    mean_len = max(1.0, float(dataset.lengths.mean()))
    wanted = max(1, min(len(dataset), int(np.ceil(max_steps / mean_len))))
    return [int(i) for i in np.unique(np.linspace(0, len(dataset) - 1, num=wanted).round())]


def calibrate(
    session: Any,
    dataset: EpisodeDataset,
    percentile: float = DEFAULT_PERCENTILE,
    max_steps: int = DEFAULT_CALIBRATION_STEPS,
    signal_percentile: float = DEFAULT_SIGNAL_PERCENTILE,
) -> dict[str, tuple[float, dict[str, Any]]]:
    """The thresholds of the uncertainty and of each image signal the step outputs, as
    ``{name: (threshold, stats)}``: a percentile (``percentile`` for the uncertainty,
    ``signal_percentile`` for the image signals) of the values the exported step reports along
    dataset episodes, the latent state carried and the dataset's (executed) actions fed back, as
    in training. In-distribution by construction, so above it means "not like the data".
    The surprise of an episode's first step is left out (``FIRST_FRAME_EXEMPT``): there the
    prior is the model's initial state, which no image matches, and the gate does not read it.
    """
    names = [o.name for o in session.get_outputs()]
    signals = ["uncertainty", *(n for n in IMAGE_SIGNALS if n in names)]
    values: dict[str, list[np.ndarray]] = {n: [] for n in signals}
    used = 0
    episodes = 0
    for index in _episode_indices(dataset, max_steps):
        ep = dataset.load(index)
        trace = run_episode(session, ep, feed="dataset")
        keep = max(0, max_steps - used)
        for n in signals:
            v = trace[n][:keep]
            if n in FIRST_FRAME_EXEMPT:
                v = v[~np.asarray(ep["is_first"][:keep], bool)]
            values[n].append(v)
        used += min(keep, len(ep["image"]))
        episodes += 1
        if used >= max_steps:
            break
    out: dict[str, tuple[float, dict[str, Any]]] = {}
    for n in signals:
        all_v = np.concatenate(values[n]).astype(np.float64)
        if not np.all(np.isfinite(all_v)):
            raise PolicyError(
                f"calibration: the exported policy reports NaN or Inf {n} on dataset images; "
                "the run's weights are broken"
            )
        q = percentile if n == "uncertainty" else signal_percentile
        out[n] = (
            float(np.percentile(all_v, q)),
            {
                "method": "percentile",
                "percentile": float(q),
                "episodes": episodes,
                "steps": int(all_v.size),
                "actions": "dataset",
                "mean": float(all_v.mean()),
                "p50": float(np.percentile(all_v, 50)),
                "max": float(all_v.max()),
            },
        )
    return out


def run_episode(session: Any, ep: dict[str, np.ndarray], feed: str = "policy") -> dict[str, Any]:
    """Carry the recurrent state through one episode with onnxruntime.

    ``feed="policy"``: the previous action is the policy's own output (what the runtime does);
    ``"dataset"``: it is the dataset's action that led to each image (what training saw).
    """
    images, actions = ep["image"], ep["action"]
    a_dim = actions.shape[1]
    d_shape = session.get_inputs()[2].shape
    s_shape = session.get_inputs()[3].shape
    names = [o.name for o in session.get_outputs()]
    prev = np.zeros((1, a_dim), np.float32)
    deter, stoch = np.zeros(d_shape, np.float32), np.zeros(s_shape, np.float32)
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for t in range(len(images)):
        if feed == "dataset":
            prev = actions[t : t + 1].astype(np.float32)
            if ep["is_first"][t]:
                prev = np.zeros_like(prev)
                deter, stoch = np.zeros_like(deter), np.zeros_like(stoch)
        result = session.run(
            None, {"image": images[t : t + 1], "prev_action": prev, "deter": deter, "stoch": stoch}
        )
        for name, value in zip(names, result, strict=True):
            out[name].append(value[0])
        action, deter, stoch = result[:3]
        if feed == "policy":
            prev = action
    return {name: np.stack(v) for name, v in out.items()}


def _torch_episode(step: Any, ep: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    a_dim = ep["action"].shape[1]
    prev = torch.zeros(1, a_dim)
    deter, stoch = torch.zeros(1, step.deter_dim), torch.zeros(1, step.stoch_dim)
    out: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    with torch.no_grad():
        for t in range(len(ep["image"])):
            result = step(torch.from_numpy(ep["image"][t : t + 1]), prev, deter, stoch)
            for name, value in zip(OUTPUT_NAMES, result, strict=True):
                out[name].append(value[0].numpy())
            prev, deter, stoch = result[:3]
    return {name: np.stack(v) for name, v in out.items()}


def _scaled_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)), initial=0.0))


def verify(
    step: Any,
    policy_dir: Path,
    dataset: EpisodeDataset,
    trials: int = 16,
    episode_index: int = 0,
    tolerance: float = TOLERANCE,
) -> VerifyReport:
    """Compare torch with onnxruntime: random inputs, then one dataset episode with each side
    carrying its own recurrent state and feeding back its own actions, as the runtime does.

    The folder is loaded through PolicyRuntime first, so the sidecar checks run too.
    """
    import torch

    from lompo_core.runtime.policy_runtime import PolicyRuntime

    runtime = PolicyRuntime(policy_dir, threads=1)
    session = runtime.session
    random_diff = dict.fromkeys(OUTPUT_NAMES, 0.0)
    with torch.no_grad():
        for trial in range(trials):
            inputs = example_inputs(step, seed=1000 + trial)
            want = step(*inputs)
            got = session.run(
                None, dict(zip(INPUT_NAMES, [x.numpy() for x in inputs], strict=True))
            )
            for name, w, g in zip(OUTPUT_NAMES, want, got, strict=True):
                random_diff[name] = max(random_diff[name], _scaled_diff(g, w.numpy()))
    ep = dataset.load(episode_index)
    got_ep = run_episode(session, ep, feed="policy")
    want_ep = _torch_episode(step, ep)
    episode_diff = {n: _scaled_diff(got_ep[n], want_ep[n]) for n in OUTPUT_NAMES}
    return VerifyReport(
        random_trials=trials,
        random_max_diff=random_diff,
        episode_file=dataset.episodes[episode_index].file,
        episode_steps=len(ep["image"]),
        episode_max_diff=episode_diff,
        tolerance=tolerance,
    )


# -- provenance ---------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """lompo's version and, when it runs from a git checkout, the commit and whether it is dirty."""
    from lompo_core import __version__

    info: dict[str, Any] = {"lompo": __version__, "git_commit": None, "git_dirty": None}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "lompo_core",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        info["git_commit"], info["git_dirty"] = commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass  # installed from a wheel, or git missing: the version alone must do
    return info


def _control_rate(meta: dict[str, Any]) -> float | None:
    for key in ("control_rate_hz", "rate_hz"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


# -- the export ---------------------------------------------------------------------------------


def open_training_dataset(info: dict[str, Any], dataset_dir: str | Path | None) -> EpisodeDataset:
    """The run's dataset (or ``dataset_dir``), checked to be the one the run was trained on."""
    recorded = info.get("dataset", {})
    path = dataset_dir if dataset_dir is not None else recorded.get("path")
    if path is None:
        raise DatasetError("the run does not record its dataset's path; pass --dataset DIR")
    if not Path(path).is_dir():
        hint = "" if dataset_dir is not None else " (recorded in the run's dataset.json)"
        raise DatasetError(
            f"{path}: dataset folder not found{hint}; the uncertainty threshold is calibrated on "
            "the training data: pass --dataset DIR with a copy of it"
        )
    dataset = EpisodeDataset(path)
    want = recorded.get("hash")
    if want and dataset.hash != want:
        raise DatasetError(
            f"{path}: content hash {dataset.hash[:12]}... is not the run's training dataset "
            f"({str(want)[:12]}...); calibrating on other data would misplace the threshold"
        )
    want_pre = recorded.get("preprocessing")
    if want_pre is not None and Preprocessing.from_dict(dataset.preprocessing) != (
        Preprocessing.from_dict(want_pre)
    ):
        raise DatasetError(
            f"{path}: preprocessing {dataset.preprocessing} differs from the run's {want_pre}"
        )
    return dataset


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it")
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder; refusing to replace it")


def export_policy_step(
    step: Any,
    info: dict[str, Any],
    out: str | Path,
    *,
    dataset_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    check: bool = False,
    overwrite: bool = False,
    percentile: float = DEFAULT_PERCENTILE,
    calibration_steps: int = DEFAULT_CALIBRATION_STEPS,
    signal_percentile: float = DEFAULT_SIGNAL_PERCENTILE,
    log: Log = lambda _msg: None,
) -> ExportResult:
    """Export a PolicyStep with its ``info`` (as load_policy_step returns) to the folder ``out``."""
    out = Path(out)
    if not 0 < percentile <= 100:
        raise PolicyError(f"percentile must be in (0, 100], got {percentile}")
    if not 0 < signal_percentile <= 100:
        raise PolicyError(f"signal percentile must be in (0, 100], got {signal_percentile}")
    if calibration_steps < 1:
        raise PolicyError(f"calibration steps must be >= 1, got {calibration_steps}")
    _check_out(out, overwrite)
    dataset = open_training_dataset(info, dataset_dir)
    preprocessing = Preprocessing.from_dict(
        info.get("dataset", {}).get("preprocessing", dataset.preprocessing)
    )
    action = dict(info.get("dataset", {}).get("action") or dataset.meta["action"])
    if len(action["names"]) != step.action_dim:
        raise PolicyError(
            f"the run's action names {action['names']} do not match the policy's "
            f"{step.action_dim} action dimensions"
        )
    # Built hidden beside ``out`` and renamed into place whole; an old export is replaced only
    # if it still may be (it may have appeared meanwhile).
    with atomic_folder(out, before_replace=lambda: _check_out(out, overwrite)) as staging:
        onnx_path = staging / ONNX_FILE
        log(f"tracing the policy step to ONNX (opset {OPSET})")
        export_onnx(step, onnx_path)
        session = _session(onnx_path)
        inputs, outputs = _io_specs(session)
        log(f"calibrating the uncertainty and image signal thresholds on {dataset.root}")
        calibrated = calibrate(session, dataset, percentile, calibration_steps, signal_percentile)
        threshold, calibration = calibrated.pop("uncertainty")
        digest = sha256_file(onnx_path)
        sidecar = {
            "schema_version": SCHEMA_VERSION,
            "onnx_file": ONNX_FILE,
            "onnx_sha256": digest,
            "opset": OPSET,
            "inputs": inputs,
            "outputs": outputs,
            "preprocessing": preprocessing.as_dict(),
            "action": {
                "names": list(action["names"]),
                "unit": action.get("unit", ""),
                "max": [float(m) for m in action["max"]],
            },
            "control_rate_hz": _control_rate(dataset.meta),
            "uncertainty_threshold": threshold,
            "uncertainty_calibration": calibration,
            "uncertainty_penalty": getattr(step, "penalty", None),
            **{f"{n}_threshold": t for n, (t, _) in calibrated.items()},
            **{f"{n}_calibration": c for n, (_, c) in calibrated.items()},
            "training": {
                "run": None if run_dir is None else str(run_dir),
                "checkpoint": info.get("checkpoint"),
                "selection": info.get("selection"),
                "algo": (info.get("config") or {}).get("algo", "lompo"),
                "step": info.get("step"),
                "world_model_step": info.get("world_model_step"),
                "world_model_check": info.get("world_model_check"),
                "seed": info.get("seed"),
                "config": info.get("config"),
            },
            "dataset": {
                "path": str(dataset.root),
                "hash": dataset.hash,
                "camera": dataset.camera,
            },
            "code_version": code_version(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }
        # The manifest binds both files: hashed over the sidecar as it will be read back.
        sidecar[MANIFEST_FIELD] = manifest_sha256(
            json.loads(json.dumps(sidecar)), onnx_path.read_bytes()
        )
        _write_file(staging / SIDECAR_FILE, json.dumps(sidecar, indent=2).encode())
        report = None
        if check:
            log("verifying torch against onnxruntime")
            report = verify(step, staging, dataset)
            log(report.summary())
            if not report.ok:
                raise PolicyError(
                    f"{report.summary()}; the export was not written "
                    f"(per output: random {report.random_max_diff}, "
                    f"episode {report.episode_max_diff})"
                )
        _fsync_dir(staging)
    return ExportResult(
        out=out,
        onnx_sha256=digest,
        onnx_bytes=(out / ONNX_FILE).stat().st_size,
        uncertainty_threshold=threshold,
        calibration=calibration,
        verify=report,
        signal_thresholds={n: t for n, (t, _) in calibrated.items()},
        signal_calibration={n: c for n, (_, c) in calibrated.items()},
    )


def choose_checkpoint(
    run_dir: str | Path, checkpoint: str | Path | None
) -> tuple[Path | None, str]:
    """The checkpoint file to export (None: the latest) and how it was chosen, the sidecar's
    ``training.selection``: ``last``, ``offline:<metric>`` (the best held-out signal),
    ``average`` (the actor averaged over the last third's checkpoints), ``sim`` (best.pt, chosen
    by in-training sim evaluation) or ``manual`` (a file named by the user). With no
    ``checkpoint`` the run's own rule ``agent.select`` decides."""

    from lompo_core.agent import checkpoint as ckpt
    from lompo_core.config import Config

    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise PolicyError(f"{cfg_path}: missing; is {run} a run folder made by lompo train?")
    agent = Config.load(cfg_path).agent
    name = agent.select if checkpoint is None else str(checkpoint)
    if name == "last":
        return None, "last"
    offline = f"offline:{agent.select_metric}"
    named = {
        "best": (ckpt.BEST, "sim", "in-training sim evaluation writes it (eval.every > 0 and "
                 "eval.keep_best=true)"),
        "offline": (ckpt.OFFLINE, offline, "agent checkpoints keep it when data.holdout > 0; "
                    "export --checkpoint last instead"),
        "average": (ckpt.AVERAGE, "average", "agent checkpoints from two thirds of "
                    "agent.steps on write it; export --checkpoint last instead"),
    }  # fmt: skip
    if name in named:
        file, kind, why = named[name]
        path = ckpt.checkpoint_dir(run) / file
        if not path.is_file():
            raise PolicyError(f"{run}: no {ckpt.CHECKPOINTS}/{file}: {why}")
        return path, kind
    path = Path(checkpoint)
    kind = {ckpt.BEST: "sim", ckpt.OFFLINE: offline, ckpt.AVERAGE: "average"}.get(path.name)
    last = ckpt.last_path(run) if path.is_file() else None
    if kind is None and last is not None and path.resolve() == last:
        kind = "last"
    return path, kind or "manual"


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    check: bool = False,
    overwrite: bool = False,
    percentile: float = DEFAULT_PERCENTILE,
    calibration_steps: int = DEFAULT_CALIBRATION_STEPS,
    signal_percentile: float = DEFAULT_SIGNAL_PERCENTILE,
    log: Log = lambda _msg: None,
) -> ExportResult:
    """Export the checkpoint of a training run that its ``agent.select`` rule picks, or
    ``checkpoint`` (last, offline, average, best or a file; ``lompo export``)."""
    from lompo_core.agent.select import world_model_warning
    from lompo_core.model.policy_step import load_policy_step

    _check_out(Path(out), overwrite)  # before loading anything: fail fast
    path, selection = choose_checkpoint(run_dir, checkpoint)
    step, info = load_policy_step(run_dir, path)
    info["selection"] = selection
    log(f"exporting {info.get('checkpoint')} (selection: {selection})")
    if warning := world_model_warning(info.get("world_model_check")):
        log(warning)
    return export_policy_step(
        step,
        info,
        out,
        dataset_dir=dataset_dir,
        run_dir=run_dir,
        check=check,
        overwrite=overwrite,
        percentile=percentile,
        calibration_steps=calibration_steps,
        signal_percentile=signal_percentile,
        log=log,
    )


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    for name in os.listdir(path):
        with open(path / name, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def report_dict(result: ExportResult) -> dict[str, Any]:
    d = asdict(result)
    d["out"] = str(result.out)
    if result.verify is not None:
        d["verify"]["ok"] = result.verify.ok
    return d
