"""align.Aligner: every control tick is a step, and every reward lands."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lompo_core.data.align import Aligner


@settings(max_examples=150, deadline=None)
@given(
    control_hz=st.integers(5, 50),
    camera_over_control=st.floats(1.0, 6.0),
    jitter=st.floats(0.0, 0.2),
    drop=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**16),
)
def test_every_tick_is_a_step_with_the_latest_frame_and_every_reward_lands(
    control_hz, camera_over_control, jitter, drop, seed
):
    camera_hz = min(60.0, control_hz * camera_over_control)
    rng = np.random.default_rng(seed)
    dt, cam_dt = int(1e9 / control_hz), 1e9 / camera_hz
    tol, gap = dt // 4, max(int(0.2e9), 4 * dt)
    t_end = int(3e9)
    frames: list[int] = []
    for k in range(int(t_end / cam_dt)):
        f = max(0, int(k * cam_dt + rng.uniform(-jitter, jitter) * cam_dt))
        # Dropped at random, but never so many that the camera falls silent for a gap.
        kept = not frames or rng.random() >= drop or f + cam_dt - frames[-1] >= gap // 2
        if kept and (not frames or f > frames[-1]):
            frames.append(f)
    commands = [j * dt + dt // 4 for j in range(int(frames[-1] / dt) + 1)]
    rewards = [(f, float(rng.integers(0, 2))) for f in frames if rng.random() < 0.2]
    rewards.append((frames[-1], 1.0))  # the last frame's reward: a success at the very end
    events = [(f, 0, "image", i) for i, f in enumerate(frames)]
    events += [(r, 1, "reward", v) for r, v in rewards]
    events += [(c, 2, "command", j) for j, c in enumerate(commands)]
    events.sort(key=lambda e: (e[0], e[1]))
    out = []
    aligner = Aligner(
        dt, tol, gap, 1, lambda i, stamp: i, out.append, min_length=1, max_length=10**6,
        success_ends=False,
    )  # fmt: skip
    for stamp, _, kind, value in events:
        if kind == "image":
            aligner.image(stamp, value)
        elif kind == "reward":
            aligner.reward(stamp, value)
        else:
            aligner.command(stamp, np.array([float(value)], np.float32))
    aligner.finish()
    assert len(out) == 1, [e.end for e in out]
    steps = out[0].steps
    t0 = steps[0].stamp
    # One step per tick, up to the tick that holds the last frame.
    last_tick = -(-(frames[-1] - tol - t0) // dt) if frames[-1] - tol > t0 else 0
    assert len(steps) == last_tick + 1
    # Step 0 is the frame the first command was chosen from; each later tick's step is the
    # latest frame up to the end of the tick's window.
    assert steps[0].image == max(i for i, f in enumerate(frames) if f <= commands[0])
    for k, step in enumerate(steps):
        if k:
            latest = max(i for i, f in enumerate(frames) if f <= t0 + k * dt + tol)
            assert step.image == latest, (k, step.stamp)
        before = [j for j, c in enumerate(commands) if c < frames[step.image]]
        expected = 0.0 if k == 0 or not before else float(before[-1])
        assert float(step.action[0]) == expected
    assert sum(s.reward for s in steps) == pytest.approx(sum(v for _, v in rewards))
