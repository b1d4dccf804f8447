"""Where the classifier runs: session creation (sessions.py) and the perturbation batch each backend provides
(cpu.py: in-fills composited into a host batch; composer.py: an ONNX graph composes the batch on the classifier's
device, handed over by IO binding)."""
