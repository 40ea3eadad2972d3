"""``lompo eval``: an exported policy in the sim, served exactly as the ROS nodes serve it.

No ROS runs here, but everything the nodes do does: the sim side is ``SimLoop`` in lockstep
(sim_node's logic), the policy side is ``PolicyCore`` (policy_node's logic: PolicyRuntime and
Controller), and every image, episode counter and command crosses between them as CDR bytes
serialised with rosbags' message definitions, as they would on the wire.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lompo_core import messages as m
from lompo_core.files import atomic_write_bytes, atomic_writer
from lompo_core.runtime.controller import OOD_HOLD

DT_NS = 12_500_000  # one control step at 80 Hz on the virtual clock
START_NS = 1_000_000_000  # the virtual clock's start: a stamp of 0 would read as unstamped


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    steps: int
    ret: float
    first_success_step: int | None


@dataclass
class EvalReport:
    policy: str
    episodes: int
    seed: int
    success_rate: float
    success_ci95: tuple[float, float]
    mean_return: float
    steps_to_success_mean: float | None
    steps_to_success_median: float | None
    step_latency_ms_p50: float
    step_latency_ms_p99: float
    interventions: int
    intervention_reasons: dict[str, int]
    wall_time_s: float
    per_episode: list[EpisodeResult] = field(default_factory=list)
    sidecar: dict[str, Any] = field(default_factory=dict)
    # The out-of-distribution gate's view of the run: see ood_summary.
    ood: dict[str, Any] = field(default_factory=dict)
    # What policy_node would log at load (PolicyCore.warnings), e.g. a speed limit below the
    # policy's trained speed.
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lo, hi = self.success_ci95
        steps = (
            f", {self.steps_to_success_mean:.0f} steps to success on average"
            if self.steps_to_success_mean is not None
            else ""
        )
        return (
            f"{self.policy}: {self.success_rate:.0%} success over {self.episodes} episodes "
            f"(95% CI {lo:.0%}-{hi:.0%}){steps}; step latency p50 {self.step_latency_ms_p50:.2f} ms, "
            f"p99 {self.step_latency_ms_p99:.2f} ms; {self.interventions} controller interventions"
            + self._ood_line()
        )

    def _ood_line(self) -> str:
        ood = self.ood
        if not ood.get("gate"):
            return ""
        line = f"; out-of-distribution holds {ood['ood_hold_fraction']:.2%} of steps"
        if ood.get("shift"):
            held = [k for k in ood["frames_to_hold"] if k is not None]
            never = len(ood["frames_to_hold"]) - len(held)
            first = f", median {np.median(held):.0f}, max {max(held)}" if held else ""
            line += (
                f"; shift {ood['shift']} from step {ood['onset']}: first hold after "
                f"{len(held)} of {len(ood['frames_to_hold'])} onsets{first} frames"
                f" ({never} never)"
            )
        return line


def ood_summary(
    frames: list[dict[str, Any]],
    shift: str | None,
    onset: int,
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """How the out-of-distribution gate saw a run: the thresholds it used, the steps it held
    (``ood_hold_fraction``: of all steps; in distribution these are false holds), per episode
    the frames from the shift's onset to its first hold (1: the first shifted frame; None: never
    held), and every frame's signals (``frames``) for ROC analysis."""
    holds = sum(f["ood_hold"] for f in frames)
    to_hold: list[int | None] = []
    if shift is not None:
        for episode in sorted({f["episode"] for f in frames}):
            shifted = [f for f in frames if f["episode"] == episode and f["shifted"]]
            first = next((i + 1 for i, f in enumerate(shifted) if f["ood_hold"]), None)
            to_hold.append(first if shifted else None)
    return {
        "gate": bool(thresholds),
        "thresholds": dict(thresholds),
        "shift": shift,
        "onset": onset if shift is not None else None,
        "steps": len(frames),
        "ood_hold_steps": int(holds),
        "ood_hold_fraction": holds / len(frames) if frames else 0.0,
        "frames_to_hold": to_hold,
        "frames": frames,
    }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval: sensible at 0% and 100%, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class _Wire:
    """CDR round trips through rosbags' typestore: what a DDS transport does to a message."""

    def __init__(self, distro: str = "jazzy"):
        self.ts = m.typestore(distro)

    def __call__(self, msg: Any) -> Any:
        msgtype = msg.__msgtype__
        return self.ts.deserialize_cdr(self.ts.serialize_cdr(msg, msgtype), msgtype)


class _ExpertSide:
    """The scripted expert in the policy's seat: it reads the sim state, not the image."""

    def __init__(self, sim, kit):
        from lompo_core.nodes.common import SERVO_TWIST, command_message
        from lompo_core.sim.policies import ExpertPolicy

        self._sim, self._kit, self._expert = sim, kit, ExpertPolicy()
        self._command = lambda cmd, now: command_message(
            kit, cmd, SERVO_TWIST, now, m.COMMAND_FRAME
        )

    def on_episode(self, episode: int) -> None:
        pass

    def on_image(self, msg: Any, now_ns: int) -> tuple[Any, dict]:
        action = self._expert.act(self._sim.state)
        cmd = self._command(self._sim.action_scaling.to_physical(action), now_ns)
        return cmd, {
            "latency_s": math.nan,
            "intervened": False,
            "reason": "ok",
            "uncertainty": math.nan,
            "surprise": None,
            "reconstruction_error": None,
            "reconstruction_patch_error": None,
            "model_image": None,
            "state": "expert",
        }


class _PolicySide:
    """policy_node's logic (PolicyCore) on a policy folder."""

    def __init__(self, policy_dir: Path, kit, node_params: dict[str, Any] | None = None):
        from lompo_core.nodes.policy import PolicyCore, PolicyNodeParams

        params = PolicyNodeParams.from_mapping(
            {**(node_params or {}), "model_path": str(policy_dir), "threads": 1}
        )
        self.core = PolicyCore.load(params, kit)
        self.core.activate()
        self._episode: int | None = None

    def on_episode(self, episode: int) -> None:
        # What sim_node's call of the policy's ~/reset does before each episode's first frame.
        if episode != self._episode:
            self.core.reset()
        self._episode = episode

    def on_image(self, msg: Any, now_ns: int) -> tuple[Any, dict]:
        t0 = time.perf_counter()
        out = self.core.on_image(msg, now_ns, want_debug=False)
        latency = time.perf_counter() - t0  # decode, preprocess, ONNX, controller, message
        d = out.decision
        return out.command, {
            "latency_s": latency,
            "intervened": d.intervened,
            "reason": d.reason,
            "uncertainty": out.result.uncertainty,
            "surprise": out.result.surprise,
            "reconstruction_error": out.result.reconstruction_error,
            "reconstruction_patch_error": out.result.reconstruction_patch_error,
            "model_image": out.result.model_image,
            "state": d.state,
        }


def training_camera_size(policy_dir: Path | None) -> int | None:
    """The square camera size the policy's training images had, from its sidecar, if known."""
    from lompo_core.runtime.sidecar import read_sidecar

    if policy_dir is None:
        return None
    camera = (read_sidecar(Path(policy_dir)).get("dataset") or {}).get("camera") or {}
    return int(camera["width"]) if camera.get("width") else None


def _video_frame(camera: np.ndarray, model_image: np.ndarray | None, text: list[str]) -> np.ndarray:
    import cv2

    size = 256
    cam = cv2.resize(camera, (size, size), interpolation=cv2.INTER_NEAREST)
    seen = (
        cv2.resize(model_image, (size, size), interpolation=cv2.INTER_NEAREST)
        if model_image is not None
        else np.zeros_like(cam)
    )
    frame = np.concatenate([cam, seen], axis=1)
    frame = np.concatenate([frame, np.zeros((18 * len(text) + 6, 2 * size, 3), np.uint8)], axis=0)
    for i, line in enumerate(text):
        cv2.putText(
            frame,
            line,
            (6, size + 18 * (i + 1)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return frame


def evaluate(
    policy_dir: Path | None,
    episodes: int,
    seed: int,
    out: Path | None = None,
    video: bool = False,
    video_episodes: int = 3,
    image_size: int | None = None,
    max_steps: int = 150,
    distro: str = "jazzy",
    progress: bool = True,
    shift: str | None = None,
    shift_onset: int = 10,
    node_params: dict[str, Any] | None = None,
) -> EvalReport:
    """Run ``episodes`` episodes with seeds ``seed .. seed+episodes-1``; ``None`` runs the expert.

    ``image_size`` is the camera's resolution; by default that of the policy's training data
    (its sidecar), so that its crop sees the same part of the same picture, else 64.
    ``shift`` (one of ``lompo_core.sim.shifts.SHIFTS``) changes what the camera shows from step
    ``shift_onset`` of each episode on; the report's ``ood`` says how the gate saw it.
    ``node_params`` overrides policy_node parameters (``PolicyNodeParams`` fields), e.g.
    ``{"frozen_patience": 0}``.
    """
    from tqdm import tqdm

    from lompo_core.messages import MessageKit
    from lompo_core.nodes.common import command_to_action
    from lompo_core.nodes.sim import LOCKSTEP, SimLoop, sim_frame_messages
    from lompo_core.sim.drawer import DrawerCloseSim

    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    if image_size is None:
        image_size = training_camera_size(policy_dir) or 64
    wire = _Wire(distro)
    kit = MessageKit.from_typestore(wire.ts)
    sim = DrawerCloseSim(image_size=image_size, max_steps=max_steps)
    if shift is not None:
        from lompo_core.sim.shifts import ShiftedSim

        sim = ShiftedSim(sim, shift, shift_onset, seed=seed)
    side = (
        _ExpertSide(sim, kit)
        if policy_dir is None
        else _PolicySide(Path(policy_dir), kit, node_params)
    )
    loop = SimLoop(sim, LOCKSTEP, seed=seed)
    results: list[EpisodeResult] = []
    latencies: list[float] = []
    reasons: Counter[str] = Counter()
    gif: list[np.ndarray] = []
    frames_seen: list[dict[str, Any]] = []
    ret, first_success, now_ns = 0.0, None, START_NS
    t_start = time.perf_counter()
    bar = tqdm(total=episodes, desc="eval", unit="ep", disable=not progress)
    try:
        frames = loop.reset(0.0)
        while len(results) < episodes:
            command = None
            for frame in frames:
                msgs = {k: wire(v) for k, v in sim_frame_messages(kit, frame, now_ns).items()}
                if frame.episode >= episodes:
                    break
                side.on_episode(msgs["episode"].data)
                if frame.t > 0:
                    ret += msgs["reward"].data
                    if msgs["success"].data and first_success is None:
                        first_success = frame.t
                if frame.done:
                    results.append(
                        EpisodeResult(
                            seed + frame.episode,
                            bool(msgs["success"].data),
                            frame.t,
                            ret,
                            first_success,
                        )
                    )
                    ret, first_success = 0.0, None
                    bar.update(1)
                    bar.set_postfix(success=f"{np.mean([r.success for r in results]):.0%}")
                    continue
                command, info = side.on_image(msgs["image"], now_ns)
                frames_seen.append(
                    {
                        "episode": frame.episode,
                        "t": frame.t,
                        "shifted": shift is not None and frame.t >= shift_onset,
                        "surprise": info["surprise"],
                        "reconstruction_error": info["reconstruction_error"],
                        "reconstruction_patch_error": info["reconstruction_patch_error"],
                        "ood_hold": info["reason"].startswith(OOD_HOLD),
                    }
                )
                if not math.isnan(info["latency_s"]):
                    latencies.append(info["latency_s"])
                if info["intervened"]:
                    reasons[info["reason"].split(":")[0]] += 1
                if video and frame.episode < video_episodes:
                    text = [
                        f"episode {frame.episode} (seed {seed + frame.episode})  step {frame.t}",
                        f"{info['state']}: {info['reason'][:48]}  u={info['uncertainty']:.3g}",
                    ]
                    gif.append(_video_frame(frame.image, info["model_image"], text))
            if command is None:
                break
            now_ns += DT_NS
            action, why = command_to_action(wire(command), sim.action_scaling)
            frames = loop.on_command(action, now_ns / 1e9, why)
    finally:
        bar.close()
        sim.close()
    n_ok = sum(r.success for r in results)
    to_success = [r.first_success_step for r in results if r.first_success_step is not None]
    lat_ms = np.array(latencies) * 1e3 if latencies else np.array([math.nan])
    sidecar = {}
    if policy_dir is not None:
        full = side.core.runtime.sidecar
        sidecar = {
            "onnx_sha256": full.get("onnx_sha256"),
            "dataset_hash": (full.get("dataset") or {}).get("hash"),
            "code_version": full.get("code_version"),
        }
    report = EvalReport(
        policy="scripted expert" if policy_dir is None else str(policy_dir),
        episodes=len(results),
        seed=seed,
        success_rate=n_ok / len(results),
        success_ci95=wilson_interval(n_ok, len(results)),
        mean_return=float(np.mean([r.ret for r in results])),
        steps_to_success_mean=float(np.mean(to_success)) if to_success else None,
        steps_to_success_median=float(np.median(to_success)) if to_success else None,
        step_latency_ms_p50=float(np.percentile(lat_ms, 50)),
        step_latency_ms_p99=float(np.percentile(lat_ms, 99)),
        interventions=int(sum(reasons.values())),
        intervention_reasons=dict(reasons),
        wall_time_s=time.perf_counter() - t_start,
        per_episode=results,
        sidecar=sidecar,
        warnings=[] if policy_dir is None else list(side.core.warnings),
        ood=ood_summary(
            frames_seen,
            shift,
            shift_onset,
            side.core.controller.ood_thresholds if policy_dir is not None else {},
        ),
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "eval.json", json.dumps(asdict(report), indent=2).encode())
        if video and gif:
            import imageio.v2 as imageio

            # Every other control step at 20 fps: 40 Hz of sim time, about half real speed.
            with atomic_writer(out / "rollout.gif") as f:
                imageio.mimsave(f, gif[::2], format="GIF", duration=1 / 20, loop=0)
    return report
