"""What one runtime step returns; kept apart so the controller needs no onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A step whose reason starts with this saw NaN or Inf in its input or its output. The controller
# halts on it rather than merely skipping the step: non-finite numbers mean a broken sensor or a
# broken model, and neither fixes itself on the next frame.
NONFINITE = "nonfinite"


@dataclass
class RuntimeResult:
    ok: bool
    reason: str  # "ok" or why not, e.g. "decode: unsupported encoding 'yuv422'"
    action: np.ndarray  # float32 [A], normalised [-1, 1]; zeros when not ok
    uncertainty: float  # nan when not ok
    # The image signals of the out-of-distribution gate (PolicyStep): None when the policy has no
    # such output (exported before them) or the step failed.
    surprise: float | None = None  # KL(posterior || prior), nats
    reconstruction_error: float | None = None  # decoder's mean squared error, [-0.5, 0.5] scale
    reconstruction_patch_error: float | None = None  # the same over the worst 8x8 patch
    model_image: np.ndarray | None = None  # the 64x64x3 uint8 the model saw
    latency_s: float = 0.0

    @classmethod
    def failure(
        cls,
        reason: str,
        action_dim: int,
        model_image: np.ndarray | None = None,
        latency_s: float = 0.0,
    ) -> RuntimeResult:
        return cls(
            ok=False,
            reason=reason,
            action=np.zeros(action_dim, np.float32),
            uncertainty=float("nan"),
            model_image=model_image,
            latency_s=latency_s,
        )
