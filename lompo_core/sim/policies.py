"""Behaviour policies that generate datasets in the sim.

Offline RL only beats imitation on data with systematic, not zero-mean, faults, so ``medium``
mixes the expert with wandering detours and wrong pushes (roughly half its episodes succeed) and
``mixed`` draws a behaviour per episode, as autonomous exploration data would look.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

POLICIES = ("expert", "medium", "random", "mixed", "explore")


class BehaviourPolicy(Protocol):
    name: str

    def reset(self, rng: np.random.Generator) -> None: ...

    def act(self, state: np.ndarray) -> np.ndarray: ...


class ExpertPolicy:
    """Meta-World's scripted ``SawyerDrawerCloseV3Policy``, its gripper command dropped."""

    name = "expert"

    def __init__(self) -> None:
        import warnings

        from metaworld.policies import SawyerDrawerCloseV3Policy

        # The scripted policy warns on every call that its gains exceed the action bounds.
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
        self._policy = SawyerDrawerCloseV3Policy()

    def reset(self, rng: np.random.Generator) -> None:
        pass

    def act(self, state: np.ndarray) -> np.ndarray:
        return np.clip(self._policy.get_action(state)[:3], -1.0, 1.0).astype(np.float32)


class RandomPolicy:
    """Uniform actions, each held for a few steps so the arm actually travels somewhere."""

    name = "random"

    def __init__(self, hold: tuple[int, int] = (3, 12)) -> None:
        self._hold = hold
        self._rng = np.random.default_rng(0)
        self._action = np.zeros(3, np.float32)
        self._left = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._left = 0

    def act(self, state: np.ndarray) -> np.ndarray:
        if self._left <= 0:
            self._action = self._rng.uniform(-1, 1, 3).astype(np.float32)
            self._left = int(self._rng.integers(*self._hold))
        self._left -= 1
        return self._action.copy()


class MediumPolicy:
    """The expert with systematic faults: detours in a held random direction, and noise.

    Each step, with probability ``detour_prob``, the policy starts a detour that lasts several
    steps; otherwise it follows the expert plus Gaussian noise. Detours cost time and sometimes
    push the arm away from the handle for good, so about half the episodes succeed in 150 steps.
    """

    name = "medium"

    def __init__(
        self, detour_prob: float = 0.06, detour_len: tuple[int, int] = (6, 20), noise: float = 0.3
    ) -> None:
        self._expert = ExpertPolicy()
        self._random = RandomPolicy(hold=detour_len)
        self._detour_prob = detour_prob
        self._noise = noise
        self._rng = np.random.default_rng(0)
        self._detour_left = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._random.reset(rng)
        self._detour_left = 0

    def act(self, state: np.ndarray) -> np.ndarray:
        if self._detour_left == 0 and self._rng.random() < self._detour_prob:
            self._detour_left = int(self._rng.integers(*self._random._hold))
            self._random._left = 0
        if self._detour_left > 0:
            self._detour_left -= 1
            return self._random.act(state)
        a = self._expert.act(state) + self._rng.normal(0.0, self._noise, 3)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


class MixedPolicy:
    """One behaviour per episode: expert, medium or random with the given weights."""

    name = "mixed"

    def __init__(self, weights: tuple[float, float, float] = (0.2, 0.5, 0.3)) -> None:
        self._choices: list[BehaviourPolicy] = [ExpertPolicy(), MediumPolicy(), RandomPolicy()]
        self._weights = np.asarray(weights) / np.sum(weights)
        self._current: BehaviourPolicy = self._choices[1]

    def reset(self, rng: np.random.Generator) -> None:
        self._current = self._choices[int(rng.choice(len(self._choices), p=self._weights))]
        self._current.reset(rng)

    @property
    def current(self) -> str:
        return self._current.name

    def act(self, state: np.ndarray) -> np.ndarray:
        return self._current.act(state)


def make_policy(name: str) -> BehaviourPolicy:
    factories = {
        "expert": ExpertPolicy,
        "medium": MediumPolicy,
        "random": RandomPolicy,
        "mixed": MixedPolicy,
        # No expert episode: the faulty expert or random behaviour, half each. The data a robot
        # team gets from exploration, where imitation alone should not be enough.
        "explore": lambda: MixedPolicy((0.0, 0.5, 0.5)),
    }
    if name not in factories:
        raise ValueError(f"unknown behaviour policy {name!r}; choose one of {', '.join(POLICIES)}")
    return factories[name]()
