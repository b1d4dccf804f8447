"""Shipped ONNX models and their JSON cards (package data of `infolens.models`); see models/README.md."""
