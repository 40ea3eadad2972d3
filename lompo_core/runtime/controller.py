"""The safety controller: every decision a policy node makes about what to send, in pure Python.

The node only wires ROS to it, so each rule here is tested without ROS. The policy proposes an
action per image; the controller decides what reaches the robot:

- states ``inactive`` (send nothing but zeros), ``active`` and ``halted`` (latched; only
  ``reset()`` leaves it, so that a human or a new episode acknowledges the fault);
- a watchdog: no fresh valid image within ``image_timeout_s`` -> zero command;
- clamp to ``max_action`` and limit the change per step to ``max_action_change``;
- a physical speed limit that does not come from the policy's sidecar: the command's norm is
  scaled down to ``max_linear_speed`` (m/s) for linear velocity commands, each joint's command
  clipped to ``max_joint_speed`` (rad/s, one value or one per joint) for joint velocities, on
  every command sent; a sidecar whose ``action.max`` exceeds ``action_max_ceiling`` is refused
  at load;
- NaN or Inf anywhere (image, action, uncertainty, clock) -> zero command and halt;
- uncertainty above the threshold for ``uncertainty_patience`` steps in a row -> warn, hold
  (zero command while it lasts) or halt;
- the out-of-distribution gate: an image whose surprise or reconstruction error, image-wide or
  of its worst 8x8 patch (the policy's image signals), is above its threshold for ``ood_patience`` frames in a row -> hold (zero
  commands), until all are back within their thresholds for ``ood_patience`` frames in a row.
  The surprise of the first frame after ``reset()`` is not read (its prior is the model's
  initial state, which predicts no particular image; the export calibrates without it);
- a frozen image: the model image the same, bit for bit, for ``frozen_patience`` frames in a row
  while the commands sent asked for motion -> hold until it changes. A camera pipeline that
  repeats its last buffer with fresh stamps does this; a live camera's sensor noise never does,
  and the per-step surprise sees only one step's missing motion, too little to tell.
  The ensemble's disagreement measures the dynamics' uncertainty, not whether the image looks
  like the data: a black, blinded, noisy or frozen camera can keep it low.

Stopping is never rate limited: a zero command goes out at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lompo_core.actions import ActionScaling
from lompo_core.errors import LompoError
from lompo_core.runtime.result import NONFINITE, RuntimeResult
from lompo_core.runtime.sidecar import FIRST_FRAME_EXEMPT

INACTIVE = "inactive"
ACTIVE = "active"
HALTED = "halted"
ON_UNCERTAIN = ("warn", "hold", "halt")
LINEAR_UNIT = "m/s"
JOINT_UNIT = "rad/s"
DEFAULT_MAX_LINEAR_SPEED = 0.5  # m/s, on the command's norm (see docs/export-and-runtime.md)
DEFAULT_MAX_JOINT_SPEED = 1.0  # rad/s, per joint
DEFAULT_ACTION_MAX_CEILING = 2.0  # per axis, in the sidecar's unit
_MARGIN = 1e-6
# The image signals the gate reads, RuntimeResult's attributes of the same names.
OOD_SIGNALS = ("surprise", "reconstruction_error", "reconstruction_patch_error")
OOD_HOLD = "hold: out of distribution"  # the reason of every decision the gate holds


@dataclass
class ControllerConfig:
    image_timeout_s: float = 0.5  # watchdog: no fresh image for this long -> zero command
    max_action: float = 1.0  # clamp, normalised units
    # Rate limit per step, normalised units. 2.0 spans the whole [-1, 1] range, so it never
    # binds: the policy was trained on data whose commands jump freely, and a tighter limit
    # changes the dynamics it acts in (0.5 took the shipped drawer policy from 80% to 57%).
    # A robot whose driver does not limit acceleration sets its own value.
    max_action_change: float = 2.0
    uncertainty_threshold: float | None = None  # None: the sidecar's calibrated value
    uncertainty_patience: int = 5  # consecutive steps above threshold before acting
    on_uncertain: str = "hold"  # "warn" | "hold" (zero command) | "halt"
    # The out-of-distribution gate on the policy's image signals (a policy exported without them
    # has no gate). None: the sidecar's calibrated threshold; inf switches a signal off.
    surprise_threshold: float | None = None  # KL(posterior || prior), nats
    reconstruction_threshold: float | None = None  # mean squared error, [-0.5, 0.5] pixel scale
    reconstruction_patch_threshold: float | None = None  # the same, the worst 8x8 patch's
    # Frames in a row above a threshold before holding, and within both before moving again.
    ood_patience: int = 2
    # Frames in a row with the very same model image while moving before holding; 0: off.
    frozen_patience: int = 3
    start_active: bool = True
    # Physical limits, in the robot's units, set by whoever deploys (never read from the policy's
    # sidecar, which is not trusted). The linear limit applies to the Euclidean norm of an m/s
    # command (the direction is kept: the whole vector is scaled down); the joint limit to each
    # component of a rad/s command.
    max_linear_speed: float = DEFAULT_MAX_LINEAR_SPEED
    max_joint_speed: float | tuple[float, ...] = DEFAULT_MAX_JOINT_SPEED  # one, or one per joint
    # The largest sidecar action.max (per axis, in its unit) a policy may declare at all: a
    # policy declaring more is refused at load rather than clipped while running.
    action_max_ceiling: float = DEFAULT_ACTION_MAX_CEILING

    def validate(self) -> None:
        """Raise LompoError naming the first bad field (a node's parameters come from YAML)."""
        if not (_finite(self.image_timeout_s) and self.image_timeout_s > 0):
            raise LompoError(f"image_timeout_s must be > 0, got {self.image_timeout_s!r}")
        if not (_finite(self.max_action) and 0 < self.max_action <= 1):
            raise LompoError(f"max_action must be in (0, 1], got {self.max_action!r}")
        if not (_finite(self.max_action_change) and self.max_action_change > 0):
            raise LompoError(f"max_action_change must be > 0, got {self.max_action_change!r}")
        if self.uncertainty_threshold is not None and not _valid_threshold(
            self.uncertainty_threshold
        ):
            raise LompoError(
                f"uncertainty_threshold must be a number >= 0 (inf disables it) or None, "
                f"got {self.uncertainty_threshold!r}"
            )
        for name in ("uncertainty_patience", "ood_patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LompoError(f"{name} must be an integer >= 1, got {value!r}")
        if (
            not isinstance(self.frozen_patience, int)
            or isinstance(self.frozen_patience, bool)
            or self.frozen_patience < 0
        ):
            raise LompoError(
                f"frozen_patience must be an integer >= 0 (0: off), got {self.frozen_patience!r}"
            )
        for name in _OOD_FIELDS.values():
            value = getattr(self, name)
            if value is not None and not _valid_threshold(value):
                raise LompoError(
                    f"{name} must be a number >= 0 (inf disables it) or None, got {value!r}"
                )
        for name in ("max_linear_speed", "action_max_ceiling"):
            value = getattr(self, name)
            if not (_finite(value) and value > 0):
                raise LompoError(f"{name} must be a finite number > 0, got {value!r}")
        joints = self.max_joint_speed
        values = list(joints) if isinstance(joints, (list, tuple)) else [joints]
        if not values or not all(_finite(v) and float(v) > 0 for v in values):
            raise LompoError(
                f"max_joint_speed must be a finite number > 0 or one per joint, got {joints!r}"
            )
        if self.on_uncertain not in ON_UNCERTAIN:
            raise LompoError(
                f"on_uncertain must be one of {', '.join(ON_UNCERTAIN)}, got {self.on_uncertain!r}"
            )


@dataclass
class Decision:
    action: np.ndarray  # float32 [A] normalised, what to send (zeros when stopped)
    command: np.ndarray  # the physical command, action_scaling.to_physical(action)
    state: str  # "inactive" | "active" | "halted"
    reason: str  # "ok", "watchdog: no image for 0.73 s", "nan in action", ...
    intervened: bool  # the controller changed or zeroed the policy's action


class Controller:
    """Turns runtime results and timer ticks into Decisions. Not thread safe: one caller.

    ``threshold`` is the policy's calibrated uncertainty threshold, ``signal_thresholds`` its
    calibrated image signal thresholds (``PolicyRuntime.signal_thresholds``): the gate reads the
    signals named there, each at the config's threshold if set, else at the policy's; without
    any (a policy exported before them) the gate is off.
    """

    def __init__(
        self,
        config: ControllerConfig,
        action_scaling: ActionScaling,
        threshold: float,
        signal_thresholds: Mapping[str, float] | None = None,
    ):
        config.validate()
        self.ood_thresholds: dict[str, float] = {}
        for name, calibrated in (signal_thresholds or {}).items():
            if name not in OOD_SIGNALS:
                raise LompoError(f"unknown image signal {name!r}; known: {', '.join(OOD_SIGNALS)}")
            override = getattr(config, _OOD_FIELDS[name])
            value = calibrated if override is None else override
            if not _valid_threshold(value):
                raise LompoError(f"{name} threshold must be a number >= 0, got {value!r}")
            if not math.isinf(float(value)):
                self.ood_thresholds[name] = float(value)
        chosen = (
            config.uncertainty_threshold if config.uncertainty_threshold is not None else threshold
        )
        if not _valid_threshold(chosen):
            raise LompoError(f"uncertainty threshold must be a number >= 0, got {chosen!r}")
        maxima = [float(m) for m in action_scaling.max_speed]
        if not all(math.isfinite(m) and 0 < m <= config.action_max_ceiling for m in maxima):
            raise LompoError(
                f"the policy's action.max {maxima} {action_scaling.unit} exceeds "
                f"action_max_ceiling {config.action_max_ceiling:g} (or is not a finite number "
                "> 0): refused rather than clipped"
            )
        if action_scaling.unit == LINEAR_UNIT:
            self._speed_limit = float(config.max_linear_speed)
        elif action_scaling.unit == JOINT_UNIT:
            joints = config.max_joint_speed
            if isinstance(joints, (list, tuple)) and len(joints) != len(maxima):
                raise LompoError(
                    f"max_joint_speed has {len(joints)} values, the policy has {len(maxima)} "
                    f"joints ({', '.join(action_scaling.names)})"
                )
            self._speed_limit = np.asarray(joints, np.float64)
        else:
            raise LompoError(
                f"the policy's action unit {action_scaling.unit!r} has no physical limit here "
                f"(the controller limits {LINEAR_UNIT} and {JOINT_UNIT} commands)"
            )
        self.config = config
        self.action_scaling = action_scaling
        self.action_dim = len(action_scaling.max_speed)
        self._maxima = np.asarray(maxima, np.float64)
        self.threshold = float(chosen)
        self.state = ACTIVE if config.start_active else INACTIVE
        self.halt_reason = ""
        self._last_image_s: float | None = None
        self._last_sent = np.zeros(self.action_dim, np.float32)
        self._uncertain_steps = 0
        self._ood_over = 0  # frames in a row with a signal above its threshold
        self._ood_within = 0  # frames in a row with every signal within its threshold
        self._episode_frames = 0  # frames the gate has read since reset
        self.ood_holding = False
        self._last_model_image: np.ndarray | None = None
        self._same_frames = 0  # frames in a row identical to the one before, while moving
        self.frozen_holding = False

    @property
    def ood_gate(self) -> bool:
        """Whether the out-of-distribution gate reads any image signal."""
        return bool(self.ood_thresholds)

    # -- state changes -------------------------------------------------------------------------

    def activate(self) -> None:
        """inactive -> active. A halted controller stays halted: only reset() clears a fault."""
        if self.state == INACTIVE:
            self.state = ACTIVE
            # Start from rest: the watchdog waits for a fresh image, the rate limit ramps from 0.
            self._last_image_s = None
            self._last_sent[:] = 0

    def deactivate(self) -> None:
        """active -> inactive (zeros from now on). A halt stays latched."""
        if self.state == ACTIVE:
            self.state = INACTIVE
            self._last_sent[:] = 0

    def reset(self) -> None:
        """A new episode: clear the counters; leaves ``halted`` for ``active``.

        The watchdog keeps timing from the last image: a new episode is no reason to stop the
        arm, and a camera that stays silent after it is still caught.
        """
        if self.state == HALTED:
            self.state = ACTIVE
        self.halt_reason = ""
        self._last_sent[:] = 0
        self._uncertain_steps = 0
        self._ood_over = self._ood_within = self._episode_frames = 0
        self.ood_holding = False
        self._last_model_image = None
        self._same_frames = 0
        self.frozen_holding = False

    # -- decisions -----------------------------------------------------------------------------

    def on_result(self, result: RuntimeResult, now_s: float) -> Decision:
        """Decide what to send after a runtime step on a fresh image."""
        try:
            return self._on_result(result, now_s)
        except Exception as exc:  # a malformed result must still end in a zero command
            return self._halt(f"controller: malformed result ({type(exc).__name__}: {exc})")

    def on_timer(self, now_s: float) -> Decision | None:
        """Watchdog tick: a zero Decision when active and the last valid image is stale."""
        if self.state != ACTIVE:
            return None
        if not _finite(now_s):
            return self._halt(f"{NONFINITE}: clock reads {now_s!r}")
        if self._last_image_s is None:
            return self._stop("watchdog: no image yet")
        age = float(now_s) - self._last_image_s
        if age > self.config.image_timeout_s:
            return self._stop(f"watchdog: no image for {age:.2f} s")
        return None

    def _on_result(self, result: RuntimeResult, now_s: float) -> Decision:
        if self.state == HALTED:
            return self._zero(f"halted: {self.halt_reason}", intervened=True)
        if not _finite(now_s):
            return self._halt(f"{NONFINITE}: clock reads {now_s!r}")
        if not result.ok:
            reason = str(result.reason)
            if reason.startswith(NONFINITE):
                return self._halt(reason)
            # A bad frame is skipped with a zero command; it does not feed the watchdog, so a
            # camera that only sends garbage is also caught as "no image".
            return self._stop(f"no action: {reason}")
        action = np.asarray(result.action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,):
            return self._halt(
                f"action has {action.size} values, the action scaling names {self.action_dim}"
            )
        if not np.all(np.isfinite(action)):
            return self._halt(f"{NONFINITE}: NaN or Inf in action {action.tolist()}")
        uncertainty = float(result.uncertainty)
        if not math.isfinite(uncertainty):
            return self._halt(f"{NONFINITE}: uncertainty is {uncertainty}")

        signals = {}
        for name in self.ood_thresholds:
            value = getattr(result, name)
            if value is None:
                return self._halt(f"the result has no {name}, which the gate reads")
            if not _finite(value):
                return self._halt(f"{NONFINITE}: {name} is {value}")
            signals[name] = float(value)

        self._last_image_s = float(now_s)
        if self.state == INACTIVE:
            return self._zero("inactive", intervened=bool(np.any(action != 0)))

        frozen = self._frozen_image(result.model_image)
        ood = self._ood_gate(signals)
        if frozen is not None:
            return self._stop(frozen)
        if ood is not None:
            return self._stop(ood)

        uncertain_note = ""
        if uncertainty > self.threshold:
            self._uncertain_steps += 1
        else:
            self._uncertain_steps = 0
        if self._uncertain_steps >= self.config.uncertainty_patience:
            what = (
                f"uncertainty {uncertainty:.4g} > {self.threshold:.4g} "
                f"for {self._uncertain_steps} steps"
            )
            if self.config.on_uncertain == "halt":
                return self._halt(what)
            if self.config.on_uncertain == "hold":
                return self._stop(f"hold: {what}")
            uncertain_note = f"warn: {what}"

        limit = self.config.max_action
        clamped = np.clip(action, -limit, limit)
        step = self.config.max_action_change
        last = self._last_sent.astype(np.float64)
        rated = np.clip(clamped, last - step, last + step)
        limited = self._speed_limited(rated)
        notes = []
        if np.any(clamped != action):
            notes.append("clamped")
        if np.any(rated != clamped):
            notes.append("rate limited")
        if np.any(limited != rated):
            notes.append("speed limited")
        if uncertain_note:
            notes.insert(0, uncertain_note)
        out = limited.astype(np.float32)
        self._last_sent = out.copy()
        intervened = bool(np.any(out != action.astype(np.float32)))
        return self._decision(out, "; ".join(notes) or "ok", intervened)

    # -- helpers -------------------------------------------------------------------------------

    def _frozen_image(self, image: np.ndarray | None) -> str | None:
        """The reason to hold on a model image that stopped changing while moving, or None."""
        patience = self.config.frozen_patience
        if not patience or image is None:
            return None
        last, self._last_model_image = self._last_model_image, np.array(image, copy=True)
        if last is None or not np.array_equal(last, image):
            self._same_frames = 0
            self.frozen_holding = False
            return None
        if self.frozen_holding or np.any(self._last_sent != 0):
            self._same_frames += 1
        if self._same_frames >= patience:
            self.frozen_holding = True
        if not self.frozen_holding:
            return None
        return (
            f"{OOD_HOLD}: frozen image (the same for {self._same_frames} frames in a row "
            "while moving)"
        )

    def _ood_gate(self, signals: dict[str, float]) -> str | None:
        """The reason to hold on this frame's image signals, or None to go on."""
        first = self._episode_frames == 0
        self._episode_frames += 1
        over = [
            f"{name} {value:.4g} > {self.ood_thresholds[name]:.4g}"
            for name, value in signals.items()
            if value > self.ood_thresholds[name] and not (first and name in FIRST_FRAME_EXEMPT)
        ]
        if over:
            self._ood_over += 1
            self._ood_within = 0
        else:
            self._ood_within += 1
            self._ood_over = 0
        patience = self.config.ood_patience
        if not self.ood_holding and self._ood_over >= patience:
            self.ood_holding = True
        elif self.ood_holding and self._ood_within >= patience:
            self.ood_holding = False
        if not self.ood_holding:
            return None
        if over:
            return f"{OOD_HOLD}: {', '.join(over)} for {self._ood_over} frames"
        return f"{OOD_HOLD}: within thresholds for {self._ood_within} of {patience} frames"

    def _speed_limited(self, action: np.ndarray) -> np.ndarray:
        """The normalised action whose physical command is within the physical speed limit."""
        if self.action_scaling.unit == LINEAR_UNIT:
            # Scale the whole vector: the arm keeps its direction, only slower. The 1e-6 margin
            # keeps the norm under the limit after the float32 rounding of the action.
            return self.action_scaling.within_norm(action, self._speed_limit, _MARGIN)
        command = action * self._maxima
        limit = self._speed_limit * (1 - _MARGIN)
        return np.clip(command, -limit, limit) / self._maxima

    def _decision(self, action: np.ndarray, reason: str, intervened: bool) -> Decision:
        command = self.action_scaling.to_physical(action)
        if not self._within_limit(command):
            # Unreachable through _on_result; a last guard on every command that leaves here.
            self.state = HALTED
            self.halt_reason = f"command {command.tolist()} outside the physical limit"
            action = np.zeros(self.action_dim, np.float32)
            command = self.action_scaling.to_physical(action)
            reason, intervened = f"halt: {self.halt_reason}", True
        return Decision(
            action=action,
            command=command,
            state=self.state,
            reason=reason,
            intervened=intervened,
        )

    def _within_limit(self, command: np.ndarray) -> bool:
        if not np.all(np.isfinite(command)):
            return False
        if self.action_scaling.unit == LINEAR_UNIT:
            return float(np.sqrt(np.sum(command * command))) <= self._speed_limit
        return bool(np.all(np.abs(command) <= self._speed_limit))  # per joint

    def _zero(self, reason: str, intervened: bool) -> Decision:
        self._last_sent = np.zeros(self.action_dim, np.float32)
        return self._decision(np.zeros(self.action_dim, np.float32), reason, intervened)

    def _stop(self, reason: str) -> Decision:
        return self._zero(reason, intervened=True)

    def _halt(self, reason: str) -> Decision:
        if self.state != HALTED:
            self.halt_reason = reason
        self.state = HALTED
        return self._zero(f"halt: {reason}", intervened=True)


_OOD_FIELDS = {
    "surprise": "surprise_threshold",
    "reconstruction_error": "reconstruction_threshold",
    "reconstruction_patch_error": "reconstruction_patch_threshold",
}


def _finite(x: object) -> bool:
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False


def _valid_threshold(x: object) -> bool:
    try:
        value = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False
    return not math.isnan(value) and value >= 0
