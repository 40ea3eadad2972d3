"""lompo_core.nodes.sim: sim_node's episode loop on the real sim, and its parameters."""

from __future__ import annotations

import numpy as np
import pytest
from nodekit import NOW_NS, wire

from lompo_core import messages as m
from lompo_core.errors import LompoError
from lompo_core.nodes.sim import LOCKSTEP, REALTIME, SimLoop, SimNodeParams, sim_frame_messages


def test_sim_params_validate():
    assert SimNodeParams.from_mapping({"mode": REALTIME}).resolved_command_topic == m.COMMAND_TOPIC
    with pytest.raises(LompoError, match="image_size"):
        SimNodeParams.from_mapping({"image_size": 32})
    with pytest.raises(LompoError, match="mode"):
        SimNodeParams.from_mapping({"mode": "fast"})


def _lockstep_run(sim, actions):
    loop = SimLoop(sim, LOCKSTEP, seed=5)
    frames = loop.reset(0.0)
    for i, a in enumerate(actions):
        frames += loop.on_command(a, 0.01 * (i + 1))
    return loop, frames


def test_lockstep_is_deterministic_and_resets_on_the_time_limit(sim, ts, kit):
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 3))
    loop, frames = _lockstep_run(sim, actions)
    # max_steps=6: reset frame, 6 steps (the last is done), the next episode's reset, 2 steps.
    assert [f.t for f in frames] == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert [f.episode for f in frames] == [0] * 7 + [1] * 3
    assert frames[6].done and frames[6].reason == "time limit" and not frames[6].success
    assert frames[7].reason == "reset after time limit"
    _, again = _lockstep_run(sim, actions)
    for a, b in zip(frames, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(frames[0].image, frames[1].image)
    msgs = {k: wire(ts, v) for k, v in sim_frame_messages(kit, frames[7], NOW_NS).items()}
    assert list(msgs) == ["episode", "image", "reward", "success"]
    assert msgs["episode"].data == 1 and msgs["success"].data is False
    assert (msgs["image"].height, msgs["image"].width) == (64, 64)


def test_lockstep_republishes_a_stalled_frame_without_stepping(sim):
    loop = SimLoop(sim, LOCKSTEP, seed=0, stall_timeout_s=1.0)
    (first,) = loop.on_tick(10.0)  # the first tick starts an episode
    assert loop.on_tick(10.5) == []
    (again,) = loop.on_tick(11.1)
    assert again.reason.startswith("stalled") and sim.t == 0 and loop.republished == 1
    np.testing.assert_array_equal(again.image, first.image)


def test_realtime_steps_on_the_clock_with_the_latest_fresh_command(sim):
    loop = SimLoop(sim, REALTIME, seed=3, command_timeout_s=0.5)
    loop.on_tick(0.0)
    assert loop.on_command(np.array([1.0, 0, 0]), 0.0) == []  # held, not stepped
    assert sim.t == 0
    moved = loop.on_tick(0.1)[0]
    stale_loop_frames = loop.on_tick(5.0)  # the command is 5 s old: zero
    assert moved.t == 1 and stale_loop_frames[0].t == 2
    # Replaying the same physics in lockstep gives the same pictures.
    ref = SimLoop(sim, LOCKSTEP, seed=3)
    ref.reset()
    np.testing.assert_array_equal(ref.on_command(np.array([1.0, 0, 0]), 0.1)[0].image, moved.image)
    np.testing.assert_array_equal(
        ref.on_command(np.zeros(3), 0.2)[0].image, stale_loop_frames[0].image
    )


def test_lockstep_answering_the_final_frame_resets_without_stepping(sim):
    loop = SimLoop(sim, LOCKSTEP, seed=5, answer_final=True)
    frames = loop.reset(0.0)
    for i in range(6):
        frames += loop.on_command(np.array([0.3, 0.0, 0.0]), 0.01 * (i + 1))
    # One frame per command, the time-limit frame last: the driver answers it too.
    assert [f.t for f in frames] == [0, 1, 2, 3, 4, 5, 6] and frames[-1].done
    (first,) = loop.on_command(np.array([1.0, 1.0, 1.0]), 0.1)  # not applied: starts episode 1
    assert (first.episode, first.t, first.reason) == (1, 0, "reset after time limit")
    (step,) = loop.on_command(np.zeros(3), 0.11)
    assert (step.episode, step.t) == (1, 1)


def test_each_episode_waits_for_the_policy_reset(sim):
    loop = SimLoop(sim, LOCKSTEP, seed=5, answer_final=True, await_policy_reset=True)
    assert loop.on_tick(0.0) == [] and loop.awaiting_policy_reset
    # Commands before the policy has reset (a watchdog's zero, an old answer) step nothing,
    # and a stalled tick republishes nothing while the frame is held.
    assert loop.on_command(np.ones(3), 0.1) == [] and loop.ignored_commands == 1
    assert loop.on_tick(5.0) == [] and sim.t == 0
    (first,) = loop.policy_reset_done(5.1)
    assert (first.episode, first.t) == (0, 0) and not loop.awaiting_policy_reset
    assert loop.policy_reset_done(5.2) == []  # nothing held any more
    frames = []
    for i in range(6):
        frames += loop.on_command(np.zeros(3), 6.0 + i)
    assert frames[-1].done and frames[-1].t == 6
    # The answer to the final frame starts episode 1, whose first frame waits for the reset.
    assert loop.on_command(np.zeros(3), 7.0) == [] and loop.awaiting_policy_reset
    assert loop.episode == 1 and sim.t == 0
    (second,) = loop.policy_reset_done(7.1)
    assert (second.episode, second.t, second.reason) == (1, 0, "reset after time limit")
