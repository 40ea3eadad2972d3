"""The drawer task of record: Meta-World ``drawer-close-v3`` seen from the ``topview`` camera.

The wrapper owns seeding (each seed fixes the drawer's position), the time limit, fast headless
rendering and the action convention: a normalised end-effector velocity in [-1, 1]^3 with the
gripper held closed. Success is Meta-World's own criterion.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# MuJoCo picks its GL backend at import time; EGL renders headless without a display.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from lompo_core.actions import ActionScaling  # noqa: E402

ENV_NAME = "drawer-close-v3"
CAMERA = "topview"
ACTION_NAMES = ("linear.x", "linear.y", "linear.z")
GRIPPER_CLOSED = 1.0


@dataclass
class Step:
    """What the sim returns after reset or step."""

    image: np.ndarray  # uint8 [H, W, 3] RGB, C-contiguous
    reward: float  # sparse: 1.0 on the step that reaches success
    success: bool
    terminal: bool  # the task is solved: the episode ends here
    truncated: bool  # the time limit ended the episode
    state: np.ndarray  # Meta-World's 39-d observation, for scripted policies only


class DrawerCloseSim:
    """Meta-World drawer-close-v3 behind a small interface: reset, step, render, success.

    Another MuJoCo scene can replace it by offering the same methods and attributes.
    """

    action_dim = 3

    def __init__(self, image_size: int = 64, max_steps: int = 150, camera: str = CAMERA):
        import warnings

        import gymnasium as gym
        import metaworld  # noqa: F401  (registers the Meta-World environments)

        # Gymnasium's passive checker complains about Meta-World's own observation bounds.
        warnings.filterwarnings("ignore", module="gymnasium.utils.passive_env_checker")

        self.image_size = int(image_size)
        self.max_steps = int(max_steps)
        self._gym_env = gym.make(
            "Meta-World/MT1",
            env_name=ENV_NAME,
        )
        self._env = self._gym_env.unwrapped
        # The MT1 wrapper calls set_task on its first reset; after that we drive the raw env.
        self._gym_env.reset(seed=0)
        # We choose the drawer position ourselves, so that a seed fixes the episode.
        self._env._freeze_rand_vec = True
        self._reset_space = self._env._random_reset_space
        self._camera = camera
        # Called with the renderer's mjvScene after each update, before rendering: adds what the
        # physics does not hold (the distractor of ``lompo eval --shift distractor``).
        self.decorate: Callable[[Any], None] | None = None
        self._renderer = self._make_renderer()
        self.control_rate_hz = 1.0 / float(self._env.dt)
        # Meta-World moves the mocap by action * action_scale metres per control step.
        speed = float(self._env.action_scale) * self.control_rate_hz
        self.action_scaling = ActionScaling(ACTION_NAMES, "m/s", (speed,) * 3)
        self._t = 0
        self._state: np.ndarray | None = None
        self._success = False

    def _make_renderer(self):
        import mujoco

        # Our own renderer, not Gymnasium's viewer: ~1.5x faster, and it lets us switch off
        # shadows and multisampling (~10x slower on CPU for no visible gain at 64 px). The
        # quality settings must be in place before the GL context is created.
        model = self._env.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        renderer = mujoco.Renderer(model, self.image_size, self.image_size)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
            renderer.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        return renderer

    def reset(self, seed: int) -> Step:
        rng = np.random.default_rng(seed)
        low, high = self._reset_space.low, self._reset_space.high
        self._env._last_rand_vec = rng.uniform(low, high)
        self._state, _ = self._env.reset()
        self._t = 0
        self._success = False
        return Step(self.render(), 0.0, False, False, False, self._state.copy())

    def step(self, action: np.ndarray) -> Step:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, np.float64).reshape(self.action_dim), -1.0, 1.0)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"non-finite action {a}")
        full = np.append(a, GRIPPER_CLOSED).astype(np.float32)
        self._state, _, _, _, info = self._env.step(full)
        self._t += 1
        self._success = bool(info["success"])
        truncated = self._t >= self.max_steps and not self._success
        reward = 1.0 if self._success else 0.0
        return Step(
            self.render(), reward, self._success, self._success, truncated, self._state.copy()
        )

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self._env.data, camera=self._camera)
        if self.decorate is not None:
            self.decorate(self._renderer.scene)
        return self._renderer.render().copy()

    @property
    def success(self) -> bool:
        return self._success

    @property
    def state(self) -> np.ndarray:
        """Meta-World's 39-d observation of the current step, for scripted policies only."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state.copy()

    @property
    def t(self) -> int:
        return self._t

    @property
    def mj_model(self):
        return self._env.model

    @property
    def mj_data(self):
        return self._env.data

    @property
    def camera(self) -> str:
        """The name of the model camera the images are rendered from."""
        return self._camera

    @property
    def frame_skip(self) -> int:
        return int(self._env.frame_skip)

    def close(self) -> None:
        self._renderer.close()
        self._gym_env.close()
