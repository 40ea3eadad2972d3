import numpy as np
import pytest

from lompo_core.sim import DrawerCloseSim, make_policy


def run_episode(sim: DrawerCloseSim, policy_name: str, seed: int) -> tuple[bool, int]:
    policy = make_policy(policy_name)
    step = sim.reset(seed)
    policy.reset(np.random.default_rng(seed))
    while not (step.terminal or step.truncated):
        step = sim.step(policy.act(step.state))
    return step.success, sim.t


def test_expert_closes_the_drawer(sim):
    results = [run_episode(sim, "expert", seed) for seed in range(10)]
    assert sum(ok for ok, _ in results) >= 9, results


@pytest.mark.slow
def test_medium_succeeds_about_half_the_time(sim):
    rate = np.mean([run_episode(sim, "medium", seed)[0] for seed in range(20)])
    assert 0.2 <= rate <= 0.8


def test_images_are_rgb_uint8_and_show_the_drawer_moving(sim):
    first = sim.reset(3)
    assert first.image.shape == (64, 64, 3) and first.image.dtype == np.uint8
    assert first.image.flags.c_contiguous
    policy = make_policy("expert")
    step = first
    while not (step.terminal or step.truncated):
        step = sim.step(policy.act(step.state))
    assert step.success
    # The arm moves too; the drawer's region (top of the view) must change as it closes.
    top = slice(0, 20)
    diff = np.abs(step.image[top].astype(int) - first.image[top].astype(int))
    assert diff.mean() > 2.0


def test_seeds_are_reproducible_and_move_the_drawer(sim):
    a = sim.reset(5).image
    b = sim.reset(6).image
    c = sim.reset(5).image
    np.testing.assert_array_equal(a, c)
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0
    drawer_x = []
    for seed in range(4):
        drawer_x.append(sim.reset(seed).state[4])
    assert len(set(np.round(drawer_x, 4))) == 4


def test_actions_are_clipped_and_checked(sim):
    sim.reset(0)
    step = sim.step(np.array([5.0, -5.0, 0.0]))
    assert step.image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="non-finite"):
        sim.step(np.array([np.nan, 0.0, 0.0]))


def test_action_scaling_states_physical_units(sim):
    scaling = sim.action_scaling
    assert scaling.unit == "m/s" and scaling.names == ("linear.x", "linear.y", "linear.z")
    # Meta-World moves the hand by action * 1 cm per 12.5 ms control step.
    assert sim.control_rate_hz == pytest.approx(80.0)
    np.testing.assert_allclose(scaling.to_physical(np.ones(3)), [0.8, 0.8, 0.8])
    np.testing.assert_allclose(
        scaling.to_normalised(scaling.to_physical([0.1, -0.5, 1])), [0.1, -0.5, 1]
    )


def test_explore_mixes_the_faulty_expert_and_random_behaviour_without_the_expert():
    policy = make_policy("explore")
    seen = set()
    for seed in range(40):
        policy.reset(np.random.default_rng(seed))
        seen.add(policy.current)
    assert seen == {"medium", "random"}
