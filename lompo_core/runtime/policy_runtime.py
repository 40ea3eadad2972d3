"""Serve an exported policy with onnxruntime: image in, action out, recurrent state kept inside.

What the robot computer runs, so: no torch, one onnxruntime session with a fixed number of threads,
and a ``step`` that never raises on bad input (a camera can send anything; the node must keep
running and send a zero command with a reason instead).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from lompo_core.actions import ActionScaling
from lompo_core.errors import ImageError, PolicyError
from lompo_core.image import (
    DEFAULT_LIMITS,
    ImageLimits,
    Preprocessing,
    check_array,
    decode_image,
    preprocess,
)
from lompo_core.runtime.result import NONFINITE, RuntimeResult
from lompo_core.runtime.sidecar import (
    INPUT_NAMES,
    MANIFEST_FIELD,
    ONNX_FILE,
    camera_size,
    image_signals,
    manifest_sha256,
    read_sidecar,
    shapes,
)

_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}


class PolicyRuntime:
    """One exported policy (``policy.onnx`` + ``policy.json``) and its recurrent state.

    ``expected_sha256`` pins the policy: the manifest hash over both files (``manifest_sha256``,
    printed by ``lompo export`` and stored in the sidecar) must equal it, so a launch that names
    the hash runs that policy or none. ``image_limits`` overrides the size caps on camera frames,
    which otherwise follow the camera the policy was trained on (``dataset.camera`` in the
    sidecar, ``CAMERA_HEADROOM`` times each side) or, without one, ``DEFAULT_LIMITS``.
    ``warnings`` lists one line per accepted doubt (a sidecar without a manifest, a policy
    without the image signals) for the node to log at load.

    ``signal_thresholds`` maps each image signal the policy outputs (``surprise``,
    ``reconstruction_error``, ``reconstruction_patch_error``) to its threshold calibrated at export; it is empty for a policy
    exported before them, whose steps report None for both and whose gate is off.
    """

    def __init__(
        self,
        policy_dir: str | Path,
        threads: int = 1,
        *,
        expected_sha256: str | None = None,
        image_limits: ImageLimits | None = None,
    ):
        import hashlib

        import onnxruntime as ort

        self.policy_dir = Path(policy_dir)
        if not isinstance(threads, int) or threads < 1:
            raise PolicyError(f"threads must be an integer >= 1, got {threads!r}")
        pinned = _pinned_hash(expected_sha256)
        if image_limits is not None and not isinstance(image_limits, ImageLimits):
            raise PolicyError(f"image_limits must be an ImageLimits, got {image_limits!r}")
        self.warnings: list[str] = []
        self.sidecar: dict[str, Any] = read_sidecar(self.policy_dir)
        sidecar_path = self.policy_dir / "policy.json"
        if self.sidecar["onnx_file"] != ONNX_FILE:  # never a path that leaves the folder
            raise PolicyError(
                f"{sidecar_path}: field 'onnx_file' is {self.sidecar['onnx_file']!r}, "
                f"expected {ONNX_FILE!r}"
            )
        onnx_path = self.policy_dir / ONNX_FILE
        if not onnx_path.is_file():
            raise PolicyError(f"{onnx_path}: missing (named by {sidecar_path}, field 'onnx_file')")
        # Hash the very bytes the session is built from, so the check cannot be raced.
        model_bytes = onnx_path.read_bytes()
        digest = hashlib.sha256(model_bytes).hexdigest()
        if digest != self.sidecar["onnx_sha256"]:
            raise PolicyError(
                f"{onnx_path}: sha256 {digest[:12]}... does not match {sidecar_path} field "
                f"'onnx_sha256' ({str(self.sidecar['onnx_sha256'])[:12]}...): the model and its "
                "sidecar come from different exports"
            )
        self.manifest_sha256 = manifest_sha256(self.sidecar, model_bytes)
        # A pinned policy is checked first: other bytes never reach the checks or onnxruntime.
        if pinned is not None and pinned != self.manifest_sha256:
            raise PolicyError(
                f"{self.policy_dir}: manifest sha256 {self.manifest_sha256[:12]}... is not the "
                f"pinned expected_sha256 {pinned[:12]}...: this is not the policy the launch names"
            )
        try:
            self.preprocessing = Preprocessing.from_dict(self.sidecar["preprocessing"])
        except (ImageError, TypeError, ValueError) as exc:
            raise PolicyError(f"{sidecar_path}: field 'preprocessing': {exc}") from None
        # Refuse a recipe with fields missing as well as extra ones: a sidecar that does not say
        # how its images were made cannot promise that we make them the same way.
        want_keys = set(Preprocessing().as_dict())
        got_keys = set(self.sidecar["preprocessing"])
        if got_keys != want_keys:
            raise PolicyError(
                f"{sidecar_path}: field 'preprocessing' has keys {sorted(got_keys)}, "
                f"expected {sorted(want_keys)}"
            )
        if image_limits is None:
            camera = camera_size(sidecar_path, self.sidecar)
            image_limits = DEFAULT_LIMITS if camera is None else ImageLimits.for_camera(*camera)
        self.image_limits = image_limits
        action = self.sidecar["action"]
        self.action_scaling = ActionScaling(
            names=tuple(str(n) for n in action["names"]),
            unit=str(action.get("unit", "")),
            max_speed=tuple(float(m) for m in action["max"]),
        )
        self.uncertainty_threshold = float(self.sidecar["uncertainty_threshold"])
        self.signal_thresholds: dict[str, float] = {
            name: float(self.sidecar[f"{name}_threshold"]) for name in image_signals(self.sidecar)
        }
        if not self.signal_thresholds:
            self.warnings.append(
                f"{sidecar_path}: no image signals (surprise, reconstruction errors; exported "
                "before them): the out-of-distribution gate is off, only the ensemble's "
                "uncertainty is checked; re-export the run to have it"
            )

        # Every field has been checked on its own; the manifest says they are the ones exported.
        stored = self.sidecar.get(MANIFEST_FIELD)
        if stored is None:
            self.warnings.append(
                f"{sidecar_path}: no field {MANIFEST_FIELD!r} (exported before manifests); "
                f"policy.onnx and policy.json are checked as one unit only if pinned: "
                f"expected_sha256={self.manifest_sha256}"
            )
        elif stored != self.manifest_sha256:
            raise PolicyError(
                f"{sidecar_path}: field {MANIFEST_FIELD!r} ({stored[:12]}...) does not match "
                f"policy.onnx and policy.json ({self.manifest_sha256[:12]}...): one of them was "
                "changed after export"
            )

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads burn a core between frames for nothing at 10-30 Hz.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PolicyError(f"{onnx_path}: onnxruntime cannot load it ({exc})") from None
        self.threads = threads
        self._check_session(onnx_path, sidecar_path)

        ins = shapes(self.sidecar, "inputs")
        self.image_shape = ins["image"][0]
        self.action_dim = int(ins["prev_action"][0][-1])
        if self.action_dim != len(self.action_scaling.max_speed):
            raise PolicyError(
                f"{sidecar_path}: 'prev_action' has {self.action_dim} values but field 'action' "
                f"names {len(self.action_scaling.max_speed)}"
            )
        if self.image_shape[1:] != (self.preprocessing.size, self.preprocessing.size, 3):
            raise PolicyError(
                f"{sidecar_path}: input 'image' shape {list(self.image_shape)} does not match "
                f"preprocessing size {self.preprocessing.size}"
            )
        self._deter_shape = ins["deter"][0]
        self._stoch_shape = ins["stoch"][0]
        self.reset()

    def _check_session(self, onnx_path: Path, sidecar_path: Path) -> None:
        declared = {
            "inputs": shapes(self.sidecar, "inputs"),
            "outputs": shapes(self.sidecar, "outputs"),
        }
        actual = {"inputs": self.session.get_inputs(), "outputs": self.session.get_outputs()}
        # read_sidecar accepted the declared output names; the onnx file must have the same ones.
        for key, names in (("inputs", INPUT_NAMES), ("outputs", tuple(declared["outputs"]))):
            got = [a.name for a in actual[key]]
            if tuple(got) != names:
                raise PolicyError(
                    f"{onnx_path}: {key} are {got}, {sidecar_path} and this lompo expect {list(names)}"
                )
            for arg in actual[key]:
                shape, dtype = declared[key][arg.name]
                if list(arg.shape) != list(shape) or _ORT_TYPES.get(arg.type) != dtype:
                    raise PolicyError(
                        f"{onnx_path}: {key[:-1]} {arg.name!r} is {arg.type} {arg.shape}, "
                        f"{sidecar_path} declares {dtype} {list(shape)}"
                    )

    def reset(self) -> None:
        """Zero latent state and previous action: the start of an episode."""
        self._prev_action = np.zeros((1, self.action_dim), np.float32)
        self._deter = np.zeros(self._deter_shape, np.float32)
        self._stoch = np.zeros(self._stoch_shape, np.float32)

    def set_prev_action(self, action: np.ndarray) -> None:
        """Feed the action actually executed (e.g. the controller's) as the next previous action.

        The dataset's actions are the executed ones; after the controller clamps, holds or zeroes
        a command, telling the model what really happened keeps its belief closer to the truth.
        Non-finite or wrongly sized input is ignored, keeping the model's own action.
        """
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape == (self.action_dim,) and np.all(np.isfinite(a)):
            self._prev_action = np.clip(a, -1.0, 1.0).reshape(1, self.action_dim)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the recurrent state (for diagnostics and tests)."""
        return {
            "prev_action": self._prev_action.copy(),
            "deter": self._deter.copy(),
            "stoch": self._stoch.copy(),
        }

    def step(self, image: Any) -> RuntimeResult:
        """One policy step on an image array (HxWx3 RGB, HxW mono) or Image/CompressedImage."""
        start = time.perf_counter()
        model_image = None
        try:
            model_image = self._model_image(image)
            outputs = self.session.run(
                None,
                {
                    "image": model_image[None],
                    "prev_action": self._prev_action,
                    "deter": self._deter,
                    "stoch": self._stoch,
                },
            )
            action, deter, stoch, uncertainty = outputs[:4]
            signals = dict(zip(self.signal_thresholds, outputs[4:], strict=True))
            bad = [
                name
                for name, value in (
                    ("action", action),
                    ("deter", deter),
                    ("stoch", stoch),
                    ("uncertainty", uncertainty),
                    *signals.items(),
                )
                if not np.all(np.isfinite(value))
            ]
            if bad:
                # Keep the previous state: a poisoned state would stay NaN for the whole episode.
                return RuntimeResult.failure(
                    f"{NONFINITE}: NaN or Inf in policy output ({', '.join(bad)})",
                    self.action_dim,
                    model_image,
                    time.perf_counter() - start,
                )
            self._prev_action, self._deter, self._stoch = action, deter, stoch
            return RuntimeResult(
                ok=True,
                reason="ok",
                action=action.reshape(-1).copy(),
                uncertainty=float(uncertainty.reshape(-1)[0]),
                surprise=_scalar(signals.get("surprise")),
                reconstruction_error=_scalar(signals.get("reconstruction_error")),
                reconstruction_patch_error=_scalar(signals.get("reconstruction_patch_error")),
                model_image=model_image,
                latency_s=time.perf_counter() - start,
            )
        except _InputNotFinite as exc:
            reason = f"{NONFINITE}: {exc}"
        except ImageError as exc:
            reason = f"decode: {exc}"
        except Exception as exc:  # never raise on input: the node must keep sending zeros
            reason = f"runtime: {type(exc).__name__}: {exc}"
        return RuntimeResult.failure(
            reason, self.action_dim, model_image, time.perf_counter() - start
        )

    def _model_image(self, image: Any) -> np.ndarray:
        if isinstance(image, np.ndarray):
            if image.dtype.kind in "fc" and not np.all(np.isfinite(image)):
                raise _InputNotFinite(f"NaN or Inf in the input image (dtype {image.dtype})")
            if image.size == 0:
                raise ImageError(f"empty image array (shape {image.shape})")
            check_array(image, self.image_limits)
            rgb = image
        elif image is None:
            raise ImageError("no image (None)")
        else:
            rgb = decode_image(image, self.preprocessing, self.image_limits)
        out = preprocess(rgb, self.preprocessing)
        if out.shape != self.image_shape[1:] or out.dtype != np.uint8:
            raise ImageError(
                f"preprocessing gave {out.dtype} {out.shape}, expected {self.image_shape[1:]}"
            )
        return out


class _InputNotFinite(Exception):
    pass


def _scalar(value: np.ndarray | None) -> float | None:
    return None if value is None else float(value.reshape(-1)[0])


def _pinned_hash(value: str | None) -> str | None:
    """``expected_sha256`` as 64 lower-case hex digits; '' or None means not pinned."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise PolicyError(f"expected_sha256 must be 64 hex digits (or empty), got {value!r}")
    return text
