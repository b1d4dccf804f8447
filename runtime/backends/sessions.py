"""Every ONNX Runtime session infolens opens is made here: providers per device and the session options."""
from __future__ import annotations

import onnxruntime as ort

from .. import params
from ..errors import InfolensError


def providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for a device ("cpu" or "cuda", checked)."""
    if params.check("device", device) == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InfolensError("device cuda: this onnxruntime has no CUDAExecutionProvider "
                            "(install infolens[gpu] instead of infolens[cpu])", "device")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session_options() -> ort.SessionOptions:
    """Options for every session infolens opens.

    Workers spin-wait inside a run (ONNX Runtime's default, faster than sleeping between ops) but stop when the run
    returns (`session.force_spinning_stop`): between two classifier calls the loop samples and composites on the same
    cores, and workers still spinning would steal them (measured with spinning left on: the Gaussian sampler ran 20×
    slower).

    ONNX Runtime logs only fatal errors (severity 4): its warnings (e.g. VerifyOutputSizes for a graph whose
    declared output shape is off) and its error lines arrive coloured on stderr before, and in place of, infolens's
    own one-line messages — and some errors are expected (a batch-size relaxation tried and refused: seen on the
    densenet121 of onnx's test data).  A real failure still raises, and the caller's error quotes it.
    """
    so = ort.SessionOptions()
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 4
    return so


def open_session(source, providers: list[str]) -> ort.InferenceSession:
    """A session on a model file path or serialized model bytes, with `session_options()`; ONNX Runtime's own
    exceptions pass through (callers turn them into one-line errors naming their model)."""
    return ort.InferenceSession(source, session_options(), providers=providers)
