"""Property-based fuzzing: thousands of malformed images and ROS image messages (rosbags' real
message classes) thrown at PolicyRuntime and Controller. Whatever comes in, no exception escapes,
a bad input gives a zero command with a reason, and what the controller sends is always finite,
clamped, rate limited and within the physical speed limit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lompo_core.messages import typestore
from lompo_core.runtime import Controller, ControllerConfig, PolicyRuntime, RuntimeResult

TS = typestore("jazzy")
Image = TS.types["sensor_msgs/msg/Image"]
CompressedImage = TS.types["sensor_msgs/msg/CompressedImage"]
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "RGB8", "", "32FC1"]


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,  # the same thousands of cases on every run: a CI failure reproduces
        database=None,
    )


def _header():
    Time = TS.types["builtin_interfaces/msg/Time"]
    return TS.types["std_msgs/msg/Header"](stamp=Time(sec=0, nanosec=0), frame_id="cam")


@st.composite
def raw_messages(draw) -> object:
    """Image messages whose fields mostly disagree with each other."""
    height = draw(st.integers(-2, 70))
    width = draw(st.integers(-2, 70))
    encoding = draw(st.sampled_from(ENCODINGS))
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono16": 2}.get(encoding, 1)
    natural = max(width, 0) * channels
    step = draw(st.one_of(st.just(natural), st.integers(-3, 300)))
    size = draw(st.one_of(st.just(max(step, 0) * max(height, 0)), st.integers(0, 20_000)))
    data = np.frombuffer(draw(st.binary(min_size=0, max_size=64)) or b"\0", np.uint8)
    data = np.resize(data, size).astype(np.uint8)  # cheap to draw, any length
    return Image(
        header=_header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=draw(st.integers(0, 1)),
        step=step,
        data=data,
    )


def _encoded(fmt: str) -> np.ndarray:
    img = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return cv2.imencode(".jpg" if fmt == "jpeg" else ".png", img)[1].reshape(-1)


VALID = {"jpeg": _encoded("jpeg"), "png": _encoded("png")}


@st.composite
def compressed_messages(draw) -> object:
    fmt = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "bmp", "", "tiff"]))
    base = VALID["png" if "png" in fmt else "jpeg"]
    kind = draw(st.sampled_from(["valid", "truncated", "flipped", "random", "empty"]))
    if kind == "valid":
        data = base
    elif kind == "truncated":
        data = base[: draw(st.integers(0, base.size - 1))]
    elif kind == "flipped":
        data = base.copy()
        data[draw(st.integers(0, base.size - 1))] ^= draw(st.integers(1, 255))
    elif kind == "random":
        data = np.frombuffer(draw(st.binary(min_size=1, max_size=256)), np.uint8)
    else:
        data = np.zeros(0, np.uint8)
    return CompressedImage(header=_header(), format=fmt, data=np.asarray(data, np.uint8))


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int8, np.float32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40),
    elements=None,  # any value of the dtype, NaN and Inf included for floats
)
oddities = st.sampled_from(
    [None, 0, 1.5, "image", b"\x00" * 12, [1, 2, 3], {"data": b""}, object()]
)
anything = st.one_of(raw_messages(), compressed_messages(), arrays, oddities)


@pytest.fixture(scope="module")
def runtime(exported) -> PolicyRuntime:
    return PolicyRuntime(exported[1])


@fuzz(2500)
@given(image=anything, now=st.floats(allow_nan=True, allow_infinity=True))
def test_runtime_and_controller_survive_anything(runtime, image, now):
    r = runtime.step(image)
    assert isinstance(r, RuntimeResult)
    assert r.reason == "ok" or r.reason.startswith(("decode: ", "nonfinite: ", "runtime: "))
    assert r.action.shape == (3,) and r.action.dtype == np.float32
    if r.ok:
        assert r.reason == "ok" and np.all(np.abs(r.action) <= 1) and np.isfinite(r.uncertainty)
        assert r.model_image.shape == (64, 64, 3) and r.model_image.dtype == np.uint8
    else:
        assert not r.action.any() and np.isnan(r.uncertainty)
    c = Controller(ControllerConfig(), runtime.action_scaling, runtime.uncertainty_threshold)
    d = c.on_result(r, now)
    assert d.reason and d.state in ("active", "halted")
    assert np.all(np.isfinite(d.action)) and np.all(np.isfinite(d.command))
    assert np.linalg.norm(d.command) <= c.config.max_linear_speed
    if not r.ok or not np.isfinite(now):
        assert not d.action.any() and not d.command.any() and d.intervened


# -- the controller alone, on arbitrary result sequences --------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
results = st.builds(
    RuntimeResult,
    ok=st.booleans(),
    reason=st.sampled_from(["ok", "decode: bad", "nonfinite: NaN in image", ""]),
    action=st.one_of(
        hnp.arrays(np.float32, 3, elements=floats),
        hnp.arrays(np.float32, st.integers(0, 5), elements=floats),
        hnp.arrays(np.float64, 3, elements=st.floats(-3, 3)),
    ),
    uncertainty=st.one_of(st.floats(0, 2), floats.map(float)),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("result"), results, st.floats(0, 100)),
        st.tuples(st.just("timer"), st.none(), st.floats(0, 100)),
        st.sampled_from([("activate", None, 0.0), ("deactivate", None, 0.0), ("reset", None, 0.0)]),
    ),
    max_size=40,
)
configs = st.builds(
    ControllerConfig,
    image_timeout_s=st.floats(0.01, 2),
    max_action=st.floats(0.05, 1),
    max_action_change=st.floats(0.01, 2),
    uncertainty_patience=st.integers(1, 4),
    on_uncertain=st.sampled_from(["warn", "hold", "halt"]),
    start_active=st.booleans(),
    max_linear_speed=st.floats(0.01, 1.0),
)


@fuzz(1500)
@given(config=configs, sequence=ops)
def test_controller_invariants(config, sequence):
    from lompo_core.actions import ActionScaling

    scaling = ActionScaling(("x", "y", "z"), "m/s", (0.8, 0.8, 0.8))
    c = Controller(config, scaling, threshold=0.5)
    last = np.zeros(3, np.float32)
    for op, result, now in sequence:
        if op == "result":
            d = c.on_result(result, now)
        elif op == "timer":
            d = c.on_timer(now)
        else:
            was = c.state
            getattr(c, op)()
            # these start the rate limit from rest (a halted or inactive one is at rest already)
            if op == "reset" or (op, was) in (("activate", "inactive"), ("deactivate", "active")):
                last = np.zeros(3, np.float32)
            continue
        if d is None:
            continue
        assert d.reason and d.state == c.state
        assert d.action.shape == (3,) and np.all(np.isfinite(d.action))
        np.testing.assert_allclose(d.command, scaling.to_physical(d.action))
        assert np.all(np.abs(d.action) <= config.max_action + 1e-6)
        assert np.linalg.norm(d.command) <= config.max_linear_speed  # the physical limit
        if d.action.any():
            # moving: only when active, never faster than the rate limit allows
            assert d.state == "active" and result is not None and result.ok
            assert np.all(np.abs(d.action - last) <= config.max_action_change + 1e-6)
        if d.state == "halted":
            assert not d.action.any()
        last = d.action.copy()
