"""The safety controller's rules, one by one, on hand-made runtime results."""

from __future__ import annotations

import numpy as np
import pytest

from lompo_core.actions import ActionScaling
from lompo_core.errors import LompoError
from lompo_core.runtime import Controller, ControllerConfig, RuntimeResult

SCALING = ActionScaling(
    names=("linear.x", "linear.y", "linear.z"), unit="m/s", max_speed=(0.1,) * 3
)


def result(action=(0.2, -0.1, 0.0), uncertainty: float = 0.1, ok: bool = True, reason="ok"):
    return RuntimeResult(
        ok=ok,
        reason=reason,
        action=np.asarray(action, np.float32),
        uncertainty=uncertainty,
        model_image=None,
        latency_s=0.0,
    )


def make(threshold: float = 1.0, **config) -> Controller:
    return Controller(ControllerConfig(**config), SCALING, threshold)


def test_default_rate_limit_never_binds():
    # The policies are trained on commands that jump freely; the default must not reshape them.
    c = make()
    c.on_result(result((1.0, -1.0, 1.0)), 0.0)
    d = c.on_result(result((-1.0, 1.0, -1.0)), 0.1)
    np.testing.assert_allclose(d.action, [-1.0, 1.0, -1.0])
    assert not d.intervened and d.reason == "ok"


def test_passes_a_good_action_through_and_scales_it():
    c = make()
    d = c.on_result(result(), 0.0)
    assert (d.state, d.reason, d.intervened) == ("active", "ok", False)
    np.testing.assert_array_equal(d.action, np.float32([0.2, -0.1, 0.0]))
    np.testing.assert_allclose(d.command, [0.02, -0.01, 0.0], rtol=1e-6)
    assert d.action.dtype == np.float32


def test_inactive_sends_zeros_until_activated():
    c = make(start_active=False)
    d = c.on_result(result(), 0.0)
    assert (d.state, d.reason, d.intervened) == ("inactive", "inactive", True)
    assert not d.action.any() and not d.command.any()
    assert c.on_timer(10.0) is None  # nothing to watch while inactive
    c.activate()
    assert c.on_result(result(), 0.1).reason == "ok"
    c.deactivate()
    assert c.on_result(result(), 0.2).state == "inactive"


def test_clamp_and_rate_limit():
    c = make(max_action=0.5, max_action_change=0.3)
    d = c.on_result(result((0.9, -0.2, 0.0)), 0.0)
    # clamped to 0.5, then limited to 0.3 away from the last command (0 at the start)
    np.testing.assert_allclose(d.action, [0.3, -0.2, 0.0], atol=1e-7)
    assert d.intervened and "clamped" in d.reason and "rate limited" in d.reason
    d = c.on_result(result((0.9, -0.2, 0.0)), 0.1)
    np.testing.assert_allclose(d.action, [0.5, -0.2, 0.0], atol=1e-7)
    assert d.reason == "clamped"
    d = c.on_result(result((-1.0, -0.2, 0.0)), 0.2)
    np.testing.assert_allclose(d.action, [0.2, -0.2, 0.0], atol=1e-7)
    assert "rate limited" in d.reason


@pytest.mark.parametrize(
    "bad",
    [
        result((np.nan, 0.0, 0.0)),
        result((0.0, np.inf, 0.0)),
        result(uncertainty=float("nan")),
        result(ok=False, reason="nonfinite: NaN or Inf in the input image (dtype float32)"),
    ],
)
def test_nonfinite_halts_until_reset(bad):
    c = make()
    c.on_result(result((0.4, 0.4, 0.4)), 0.0)
    d = c.on_result(bad, 0.1)
    assert d.state == "halted" and d.intervened and not d.action.any()
    assert d.reason.startswith("halt: ") and "nonfinite" in d.reason
    # Latched: good results, activate() and the timer do not clear it.
    c.activate()
    d = c.on_result(result(), 0.2)
    assert d.state == "halted" and d.reason.startswith("halted: ") and not d.action.any()
    assert c.on_timer(5.0) is None
    c.reset()
    d = c.on_result(result(), 0.3)
    assert (d.state, d.reason) == ("active", "ok")


def test_wrong_action_size_halts():
    d = make().on_result(result((0.1, 0.1)), 0.0)
    assert d.state == "halted" and "2 values" in d.reason and d.action.shape == (3,)


def test_malformed_result_object_halts_without_raising():
    d = make().on_result(object(), 0.0)  # type: ignore[arg-type]
    assert d.state == "halted" and d.reason.startswith("halt: controller: malformed result")


def test_bad_frame_gives_zero_and_keeps_running():
    c = make(max_action_change=0.5)
    c.on_result(result(), 0.0)
    d = c.on_result(result(ok=False, reason="decode: unsupported image encoding 'yuv422'"), 0.1)
    assert d.state == "active" and d.intervened and not d.action.any()
    assert d.reason == "no action: decode: unsupported image encoding 'yuv422'"
    # after a zero the rate limit ramps up again from zero
    d = c.on_result(result((0.9, 0.0, 0.0)), 0.2)
    np.testing.assert_allclose(d.action, [0.5, 0.0, 0.0])


def test_watchdog():
    c = make(image_timeout_s=0.5)
    d = c.on_timer(0.0)
    assert d is not None and d.reason == "watchdog: no image yet" and not d.action.any()
    c.on_result(result(), 1.0)
    assert c.on_timer(1.3) is None
    d = c.on_timer(1.73)
    assert d is not None and d.reason == "watchdog: no image for 0.73 s" and d.state == "active"
    assert not d.command.any()
    # Bad frames are not fresh images: the watchdog still fires.
    c.on_result(result(ok=False, reason="decode: empty image (0x0)"), 1.8)
    assert c.on_timer(1.9).reason.startswith("watchdog")
    c.on_result(result(), 2.0)
    assert c.on_timer(2.1) is None
    assert c.on_timer(float("nan")).state == "halted"


@pytest.mark.parametrize("mode", ["warn", "hold", "halt"])
def test_uncertainty_patience(mode):
    c = make(threshold=0.5, uncertainty_patience=3, on_uncertain=mode)
    high, low = result(uncertainty=0.9), result(uncertainty=0.1)
    assert c.on_result(high, 0.0).reason == "ok"
    assert c.on_result(high, 0.1).reason == "ok"
    assert c.on_result(low, 0.2).reason == "ok"  # the count restarts
    c.on_result(high, 0.3)
    c.on_result(high, 0.4)
    d = c.on_result(high, 0.5)
    assert "uncertainty 0.9 > 0.5 for 3 steps" in d.reason
    if mode == "warn":
        assert d.reason.startswith("warn: ") and d.state == "active" and d.action.any()
    elif mode == "hold":
        assert d.reason.startswith("hold: ") and d.state == "active" and not d.action.any()
        assert c.on_result(low, 0.6).reason == "ok"  # resumes when back in distribution
    else:
        assert d.reason.startswith("halt: ") and d.state == "halted" and not d.action.any()


def test_config_threshold_overrides_the_sidecar():
    c = make(threshold=100.0, uncertainty_threshold=0.5, uncertainty_patience=1)
    assert c.threshold == 0.5
    assert c.on_result(result(uncertainty=0.6), 0.0).reason.startswith("hold: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_timeout_s", 0.0),
        ("max_action", 1.5),
        ("max_action_change", float("nan")),
        ("uncertainty_threshold", -1.0),
        ("uncertainty_patience", 0),
        ("on_uncertain", "panic"),
        ("ood_patience", 0),
        ("ood_patience", True),
        ("frozen_patience", -1),
        ("surprise_threshold", float("nan")),
        ("reconstruction_threshold", -0.1),
    ],
)
def test_bad_config_is_refused_naming_the_field(field, value):
    with pytest.raises(LompoError, match=field):
        make(**{field: value})


def test_bad_sidecar_threshold_is_refused():
    with pytest.raises(LompoError, match="threshold"):
        make(threshold=float("nan"))


# -- issue 16: a physical limit that does not come from the sidecar ----------------------------

FAST = ActionScaling(names=("linear.x", "linear.y", "linear.z"), unit="m/s", max_speed=(0.8,) * 3)


def test_the_linear_speed_limit_scales_the_command_norm_down_keeping_its_direction():
    # Before: the command was action x action.max whatever that gave (0.8 m/s per axis here).
    c = Controller(ControllerConfig(max_linear_speed=0.25), FAST, 1.0)
    d = c.on_result(result((1.0, -1.0, 0.5)), 0.0)
    speed = float(np.linalg.norm(d.command))
    assert 0.2499 < speed <= 0.25 and "speed limited" in d.reason and d.intervened
    np.testing.assert_allclose(d.command / speed, np.array([1, -1, 0.5]) / 1.5, rtol=1e-5)
    slow = c.on_result(result((0.1, 0.0, 0.0)), 0.1)  # 0.08 m/s: untouched
    assert slow.reason == "ok" and np.allclose(slow.command, [0.08, 0, 0])


def test_the_default_speed_limit_binds_on_the_shipped_scaling():
    d = Controller(ControllerConfig(), FAST, 1.0).on_result(result((1.0, 1.0, 1.0)), 0.0)
    assert np.linalg.norm(d.command) <= ControllerConfig().max_linear_speed == 0.5


def test_joint_velocities_are_limited_per_joint():
    joints = ActionScaling(names=("j1", "j2"), unit="rad/s", max_speed=(2.0, 0.5))
    c = Controller(ControllerConfig(max_joint_speed=1.0), joints, 1.0)
    d = c.on_result(result((1.0, -1.0)), 0.0)
    assert np.all(np.abs(d.command) <= 1.0) and d.command[0] > 0.999 and d.command[1] == -0.5
    per_joint = Controller(ControllerConfig(max_joint_speed=(0.3, 0.2)), joints, 1.0)
    d = per_joint.on_result(result((1.0, -1.0)), 0.0)
    assert 0.2999 < d.command[0] <= 0.3 and -0.2 <= d.command[1] < -0.1999
    with pytest.raises(LompoError, match="max_joint_speed has 3 values, the policy has 2"):
        Controller(ControllerConfig(max_joint_speed=(1.0, 1.0, 1.0)), joints, 1.0)
    with pytest.raises(LompoError, match="max_joint_speed must be"):
        Controller(ControllerConfig(max_joint_speed=(1.0, float("nan"))), joints, 1.0)


@pytest.mark.parametrize("maximum", [2.5, 1000.0])
def test_a_sidecar_action_max_over_the_ceiling_is_refused_at_load(maximum):
    # Before: action.max 1000 gave commands of 932 m/s.
    scaling = ActionScaling(names=("x", "y", "z"), unit="m/s", max_speed=(0.1, maximum, 0.1))
    with pytest.raises(LompoError, match="action.max .* exceeds action_max_ceiling 2"):
        Controller(ControllerConfig(), scaling, 1.0)
    Controller(ControllerConfig(action_max_ceiling=maximum), scaling, 1.0)


def test_an_action_unit_without_a_limit_is_refused():
    scaling = ActionScaling(names=("x",), unit="furlongs/fortnight", max_speed=(0.1,))
    with pytest.raises(LompoError, match="unit 'furlongs/fortnight' has no physical limit"):
        Controller(ControllerConfig(), scaling, 1.0)


@pytest.mark.parametrize("field", ["max_linear_speed", "max_joint_speed", "action_max_ceiling"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_physical_limits_are_refused_naming_the_field(field, value):
    with pytest.raises(LompoError, match=field):
        make(**{field: value})


# -- issue 16: the out-of-distribution gate on the image signals ------------------------------

SIGNALS = {"surprise": 10.0, "reconstruction_error": 0.01}


def seen(surprise: float = 1.0, error: float = 0.001, action=(0.2, -0.1, 0.0)) -> RuntimeResult:
    r = result(action)
    r.surprise, r.reconstruction_error = surprise, error
    return r


def gated(**config) -> Controller:
    """A gated controller past an episode's first frame (whose surprise it does not read)."""
    c = Controller(ControllerConfig(**config), SCALING, 1.0, SIGNALS)
    assert c.on_result(seen(), 0.0).reason == "ok"
    return c


def test_the_gate_holds_after_patience_frames_above_and_moves_after_as_many_within():
    c = gated(ood_patience=3)
    assert c.ood_gate and c.ood_thresholds == SIGNALS
    reasons = [c.on_result(seen(surprise=s), t * 0.1).reason for t, s in enumerate(
        [50, 50, 1, 50, 50, 50, 50, 1, 1, 1, 1]
    )]  # fmt: skip
    assert reasons[:5] == ["ok"] * 5  # the run of two is broken by a frame within
    assert reasons[5].startswith("hold: out of distribution: surprise 50 > 10 for 3 frames")
    assert reasons[6].startswith("hold: out of distribution")
    assert reasons[7:9] == [
        "hold: out of distribution: within thresholds for 1 of 3 frames",
        "hold: out of distribution: within thresholds for 2 of 3 frames",
    ]
    assert reasons[9:] == ["ok", "ok"]


def test_a_held_frame_sends_zeros_and_either_signal_trips_the_gate():
    c = gated(ood_patience=1)
    d = c.on_result(seen(error=0.5), 0.0)
    assert d.reason.startswith("hold: out of distribution: reconstruction_error 0.5 > 0.01")
    assert not d.action.any() and not d.command.any() and d.intervened and d.state == "active"
    both = c.on_result(seen(surprise=20, error=0.5), 0.1).reason
    assert "surprise 20 > 10" in both and "reconstruction_error 0.5 > 0.01" in both


def test_reset_clears_the_gate():
    c = gated(ood_patience=1)
    assert c.on_result(seen(surprise=50), 0.0).reason.startswith("hold: out of distribution")
    c.reset()
    assert c.on_result(seen(), 0.1).reason == "ok"


def test_the_first_frames_surprise_is_not_read_but_its_reconstruction_error_is():
    c = Controller(ControllerConfig(ood_patience=1), SCALING, 1.0, SIGNALS)
    assert c.on_result(seen(surprise=50), 0.0).reason == "ok"  # the initial prior's
    assert c.on_result(seen(surprise=50), 0.1).reason.startswith("hold: out of distribution")
    c.reset()
    assert c.on_result(seen(surprise=50), 0.2).reason == "ok"
    c.reset()
    first = c.on_result(seen(surprise=50, error=0.5), 0.3).reason
    assert (
        first.startswith("hold: out of distribution: reconstruction_error") and "surp" not in first
    )


def test_config_thresholds_override_the_policys_and_inf_switches_a_signal_off():
    c = gated(ood_patience=1, surprise_threshold=100.0, reconstruction_threshold=float("inf"))
    assert c.ood_thresholds == {"surprise": 100.0}
    assert c.on_result(seen(surprise=50, error=5.0), 0.0).reason == "ok"
    assert c.on_result(seen(surprise=150), 0.1).reason.startswith("hold: out of distribution")


def test_without_the_policys_signals_the_gate_is_off():
    c = make(ood_patience=1, surprise_threshold=0.0)
    assert not c.ood_gate
    assert c.on_result(seen(surprise=1e9, error=1e9), 0.0).reason == "ok"


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_a_missing_or_nonfinite_signal_halts(bad):
    c = gated()
    d = c.on_result(seen(surprise=bad), 0.0)
    assert d.state == "halted" and not d.command.any() and "surprise" in d.reason


def test_an_unknown_signal_is_refused():
    with pytest.raises(LompoError, match="unknown image signal 'colour'"):
        Controller(ControllerConfig(), SCALING, 1.0, {"colour": 1.0})


def framed(image: np.ndarray, action=(0.2, -0.1, 0.0)) -> RuntimeResult:
    r = result(action)
    r.model_image = image
    return r


def test_a_frozen_image_while_moving_holds_until_it_changes():
    c = make(frozen_patience=3)  # no image signals: this check needs none
    a, b = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 7, np.uint8)
    reasons = [c.on_result(framed(a.copy()), 0.1 * t).reason for t in range(6)]
    assert reasons[:3] == ["ok"] * 3  # the first frame, then two repeats
    assert reasons[3] == (
        "hold: out of distribution: frozen image (the same for 3 frames in a row while moving)"
    )
    assert reasons[4].startswith("hold: out of distribution: frozen image")  # zeros sent: held
    assert c.on_result(framed(b), 1.0).reason == "ok"  # the camera lives again
    c.reset()
    assert [c.on_result(framed(b), 1.1 + t).reason for t in range(3)] == ["ok"] * 3


def test_a_still_image_while_standing_still_is_no_frozen_camera():
    c = make(frozen_patience=1)
    a = np.zeros((64, 64, 3), np.uint8)
    zero = (0.0, 0.0, 0.0)
    assert [c.on_result(framed(a, zero), 0.1 * t).reason for t in range(5)] == ["ok"] * 5
    assert c.on_result(framed(a), 1.0).reason == "ok"  # the last command sent was a zero
    assert c.on_result(framed(a), 1.1).reason.startswith("hold: out of distribution: frozen")


def test_frozen_patience_zero_switches_the_check_off():
    c = make(frozen_patience=0)
    a = np.zeros((64, 64, 3), np.uint8)
    assert [c.on_result(framed(a), 0.1 * t).reason for t in range(6)] == ["ok"] * 6
