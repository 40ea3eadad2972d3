"""Sim speed: DrawerCloseSim steps/s with 64x64 rendering, against raw MuJoCo on the same model.

The raw loop is the floor of what any wrapper can reach: ``frame_skip`` physics steps and one
render of the same model, scene options and camera with ``mujoco.Renderer``, no Python policy
logic. The wrapper adds Meta-World's step (mocap, reward, observation) and our bookkeeping.

    python benchmarks/sim_speed.py [--steps 1500] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from lompo_core.sim import DrawerCloseSim  # noqa: E402


def wrapper_speed(sim: DrawerCloseSim, steps: int) -> float:
    rng = np.random.default_rng(0)
    sim.reset(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        step = sim.step(rng.uniform(-1, 1, 3))
        if step.terminal or step.truncated:
            sim.reset(0)
    return steps / (time.perf_counter() - t0)


def raw_speed(sim: DrawerCloseSim, steps: int, size: int) -> float:
    model = sim.mj_model  # same model, same visual options (shadows, multisampling off)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, size, size)
    options = mujoco.MjvOption()
    for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
        renderer.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
    mujoco.mj_forward(model, data)
    t0 = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(model, data, nstep=sim.frame_skip)
        renderer.update_scene(data, camera="topview", scene_option=options)
        renderer.render()
    rate = steps / (time.perf_counter() - t0)
    renderer.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()
    sim = DrawerCloseSim(image_size=args.size)
    wrapper_speed(sim, 50)  # warm-up: GL context, caches
    raw = raw_speed(sim, args.steps, args.size)
    wrapped = wrapper_speed(sim, args.steps)
    sim.close()
    print(
        f"render {args.size}x{args.size}, {args.steps} steps, frame_skip {sim.frame_skip}, "
        f"MUJOCO_GL={os.environ['MUJOCO_GL']}"
    )
    print(f"raw MuJoCo step+render : {raw:8.1f} steps/s")
    print(f"DrawerCloseSim.step    : {wrapped:8.1f} steps/s")
    print(f"wrapper / raw          : {wrapped / raw:8.1%}  (target >= 80%)")


if __name__ == "__main__":
    main()
