"""policy_node's behaviour without ROS: image in; command, uncertainty and diagnostics out.

Mirrors ``lompo_ros/policy_node.py``, which only wires rclpy to :class:`PolicyCore`. Two clocks
meet here: the ROS clock (``now_ns``: message stamps, image age) and a monotonic one (the
watchdog and rates), so that a jump of the system or sim clock never silences the watchdog.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lompo_core import messages as m
from lompo_core.errors import LompoError
from lompo_core.messages import MessageKit
from lompo_core.nodes.common import (
    COMMAND_INTERFACES,
    SERVO_TWIST,
    check_choice,
    command_message,
    command_topic,
    params_from_mapping,
)

if TYPE_CHECKING:  # the runtime imports onnxruntime; tests of the parameters need neither
    from lompo_core.runtime import (
        Controller,
        ControllerConfig,
        Decision,
        PolicyRuntime,
        RuntimeResult,
    )

OOD_DIAGNOSTICS = ("surprise", "reconstruction_error", "reconstruction_patch_error")
RAW = "raw"
COMPRESSED = "compressed"
IMAGE_TRANSPORTS = (RAW, COMPRESSED)
RELIABILITIES = ("best_effort", "reliable")


@dataclass
class PolicyNodeParams:
    """policy_node's parameters, with the defaults it declares (config/drawer_close.yaml)."""

    model_path: str = ""
    # The sidecar's manifest_sha256 this node may serve (pinned at launch); empty: any policy
    # whose sidecar and onnx agree with each other.
    expected_sha256: str = ""
    threads: int = 1
    image_topic: str = m.IMAGE_TOPIC
    image_transport: str = RAW  # raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage
    image_reliability: str = "best_effort"
    command_interface: str = SERVO_TWIST
    command_topic: str = ""  # empty: the interface's default topic
    command_frame: str = m.COMMAND_FRAME
    watchdog_rate_hz: float = 20.0
    diagnostics_rate_hz: float = 1.0
    # A frame stamped longer ago than this, or as far in the future, or not after the last
    # frame, gives a zero command; 0 switches the check off (for cameras that do not stamp).
    max_image_age_s: float = 0.3
    # The Controller's safety settings (lompo_core.runtime.ControllerConfig).
    image_timeout_s: float = 0.5
    max_action: float = 1.0
    max_action_change: float = 2.0  # 2.0: no limit (see ControllerConfig)
    uncertainty_threshold: float = -1.0  # < 0: the policy's calibrated threshold
    uncertainty_patience: int = 5
    on_uncertain: str = "hold"
    # The out-of-distribution gate on the image signals (< 0: the policy's calibrated threshold;
    # a policy exported without the signals has no gate).
    surprise_threshold: float = -1.0
    reconstruction_threshold: float = -1.0
    reconstruction_patch_threshold: float = -1.0
    ood_patience: int = 2
    frozen_patience: int = 3  # the same model image this many frames while moving: hold; 0: off
    start_active: bool = True
    # Physical limits set by whoever deploys, never read from the policy (ControllerConfig).
    max_linear_speed: float = 0.5  # m/s, the norm of a linear velocity command
    max_joint_speed: float = 1.0  # rad/s, each joint of a joint velocity command
    action_max_ceiling: float = 2.0  # a policy whose sidecar action.max exceeds it is refused

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PolicyNodeParams:
        return params_from_mapping(cls, values, "policy_node")

    def validate(self) -> None:
        check_choice("image_transport", self.image_transport, IMAGE_TRANSPORTS)
        check_choice("image_reliability", self.image_reliability, RELIABILITIES)
        check_choice("command_interface", self.command_interface, COMMAND_INTERFACES)
        check_choice("on_uncertain", self.on_uncertain, ("warn", "hold", "halt"))
        if not self.model_path:
            raise LompoError("parameter model_path is empty: point it at an exported policy folder")
        for name in ("watchdog_rate_hz", "diagnostics_rate_hz", "image_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise LompoError(f"parameter {name} must be > 0, got {value}")
        if not (math.isfinite(self.max_image_age_s) and self.max_image_age_s >= 0):
            raise LompoError(
                f"parameter max_image_age_s must be >= 0 (0: off), got {self.max_image_age_s}"
            )

    @property
    def resolved_command_topic(self) -> str:
        return command_topic(self.command_interface, self.command_topic)

    def controller_config(self) -> ControllerConfig:
        from lompo_core.runtime import ControllerConfig

        return ControllerConfig(
            image_timeout_s=self.image_timeout_s,
            max_action=self.max_action,
            max_action_change=self.max_action_change,
            uncertainty_threshold=(
                None if self.uncertainty_threshold < 0 else self.uncertainty_threshold
            ),
            uncertainty_patience=self.uncertainty_patience,
            on_uncertain=self.on_uncertain,
            surprise_threshold=None if self.surprise_threshold < 0 else self.surprise_threshold,
            reconstruction_threshold=(
                None if self.reconstruction_threshold < 0 else self.reconstruction_threshold
            ),
            reconstruction_patch_threshold=(
                None
                if self.reconstruction_patch_threshold < 0
                else self.reconstruction_patch_threshold
            ),
            ood_patience=self.ood_patience,
            frozen_patience=self.frozen_patience,
            start_active=self.start_active,
            max_linear_speed=self.max_linear_speed,
            max_joint_speed=self.max_joint_speed,
            action_max_ceiling=self.action_max_ceiling,
        )


def frame_time_problem(
    stamp_ns: int | None, now_ns: int, last_stamp_ns: int | None, max_age_s: float
) -> str | None:
    """Why a frame's stamp makes it unfit to act on, or None. ``max_age_s`` 0: no check."""
    if max_age_s <= 0:
        return None
    if not stamp_ns:
        return "stale frame: unstamped (header stamp 0); set max_image_age_s 0 to accept"
    age_s = (now_ns - stamp_ns) / 1e9
    if age_s > max_age_s:
        return f"stale frame: {age_s:.3g} s old (max_image_age_s {max_age_s:g})"
    if age_s < -max_age_s:
        return f"stale frame: stamped {-age_s:.3g} s in the future (max_image_age_s {max_age_s:g})"
    if last_stamp_ns is not None and stamp_ns <= last_stamp_ns:
        back_s = (last_stamp_ns - stamp_ns) / 1e9
        return f"stale frame: stamp does not advance ({back_s:.3g} s behind the last frame)"
    return None


class InputStats:
    """Input rate, image age and step latency over the last ``window`` images."""

    def __init__(self, window: int = 30) -> None:
        self._arrivals: deque[float] = deque(maxlen=window)
        self.image_age_s = math.nan
        self.latency_s = math.nan
        self.images = 0
        self.failures = 0
        self.last_failure = ""  # why the last refused frame was refused
        self.last_arrival_s = math.nan

    def record(self, mono_s: float, age_s: float, reason: str, latency_s: float) -> None:
        """One frame: ``reason`` is the step's, "ok" or why it was refused."""
        self._arrivals.append(mono_s)
        self.last_arrival_s = mono_s
        self.images += 1
        if reason != "ok":
            self.failures += 1
            self.last_failure = reason
        self.latency_s = latency_s
        self.image_age_s = age_s

    def rate_hz(self, mono_s: float) -> float:
        if len(self._arrivals) < 2:
            return 0.0
        # Counting up to now, not to the last arrival, makes the rate fall when images stop.
        span = mono_s - self._arrivals[0]
        return (len(self._arrivals) - 1) / span if span > 0 else 0.0


@dataclass
class PolicyOutputs:
    """What policy_node publishes after one image."""

    command: Any
    uncertainty: Any
    debug_image: Any | None
    decision: Decision
    result: RuntimeResult


def speed_warning(runtime: PolicyRuntime, max_linear_speed: float) -> str | None:
    """A line for the log where ``max_linear_speed`` is below the speed the policy was trained to
    command: the controller then slows it down, and a slower arm is another dynamics than the one
    it learnt (docs/export-and-runtime.md). The trained speed is the run's
    ``agent.max_linear_speed`` (from the sidecar, read only for this line), else the norm of
    ``action.max``."""
    from lompo_core.runtime.controller import LINEAR_UNIT

    scaling = runtime.action_scaling
    if scaling.unit != LINEAR_UNIT:
        return None
    node: Any = runtime.sidecar
    for key in ("training", "config", "agent", "max_linear_speed"):
        node = node.get(key) if isinstance(node, Mapping) else None
    trained = node if isinstance(node, (int, float)) and not isinstance(node, bool) else None
    if trained is not None and math.isfinite(trained) and trained > 0:
        source = "its agent.max_linear_speed"
    else:
        trained, source = float(np.linalg.norm(scaling.max_speed)), "the norm of its action.max"
    if max_linear_speed >= trained * (1 - 1e-6):
        return None
    return (
        f"max_linear_speed {max_linear_speed:g} m/s is below the {trained:.2f} m/s the policy was "
        f"trained to command ({source}): the arm moves more slowly than in training, which can "
        "lower its success; where it is safe, serve it at its data's speed, else train on data "
        "recorded within the limit (docs/training.md)"
    )


@dataclass
class PolicyCore:
    """policy_node's behaviour: image in; command, uncertainty, debug image, diagnostics out.

    Thread safe for one image caller beside timer callers: the policy step runs outside the lock
    (a slow step must not stop the watchdog), every decision inside it.
    """

    runtime: PolicyRuntime
    controller: Controller
    kit: MessageKit
    params: PolicyNodeParams
    monotonic: Callable[[], float] = time.monotonic
    stats: InputStats = field(default_factory=InputStats)
    last_decision: Decision | None = None
    last_uncertainty: float = math.nan
    # The image signals of the last step (nan: none yet, a failed step, or a policy without them).
    last_signals: dict[str, float] = field(default_factory=dict)
    resets: int = 0
    # Doubts accepted at load, one line each, for the node to log: the runtime's and the speed's.
    warnings: list[str] = field(default_factory=list)
    # Whether the last command sent asked for motion: the watchdog only needs to stop a moving
    # arm, and a zero sent into silence would be taken as an answer by a lockstep sim.
    moving: bool = False
    _last_stamp_ns: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, params: PolicyNodeParams, kit: MessageKit) -> PolicyCore:
        """Load and verify the policy (raises PolicyError) and build its controller."""
        from lompo_core.runtime import Controller, PolicyRuntime

        runtime = PolicyRuntime(
            params.model_path,
            threads=params.threads,
            expected_sha256=params.expected_sha256 or None,
        )
        controller = Controller(
            params.controller_config(),
            runtime.action_scaling,
            runtime.uncertainty_threshold,
            runtime.signal_thresholds,
        )
        if params.command_interface == SERVO_TWIST and runtime.action_dim != 3:
            raise LompoError(
                f"{params.model_path}: servo_twist sends a 3-d linear velocity but the policy has "
                f"{runtime.action_dim} actions; set command_interface to joint_group"
            )
        speed = speed_warning(runtime, params.max_linear_speed)
        warnings = [*runtime.warnings, *([speed] if speed else [])]
        return cls(runtime, controller, kit, params, warnings=warnings)

    def _command(self, decision: Decision, now_ns: int) -> Any:
        self.moving = bool(np.any(decision.command != 0))
        return command_message(
            self.kit,
            decision.command,
            self.params.command_interface,
            now_ns,
            self.params.command_frame,
        )

    def on_image(self, msg: Any, now_ns: int, want_debug: bool = True) -> PolicyOutputs:
        """One camera frame: a policy step unless its stamp refuses it, then the decision."""
        from lompo_core.runtime import RuntimeResult

        header = getattr(msg, "header", None)
        stamp = m.stamp_ns(header) if header is not None else None
        problem = frame_time_problem(
            stamp, now_ns, self._last_stamp_ns, self.params.max_image_age_s
        )
        if problem is None:
            result = self.runtime.step(msg)  # outside the lock: the watchdog may run meanwhile
        else:
            result = RuntimeResult.failure(problem, self.runtime.action_dim)
        with self._lock:
            mono_s = self.monotonic()
            if problem is None and stamp:
                self._last_stamp_ns = stamp
            age_s = (now_ns - stamp) / 1e9 if stamp else math.nan
            self.stats.record(
                mono_s, age_s, result.reason if not result.ok else "ok", result.latency_s
            )
            decision = self.controller.on_result(result, mono_s)
            # The model's next step must see what the arm was told, not what the policy proposed
            # (the dataset's actions are the executed ones).
            self.runtime.set_prev_action(decision.action)
            self.last_decision = decision
            self.last_uncertainty = float(result.uncertainty)
            self.last_signals = {
                name: math.nan if value is None else float(value)
                for name, value in ((n, getattr(result, n)) for n in OOD_DIAGNOSTICS)
            }
            command = self._command(decision, now_ns)
        debug = None
        if want_debug and result.model_image is not None:
            frame = header.frame_id if header is not None else m.CAMERA_FRAME
            debug = self.kit.image(result.model_image, now_ns, frame)
        return PolicyOutputs(command, self.kit.float32(result.uncertainty), debug, decision, result)

    def on_timer(self, now_ns: int) -> Any | None:
        """The watchdog: a zero command when images have stopped while the arm moves."""
        with self._lock:
            decision = self.controller.on_timer(self.monotonic())
            if decision is None:
                return None
            self.last_decision = decision  # diagnostics say why, even when nothing is sent
            if not self.moving:
                return None
            self.runtime.set_prev_action(decision.action)
            return self._command(decision, now_ns)

    def zero_command(self, now_ns: int) -> Any:
        with self._lock:
            self.moving = False
            zero = np.zeros(self.runtime.action_dim)
            return command_message(
                self.kit,
                self.runtime.action_scaling.to_physical(zero),
                self.params.command_interface,
                now_ns,
                self.params.command_frame,
            )

    def activate(self) -> None:
        with self._lock:
            self.runtime.reset()
            self.controller.reset()
            self.controller.activate()
            self._last_stamp_ns = None

    def deactivate(self) -> None:
        with self._lock:
            self.controller.deactivate()

    def reset(self) -> None:
        """A new episode: clear the latent state, the controller's counters and the last stamp.

        Call it from the image callback's thread (or between images): the latent state is not
        locked, so that the policy step can run outside the lock.
        """
        with self._lock:
            self.runtime.reset()
            self.controller.reset()
            self._last_stamp_ns = None
            self.resets += 1

    def diagnostics(self, now_ns: int, name: str, lifecycle: str) -> Any:
        with self._lock:
            mono_s = self.monotonic()
            state = self.controller.state
            decision = self.last_decision
            reason = decision.reason if decision is not None else "no image yet"
            if lifecycle != "active":
                state = lifecycle
            if state == "halted":
                level = "ERROR"
            elif state != "active" or decision is None or reason != "ok":
                level = "WARN"
            else:
                level = "OK"
            values = {
                "lifecycle": lifecycle,
                "state": state,
                "reason": reason,
                "input_rate_hz": self.stats.rate_hz(mono_s),
                "image_age_s": self.stats.image_age_s,
                "since_last_image_s": mono_s - self.stats.last_arrival_s,
                "step_latency_s": self.stats.latency_s,
                "uncertainty": self.last_uncertainty,
                "uncertainty_threshold": float(self.controller.threshold),
                "ood_gate": "on" if self.controller.ood_gate else "off (policy without signals)",
                "ood_holding": bool(self.controller.ood_holding),
                "frozen_holding": bool(self.controller.frozen_holding),
                **{n: self.last_signals.get(n, math.nan) for n in OOD_DIAGNOSTICS},
                **{f"{n}_threshold": t for n, t in self.controller.ood_thresholds.items()},
                "intervened": bool(decision.intervened) if decision is not None else False,
                "images": self.stats.images,
                "failed_steps": self.stats.failures,
                "last_failure": self.stats.last_failure,
                "resets": self.resets,
                "model_path": self.params.model_path,
            }
        return self.kit.diagnostic_array(
            now_ns, [(level, name, f"{state}: {reason}", "lompo", values)]
        )


def unconfigured_diagnostics(kit: MessageKit, now_ns: int, name: str, why: str) -> Any:
    """The status of a node with no policy loaded (before configure, after cleanup or a failure)."""
    return kit.diagnostic_array(
        now_ns,
        [("WARN", name, f"unconfigured: {why}", "lompo", {"lifecycle": "unconfigured"})],
    )
