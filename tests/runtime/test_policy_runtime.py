"""PolicyRuntime on a real exported policy: inputs of every kind, the recurrent state, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lompo_core.config import RUNTIME_KEYS, Config, differences, resolve
from lompo_core.data.dataset import EpisodeDataset
from lompo_core.errors import PolicyError
from lompo_core.messages import typestore
from lompo_core.runtime import Controller, ControllerConfig, PolicyRuntime

TS = typestore("jazzy")
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "drawer_close"


def image_msg(arr: np.ndarray, encoding: str, step: int | None = None, big: int = 0):
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    row = data.size // h
    return TS.types["sensor_msgs/msg/Image"](
        header=_header(),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=big,
        step=row if step is None else step,
        data=data,
    )


def compressed_msg(rgb: np.ndarray, fmt: str):
    ok, buf = cv2.imencode(
        ".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    )
    assert ok
    return TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(), format=fmt, data=buf.reshape(-1)
    )


def _header():
    Time = TS.types["builtin_interfaces/msg/Time"]
    return TS.types["std_msgs/msg/Header"](stamp=Time(sec=1, nanosec=2), frame_id="overhead_camera")


@pytest.fixture
def runtime(exported) -> PolicyRuntime:
    return PolicyRuntime(exported[1], threads=1)


def scene(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def test_loads_the_sidecar(runtime):
    assert runtime.action_dim == 3
    assert runtime.action_scaling.names == ("linear.x", "linear.y", "linear.z")
    assert runtime.action_scaling.max_speed == (0.1, 0.1, 0.1)
    assert runtime.uncertainty_threshold == runtime.sidecar["uncertainty_threshold"] > 0
    assert runtime.preprocessing.size == 64
    assert runtime.session.get_session_options().intra_op_num_threads == 1


def test_threads_are_configurable(exported):
    rt = PolicyRuntime(exported[1], threads=2)
    assert rt.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(PolicyError, match="threads"):
        PolicyRuntime(exported[1], threads=0)


def test_every_encoding_gives_the_same_model_image(runtime):
    rgb = scene()
    want = runtime.step(rgb)
    assert want.ok and want.reason == "ok" and want.model_image.shape == (64, 64, 3)
    assert want.action.dtype == np.float32 and want.action.shape == (3,)
    assert np.all(np.abs(want.action) <= 1) and np.isfinite(want.uncertainty)
    inputs = {
        "rgb8": image_msg(rgb, "rgb8"),
        "bgr8": image_msg(rgb[..., ::-1], "bgr8"),
        "rgba8": image_msg(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "rgba8"),
        "bgra8": image_msg(np.dstack([rgb[..., ::-1], np.zeros(rgb.shape[:2], np.uint8)]), "bgra8"),
        "padded rows": image_msg(np.pad(rgb, ((0, 0), (0, 4), (0, 0))), "rgb8", step=644 * 3),
        "png": compressed_msg(rgb, "png"),
    }
    for name, msg in inputs.items():
        if name == "padded rows":
            msg.width = 640  # the padding is beyond width * 3 within each step
        runtime.reset()
        got = runtime.step(msg)
        assert got.ok, (name, got.reason)
        np.testing.assert_array_equal(got.model_image, want.model_image, err_msg=name)
        np.testing.assert_array_equal(got.action, want.action, err_msg=name)
        runtime.reset()
    # lossy jpeg and grey images: decoded, not bit-identical
    for msg in (compressed_msg(rgb, "jpeg"), image_msg(rgb[..., 0].copy(), "mono8")):
        got = runtime.step(msg)
        assert got.ok and got.model_image.shape == (64, 64, 3)
    grey = runtime.step(rgb[..., 1].copy())  # an HxW mono array
    assert grey.ok and np.all(grey.model_image[..., 0] == grey.model_image[..., 2])


def test_the_sidecar_preprocessing_is_applied(tmp_path, exported):
    """A policy trained on cropped frames crops the camera's frames the same way."""
    from lompo_core.image import Preprocessing, preprocess

    folder = copy_policy(exported[1], tmp_path / "p")
    crop = Preprocessing(crop=(0.25, 0.0, 0.75, 0.5))
    edit_sidecar(folder, lambda s: s.update(preprocessing=crop.as_dict()))
    rt = PolicyRuntime(folder)
    assert rt.preprocessing == crop
    rgb = scene()
    r = rt.step(image_msg(rgb, "rgb8"))
    assert r.ok
    np.testing.assert_array_equal(r.model_image, preprocess(rgb, crop))
    # what the model saw is the crop, not the whole frame
    assert not np.array_equal(r.model_image, preprocess(rgb, Preprocessing()))


def test_state_is_carried_and_reset(runtime, exported):
    """Along a dataset episode the runtime is the exported graph with its state fed back."""
    from lompo_core.export.export import run_episode

    ep = EpisodeDataset(exported[0]).load(1)
    want = run_episode(runtime.session, ep, feed="policy")
    runtime.reset()
    got = [runtime.step(img) for img in ep["image"]]
    assert all(r.ok for r in got)
    np.testing.assert_array_equal(np.stack([r.action for r in got]), want["action"])
    np.testing.assert_array_equal([r.uncertainty for r in got], want["uncertainty"])
    # The state moved: stepping the same image again gives another answer until reset().
    assert not np.array_equal(runtime.step(ep["image"][0]).action, got[0].action)
    runtime.reset()
    np.testing.assert_array_equal(runtime.step(ep["image"][0]).action, got[0].action)


def test_set_prev_action_feeds_the_executed_action(runtime):
    img = scene(64, 64)
    runtime.step(img)
    runtime.set_prev_action(np.zeros(3))
    np.testing.assert_array_equal(runtime.state["prev_action"], np.zeros((1, 3), np.float32))
    runtime.set_prev_action(np.array([np.nan, 0, 0]))  # ignored
    np.testing.assert_array_equal(runtime.state["prev_action"], np.zeros((1, 3), np.float32))


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (None, "decode: no image"),
        (np.zeros((0, 5, 3), np.uint8), "decode: empty image array"),
        (np.zeros((40, 0), np.uint16), "decode: empty image array"),
        (np.zeros((10, 10, 4), np.uint8), "decode: expected an RGB image"),
        (np.zeros((10, 10, 3), np.float32), "decode: expected a uint8 image"),
        (np.full((10, 10, 3), np.nan, np.float32), "nonfinite: NaN or Inf in the input image"),
        ("not an image", "decode: not an image message"),
    ],
)
def test_bad_arrays_give_zero_and_a_reason(runtime, image, reason):
    before = runtime.state
    r = runtime.step(image)
    assert not r.ok and r.reason.startswith(reason), r.reason
    assert r.action.shape == (3,) and not r.action.any() and np.isnan(r.uncertainty)
    assert r.latency_s >= 0
    for key, value in runtime.state.items():  # a bad frame leaves the state alone
        np.testing.assert_array_equal(value, before[key])


def test_bad_messages_give_zero_and_a_reason(runtime):
    rgb = scene(48, 64)
    good = image_msg(rgb, "rgb8")
    yuv = image_msg(rgb, "yuv422")
    truncated = image_msg(rgb, "rgb8")
    truncated.data = truncated.data[:-100]
    short_step = image_msg(rgb, "rgb8", step=10)
    jpeg = compressed_msg(rgb, "jpeg")
    jpeg.data = jpeg.data[:20]
    cases = {
        "unsupported image encoding 'yuv422'": yuv,
        "image data holds": truncated,
        "image step 10 is shorter than a row": short_step,
        "cannot decode compressed image": jpeg,
    }
    for expected, msg in cases.items():
        r = runtime.step(msg)
        assert not r.ok and r.reason.startswith("decode: ") and expected in r.reason, r.reason
        assert not r.action.any()
    assert runtime.step(good).ok


def test_nan_weights_are_caught_and_halt_the_controller(tmp_path, exported):
    """A policy whose output is NaN: the runtime refuses the step, keeps its state, and the
    controller halts."""
    import torch
    from policy_fixtures import debug_policy_step, info_for

    from lompo_core.export.export import export_policy_step

    step, cfg = debug_policy_step()
    with torch.no_grad():
        step.actor.net[-1].bias.fill_(float("nan"))
    export_policy_step(step, info_for(cfg, exported[0]), tmp_path / "nan")
    rt = PolicyRuntime(tmp_path / "nan")
    r = rt.step(scene(64, 64))
    assert not r.ok and r.reason == "nonfinite: NaN or Inf in policy output (action)"
    assert not np.any(rt.state["deter"])  # the poisoned state was not kept
    c = Controller(ControllerConfig(), rt.action_scaling, rt.uncertainty_threshold)
    d = c.on_result(r, 0.0)
    assert d.state == "halted" and not d.command.any()


# -- refusals ----------------------------------------------------------------------------------


def copy_policy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_sidecar(folder: Path, change, resign: bool = True) -> None:
    """Change the sidecar; ``resign`` rewrites its manifest too, as a forger would, so that the
    field's own check is what refuses it."""
    from lompo_core.runtime.sidecar import manifest_sha256

    path = folder / "policy.json"
    sidecar = json.loads(path.read_text())
    before = sidecar.get("manifest_sha256")
    change(sidecar)
    if resign and "manifest_sha256" in sidecar and sidecar["manifest_sha256"] == before:
        sidecar["manifest_sha256"] = manifest_sha256(sidecar, (folder / "policy.onnx").read_bytes())
    path.write_text(json.dumps(sidecar))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.update(onnx_sha256="0" * 64), "does not match .*onnx_sha256"),
        (lambda s: s.update(schema_version=99), "schema_version 99"),
        (lambda s: s["preprocessing"].pop("resize"), "'preprocessing' has keys"),
        (lambda s: s["preprocessing"].update(blur=3), "preprocessing.*unknown field"),
        (lambda s: s["preprocessing"].update(crop=[0.5, 0, 0.2, 1]), "preprocessing.*crop"),
        (lambda s: s["inputs"][0].update(name="img"), "'inputs' names"),
        (lambda s: s["inputs"][2].update(shape=[1, 99]), "input 'deter' is tensor"),
        (lambda s: s.pop("uncertainty_threshold"), "missing field.*uncertainty_threshold"),
        (lambda s: s.update(uncertainty_threshold=float("nan")), "uncertainty_threshold"),
        (lambda s: s["action"].update(max=[0.1]), "field 'action.max'"),
        (lambda s: s.update(onnx_file="../policy.onnx"), "field 'onnx_file'"),
        # issue 16: every field the runtime uses is checked, finite and in range
        (lambda s: s.update(uncertainty_threshold=0), "'uncertainty_threshold' must be .* > 0"),
        (lambda s: s.update(uncertainty_threshold=1e30), "above the calibration's maximum"),
        (lambda s: s.update(uncertainty_threshold=True), "'uncertainty_threshold' must be"),
        (lambda s: s["uncertainty_calibration"].update(max=float("inf")), "calibration.max"),
        (lambda s: s["action"].update(max=[float("nan")] * 3), "field 'action.max'"),
        (lambda s: s["action"].update(max=[0.1, 0.1, -1]), "field 'action.max'"),
        (lambda s: s["action"].update(names=["a", "a", "b"]), "'action.names' repeats"),
        (lambda s: s["action"].update(names=["a", "b"], max=[0.1, 0.1]), "'action.names' names 2"),
        (lambda s: s["action"].update(names=["a", "", "c"]), "'action.names' must be"),
        (lambda s: s["action"].update(unit=7), "'action.unit'"),
        (lambda s: s["preprocessing"].update(crop=[0, 0, 1, float("nan")]), "preprocessing.*crop"),
        (lambda s: s["preprocessing"].update(crop=[0.3, 0.3, 0.3, 0.9]), "preprocessing.*crop"),
        (lambda s: s["preprocessing"].update(size=64.5), "preprocessing.*size"),
        (lambda s: s.update(control_rate_hz=-10), "field 'control_rate_hz'"),
        (lambda s: s.update(control_rate_hz=1e9), "field 'control_rate_hz'"),
        (lambda s: s.update(onnx_sha256=17), "field 'onnx_sha256' must be 64 hex"),
        (lambda s: s.update(manifest_sha256="abc"), "field 'manifest_sha256' must be 64 hex"),
        (lambda s: s.update(dataset={"camera": {"width": 0, "height": 5}}), "'dataset.camera'"),
        (lambda s: s.update(inputs=5), "field 'inputs' must be a list"),
        (lambda s: s["outputs"][0].update(shape=[]), "output.* 'action' has a bad shape"),
        (lambda s: s["inputs"][2].update(shape=[1, 2**30]), "'deter' has a bad shape"),
    ],
)
def test_refuses_a_mismatched_sidecar(tmp_path, exported, change, match):
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, change)
    with pytest.raises(PolicyError, match=match) as err:
        PolicyRuntime(folder)
    assert str(folder) in str(err.value)


def test_refuses_a_changed_or_broken_onnx_file(tmp_path, exported):
    folder = copy_policy(exported[1], tmp_path / "p")
    data = bytearray((folder / "policy.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(PolicyError, match=r"policy.onnx: sha256 .* does not match"):
        PolicyRuntime(folder)
    # garbage whose hash the sidecar agrees with: onnxruntime's refusal is reported as such
    import hashlib

    (folder / "policy.onnx").write_bytes(b"not an onnx model")
    edit_sidecar(
        folder, lambda s: s.update(onnx_sha256=hashlib.sha256(b"not an onnx model").hexdigest())
    )  # the manifest rewritten too: only onnxruntime stands in the way
    with pytest.raises(PolicyError, match="onnxruntime cannot load it"):
        PolicyRuntime(folder)


def test_refuses_missing_files(tmp_path, exported):
    with pytest.raises(PolicyError, match="policy folder not found"):
        PolicyRuntime(tmp_path / "nowhere")
    folder = copy_policy(exported[1], tmp_path / "p")
    (folder / "policy.onnx").unlink()
    with pytest.raises(PolicyError, match="policy.onnx: missing"):
        PolicyRuntime(folder)
    (folder / "policy.json").write_text("{not json")
    with pytest.raises(PolicyError, match="policy.json: not valid JSON"):
        PolicyRuntime(folder)
    (folder / "policy.json").unlink()
    with pytest.raises(PolicyError, match="policy.json: missing"):
        PolicyRuntime(folder)


def test_runtime_imports_no_torch_nor_mujoco(exported):
    """What the robot computer imports and runs: the runtime, the shared preprocessing, the
    messages, one step and one decision."""
    code = (
        "import sys, numpy as np, lompo_core.runtime, lompo_core.image;"
        "from lompo_core.runtime import PolicyRuntime, Controller, ControllerConfig;"
        f"rt = PolicyRuntime({str(exported[1])!r});"
        "r = rt.step(np.zeros((480, 640, 3), np.uint8)); assert r.ok, r.reason;"
        "c = Controller(ControllerConfig(), rt.action_scaling, rt.uncertainty_threshold);"
        "c.on_result(r, 0.0);"
        "bad = [m for m in ('torch', 'mujoco', 'metaworld', 'gymnasium', 'onnx') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the runtime imported {out.stdout.strip()}"


# -- issue 16: the sidecar and the onnx file verified as one unit -----------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(uncertainty_threshold=s["uncertainty_threshold"] * 0.9),
        lambda s: s["action"].update(names=["linear.y", "linear.x", "linear.z"]),
        lambda s: s["preprocessing"].update(crop=[0.1, 0.0, 0.9, 0.8]),
        lambda s: s.update(control_rate_hz=30.0),
    ],
)
def test_an_edit_that_passes_every_field_check_breaks_the_manifest(tmp_path, exported, change):
    # Before: a changed threshold, crop, rate or swapped action names loaded silently.
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, change, resign=False)
    with pytest.raises(PolicyError, match="field 'manifest_sha256' .* does not match"):
        PolicyRuntime(folder)


def test_an_edited_onnx_with_its_sha256_rewritten_is_refused(tmp_path, exported):
    # Before: accepted (the sidecar's onnx_sha256 was the only check).
    import hashlib

    folder = copy_policy(exported[1], tmp_path / "p")
    data = bytearray((folder / "policy.onnx").read_bytes())
    data[-1] ^= 0x01
    (folder / "policy.onnx").write_bytes(bytes(data))
    digest = hashlib.sha256(bytes(data)).hexdigest()
    edit_sidecar(folder, lambda s: s.update(onnx_sha256=digest), resign=False)
    with pytest.raises(PolicyError, match="manifest_sha256"):
        PolicyRuntime(folder)


def test_a_pinned_hash_accepts_only_that_policy(tmp_path, exported):
    rt = PolicyRuntime(exported[1])
    assert rt.manifest_sha256 == rt.sidecar["manifest_sha256"] and not rt.warnings
    PolicyRuntime(exported[1], expected_sha256=rt.manifest_sha256.upper())
    assert PolicyRuntime(exported[1], expected_sha256="").manifest_sha256 == rt.manifest_sha256
    with pytest.raises(PolicyError, match="is not the pinned expected_sha256"):
        PolicyRuntime(exported[1], expected_sha256="0" * 64)
    with pytest.raises(PolicyError, match="expected_sha256 must be 64 hex digits"):
        PolicyRuntime(exported[1], expected_sha256="abc")
    # a forger who rewrites both files and the manifest still fails the pin
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, lambda s: s.update(uncertainty_threshold=s["uncertainty_threshold"] / 2))
    assert PolicyRuntime(folder).manifest_sha256 != rt.manifest_sha256
    with pytest.raises(PolicyError, match="pinned"):
        PolicyRuntime(folder, expected_sha256=rt.manifest_sha256)


def test_a_sidecar_without_a_manifest_loads_with_a_warning(tmp_path, exported):
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, lambda s: s.pop("manifest_sha256"))
    rt = PolicyRuntime(folder)
    assert len(rt.warnings) == 1 and "no field 'manifest_sha256'" in rt.warnings[0]
    assert f"expected_sha256={rt.manifest_sha256}" in rt.warnings[0]
    PolicyRuntime(folder, expected_sha256=rt.manifest_sha256)  # pinning still works


def test_the_shipped_policy_carries_its_manifest_and_its_image_signals():
    """It loads without a doubt, and its gate holds a black camera on the first black frame."""
    rt = PolicyRuntime(SHIPPED)
    assert rt.manifest_sha256 == rt.sidecar["manifest_sha256"]
    # Its checkpoint was chosen from the dataset alone (the cpu preset's offline rule).
    assert rt.sidecar["training"]["selection"] == "offline:model_return"
    assert rt.sidecar["training"]["config"]["eval"]["every"] == 0
    assert rt.image_limits.max_width == 1024  # 8 x its 128 px training camera
    assert set(rt.signal_thresholds) == {
        "surprise", "reconstruction_error", "reconstruction_patch_error",
    }  # fmt: skip
    assert not rt.warnings
    c = Controller(
        ControllerConfig(ood_patience=1), rt.action_scaling, rt.uncertainty_threshold,
        rt.signal_thresholds,
    )  # fmt: skip
    assert c.ood_gate
    black = rt.step(np.zeros((128, 128, 3), np.uint8))
    assert black.ok and black.reconstruction_error > rt.signal_thresholds["reconstruction_error"]
    decision = c.on_result(black, 0.0)
    assert decision.reason.startswith("hold: out of distribution") and not decision.action.any()


def test_the_shipped_policy_was_trained_with_the_cpu_preset_as_it_is():
    """Its card and the docs say so: the preset a user trains with is the shipped policy's."""
    sidecar = json.loads((SHIPPED / "policy.json").read_text())
    trained = Config.from_dict(sidecar["training"]["config"])
    preset = resolve("cpu", [f"seed={trained.seed}"])
    assert differences(preset, trained, ignore={*RUNTIME_KEYS, "log.keep_checkpoints"}) == []


def test_a_new_export_reports_its_image_signals(runtime):
    assert set(runtime.signal_thresholds) == {
        "surprise",
        "reconstruction_error",
        "reconstruction_patch_error",
    }
    assert not runtime.warnings
    runtime.reset()
    r = runtime.step(scene(64, 64))
    assert r.ok and r.surprise >= 0 and r.reconstruction_error >= 0
    assert r.reconstruction_patch_error >= r.reconstruction_error  # the worst patch's, >= mean


def test_a_sidecar_naming_image_signals_without_their_threshold_is_refused(tmp_path, exported):
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, lambda s: s.pop("surprise_threshold"))
    with pytest.raises(PolicyError, match="missing field 'surprise_threshold'"):
        PolicyRuntime(folder)
    folder = copy_policy(exported[1], tmp_path / "q")
    edit_sidecar(folder, lambda s: s.update(reconstruction_error_threshold=1e30))
    with pytest.raises(PolicyError, match="'reconstruction_error_threshold' .* above the calib"):
        PolicyRuntime(folder)


def test_a_sidecar_that_drops_the_signals_of_its_onnx_is_refused(tmp_path, exported):
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, lambda s: s.update(outputs=s["outputs"][:4]))
    with pytest.raises(PolicyError, match="outputs are .*surprise"):
        PolicyRuntime(folder)


# -- issue 16: bombs through the runtime and the controller ------------------------------------


def _bombs() -> dict[str, object]:
    import struct
    import zlib

    Compressed = TS.types["sensor_msgs/msg/CompressedImage"]

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 91))
        + chunk(b"IEND", b"")
    )
    jpg = bytearray(cv2.imencode(".jpg", scene(48, 64))[1].tobytes())
    i = bytes(jpg).index(b"\xff\xc0")
    jpg[i + 5 : i + 9] = bytes([0x9C, 0x40, 0x9C, 0x40])  # 40000 x 40000
    smooth = cv2.GaussianBlur(scene(120, 160), (9, 9), 3)
    good = cv2.imencode(".jpg", smooth)[1].tobytes()

    def comp(fmt: str, data: bytes):
        return Compressed(header=_header(), format=fmt, data=np.frombuffer(data, np.uint8))

    return {
        "holds 30 bytes": image_msg(np.zeros((1, 10, 3), np.uint8), "rgb8", step=4294967295),
        "PNG header of compressed image": comp("png", png),
        "JPEG header of compressed image": comp("jpeg", bytes(jpg)),
        "corrupt JPEG": comp("jpeg", good[: len(good) // 2] + b"\xff\xd9"),
        "the data is BMP": comp("jpeg", cv2.imencode(".bmp", smooth)[1].tobytes()),
        "the data is TIFF": comp("png", cv2.imencode(".tiff", smooth)[1].tobytes()),
    }


@pytest.mark.parametrize("words", list(_bombs()))
def test_bombs_are_refused_fast_and_give_a_zero_command(runtime, words):
    msg = _bombs()[words]
    r = runtime.step(msg)
    assert not r.ok and r.reason.startswith("decode: ") and words in r.reason, r.reason
    assert "\n" not in r.reason and r.latency_s < 0.05
    c = Controller(ControllerConfig(), runtime.action_scaling, runtime.uncertainty_threshold)
    d = c.on_result(r, 1.0)
    assert not d.command.any() and d.intervened and d.reason.startswith("no action: decode: ")


def test_image_limits_follow_the_training_camera(tmp_path, exported):
    folder = copy_policy(exported[1], tmp_path / "p")
    edit_sidecar(folder, lambda s: s.update(dataset={"camera": {"width": 64, "height": 48}}))
    rt = PolicyRuntime(folder)
    assert (rt.image_limits.max_width, rt.image_limits.max_height) == (512, 384)
    assert rt.step(scene(384, 512)).ok
    r = rt.step(image_msg(scene(385, 512), "rgb8"))
    assert not r.ok and "512x385, over the limit 512x384" in r.reason
    r = rt.step(scene(48, 600))  # arrays too
    assert not r.ok and "image array is 600x48, over the limit" in r.reason
    from lompo_core.image import ImageLimits

    wide = PolicyRuntime(folder, image_limits=ImageLimits(max_width=700, max_height=700))
    assert wide.step(scene(48, 600)).ok
