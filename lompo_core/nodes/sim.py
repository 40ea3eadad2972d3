"""sim_node's behaviour without ROS: episodes of the sim driven by commands.

Mirrors ``lompo_ros/sim_node.py``, which only wires rclpy to :class:`SimLoop`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lompo_core import messages as m
from lompo_core.errors import LompoError
from lompo_core.messages import MessageKit
from lompo_core.nodes.common import (
    COMMAND_INTERFACES,
    SERVO_TWIST,
    check_choice,
    command_topic,
    params_from_mapping,
)

if TYPE_CHECKING:
    from lompo_core.sim.drawer import Step

EPISODE_TOPIC = "/drawer_sim/episode"
LOCKSTEP = "lockstep"
REALTIME = "realtime"
SIM_MODES = (LOCKSTEP, REALTIME)


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
    # A std_srvs/Trigger called before each episode's first frame is published (the policy's
    # ~/reset), so that no episode starts on the last one's memory; empty: none.
    policy_reset_service: str = ""
    rate_hz: float = 0.0  # realtime mode's step rate; 0: the sim's control rate
    command_timeout_s: float = 0.5  # realtime: a command older than this is replaced by zero
    stall_timeout_s: float = 1.0  # lockstep: republish the image if no command came for this long

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SimNodeParams:
        return params_from_mapping(cls, values, "sim_node")

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

    ``await_policy_reset``: each episode's first frame is held (``awaiting_policy_reset``) until
    :meth:`policy_reset_done` says the policy has forgotten the last episode; commands that
    arrive meanwhile are counted in ``ignored_commands`` and step nothing.
    """

    def __init__(
        self,
        sim: Any,
        mode: str = LOCKSTEP,
        seed: int = 0,
        command_timeout_s: float = 0.5,
        stall_timeout_s: float = 1.0,
        answer_final: bool = False,
        await_policy_reset: bool = False,
    ) -> None:
        self.sim = sim
        self.answer_final = bool(answer_final)
        self.await_policy_reset = bool(await_policy_reset)
        self.awaiting_policy_reset = False
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
        self.ignored_commands = 0
        self.republished = 0

    def reset(self, now_s: float = 0.0, reason: str = "reset") -> list[SimFrame]:
        """Start the next episode; its seed is ``seed + episode`` so a run is reproducible."""
        self.episode += 1
        self._pending_reset = None
        step = self.sim.reset(self.seed + self.episode)
        self._action = np.zeros(self.sim.action_dim)
        self._action_time_s = -math.inf
        frame = self._frame(step, reason, now_s)
        if self.await_policy_reset:
            self.awaiting_policy_reset = True
            return []
        return [frame]

    def policy_reset_done(self, now_s: float) -> list[SimFrame]:
        """The policy has reset: publish the held first frame of the episode."""
        if not self.awaiting_policy_reset or self.last is None:
            return []
        self.awaiting_policy_reset = False
        self._last_publish_s = now_s
        return [self.last]

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

    def on_command(
        self, action: np.ndarray, now_s: float, reason: str = "ok", stamp_s: float | None = None
    ) -> list[SimFrame]:
        """A command arrived (already a normalised action, see :func:`command_to_action`).

        ``stamp_s``: the command's own stamp where it has one; in lockstep a command stamped
        before the frame now shown (a watchdog's zero sent during a slow reset) answers nothing.
        """
        if reason != "ok":
            self.bad_commands += 1
        stale = stamp_s is not None and stamp_s > 0 and stamp_s < self._last_publish_s
        if self.awaiting_policy_reset or (self.mode == LOCKSTEP and stale):
            self.ignored_commands += 1
            return []
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
        if self.awaiting_policy_reset:
            return []
        if self.mode == REALTIME:
            fresh = now_s - self._action_time_s <= self.command_timeout_s
            return self._step(self._action if fresh else np.zeros_like(self._action), now_s)
        if now_s - self._last_publish_s >= self.stall_timeout_s:
            # A lost image or command would stop lockstep for good; sending the frame again
            # restarts the exchange without stepping (the run is then no longer reproducible).
            frame = SimFrame(**{**self.last.__dict__, "reason": "stalled: republished"})
            self._last_publish_s = now_s
            self.republished += 1
            return [frame]
        return []


def sim_frame_messages(
    kit: MessageKit, frame: SimFrame, stamp_ns: int, frame_id: str = m.CAMERA_FRAME
) -> dict[str, Any]:
    """The messages sim_node publishes for one frame, keyed by role, in publishing order.

    The episode counter (for monitors; the policy resets through its ``~/reset`` service) goes
    first, then the collector's order (image, reward, success).
    """
    return {
        "episode": kit.int32(frame.episode),
        "image": kit.image(frame.image, stamp_ns, frame_id),
        "reward": kit.float32(frame.reward),
        "success": kit.bool(frame.success),
    }
