"""Serving an exported policy: onnxruntime, numpy and OpenCV only (a robot computer has no torch).

``PolicyRuntime`` turns images into actions; ``Controller`` decides what reaches the robot.
"""

from lompo_core.runtime.controller import Controller, ControllerConfig, Decision
from lompo_core.runtime.policy_runtime import PolicyRuntime
from lompo_core.runtime.result import RuntimeResult

__all__ = ["Controller", "ControllerConfig", "Decision", "PolicyRuntime", "RuntimeResult"]
