"""Export a trained run to ONNX with its sidecar, and check it against torch."""
