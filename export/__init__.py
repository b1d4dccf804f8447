"""Training and ONNX export of the models shipped in models/ (needs the `train` extra: torch)."""
