"""The exported policy's sidecar, ``policy.json``: its schema and the checks both sides share.

The exporter writes it and the runtime refuses to run a policy whose sidecar does not match it or
its ``policy.onnx``. The sidecar is not trusted: every field the runtime uses is checked (finite,
in range, consistent with the ONNX interface) and refused with one line naming the field, and a
manifest hash binds it to its ``policy.onnx``. numpy-free and torch-free: the robot computer
reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from lompo_core.data.dataset import file_sha256 as sha256_file  # noqa: F401  (re-exported)
from lompo_core.errors import PolicyError

SCHEMA_VERSION = 1
ONNX_FILE = "policy.onnx"
SIDECAR_FILE = "policy.json"
MANIFEST_FIELD = "manifest_sha256"
MANIFEST_PREFIX = b"lompo policy manifest v1\n"
MAX_CONTROL_RATE_HZ = 1000.0
MAX_CAMERA_SIDE = 4096
MAX_DIM = 2**24  # elements in any one input or output of the step

# The recurrent step's interface, in the order of PolicyStep.forward and its outputs. ONNX names
# must be unique across inputs and outputs, hence the ``_next`` suffix on the new state.
INPUT_NAMES = ("image", "prev_action", "deter", "stoch")
# The image signals of the out-of-distribution gate, each with a sidecar field
# ``<name>_threshold`` calibrated at export (and ``<name>_calibration``, how).
IMAGE_SIGNALS = ("surprise", "reconstruction_error", "reconstruction_patch_error")
# Signals not read on an episode's first frame: the surprise there is measured against the
# model's initial prior, which predicts no particular image (about 20x its later median).
FIRST_FRAME_EXEMPT = ("surprise",)
LEGACY_OUTPUT_NAMES = ("action", "deter_next", "stoch_next", "uncertainty")
OUTPUT_NAMES = (*LEGACY_OUTPUT_NAMES, *IMAGE_SIGNALS)
# A policy exported before the image signals, or before some of them, still loads: the gate
# reads the signals it has (none: the gate is off). Each is a prefix of OUTPUT_NAMES.
ACCEPTED_OUTPUT_NAMES = tuple(
    OUTPUT_NAMES[:n] for n in range(len(OUTPUT_NAMES), len(LEGACY_OUTPUT_NAMES) - 1, -1)
)

REQUIRED_FIELDS = (
    "schema_version",
    "onnx_file",
    "onnx_sha256",
    "inputs",
    "outputs",
    "preprocessing",
    "action",
    "uncertainty_threshold",
)


def read_sidecar(policy_dir: Path) -> dict[str, Any]:
    """Load and check ``policy.json``'s structure; raise PolicyError naming the field at fault."""
    path = Path(policy_dir) / SIDECAR_FILE
    if not Path(policy_dir).is_dir():
        raise PolicyError(f"{policy_dir}: policy folder not found")
    if not path.is_file():
        raise PolicyError(f"{path}: missing; is {policy_dir} a folder made by lompo export?")
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict):
        raise PolicyError(f"{path}: expected a JSON object, got {type(sidecar).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in sidecar]
    if missing:
        raise PolicyError(f"{path}: missing field(s) {', '.join(missing)}")
    if sidecar["schema_version"] != SCHEMA_VERSION:
        raise PolicyError(
            f"{path}: schema_version {sidecar['schema_version']!r}, "
            f"this lompo reads {SCHEMA_VERSION}; re-export the policy with this version"
        )
    for key, accepted in (("inputs", (INPUT_NAMES,)), ("outputs", ACCEPTED_OUTPUT_NAMES)):
        specs = sidecar[key]
        if not isinstance(specs, list):
            raise PolicyError(f"{path}: field {key!r} must be a list, got {type(specs).__name__}")
        got = [s.get("name") if isinstance(s, dict) else None for s in specs]
        if tuple(got) not in accepted:
            expected = " or ".join(str(list(names)) for names in accepted)
            raise PolicyError(f"{path}: field {key!r} names {got}, expected {expected}")
        for spec in specs:
            shape, dtype = spec.get("shape"), spec.get("dtype")
            if not (
                isinstance(shape, list)
                and shape
                and all(
                    isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM
                    for d in shape
                )
                and math.prod(shape) <= MAX_DIM
            ):
                raise PolicyError(f"{path}: {key} {spec['name']!r} has a bad shape {shape!r}")
            if dtype not in ("uint8", "float32"):
                raise PolicyError(f"{path}: {key} {spec['name']!r} has a bad dtype {dtype!r}")
    _check_action(path, sidecar)
    _check_threshold(path, sidecar, "uncertainty")
    for signal in image_signals(sidecar):
        if f"{signal}_threshold" not in sidecar:
            raise PolicyError(
                f"{path}: missing field '{signal}_threshold' (the policy outputs {signal!r})"
            )
        _check_threshold(path, sidecar, signal)
    rate = sidecar.get("control_rate_hz")
    if rate is not None and not (_number(rate) and 0 < rate <= MAX_CONTROL_RATE_HZ):
        raise PolicyError(
            f"{path}: field 'control_rate_hz' must be null or a number in "
            f"(0, {MAX_CONTROL_RATE_HZ:g}], got {rate!r}"
        )
    for field in ("onnx_sha256", MANIFEST_FIELD):
        value = sidecar.get(field)
        if (field in sidecar or field == "onnx_sha256") and not _is_sha256(value):
            raise PolicyError(f"{path}: field {field!r} must be 64 hex digits, got {value!r}")
    camera_size(path, sidecar)  # refuses a malformed dataset.camera
    return sidecar


def _number(x: Any) -> bool:
    """A finite JSON number (not a bool, which json and Python count as an int)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_sha256(x: Any) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


def _check_action(path: Path, sidecar: dict[str, Any]) -> None:
    action = sidecar["action"]
    if not isinstance(action, dict):
        raise PolicyError(f"{path}: field 'action' must be a mapping, got {action!r}")
    names, maxima, unit = action.get("names"), action.get("max"), action.get("unit", "")
    if not (
        isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)
    ):
        raise PolicyError(f"{path}: field 'action.names' must be a list of names, got {names!r}")
    if len(set(names)) != len(names):
        raise PolicyError(f"{path}: field 'action.names' repeats a name: {names!r}")
    if not isinstance(unit, str):
        raise PolicyError(f"{path}: field 'action.unit' must be a string, got {unit!r}")
    if not (
        isinstance(maxima, list)
        and len(maxima) == len(names)
        and all(_number(m) and m > 0 for m in maxima)
    ):
        raise PolicyError(
            f"{path}: field 'action.max' must hold one finite number > 0 per name in "
            f"'action.names' ({len(names)}), got {maxima!r}"
        )
    for key, port in (("inputs", "prev_action"), ("outputs", "action")):
        shape = shapes(sidecar, key)[port][0]
        if shape[-1] != len(names):
            raise PolicyError(
                f"{path}: {key} {port!r} has {shape[-1]} values but field 'action.names' "
                f"names {len(names)}"
            )


def image_signals(sidecar: dict[str, Any]) -> tuple[str, ...]:
    """The image signals the policy outputs: all of IMAGE_SIGNALS, or none (exported before)."""
    names = tuple(s.get("name") for s in sidecar["outputs"])
    return tuple(n for n in IMAGE_SIGNALS if n in names)


def _check_threshold(path: Path, sidecar: dict[str, Any], signal: str) -> None:
    """``<signal>_threshold`` is finite, > 0 and within the calibration it says it came from."""
    field = f"{signal}_threshold"
    threshold = sidecar[field]
    if not (_number(threshold) and threshold > 0):
        raise PolicyError(f"{path}: field {field!r} must be a finite number > 0, got {threshold!r}")
    calibration = sidecar.get(f"{signal}_calibration")
    if calibration is None:
        return
    top = calibration.get("max") if isinstance(calibration, dict) else None
    if not (_number(top) and top > 0):
        raise PolicyError(
            f"{path}: field '{signal}_calibration.max' must be a finite number > 0, got {top!r}"
        )
    # A percentile of the calibration's values cannot exceed their maximum.
    if threshold > top * (1 + 1e-6):
        raise PolicyError(
            f"{path}: field {field!r} {threshold!r} is above the calibration's "
            f"maximum {top!r} ('{signal}_calibration.max'): not a percentile of it"
        )


def camera_size(path: Path, sidecar: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) of the camera the training data came from, if the sidecar says."""
    dataset = sidecar.get("dataset")
    camera = dataset.get("camera") if isinstance(dataset, dict) else None
    if camera is None:
        return None
    size = (camera.get("width"), camera.get("height")) if isinstance(camera, dict) else None
    if size is None or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_CAMERA_SIDE for v in size
    ):
        raise PolicyError(
            f"{path}: field 'dataset.camera' must hold a width and height in "
            f"[1, {MAX_CAMERA_SIDE}], got {camera!r}"
        )
    return size[0], size[1]


def manifest_sha256(sidecar: dict[str, Any], onnx_bytes: bytes) -> str:
    """The sha256 that binds ``policy.onnx`` and ``policy.json`` into one unit.

    Over a fixed prefix, the onnx file's own sha256 and the sidecar as canonical JSON (sorted
    keys, no spaces) without the ``manifest_sha256`` field itself: changing either file, even a
    threshold or a crop in the sidecar alone, changes it. It detects edits that forget it; an
    attacker who can write both files can rewrite it too, so a launch can pin the value it
    expects (``PolicyRuntime(expected_sha256=...)``).
    """
    body = {k: v for k, v in sidecar.items() if k != MANIFEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    h = hashlib.sha256(MANIFEST_PREFIX)
    h.update(hashlib.sha256(onnx_bytes).digest())
    h.update(canonical.encode("ascii"))
    return h.hexdigest()


def shapes(sidecar: dict[str, Any], key: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of the sidecar's ``inputs`` or ``outputs``."""
    return {s["name"]: (tuple(s["shape"]), s["dtype"]) for s in sidecar[key]}
