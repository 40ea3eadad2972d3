"""What the ROS nodes decide and send, without ROS.

``lompo_ros``'s ``policy_node`` and ``sim_node`` are wiring: they read parameters, create
publishers, and hand every message to the classes here, which decide what to publish and build the
messages. Messages are built from one source of classes (:class:`MessageKit`): rosbags' typestore in
the tests and the converter, the generated rclpy classes on a robot. The field names are the same
in both; the few representations that differ (uint8[] and float64[] sequences) are the kit's job.

No rclpy, no torch: this module runs on the robot computer and in CI alike.
"""

from __future__ import annotations

import array
import importlib
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from lompo_core import messages as m
from lompo_core.errors import LompoError

if TYPE_CHECKING:  # the runtime imports onnxruntime; the sim half of this module needs neither
    from lompo_core.actions import ActionScaling
    from lompo_core.runtime import Controller, Decision, PolicyRuntime, RuntimeResult
    from lompo_core.sim.drawer import Step

SERVO_TWIST = "servo_twist"
JOINT_GROUP = "joint_group"
COMMAND_INTERFACES = (SERVO_TWIST, JOINT_GROUP)
# Where each interface's consumer listens by default: MoveIt Servo, and a ros2_control
# forward_command_controller named as in ros2_controllers' examples.
DEFAULT_COMMAND_TOPICS = {
    SERVO_TWIST: m.COMMAND_TOPIC,
    JOINT_GROUP: "/forward_velocity_controller/commands",
}
EPISODE_TOPIC = "/drawer_sim/episode"
INT32_TYPE = "std_msgs/msg/Int32"
FLOAT64_MULTI_ARRAY_TYPE = "std_msgs/msg/Float64MultiArray"
DIAGNOSTIC_ARRAY_TYPE = "diagnostic_msgs/msg/DiagnosticArray"

RAW = "raw"
COMPRESSED = "compressed"
IMAGE_TRANSPORTS = (RAW, COMPRESSED)
RELIABILITIES = ("best_effort", "reliable")

LOCKSTEP = "lockstep"
REALTIME = "realtime"
SIM_MODES = (LOCKSTEP, REALTIME)


# ---------------------------------------------------------------------------------------------
# Message construction
# ---------------------------------------------------------------------------------------------


class MessageKit:
    """Builds ROS messages from one source of message classes.

    ``resolve`` maps a type name such as ``"geometry_msgs/msg/TwistStamped"`` to its class. rosbags
    holds primitive sequences as numpy arrays; rclpy's generated setters accept ``array.array``
    (and reject numpy arrays, which are not ``Sequence``), so the sequence conversions differ.
    """

    def __init__(
        self,
        resolve: Callable[[str], Any],
        uint8_seq: Callable[[np.ndarray], Any],
        float64_seq: Callable[[np.ndarray], Any],
    ) -> None:
        self.resolve = resolve
        self.uint8_seq = uint8_seq
        self.float64_seq = float64_seq

    @classmethod
    def from_typestore(cls, ts: Any) -> MessageKit:
        return cls(
            resolve=lambda name: ts.types[name],
            uint8_seq=lambda a: np.ascontiguousarray(a, np.uint8).reshape(-1),
            float64_seq=lambda a: np.asarray(a, np.float64).reshape(-1),
        )

    @classmethod
    def from_ros(cls) -> MessageKit:
        """The installed ROS message packages (``geometry_msgs.msg`` ...), as rclpy uses them."""

        def resolve(name: str) -> Any:
            package, kind, type_name = name.split("/")
            return getattr(importlib.import_module(f"{package}.{kind}"), type_name)

        return cls(
            resolve=resolve,
            # array.array from bytes: one memcpy, where a list would be checked element by element.
            uint8_seq=lambda a: array.array("B", np.ascontiguousarray(a, np.uint8).tobytes()),
            float64_seq=lambda a: array.array("d", np.asarray(a, np.float64).tobytes()),
        )

    # -- the messages ------------------------------------------------------------------------

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        Time = self.resolve("builtin_interfaces/msg/Time")
        return self.resolve("std_msgs/msg/Header")(
            stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id
        )

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
        rgb = np.ascontiguousarray(rgb, np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
        h, w, _ = rgb.shape
        return self.resolve(m.IMAGE_TYPE)(
            header=self.header(stamp_ns, frame_id),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=self.uint8_seq(rgb),
        )

    def twist_stamped(self, linear: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
        Vector3 = self.resolve("geometry_msgs/msg/Vector3")
        x, y, z = (float(v) for v in np.asarray(linear, np.float64).reshape(3))
        return self.resolve(m.TWIST_STAMPED_TYPE)(
            header=self.header(stamp_ns, frame_id),
            twist=self.resolve("geometry_msgs/msg/Twist")(
                linear=Vector3(x=x, y=y, z=z), angular=Vector3(x=0.0, y=0.0, z=0.0)
            ),
        )

    def float64_array(self, values: np.ndarray) -> Any:
        Layout = self.resolve("std_msgs/msg/MultiArrayLayout")
        return self.resolve(FLOAT64_MULTI_ARRAY_TYPE)(
            layout=Layout(dim=[], data_offset=0), data=self.float64_seq(values)
        )

    def float32(self, value: float) -> Any:
        return self.resolve(m.FLOAT32_TYPE)(data=float(value))

    def int32(self, value: int) -> Any:
        return self.resolve(INT32_TYPE)(data=int(value))

    def bool(self, value: bool) -> Any:
        return self.resolve(m.BOOL_TYPE)(data=bool(value))

    def diagnostic_array(
        self, stamp_ns: int, statuses: list[tuple[str, str, str, str, Mapping[str, Any]]]
    ) -> Any:
        """``statuses``: (level name OK/WARN/ERROR/STALE, name, message, hardware_id, values)."""
        Status = self.resolve("diagnostic_msgs/msg/DiagnosticStatus")
        KeyValue = self.resolve("diagnostic_msgs/msg/KeyValue")
        out = []
        for level, name, message, hardware_id, values in statuses:
            out.append(
                Status(
                    # The class constant, not a literal: byte is an int in rosbags, bytes in rclpy.
                    level=getattr(Status, level),
                    name=name,
                    message=message,
                    hardware_id=hardware_id,
                    values=[KeyValue(key=k, value=_diag_value(v)) for k, v in values.items()],
                )
            )
        return self.resolve(DIAGNOSTIC_ARRAY_TYPE)(header=self.header(stamp_ns, ""), status=out)


def _diag_value(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# Commands: out of the policy, into the sim
# ---------------------------------------------------------------------------------------------


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise LompoError(f"parameter {name}={value!r}: choose one of {', '.join(choices)}")
    return value


def command_topic(interface: str, topic: str = "") -> str:
    """The topic to use for ``interface``: ``topic`` if given, else that interface's default."""
    check_choice("command_interface", interface, COMMAND_INTERFACES)
    return topic or DEFAULT_COMMAND_TOPICS[interface]


def command_type(interface: str) -> str:
    check_choice("command_interface", interface, COMMAND_INTERFACES)
    return m.TWIST_STAMPED_TYPE if interface == SERVO_TWIST else FLOAT64_MULTI_ARRAY_TYPE


def command_message(
    kit: MessageKit, command: np.ndarray, interface: str, stamp_ns: int, frame_id: str
) -> Any:
    """The physical command (``Decision.command``) as the message ``interface`` publishes.

    servo_twist: the three values are the end-effector's linear velocity in m/s (MoveIt Servo).
    joint_group: the values in the sidecar's action order, for a forward command controller.
    """
    command = np.asarray(command, np.float64).reshape(-1)
    if interface == SERVO_TWIST:
        if command.size != 3:
            raise LompoError(
                f"command_interface servo_twist needs a 3-d linear velocity; this policy has "
                f"{command.size} actions (use joint_group)"
            )
        return kit.twist_stamped(command, stamp_ns, frame_id)
    check_choice("command_interface", interface, COMMAND_INTERFACES)
    return kit.float64_array(command)


def command_to_action(msg: Any, scaling: ActionScaling) -> tuple[np.ndarray, str]:
    """A received command (TwistStamped, Twist or Float64MultiArray) as a normalised sim action.

    The inverse of what the collector and the policy do (``scaling.to_physical``), clipped to
    [-1, 1] as the sim would. A malformed command becomes a zero action with the reason, so a bad
    publisher stops the arm instead of crashing the sim.
    """
    dim = len(scaling.max_speed)
    if hasattr(msg, "twist") or hasattr(msg, "linear"):
        physical = m.twist_linear(msg)
        if dim != 3:
            return np.zeros(dim), f"a twist carries 3 values, the sim takes {dim}"
    elif hasattr(msg, "data") and hasattr(msg, "layout"):
        physical = np.asarray(msg.data, np.float64).reshape(-1)
        if physical.size != dim:
            return np.zeros(dim), f"command has {physical.size} values, the sim takes {dim}"
    else:
        return np.zeros(dim), f"unsupported command message {type(msg).__name__}"
    if not np.all(np.isfinite(physical)):
        return np.zeros(dim), f"non-finite command {physical.tolist()}"
    return np.clip(scaling.to_normalised(physical), -1.0, 1.0), "ok"


# ---------------------------------------------------------------------------------------------
# policy_node
# ---------------------------------------------------------------------------------------------


def _params_from_mapping(cls: type, values: Mapping[str, Any], node: str) -> Any:
    """A node's parameter dataclass from a mapping; unknown names are refused, not ignored."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise LompoError(f"unknown {node} parameter(s): {', '.join(sorted(unknown))}")
    p = cls(**values)
    p.validate()
    return p


@dataclass
class PolicyNodeParams:
    """policy_node's parameters, with the defaults it declares (config/drawer_close.yaml)."""

    model_path: str = ""
    threads: int = 1
    image_topic: str = m.IMAGE_TOPIC
    image_transport: str = RAW  # raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage
    image_reliability: str = "best_effort"
    command_interface: str = SERVO_TWIST
    command_topic: str = ""  # empty: the interface's default topic
    command_frame: str = m.COMMAND_FRAME
    episode_topic: str = ""  # a std_msgs/Int32 whose change resets the policy; empty: none
    watchdog_rate_hz: float = 20.0
    diagnostics_rate_hz: float = 1.0
    # The Controller's safety settings (lompo_core.runtime.ControllerConfig).
    image_timeout_s: float = 0.5
    max_action: float = 1.0
    max_action_change: float = 2.0  # 2.0: no limit (see ControllerConfig)
    uncertainty_threshold: float = -1.0  # < 0: the policy's calibrated threshold
    uncertainty_patience: int = 5
    on_uncertain: str = "hold"
    start_active: bool = True

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PolicyNodeParams:
        return _params_from_mapping(cls, values, "policy_node")

    def validate(self) -> None:
        check_choice("image_transport", self.image_transport, IMAGE_TRANSPORTS)
        check_choice("image_reliability", self.image_reliability, RELIABILITIES)
        check_choice("command_interface", self.command_interface, COMMAND_INTERFACES)
        check_choice("on_uncertain", self.on_uncertain, ("warn", "hold", "halt"))
        if not self.model_path:
            raise LompoError("parameter model_path is empty: point it at an exported policy folder")
        for name in ("watchdog_rate_hz", "diagnostics_rate_hz", "image_timeout_s"):
            if not getattr(self, name) > 0:
                raise LompoError(f"parameter {name} must be > 0, got {getattr(self, name)}")

    @property
    def resolved_command_topic(self) -> str:
        return command_topic(self.command_interface, self.command_topic)

    def controller_config(self):
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
            start_active=self.start_active,
        )


class InputStats:
    """Input rate, image age and step latency over the last ``window`` images."""

    def __init__(self, window: int = 30) -> None:
        self._arrivals: deque[float] = deque(maxlen=window)
        self.image_age_s = math.nan
        self.latency_s = math.nan
        self.images = 0
        self.failures = 0
        self.last_arrival_s = math.nan

    def record(
        self, now_s: float, image_stamp_ns: int | None, result_ok: bool, latency_s: float
    ) -> None:
        self._arrivals.append(now_s)
        self.last_arrival_s = now_s
        self.images += 1
        self.failures += 0 if result_ok else 1
        self.latency_s = latency_s
        # A zero stamp means the publisher did not stamp: an age would be meaningless.
        self.image_age_s = math.nan if not image_stamp_ns else now_s - image_stamp_ns / 1e9

    def rate_hz(self, now_s: float) -> float:
        if len(self._arrivals) < 2:
            return 0.0
        # Counting up to now, not to the last arrival, makes the rate fall when images stop.
        span = now_s - self._arrivals[0]
        return (len(self._arrivals) - 1) / span if span > 0 else 0.0


@dataclass
class PolicyOutputs:
    """What policy_node publishes after one image."""

    command: Any
    uncertainty: Any
    debug_image: Any | None
    decision: Decision
    result: RuntimeResult


@dataclass
class PolicyCore:
    """policy_node's behaviour: image in, command, uncertainty, debug image and diagnostics out."""

    runtime: PolicyRuntime
    controller: Controller
    kit: MessageKit
    params: PolicyNodeParams
    stats: InputStats = field(default_factory=InputStats)
    last_decision: Decision | None = None
    last_uncertainty: float = math.nan
    episode: int | None = None
    resets: int = 0

    @classmethod
    def load(cls, params: PolicyNodeParams, kit: MessageKit) -> PolicyCore:
        """Load and verify the policy (raises PolicyError) and build its controller."""
        from lompo_core.runtime import Controller, PolicyRuntime

        runtime = PolicyRuntime(params.model_path, threads=params.threads)
        controller = Controller(
            params.controller_config(), runtime.action_scaling, runtime.uncertainty_threshold
        )
        if params.command_interface == SERVO_TWIST and runtime.action_dim != 3:
            raise LompoError(
                f"{params.model_path}: servo_twist sends a 3-d linear velocity but the policy has "
                f"{runtime.action_dim} actions; set command_interface to joint_group"
            )
        return cls(runtime, controller, kit, params)

    def _command(self, decision: Decision, now_ns: int) -> Any:
        return command_message(
            self.kit,
            decision.command,
            self.params.command_interface,
            now_ns,
            self.params.command_frame,
        )

    def on_image(self, msg: Any, now_ns: int, want_debug: bool = True) -> PolicyOutputs:
        now_s = now_ns / 1e9
        result = self.runtime.step(msg)
        header = getattr(msg, "header", None)
        self.stats.record(
            now_s, m.stamp_ns(header) if header is not None else None, result.ok, result.latency_s
        )
        decision = self.controller.on_result(result, now_s)
        # The model's next step must see what the arm was told, not what the policy proposed
        # (the dataset's actions are the executed ones).
        self.runtime.set_prev_action(decision.action)
        self.last_decision = decision
        self.last_uncertainty = float(result.uncertainty)
        debug = None
        if want_debug and result.model_image is not None:
            frame = header.frame_id if header is not None else m.CAMERA_FRAME
            debug = self.kit.image(result.model_image, now_ns, frame)
        return PolicyOutputs(
            self._command(decision, now_ns),
            self.kit.float32(result.uncertainty),
            debug,
            decision,
            result,
        )

    def on_timer(self, now_ns: int) -> Any | None:
        """The watchdog: a zero command when images have stopped, else nothing."""
        decision = self.controller.on_timer(now_ns / 1e9)
        if decision is None:
            return None
        self.runtime.set_prev_action(decision.action)
        self.last_decision = decision
        return self._command(decision, now_ns)

    def zero_command(self, now_ns: int) -> Any:
        zero = np.zeros(self.runtime.action_dim)
        return command_message(
            self.kit,
            self.runtime.action_scaling.to_physical(zero),
            self.params.command_interface,
            now_ns,
            self.params.command_frame,
        )

    def reset(self) -> None:
        """A new episode: clear the latent state and the controller's counters."""
        self.runtime.reset()
        self.controller.reset()
        self.resets += 1

    def on_episode(self, episode: int) -> bool:
        """The sim's episode counter; a change means a new episode (returns whether it reset)."""
        changed = self.episode is not None and episode != self.episode
        self.episode = episode
        if changed:
            self.reset()
        return changed

    def diagnostics(self, now_ns: int, name: str) -> Any:
        now_s = now_ns / 1e9
        state = self.controller.state
        decision = self.last_decision
        reason = decision.reason if decision is not None else "no image yet"
        if state == "halted":
            level = "ERROR"
        elif state != "active" or decision is None or reason != "ok":
            level = "WARN"
        else:
            level = "OK"
        values = {
            "state": state,
            "reason": reason,
            "input_rate_hz": self.stats.rate_hz(now_s),
            "image_age_s": self.stats.image_age_s,
            "since_last_image_s": now_s - self.stats.last_arrival_s,
            "step_latency_s": self.stats.latency_s,
            "uncertainty": self.last_uncertainty,
            "uncertainty_threshold": float(self.runtime.uncertainty_threshold),
            "intervened": bool(decision.intervened) if decision is not None else False,
            "images": self.stats.images,
            "failed_steps": self.stats.failures,
            "resets": self.resets,
            "model_path": self.params.model_path,
        }
        return self.kit.diagnostic_array(
            now_ns, [(level, name, f"{state}: {reason}", "lompo", values)]
        )


# ---------------------------------------------------------------------------------------------
# sim_node
# ---------------------------------------------------------------------------------------------


@dataclass
class SimNodeParams:
    """sim_node's parameters, with the defaults it declares (config/drawer_close.yaml)."""

    mode: str = LOCKSTEP
    image_size: int = 64
    max_steps: int = 150
    seed: int = 0
    image_topic: str = m.IMAGE_TOPIC
    command_interface: str = SERVO_TWIST
    command_topic: str = ""
    reward_topic: str = m.REWARD_TOPIC
    success_topic: str = m.SUCCESS_TOPIC
    episode_topic: str = EPISODE_TOPIC
    rate_hz: float = 0.0  # realtime mode's step rate; 0: the sim's control rate
    command_timeout_s: float = 0.5  # realtime: a command older than this is replaced by zero
    stall_timeout_s: float = 1.0  # lockstep: republish the image if no command came for this long

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SimNodeParams:
        return _params_from_mapping(cls, values, "sim_node")

    def validate(self) -> None:
        check_choice("mode", self.mode, SIM_MODES)
        check_choice("command_interface", self.command_interface, COMMAND_INTERFACES)
        if self.image_size < 64:
            raise LompoError(
                f"parameter image_size must be >= 64 (the policy's input), got {self.image_size}"
            )
        if self.max_steps < 1:
            raise LompoError(f"parameter max_steps must be >= 1, got {self.max_steps}")

    @property
    def resolved_command_topic(self) -> str:
        return command_topic(self.command_interface, self.command_topic)


@dataclass
class SimFrame:
    """One published camera frame and what came with it."""

    image: np.ndarray
    reward: float
    success: bool
    episode: int
    t: int  # steps since the episode's reset
    done: bool  # the last frame of its episode (success or time limit)
    reason: str  # "reset", "step", "success", "time limit", "stalled: republished", ...


class SimLoop:
    """Episodes of a sim driven by commands: lockstep (one step per command) or real time.

    Lockstep is deterministic: the n-th command of an episode always produces the same frame,
    whatever the timing. Real time steps on a clock with the latest command, like a robot; a
    command older than ``command_timeout_s`` counts as zero, as MoveIt Servo would treat it.

    ``answer_final``: the driver answers every image, the episode's last one included (a policy
    node cannot tell it is the last). Lockstep then starts the next episode on that answer,
    without applying it; otherwise the answer would step the new episode and leave two commands
    in flight for good. A driver that skips final frames (``lompo eval``) leaves it False and
    gets the final frame and the next episode's first frame together.
    """

    def __init__(
        self,
        sim: Any,
        mode: str = LOCKSTEP,
        seed: int = 0,
        command_timeout_s: float = 0.5,
        stall_timeout_s: float = 1.0,
        answer_final: bool = False,
    ) -> None:
        self.sim = sim
        self.answer_final = bool(answer_final)
        self._pending_reset: str | None = None  # why the episode ended, until its answer comes
        self.mode = check_choice("mode", mode, SIM_MODES)
        self.seed = int(seed)
        self.command_timeout_s = float(command_timeout_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.episode = -1
        self.last: SimFrame | None = None
        self._action = np.zeros(sim.action_dim)
        self._action_time_s = -math.inf
        self._last_publish_s = -math.inf
        self.successes = 0
        self.bad_commands = 0

    def reset(self, now_s: float = 0.0, reason: str = "reset") -> list[SimFrame]:
        """Start the next episode; its seed is ``seed + episode`` so a run is reproducible."""
        self.episode += 1
        self._pending_reset = None
        step = self.sim.reset(self.seed + self.episode)
        self._action = np.zeros(self.sim.action_dim)
        self._action_time_s = -math.inf
        return [self._frame(step, reason, now_s)]

    def _frame(self, step: Step, reason: str, now_s: float) -> SimFrame:
        frame = SimFrame(
            image=step.image,
            reward=float(step.reward),
            success=bool(step.success),
            episode=self.episode,
            t=int(self.sim.t),
            done=bool(step.terminal or step.truncated),
            reason=reason,
        )
        self.last = frame
        self._last_publish_s = now_s
        return frame

    def _step(self, action: np.ndarray, now_s: float) -> list[SimFrame]:
        if self.last is None:
            return self.reset(now_s)
        step = self.sim.step(action)
        reason = "success" if step.success else "time limit" if step.truncated else "step"
        frames = [self._frame(step, reason, now_s)]
        if frames[0].done:
            self.successes += int(step.success)
            if self.answer_final and self.mode == LOCKSTEP:
                self._pending_reset = reason
            else:
                frames += self.reset(now_s, f"reset after {reason}")
        return frames

    def on_command(self, action: np.ndarray, now_s: float, reason: str = "ok") -> list[SimFrame]:
        """A command arrived (already a normalised action, see :func:`command_to_action`)."""
        if reason != "ok":
            self.bad_commands += 1
        if self.mode == LOCKSTEP:
            if self._pending_reset is not None:  # the answer to the episode's last frame
                return self.reset(now_s, f"reset after {self._pending_reset}")
            return self._step(np.asarray(action, np.float64), now_s)
        self._action = np.asarray(action, np.float64)
        self._action_time_s = now_s
        return []

    def on_tick(self, now_s: float) -> list[SimFrame]:
        """The node's timer: a step in real time; a republish of a stalled lockstep frame."""
        if self.last is None:
            return self.reset(now_s)
        if self.mode == REALTIME:
            fresh = now_s - self._action_time_s <= self.command_timeout_s
            return self._step(self._action if fresh else np.zeros_like(self._action), now_s)
        if now_s - self._last_publish_s >= self.stall_timeout_s:
            # A lost image or command would stop lockstep for good; sending the frame again
            # restarts the exchange without stepping, so determinism holds.
            frame = SimFrame(**{**self.last.__dict__, "reason": "stalled: republished"})
            self._last_publish_s = now_s
            return [frame]
        return []


def sim_frame_messages(
    kit: MessageKit, frame: SimFrame, stamp_ns: int, frame_id: str = m.CAMERA_FRAME
) -> dict[str, Any]:
    """The messages sim_node publishes for one frame, keyed by role, in publishing order.

    The episode counter goes first so that a policy listening to it resets before it sees the
    new episode's first image; then the collector's order (image, reward, success).
    """
    return {
        "episode": kit.int32(frame.episode),
        "image": kit.image(frame.image, stamp_ns, frame_id),
        "reward": kit.float32(frame.reward),
        "success": kit.bool(frame.success),
    }
