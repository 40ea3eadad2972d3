"""Time alignment: a stream of stamped images, commands and rewards -> Dreamer-style episodes.

Events arrive in stamp order (``bagread`` restores it from the bag's arrival order). The rules,
with ``dt`` the control period, ``tol`` the matching tolerance and ``gap`` the gap limit:

- Steps are images resampled at the control rate, one per tick of a grid ``t0 + k * dt`` (no
  drift): tick k's step is the latest image stamped up to ``t0 + k * dt + tol``, decided when the
  first image past that arrives. A faster camera is thinned; a camera at a rate that is not a
  multiple of the control rate (15 Hz frames, 10 Hz commands) still gives a step every tick;
  a dropped frame repeats the frame before it.
- ``action[k]`` is the latest command stamped strictly before ``image[k]`` (zero-order hold, as a
  velocity controller does); ``action[0]`` is zeros. A command stamped with the image it was chosen
  from thus counts for the next image, as does one stamped after it.
- An episode starts at the last image before a command (a robot idling before the first command
  adds nothing), and ends at: a success rising edge (terminal), an image gap or a command silence
  longer than ``gap``, ``max_length`` steps (not terminal), or the end of the bag.
- ``reward[k]`` sums the reward messages stamped in ``(s[k-1] + tol, s[k] + tol]`` (``s`` the image
  stamps), so rewards of thinned frames are not lost; ``reward[0]`` holds those within ``tol`` of
  ``s[0]``. The success flag of a step is any True in the same window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AlignedStep:
    stamp: int
    image: np.ndarray  # [H, W, 3] uint8, what ``decode`` made of the image event
    action: np.ndarray
    reward: float = 0.0
    success: bool = False


@dataclass
class AlignedEpisode:
    steps: list[AlignedStep]
    terminal: bool
    end: str  # why it ended: success, image gap, command gap, max length, end of bag

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class AlignStats:
    images: int = 0
    images_used: int = 0
    commands: int = 0
    episodes: int = 0
    dropped: int = 0  # episodes shorter than min_length
    dropped_steps: int = 0
    first_image: int | None = None
    last_image: int | None = None
    first_command: int | None = None
    last_command: int | None = None
    ends: dict[str, int] = field(default_factory=dict)


class Aligner:
    """Feed events in stamp order; completed episodes go to ``emit`` as soon as they end."""

    def __init__(
        self,
        dt_ns: int,
        tol_ns: int,
        gap_ns: int,
        action_dim: int | None,
        decode: Callable[[Any, int], np.ndarray],
        emit: Callable[[AlignedEpisode], None],
        min_length: int = 2,
        max_length: int = 1000,
        success_ends: bool = True,
    ) -> None:
        self.dt, self.tol, self.gap = dt_ns, tol_ns, gap_ns
        self.decode, self.emit = decode, emit
        self.min_length, self.max_length = min_length, max_length
        self.success_ends = success_ends
        # None: taken from the first command (action[0] of every episode is this zero vector).
        self.zero = None if action_dim is None else np.zeros(action_dim, np.float32)
        self.stats = AlignStats()
        self._steps: list[AlignedStep] | None = None  # the open episode
        self._final = 0  # steps of the open episode whose reward window has closed
        self._candidate: tuple[int, Any] | None = None  # last image while no episode is open
        self._command: tuple[int, np.ndarray] | None = None
        self._target = 0
        self._pending: list[tuple[int, float, bool]] = []  # rewards after the last step's window
        # The latest frame of the open tick (stamp, message, the command that led to it): it is
        # the tick's step unless a later frame still inside the tick's window comes.
        self._held: tuple[int, Any, np.ndarray] | None = None
        self._armed = True  # a success counts only after the flag was false (or at the start)

    # -- events -------------------------------------------------------------------------------
    def image(self, stamp: int, msg: Any) -> None:
        self._advance(stamp)
        st = self.stats
        st.images += 1
        st.first_image = stamp if st.first_image is None else st.first_image
        st.last_image = stamp
        steps = self._steps
        if steps is None:
            self._candidate = (stamp, msg)
            return
        held = self._held
        last = held[0] if held is not None else steps[-1].stamp
        if stamp - last > self.gap:
            self._flush()
            self._close(False, "image gap")
            self._candidate = (stamp, msg)
            return
        assert self._command is not None  # an episode opens only on a command
        if stamp - self._command[0] > self.gap:
            self._flush()
            self._close(False, "command gap")
            self._candidate = (stamp, msg)
            return
        # Each tick whose window closed before this frame gets the latest frame up to it: the
        # held one (again, if the camera dropped the frames of later ticks).
        while stamp > self._target + self.tol and self._steps is not None:
            if self._held is not None:
                self._append(*self._held)
            self._target += self.dt
        if self._steps is None:  # a success or max_length ended the episode meanwhile
            self._candidate = (stamp, msg)
            return
        self._held = (stamp, msg, self._command[1])

    def command(self, stamp: int, action: np.ndarray) -> None:
        self._advance(stamp)
        st = self.stats
        st.commands += 1
        st.first_command = stamp if st.first_command is None else st.first_command
        st.last_command = stamp
        self._command = (stamp, action)
        if self.zero is None:
            self.zero = np.zeros_like(action, dtype=np.float32)
        cand = self._candidate
        if self._steps is None and cand is not None and 0 <= stamp - cand[0] <= self.gap:
            self._candidate = None
            self._steps, self._final = [], 0
            self._target = cand[0]
            self._pending = [p for p in self._pending if p[0] >= cand[0] - self.tol]
            self._append(cand[0], cand[1], self.zero)
            self._held = (cand[0], cand[1], self.zero)  # until a frame of the next tick comes
            self._target += self.dt
            self._advance(stamp)

    def reward(self, stamp: int, value: float) -> None:
        self._receive(stamp, float(value), False)

    def success(self, stamp: int, flag: bool) -> None:
        if not flag:
            self._armed = True  # a latched flag must drop before it can end another episode
        self._receive(stamp, 0.0, bool(flag))

    def _receive(self, stamp: int, value: float, success: bool) -> None:
        self._advance(stamp)
        steps = self._steps
        if steps and stamp <= steps[-1].stamp + self.tol:
            self._credit(steps[-1], value, success)
        else:
            self._pending.append((stamp, value, success))
            if len(self._pending) > 10_000:  # nothing to give them to: keep memory bounded
                del self._pending[:5_000]

    def finish(self) -> None:
        """End of the bag: finalise and emit the open episode."""
        self._flush()
        if self._steps is not None:
            self._advance(None)
        if self._steps is not None:
            self._close(False, "end of bag")

    def _flush(self) -> None:
        """The held frame becomes the open tick's step (the episode ends with it)."""
        held, self._held = self._held, None
        if held is not None and self._steps is not None:
            self._append(*held)
            self._advance(held[0])

    # -- internals ----------------------------------------------------------------------------
    def _credit(self, step: AlignedStep, value: float, success: bool) -> None:
        step.reward += float(value)
        if success and self._armed:
            step.success = True

    def _append(self, stamp: int, msg: Any, action: np.ndarray) -> None:
        step = AlignedStep(stamp, self.decode(msg, stamp), action)
        keep = []
        for p in self._pending:
            if p[0] <= stamp + self.tol:
                self._credit(step, p[1], p[2])
            else:
                keep.append(p)
        self._pending = keep
        self.stats.images_used += 1
        assert self._steps is not None
        self._steps.append(step)

    def _advance(self, now: int | None) -> None:
        """Steps whose reward window closed before ``now`` (None: all) are final: check ends."""
        steps = self._steps
        while steps is not None and self._final < len(steps):
            step = steps[self._final]
            if now is not None and now <= step.stamp + self.tol:
                return
            self._final += 1
            if step.success and self.success_ends:
                self._armed = False
                del steps[self._final :]
                self._close(True, "success")
            elif self._final >= self.max_length:
                del steps[self._final :]
                self._close(False, "max length")
            steps = self._steps

    def _close(self, terminal: bool, why: str) -> None:
        steps, self._steps = self._steps, None
        # A frame held for the next tick is the latest image while no episode is open.
        held, self._held = self._held, None
        self._candidate = None if held is None else (held[0], held[1])
        st = self.stats
        st.ends[why] = st.ends.get(why, 0) + 1
        if not steps:
            return
        if len(steps) < self.min_length:
            st.dropped += 1
            st.dropped_steps += len(steps)
            return
        st.episodes += 1
        self.emit(AlignedEpisode(steps, terminal, why))


def episode_arrays(ep: AlignedEpisode, sparse_success_reward: bool) -> dict[str, np.ndarray]:
    """The dataset's keys for one aligned episode (``reward`` = 1 on success if sparse)."""
    n = len(ep.steps)
    if sparse_success_reward:
        reward = np.zeros(n, np.float32)
        reward[-1] = 1.0 if ep.terminal else 0.0
    else:
        reward = np.array([s.reward for s in ep.steps], np.float32)
    is_first = np.zeros(n, bool)
    is_first[0] = True
    is_last = np.zeros(n, bool)
    is_last[-1] = True
    is_terminal = np.zeros(n, bool)
    is_terminal[-1] = ep.terminal
    return {
        "image": np.stack([s.image for s in ep.steps]),
        "action": np.stack([s.action for s in ep.steps]).astype(np.float32),
        "reward": reward,
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": is_terminal,
    }
