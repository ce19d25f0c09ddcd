"""Interop with the rest of the ecosystem: ONNX export and import, PyTorch checkpoints."""
