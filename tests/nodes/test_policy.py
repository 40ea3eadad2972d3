"""The ROS nodes' logic (lompo_core.nodes) on rosbags' real message classes and CDR bytes.

policy_node and sim_node call exactly these functions; rclpy only carries the messages.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lompo_core import messages as m
from lompo_core.actions import ActionScaling
from lompo_core.errors import LompoError
from lompo_core.nodes import (
    DEFAULT_COMMAND_TOPICS,
    FLOAT64_MULTI_ARRAY_TYPE,
    JOINT_GROUP,
    LOCKSTEP,
    REALTIME,
    SERVO_TWIST,
    MessageKit,
    PolicyCore,
    PolicyNodeParams,
    SimLoop,
    SimNodeParams,
    command_message,
    command_to_action,
    sim_frame_messages,
)

SCALING = ActionScaling(("linear.x", "linear.y", "linear.z"), "m/s", (0.8, 0.8, 0.8))
NOW_NS = 1_767_225_600_123_456_789


def wire(ts, msg):
    """A CDR round trip: what DDS does to a message between two nodes."""
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.fixture(params=m.DISTROS)
def ts(request):
    return m.typestore(request.param)


@pytest.fixture
def kit(ts):
    return MessageKit.from_typestore(ts)


# -- messages ---------------------------------------------------------------------------------


def test_command_messages_survive_the_wire(ts, kit):
    twist = wire(ts, command_message(kit, [0.1, -0.2, 0.3], SERVO_TWIST, NOW_NS, "tool0"))
    assert twist.__msgtype__ == m.TWIST_STAMPED_TYPE
    np.testing.assert_allclose(m.twist_linear(twist), [0.1, -0.2, 0.3])
    assert (twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z) == (0, 0, 0)
    assert twist.header.frame_id == "tool0" and m.stamp_ns(twist.header) == NOW_NS

    joints = wire(ts, command_message(kit, [0.5, 0.25, -1.0, 2.0], JOINT_GROUP, NOW_NS, "x"))
    assert joints.__msgtype__ == FLOAT64_MULTI_ARRAY_TYPE
    np.testing.assert_array_equal(joints.data, [0.5, 0.25, -1.0, 2.0])


def test_servo_twist_refuses_a_policy_that_is_not_a_linear_velocity(kit):
    with pytest.raises(LompoError, match="joint_group"):
        command_message(kit, np.zeros(7), SERVO_TWIST, NOW_NS, "base_link")
    with pytest.raises(LompoError, match="command_interface"):
        command_message(kit, np.zeros(3), "servo", NOW_NS, "base_link")


def test_image_message_round_trip_and_decode(ts, kit):
    from lompo_core.data.preprocess import decode_image

    rgb = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    msg = wire(ts, kit.image(rgb, NOW_NS, "cam"))
    assert (msg.height, msg.width, msg.encoding, msg.step) == (48, 80, "rgb8", 240)
    np.testing.assert_array_equal(decode_image(msg), rgb)


def test_diagnostics_levels_and_values(ts, kit):
    msg = wire(
        ts,
        kit.diagnostic_array(
            NOW_NS, [("WARN", "policy", "active: watchdog", "lompo", {"a": 1.5, "b": math.nan})]
        ),
    )
    (status,) = msg.status
    Status = ts.types["diagnostic_msgs/msg/DiagnosticStatus"]
    assert status.level == Status.WARN and status.message == "active: watchdog"
    assert {kv.key: kv.value for kv in status.values} == {"a": "1.5", "b": "nan"}


def test_ros_kit_builds_sequences_rclpy_accepts():
    # rclpy's setters take array.array and reject numpy arrays; rosbags wants numpy.
    import array

    kit = MessageKit.from_ros()
    assert kit.uint8_seq(np.arange(6, dtype=np.uint8).reshape(2, 3)) == array.array("B", range(6))
    assert kit.float64_seq(np.array([0.5, -1.0])) == array.array("d", [0.5, -1.0])


# -- commands into the sim --------------------------------------------------------------------


def test_command_to_action_inverts_the_policys_scaling(ts, kit):
    action = np.array([0.5, -0.25, 1.0])
    twist = wire(ts, command_message(kit, SCALING.to_physical(action), SERVO_TWIST, NOW_NS, "b"))
    got, reason = command_to_action(twist, SCALING)
    assert reason == "ok"
    np.testing.assert_allclose(got, action)
    joints = wire(ts, kit.float64_array(SCALING.to_physical(action)))
    np.testing.assert_allclose(command_to_action(joints, SCALING)[0], action)
    # Faster than the data's maximum: clipped, as the sim does.
    fast = wire(ts, kit.twist_stamped([4.0, 0, 0], NOW_NS, "b"))
    np.testing.assert_allclose(command_to_action(fast, SCALING)[0], [1.0, 0, 0])


@pytest.mark.parametrize(
    "values, why", [([0.1, 0.2], "2 values"), ([0.1, math.nan, 0.0], "non-finite")]
)
def test_bad_commands_stop_the_sim_with_a_reason(kit, values, why):
    action, reason = command_to_action(kit.float64_array(np.array(values)), SCALING)
    assert why in reason
    np.testing.assert_array_equal(action, np.zeros(3))


# -- parameters -------------------------------------------------------------------------------


def test_policy_params_validate_and_resolve():
    p = PolicyNodeParams.from_mapping({"model_path": "/p", "command_interface": JOINT_GROUP})
    assert p.resolved_command_topic == DEFAULT_COMMAND_TOPICS[JOINT_GROUP]
    assert PolicyNodeParams(model_path="/p").resolved_command_topic == m.COMMAND_TOPIC
    assert PolicyNodeParams(model_path="/p", command_topic="/x").resolved_command_topic == "/x"
    assert PolicyNodeParams(model_path="/p").controller_config().uncertainty_threshold is None
    cfg = PolicyNodeParams(model_path="/p", uncertainty_threshold=0.3).controller_config()
    assert cfg.uncertainty_threshold == 0.3
    for bad, match in [
        ({"model_path": ""}, "model_path"),
        ({"model_path": "/p", "image_transport": "theora"}, "image_transport"),
        ({"model_path": "/p", "image_reliability": "sometimes"}, "image_reliability"),
        ({"model_path": "/p", "watchdog_rate_hz": 0.0}, "watchdog_rate_hz"),
        ({"model_path": "/p", "speed": 1}, "unknown policy_node parameter"),
    ]:
        with pytest.raises(LompoError, match=match):
            PolicyNodeParams.from_mapping(bad)


def test_sim_params_validate():
    assert SimNodeParams.from_mapping({"mode": REALTIME}).resolved_command_topic == m.COMMAND_TOPIC
    with pytest.raises(LompoError, match="image_size"):
        SimNodeParams.from_mapping({"image_size": 32})
    with pytest.raises(LompoError, match="mode"):
        SimNodeParams.from_mapping({"mode": "fast"})


# -- policy_node's core on a real exported policy ----------------------------------------------


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "export"))
    from policy_fixtures import shared_policy

    return shared_policy(tmp_path_factory.getbasetemp())[1]


def test_policy_core_turns_images_into_commands(policy_dir, ts, kit):
    core = PolicyCore.load(PolicyNodeParams(model_path=str(policy_dir)), kit)
    scaling = core.runtime.action_scaling
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image = wire(ts, m.image_msg(ts, rgb, NOW_NS - 20_000_000))  # 20 ms old on arrival
    out = core.on_image(image, NOW_NS)
    assert out.result.ok, out.result.reason
    command = wire(ts, out.command)
    assert command.__msgtype__ == m.TWIST_STAMPED_TYPE
    assert command.header.frame_id == m.COMMAND_FRAME and m.stamp_ns(command.header) == NOW_NS
    np.testing.assert_allclose(m.twist_linear(command), out.decision.command, rtol=1e-6)
    np.testing.assert_allclose(out.decision.command, scaling.to_physical(out.decision.action))
    assert wire(ts, out.uncertainty).data == pytest.approx(out.result.uncertainty, rel=1e-6)
    debug = wire(ts, out.debug_image)
    assert (debug.height, debug.width, debug.encoding) == (64, 64, "rgb8")
    np.testing.assert_array_equal(np.asarray(debug.data).reshape(64, 64, 3), out.result.model_image)
    assert core.stats.image_age_s == pytest.approx(0.02, abs=1e-6)
    assert core.on_image(image, NOW_NS, want_debug=False).debug_image is None


def test_policy_core_stops_on_bad_images_and_silence(policy_dir, ts, kit):
    core = PolicyCore.load(PolicyNodeParams(model_path=str(policy_dir), image_timeout_s=0.5), kit)
    bad = ts.types[m.IMAGE_TYPE](
        header=m.header(ts, NOW_NS, "cam"),
        height=2,
        width=2,
        encoding="yuv422",
        is_bigendian=0,
        step=4,
        data=np.zeros(8, np.uint8),
    )
    out = core.on_image(wire(ts, bad), NOW_NS)
    assert not out.result.ok and "yuv422" in out.decision.reason
    np.testing.assert_array_equal(m.twist_linear(out.command), np.zeros(3))
    # A good image, then silence: the watchdog says nothing, then sends zero.
    good = m.image_msg(ts, np.full((64, 64, 3), 128, np.uint8), NOW_NS)
    core.on_image(wire(ts, good), NOW_NS)
    assert core.on_timer(NOW_NS + 100_000_000) is None
    stop = core.on_timer(NOW_NS + 900_000_000)
    np.testing.assert_array_equal(m.twist_linear(wire(ts, stop)), np.zeros(3))
    assert core.last_decision.reason.startswith("watchdog")
    diag = wire(ts, core.diagnostics(NOW_NS + 900_000_000, "policy"))
    (status,) = diag.status
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == ts.types["diagnostic_msgs/msg/DiagnosticStatus"].WARN
    assert values["state"] == "active" and values["reason"].startswith("watchdog")
    assert values["images"] == "2" and values["failed_steps"] == "1"
    for key in ("input_rate_hz", "image_age_s", "step_latency_s", "uncertainty_threshold"):
        assert key in values


def test_policy_core_resets_on_a_new_episode(policy_dir, ts, kit):
    core = PolicyCore.load(PolicyNodeParams(model_path=str(policy_dir)), kit)
    image = m.image_msg(ts, np.full((64, 64, 3), 90, np.uint8), NOW_NS)
    assert not core.on_episode(0)  # the first counter seen is not a change
    core.on_image(image, NOW_NS)
    assert np.any(core.runtime.state["deter"] != 0)
    assert not core.on_episode(0)
    assert core.on_episode(1)
    assert not np.any(core.runtime.state["deter"] != 0) and core.resets == 1


def test_joint_group_core_publishes_float64_arrays(policy_dir, ts, kit):
    params = PolicyNodeParams(model_path=str(policy_dir), command_interface=JOINT_GROUP)
    core = PolicyCore.load(params, kit)
    out = core.on_image(m.image_msg(ts, np.zeros((64, 64, 3), np.uint8), NOW_NS), NOW_NS)
    np.testing.assert_allclose(wire(ts, out.command).data, out.decision.command)
    np.testing.assert_array_equal(wire(ts, core.zero_command(NOW_NS)).data, np.zeros(3))


# -- sim_node's loop on the real sim -----------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    from lompo_core.sim import DrawerCloseSim

    s = DrawerCloseSim(image_size=64, max_steps=6)
    yield s
    s.close()


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
    assert again.reason.startswith("stalled") and sim.t == 0
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
