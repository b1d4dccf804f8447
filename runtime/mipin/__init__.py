"""MIP-IN (Deng et al.; DESIGN §8): a learned linear inverse of a classifier's top layers, masked by the forward ReLU
pattern, gives a class map in one pass.  part.py: which part of any ONNX graph is inverted, and its taps."""
