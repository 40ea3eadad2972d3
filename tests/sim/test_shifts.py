"""The camera shifts of ``lompo eval --shift``: each changes the images from its onset on, and
only the images, and the next episode starts clean."""

from __future__ import annotations

import numpy as np
import pytest

from lompo_core.sim.shifts import SHIFTS, ShiftedSim

ONSET = 3
SEED = 1000
PUSH = np.array([0.6, -0.4, 0.0])


def rollout(sim, steps: int = 6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    first = sim.reset(SEED)
    images, states = [first.image], [first.state]
    for _ in range(steps):
        step = sim.step(PUSH)
        images.append(step.image)
        states.append(step.state)
    return images, states


@pytest.fixture(scope="module")
def clean(sim):
    return rollout(sim)


@pytest.mark.parametrize("shift", SHIFTS)
def test_a_shift_changes_the_images_from_its_onset_and_not_the_physics(sim, clean, shift):
    shifted = ShiftedSim(sim, shift, onset=ONSET, seed=0)
    try:
        images, states = rollout(shifted)
        for t in range(ONSET):
            np.testing.assert_array_equal(images[t], clean[0][t])
        for t in range(ONSET, len(images)):
            assert not np.array_equal(images[t], clean[0][t]), (shift, t)
            assert images[t].shape == clean[0][t].shape and images[t].dtype == np.uint8
        np.testing.assert_allclose(np.stack(states), np.stack(clean[1]), atol=1e-9)
        assert shifted.shifted
        # The next episode starts clean: the model's camera, lights and scene are restored.
        np.testing.assert_array_equal(shifted.reset(SEED).image, clean[0][0])
        assert not shifted.shifted
    finally:
        shifted._set(False)


def test_what_each_shift_shows(sim, clean):
    def after(shift: str) -> list[np.ndarray]:
        s = ShiftedSim(sim, shift, onset=ONSET, seed=0)
        try:
            return rollout(s)[0][ONSET:]
        finally:
            s._set(False)

    base = clean[0][ONSET:]
    assert all(not im.any() for im in after("black"))
    assert all((im == 255).all() for im in after("white"))
    noise = after("noise")
    assert not np.array_equal(noise[0], noise[1]) and 100 < noise[0].mean() < 155
    frozen = after("frozen")
    assert all(np.array_equal(im, clean[0][ONSET - 1]) for im in frozen)  # the last good one
    assert not np.array_equal(base[0], base[-1])  # while the clean arm moves on
    dim = after("dim")
    assert all(d.mean() < 0.85 * b.mean() for d, b in zip(dim, base, strict=True))
    yellow = [((im[..., 0] > 180) & (im[..., 1] > 150) & (im[..., 2] < 80)).sum() for im in base]
    with_box = [
        ((im[..., 0] > 180) & (im[..., 1] > 150) & (im[..., 2] < 80)).sum()
        for im in after("distractor")
    ]
    assert max(yellow) == 0 and min(with_box) > 10  # a box of about 5 x 5 pixels at 64 px
    for shift in ("camera_shift", "camera_rotate"):  # a view change: most of the picture moves
        moved = after(shift)
        changed = np.mean(np.abs(moved[0].astype(int) - base[0].astype(int)).max(-1) > 30)
        assert 0.01 < changed < 0.6, (shift, changed)


def test_unknown_shift_or_bad_onset_is_refused(sim):
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        ShiftedSim(sim, "fog")
    with pytest.raises(ValueError, match="onset"):
        ShiftedSim(sim, "black", onset=-1)


def test_ood_summary_counts_frames_from_the_onset_to_the_first_hold():
    from lompo_core.sim.evaluate import ood_summary

    def frame(episode, t, held):
        return {"episode": episode, "t": t, "shifted": t >= 2, "ood_hold": held}

    frames = [frame(0, t, t >= 4) for t in range(6)] + [frame(1, t, False) for t in range(5)]
    frames.append(frame(2, 0, True))  # held before the onset, episode over before it
    summary = ood_summary(frames, "black", 2, {"surprise": 1.0})
    assert summary["frames_to_hold"] == [3, None, None]  # t=4 is the third frame from t=2
    assert summary["ood_hold_steps"] == 3 and summary["steps"] == 12
    assert summary["gate"] and summary["onset"] == 2
    clean = ood_summary(frames, None, 2, {})
    assert clean["frames_to_hold"] == [] and not clean["gate"] and clean["onset"] is None


def test_eval_with_a_shift_runs_the_policy_on_the_shifted_camera():
    """The shipped policy under a black camera: its out-of-distribution gate holds it from the
    second black frame (ood_patience 2), before the frozen-image rule would (the fourth)."""
    from pathlib import Path

    from lompo_core.sim.evaluate import evaluate

    shipped = Path(__file__).resolve().parents[2] / "models" / "drawer_close"
    report = evaluate(shipped, 1, 1000, progress=False, shift="black", shift_onset=5)
    ood = report.ood
    assert ood["gate"] and ood["shift"] == "black" and ood["frames_to_hold"] == [2]
    assert [f["shifted"] for f in ood["frames"][:7]] == [False] * 5 + [True] * 2
    assert [f["ood_hold"] for f in ood["frames"][:7]] == [False] * 6 + [True]
    assert all(f["surprise"] is not None for f in ood["frames"])
    assert not report.success_rate  # blind from step 5 on, it does not close the drawer
