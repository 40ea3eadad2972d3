"""lompo_core.nodes.policy: policy_node's core on a real exported policy and real messages.

policy_node calls exactly these methods; rclpy only carries the messages.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from nodekit import NOW_NS, wire

from lompo_core import messages as m
from lompo_core.errors import LompoError
from lompo_core.nodes.common import DEFAULT_COMMAND_TOPICS, JOINT_GROUP
from lompo_core.nodes.policy import PolicyCore, PolicyNodeParams, frame_time_problem

MS = 1_000_000


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s


def _core(policy_dir, kit, **params) -> tuple[PolicyCore, Clock]:
    core = PolicyCore.load(PolicyNodeParams(model_path=str(policy_dir), **params), kit)
    clock = Clock()
    core.monotonic = clock
    core.activate()
    return core, clock


def _moving_image(core, kit, stamp_ns):
    """An image on which the test policy commands motion (it does for a mid-grey frame)."""
    out = core.on_image(kit.image(np.full((64, 64, 3), 128, np.uint8), stamp_ns), stamp_ns)
    assert out.result.ok and np.any(out.decision.command != 0), out.decision.reason
    return out


def test_policy_params_validate_and_resolve():
    p = PolicyNodeParams.from_mapping({"model_path": "/p", "command_interface": JOINT_GROUP})
    assert p.resolved_command_topic == DEFAULT_COMMAND_TOPICS[JOINT_GROUP]
    assert PolicyNodeParams(model_path="/p").resolved_command_topic == m.COMMAND_TOPIC
    assert PolicyNodeParams(model_path="/p", command_topic="/x").resolved_command_topic == "/x"
    assert PolicyNodeParams(model_path="/p").controller_config().uncertainty_threshold is None
    cfg = PolicyNodeParams(model_path="/p", uncertainty_threshold=0.3).controller_config()
    assert cfg.uncertainty_threshold == 0.3
    cfg = PolicyNodeParams(model_path="/p").controller_config()
    assert (cfg.surprise_threshold, cfg.reconstruction_threshold) == (None, None)
    cfg = PolicyNodeParams(
        model_path="/p", surprise_threshold=7.5, reconstruction_threshold=0.0, ood_patience=4
    ).controller_config()
    assert (cfg.surprise_threshold, cfg.reconstruction_threshold) == (7.5, 0.0)
    assert cfg.ood_patience == 4 and cfg.frozen_patience == 3
    assert cfg.reconstruction_patch_threshold is None
    cfg = PolicyNodeParams(model_path="/p", reconstruction_patch_threshold=0.2).controller_config()
    assert cfg.reconstruction_patch_threshold == 0.2
    for bad, match in [
        ({"model_path": ""}, "model_path"),
        ({"model_path": "/p", "image_transport": "theora"}, "image_transport"),
        ({"model_path": "/p", "image_reliability": "sometimes"}, "image_reliability"),
        ({"model_path": "/p", "watchdog_rate_hz": 0.0}, "watchdog_rate_hz"),
        ({"model_path": "/p", "max_image_age_s": -1.0}, "max_image_age_s"),
        ({"model_path": "/p", "speed": 1}, "unknown policy_node parameter"),
    ]:
        with pytest.raises(LompoError, match=match):
            PolicyNodeParams.from_mapping(bad)


def test_policy_core_turns_images_into_commands(policy_dir, ts, kit):
    core, _ = _core(policy_dir, kit)
    scaling = core.runtime.action_scaling
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image = wire(ts, kit.image(rgb, NOW_NS - 20 * MS))  # 20 ms old on arrival
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
    later = wire(ts, kit.image(rgb, NOW_NS + 10 * MS))
    assert core.on_image(later, NOW_NS + 10 * MS, want_debug=False).debug_image is None


def test_bad_images_give_zero_commands_with_the_reason(policy_dir, ts, kit):
    core, _ = _core(policy_dir, kit)
    bad = ts.types[m.IMAGE_TYPE](
        header=kit.header(NOW_NS, "cam"),
        height=2,
        width=2,
        encoding="yuv422",
        is_bigendian=0,
        step=4,
        data=np.zeros(8, np.uint8),
    )
    out = core.on_image(wire(ts, bad), NOW_NS)
    assert not out.result.ok and "yuv422" in out.decision.reason
    assert "yuv422" in core.stats.last_failure and core.stats.failures == 1
    np.testing.assert_array_equal(m.twist_linear(out.command), np.zeros(3))


def test_the_watchdog_stops_a_moving_arm_once_and_is_silent_otherwise(policy_dir, ts, kit):
    core, clock = _core(policy_dir, kit, image_timeout_s=0.5)
    # Before the first image the arm has not been told to move: nothing to stop, and a zero
    # sent now would be taken as an answer by a lockstep sim.
    clock.s += 5.0
    assert core.on_timer(NOW_NS) is None
    assert core.last_decision.reason == "watchdog: no image yet"
    _moving_image(core, kit, NOW_NS)
    clock.s += 0.1
    assert core.on_timer(NOW_NS) is None
    clock.s += 0.8
    stop = core.on_timer(NOW_NS)
    np.testing.assert_array_equal(m.twist_linear(wire(ts, stop)), np.zeros(3))
    assert core.last_decision.reason.startswith("watchdog: no image for")
    clock.s += 0.1
    assert core.on_timer(NOW_NS) is None  # stopped already
    diag = wire(ts, core.diagnostics(NOW_NS, "policy", "active"))
    (status,) = diag.status
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == ts.types["diagnostic_msgs/msg/DiagnosticStatus"].WARN
    assert values["state"] == "active" and values["reason"].startswith("watchdog")
    assert values["images"] == "1" and values["failed_steps"] == "0"
    for key in ("input_rate_hz", "image_age_s", "step_latency_s", "uncertainty_threshold"):
        assert key in values
    assert values["ood_gate"] == "on" and values["ood_holding"] == "False"
    want = core.runtime.signal_thresholds["surprise"]
    assert float(values["surprise_threshold"]) == pytest.approx(want, rel=1e-3)
    assert float(values["reconstruction_error"]) >= 0


def test_a_reset_between_episodes_does_not_trip_the_watchdog(policy_dir, kit):
    core, clock = _core(policy_dir, kit, image_timeout_s=0.5)
    _moving_image(core, kit, NOW_NS)
    core.reset()  # a new episode, its first frame a few ms away
    clock.s += 0.05
    assert core.on_timer(NOW_NS) is None
    clock.s += 1.0  # but a camera that stays silent after the reset is caught
    assert core.on_timer(NOW_NS) is not None


def test_the_watchdog_runs_on_the_monotonic_clock(policy_dir, kit):
    core, clock = _core(policy_dir, kit, image_timeout_s=0.5)
    _moving_image(core, kit, NOW_NS)
    # The ROS clock jumps back 990 s; the watchdog does not care.
    clock.s += 0.6
    assert core.on_timer(NOW_NS - 990 * 1_000_000_000) is not None


@pytest.mark.parametrize(
    "stamp_ns, last_ns, why",
    [
        (0, None, "unstamped"),
        (NOW_NS - 600 * MS, None, "0.6 s old"),
        (NOW_NS - 10**6 * 1_000_000_000, None, "old"),
        (NOW_NS + 400 * MS, None, "in the future"),
        (NOW_NS - 50 * MS, NOW_NS - 40 * MS, "does not advance"),
        (NOW_NS - 40 * MS, NOW_NS - 40 * MS, "does not advance"),
    ],
)
def test_frames_with_unfit_stamps_give_zeros_and_leave_the_latent_alone(
    policy_dir, kit, stamp_ns, last_ns, why
):
    core, _ = _core(policy_dir, kit, max_image_age_s=0.3)
    if last_ns is not None:
        _moving_image(core, kit, last_ns)
    before = core.runtime.state
    image = kit.image(np.full((64, 64, 3), 128, np.uint8), stamp_ns)
    out = core.on_image(image, NOW_NS)
    assert not out.result.ok and why in out.decision.reason, out.decision.reason
    np.testing.assert_array_equal(out.decision.command, np.zeros(3))
    np.testing.assert_array_equal(core.runtime.state["deter"], before["deter"])


def test_frame_time_checks_can_be_switched_off_and_accept_fresh_frames():
    assert frame_time_problem(0, NOW_NS, None, 0.0) is None
    assert frame_time_problem(NOW_NS - 10**12, NOW_NS, NOW_NS, 0.0) is None
    assert frame_time_problem(NOW_NS - 10 * MS, NOW_NS, NOW_NS - 20 * MS, 0.3) is None
    assert frame_time_problem(NOW_NS + 10 * MS, NOW_NS, None, 0.3) is None  # small clock skew


def test_the_watchdog_is_not_held_up_by_a_slow_step(policy_dir, kit):
    core, clock = _core(policy_dir, kit, image_timeout_s=0.5)
    _moving_image(core, kit, NOW_NS)
    release, entered = threading.Event(), threading.Event()
    real_step = core.runtime.step

    def slow_step(msg):  # a step that takes as long as the test says (a decode bomb, a stall)
        entered.set()
        release.wait(10.0)
        return real_step(msg)

    core.runtime.step = slow_step
    image = kit.image(np.full((64, 64, 3), 128, np.uint8), NOW_NS + 10 * MS)
    worker = threading.Thread(target=core.on_image, args=(image, NOW_NS + 10 * MS))
    worker.start()
    try:
        assert entered.wait(5.0)
        clock.s += 1.0
        t0 = time.monotonic()
        stop = core.on_timer(NOW_NS)
        assert time.monotonic() - t0 < 0.1
        assert stop is not None and core.last_decision.reason.startswith("watchdog")
    finally:
        release.set()
        worker.join(10.0)


def test_reset_clears_the_latent_state(policy_dir, kit):
    core, _ = _core(policy_dir, kit)
    _moving_image(core, kit, NOW_NS)
    assert np.any(core.runtime.state["deter"] != 0)
    core.reset()
    assert not np.any(core.runtime.state["deter"] != 0) and core.resets == 1
    # A frame older than the last one before the reset is fine again: a new episode.
    _moving_image(core, kit, NOW_NS - 10 * MS)


def test_diagnostics_name_the_lifecycle_state(policy_dir, ts, kit):
    core, _ = _core(policy_dir, kit)
    core.deactivate()
    (status,) = wire(ts, core.diagnostics(NOW_NS, "policy", "inactive")).status
    values = {kv.key: kv.value for kv in status.values}
    assert values["lifecycle"] == "inactive" and values["state"] == "inactive"
    assert status.message.startswith("inactive")


def test_joint_group_core_publishes_float64_arrays(policy_dir, ts, kit):
    core, _ = _core(policy_dir, kit, command_interface=JOINT_GROUP)
    out = core.on_image(kit.image(np.zeros((64, 64, 3), np.uint8), NOW_NS), NOW_NS)
    np.testing.assert_allclose(wire(ts, out.command).data, out.decision.command)
    np.testing.assert_array_equal(wire(ts, core.zero_command(NOW_NS)).data, np.zeros(3))


def test_the_deployers_limits_and_pin_reach_the_runtime(policy_dir, kit):
    from lompo_core.runtime.sidecar import read_sidecar

    pin = read_sidecar(policy_dir)["manifest_sha256"]
    core, _ = _core(policy_dir, kit, expected_sha256=pin, max_linear_speed=0.01)
    out = _moving_image(core, kit, NOW_NS)
    assert np.linalg.norm(out.decision.command) <= 0.01 + 1e-9
    with pytest.raises(LompoError, match="sha256"):
        _core(policy_dir, kit, expected_sha256="0" * 64)
    with pytest.raises(LompoError, match="action_max_ceiling"):
        _core(policy_dir, kit, action_max_ceiling=0.01)


def test_a_speed_limit_below_the_trained_speed_is_logged_at_load(policy_dir, kit):
    """The controller slowing the policy down is said once, at load: against the norm of
    action.max for a policy trained in the whole box, against agent.max_linear_speed for one
    trained within a limit; at or above it, nothing."""
    from lompo_core.nodes.policy import speed_warning

    core, _ = _core(policy_dir, kit)  # the node's default, 0.5 m/s
    fastest = float(np.linalg.norm(core.runtime.action_scaling.max_speed))
    assert fastest < 0.5 and not core.warnings
    core, _ = _core(policy_dir, kit, max_linear_speed=0.5 * fastest)
    (line,) = [w for w in core.warnings if "max_linear_speed" in w]
    assert f"below the {fastest:.2f} m/s" in line and "norm of its action.max" in line
    rt = core.runtime
    rt.sidecar = {**rt.sidecar, "training": {"config": {"agent": {"max_linear_speed": 0.04}}}}
    assert speed_warning(rt, 0.04) is None
    line = speed_warning(rt, 0.03) or ""
    assert "below the 0.04 m/s" in line and "agent.max_linear_speed" in line
    for odd in ({"config": {"agent": {"max_linear_speed": "fast"}}}, ["not", "a", "mapping"]):
        rt.sidecar["training"] = odd  # the sidecar is untrusted: ignored, never a crash
        assert "norm of its action.max" in (speed_warning(rt, 0.03) or "")
