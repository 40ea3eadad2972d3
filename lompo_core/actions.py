"""The action contract: normalised actions in [-1, 1]^A and the physical commands they stand for.

Datasets, policies and the sim all hold normalised actions; the dataset's metadata and the
exported policy's sidecar carry the scaling to physical units. The runtime on a robot imports
this module, so it imports nothing but numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionScaling:
    """How a normalised action maps to a physical command: ``value * max_speed`` in ``unit``."""

    names: tuple[str, ...]
    unit: str
    max_speed: tuple[float, ...]

    def to_physical(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(action, np.float64) * np.asarray(self.max_speed)

    def to_normalised(self, command: np.ndarray) -> np.ndarray:
        return np.asarray(command, np.float64) / np.asarray(self.max_speed)

    def within_norm(self, action: np.ndarray, limit: float, margin: float = 0.0) -> np.ndarray:
        """``action``, scaled down to ``limit * (1 - margin)`` where its physical command's
        Euclidean norm is above ``limit`` (the direction kept), else unchanged: how the
        controller limits an m/s command, and how ``lompo collect`` records one."""
        command = self.to_physical(action)
        norm = float(np.sqrt(np.sum(command * command)))
        return action * (limit / norm * (1 - margin)) if norm > limit else action

    def as_dict(self) -> dict:
        return {"names": list(self.names), "unit": self.unit, "max": list(self.max_speed)}
