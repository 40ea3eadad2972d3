"""The exported policy's sidecar, ``policy.json``: its schema and the checks both sides share.

The exporter writes it and the runtime refuses to run a policy whose sidecar does not match it or
its ``policy.onnx``. numpy-free and torch-free: the robot computer reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lompo_core.data.dataset import file_sha256 as sha256_file  # noqa: F401  (re-exported)
from lompo_core.errors import PolicyError

SCHEMA_VERSION = 1
ONNX_FILE = "policy.onnx"
SIDECAR_FILE = "policy.json"

# The recurrent step's interface, in the order of PolicyStep.forward and its outputs. ONNX names
# must be unique across inputs and outputs, hence the ``_next`` suffix on the new state.
INPUT_NAMES = ("image", "prev_action", "deter", "stoch")
OUTPUT_NAMES = ("action", "deter_next", "stoch_next", "uncertainty")

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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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
    for key, names in (("inputs", INPUT_NAMES), ("outputs", OUTPUT_NAMES)):
        specs = sidecar[key]
        got = [s.get("name") if isinstance(s, dict) else None for s in specs or []]
        if tuple(got) != names:
            raise PolicyError(f"{path}: field {key!r} names {got}, expected {list(names)}")
        for spec in specs:
            shape, dtype = spec.get("shape"), spec.get("dtype")
            if not (isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape)):
                raise PolicyError(f"{path}: {key} {spec['name']!r} has a bad shape {shape!r}")
            if dtype not in ("uint8", "float32"):
                raise PolicyError(f"{path}: {key} {spec['name']!r} has a bad dtype {dtype!r}")
    action = sidecar["action"]
    if not (
        isinstance(action, dict)
        and isinstance(action.get("names"), list)
        and isinstance(action.get("max"), list)
        and len(action["names"]) == len(action["max"]) > 0
        and all(isinstance(m, (int, float)) and math.isfinite(m) and m > 0 for m in action["max"])
    ):
        raise PolicyError(
            f"{path}: field 'action' must hold 'names', 'unit' and 'max' (positive, one per name), "
            f"got {action!r}"
        )
    threshold = sidecar["uncertainty_threshold"]
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise PolicyError(f"{path}: field 'uncertainty_threshold' must be >= 0, got {threshold!r}")
    return sidecar


def shapes(sidecar: dict[str, Any], key: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of the sidecar's ``inputs`` or ``outputs``."""
    return {s["name"]: (tuple(s["shape"]), s["dtype"]) for s in sidecar[key]}
