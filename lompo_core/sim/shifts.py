"""Camera and scene shifts for ``lompo eval --shift``: what the out-of-distribution gate must see.

``ShiftedSim`` wraps the drawer sim and changes what the camera shows from step ``onset`` of each
episode on; the physics and the episode's seed are untouched, so a shifted run differs from the
clean run of the same seeds only in its images (and what the policy does about them):

- ``black``, ``white``, ``noise`` (uniform, fresh each frame): a covered, blinded or broken
  camera; the rendered frame is replaced at the camera's resolution.
- ``frozen``: the camera repeats the last frame before ``onset`` (with fresh stamps: the node's
  stamp checks do not see it), while the arm moves on.
- ``camera_shift``: the camera moved by ``CAMERA_SHIFT_M`` along its image x axis;
  ``camera_rotate``: turned by ``CAMERA_ROTATE_DEG`` about its optical axis (the image rotates).
  Both change the model's camera pose (``cam_pos``, ``cam_quat``), as a bumped mount would.
- ``dim``: every light of the model and the headlight at half their intensity.
- ``distractor``: a coloured box on the table, beside the drawer. It is a geom added to the
  rendered scene after each update (``mjv_initGeom``), not to the compiled physics model (which
  Meta-World builds and owns): lit and shaded like the scene, it casts no collision.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

SHIFTS = (
    "black",
    "white",
    "noise",
    "frozen",
    "camera_shift",
    "camera_rotate",
    "dim",
    "distractor",
)
CAMERA_SHIFT_M = 0.02
CAMERA_ROTATE_DEG = 5.0
LIGHT_SCALE = 0.5
DISTRACTOR_POS = (-0.3, 0.45, 0.05)  # metres, world frame: on the table, left of the arm's start
DISTRACTOR_HALF_SIZE = (0.05, 0.05, 0.05)
DISTRACTOR_RGBA = (0.95, 0.85, 0.1, 1.0)  # yellow: no colour of the scene


class ShiftedSim:
    """The drawer sim with ``shift`` applied from step ``onset`` of every episode on.

    Everything but ``reset``, ``step`` and ``render`` is the wrapped sim's. ``seed`` seeds the
    noise images. ``shifted`` says whether the last frame returned was shifted.
    """

    def __init__(self, sim: Any, shift: str, onset: int = 0, seed: int = 0) -> None:
        if shift not in SHIFTS:
            raise ValueError(f"unknown shift {shift!r}; choose one of {', '.join(SHIFTS)}")
        if not isinstance(onset, int) or onset < 0:
            raise ValueError(f"shift onset must be an integer >= 0, got {onset!r}")
        import mujoco

        self._mj = mujoco
        self.sim, self.shift, self.onset = sim, shift, onset
        self._rng = np.random.default_rng(seed)
        self._frozen: np.ndarray | None = None
        self._last: np.ndarray | None = None  # the last unshifted image
        self._on = False
        self.shifted = False
        model = sim.mj_model
        self._cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, sim.camera)
        if self._cam < 0:
            raise ValueError(f"the sim's model has no camera {sim.camera!r}")
        self._original = {
            "cam_pos": model.cam_pos[self._cam].copy(),
            "cam_quat": model.cam_quat[self._cam].copy(),
            "light_diffuse": model.light_diffuse.copy(),
            "light_ambient": model.light_ambient.copy(),
            "light_specular": model.light_specular.copy(),
            "head_diffuse": model.vis.headlight.diffuse.copy(),
            "head_ambient": model.vis.headlight.ambient.copy(),
            "head_specular": model.vis.headlight.specular.copy(),
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sim, name)

    # -- the episode ---------------------------------------------------------------------------

    def reset(self, seed: int) -> Any:
        self._set(False)
        self._frozen = self._last = None
        if self.onset == 0:
            self._set(True)
        return self._shifted(self.sim.reset(seed))

    def step(self, action: np.ndarray) -> Any:
        if self.sim.t + 1 >= self.onset:
            self._set(True)  # before the step: the sim renders inside it
        return self._shifted(self.sim.step(action))

    def close(self) -> None:
        self._set(False)
        self.sim.close()

    # -- the shift -----------------------------------------------------------------------------

    def _shifted(self, step: Any) -> Any:
        self.shifted = self._on
        if not self._on:
            self._last = step.image
            return step
        image = step.image
        if self.shift == "black":
            image = np.zeros_like(image)
        elif self.shift == "white":
            image = np.full_like(image, 255)
        elif self.shift == "noise":
            image = self._rng.integers(0, 256, image.shape, dtype=np.uint8)
        elif self.shift == "frozen":
            if self._frozen is None:
                self._frozen = (image if self._last is None else self._last).copy()
            image = self._frozen.copy()
        else:
            return step  # rendered shifted already
        return dataclasses.replace(step, image=image)

    def _set(self, on: bool) -> None:
        """Switch the model-side shifts (camera pose, lights, distractor) on or off."""
        if on == self._on:
            return
        self._on = on
        model, data, o = self.sim.mj_model, self.sim.mj_data, self._original
        model.cam_pos[self._cam] = o["cam_pos"]
        model.cam_quat[self._cam] = o["cam_quat"]
        model.light_diffuse[:] = o["light_diffuse"]
        model.light_ambient[:] = o["light_ambient"]
        model.light_specular[:] = o["light_specular"]
        model.vis.headlight.diffuse[:] = o["head_diffuse"]
        model.vis.headlight.ambient[:] = o["head_ambient"]
        model.vis.headlight.specular[:] = o["head_specular"]
        self.sim.decorate = None
        if on and self.shift in ("camera_shift", "camera_rotate"):
            quat = o["cam_quat"]
            if self.shift == "camera_shift":
                rot = np.zeros(9)
                self._mj.mju_quat2Mat(rot, quat)
                # The camera's x axis (image right) in the world: the first column.
                model.cam_pos[self._cam] = o["cam_pos"] + CAMERA_SHIFT_M * rot.reshape(3, 3)[:, 0]
            else:
                half = np.deg2rad(CAMERA_ROTATE_DEG) / 2
                turn = np.array([np.cos(half), 0.0, 0.0, np.sin(half)])  # about the camera's z
                out = np.zeros(4)
                self._mj.mju_mulQuat(out, quat, turn)
                model.cam_quat[self._cam] = out
        elif on and self.shift == "dim":
            for key in ("light_diffuse", "light_ambient", "light_specular"):
                getattr(model, key)[:] = o[key] * LIGHT_SCALE
            for key in ("diffuse", "ambient", "specular"):
                getattr(model.vis.headlight, key)[:] = o[f"head_{key}"] * LIGHT_SCALE
        elif on and self.shift == "distractor":
            self.sim.decorate = self._add_distractor
        self._mj.mj_camlight(model, data)  # the camera's world pose from the changed model

    def _add_distractor(self, scene: Any) -> None:
        if scene.ngeom >= scene.maxgeom:
            return
        self._mj.mjv_initGeom(
            scene.geoms[scene.ngeom],
            type=self._mj.mjtGeom.mjGEOM_BOX,
            size=np.array(DISTRACTOR_HALF_SIZE),
            pos=np.array(DISTRACTOR_POS),
            mat=np.eye(3).reshape(-1),
            rgba=np.array(DISTRACTOR_RGBA, np.float32),
        )
        scene.ngeom += 1
