"""Every ONNX Runtime session infolens opens is made here: where it runs (a `Placement`: device, provider, CUDA
graphs, CPU fallback) and the session options."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import onnxruntime as ort

from .. import params
from ..errors import InfolensError


@dataclass(frozen=True)
class Placement:
    """Where sessions run.  device "cpu" | "cuda"; provider "default" (the device's own: CPU or CUDA) | "tensorrt"
    (TensorRT first, CUDA for what it does not take; the classifier only, helper graphs stay on CUDA);
    cuda_graph: sessions opened with `graph=True` capture CUDA graphs (their inputs and outputs must be bound to the
    same device buffers on every run); cpu_fallback: on CUDA, let ops without a CUDA kernel run on the CPU (off:
    such an op is an error when the session opens, not a silent slowdown); fp16: TensorRT builds fp16 engines (the
    other providers get a converted graph from the classifier instead).  session_options, providers_given: a user's
    own onnxruntime.SessionOptions and providers list, used instead of infolens's (`options`, `providers`) for the
    classifier's sessions; helper graphs keep infolens's."""

    device: str = "cpu"
    provider: str = "default"
    cuda_graph: bool = False
    cpu_fallback: bool = False
    fp16: bool = False
    session_options: object = field(default=None, compare=False)
    providers_given: tuple | None = None

    def __post_init__(self):
        params.check("device", self.device)
        params.check("provider", self.provider)
        if self.device == "cpu" and self.provider != "default":
            raise InfolensError(f"provider {self.provider} needs device cuda", "provider")
        if self.device == "cpu" and self.cuda_graph:
            raise InfolensError("CUDA graphs need device cuda", "cuda_graph")

    def helper(self) -> "Placement":
        """The placement of helper graphs (samplers, the composer, MIP-IN inverses): the same device, CUDA's own
        provider, no TensorRT fp16 engines."""
        return replace(self, provider="default", fp16=False, session_options=None, providers_given=None)

    def providers(self, graph: bool = False) -> list:
        """`providers` for ort.InferenceSession, with provider options."""
        if self.providers_given is not None:  # ONNX Runtime would only warn and fall back to the CPU
            have = ort.get_available_providers()
            for p in self.providers_given:
                name = p if isinstance(p, str) else p[0]
                if name not in have:
                    raise InfolensError(f"this onnxruntime ({ort.__version__}) has no {name}; it has "
                                        f"{', '.join(have)}", "providers")
            return list(self.providers_given)
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        needed = "TensorrtExecutionProvider" if self.provider == "tensorrt" else "CUDAExecutionProvider"
        if needed not in ort.get_available_providers():
            raise InfolensError(f"this onnxruntime ({ort.__version__}) has no {needed}: install infolens[gpu] "
                                "instead of infolens[cpu] (see the README's GPU section)",
                                "provider" if self.provider == "tensorrt" else "device")
        _preload_cuda()
        cuda = {"device_id": "0"}
        if graph and self.cuda_graph:
            cuda["enable_cuda_graph"] = "1"
        chain = [("CUDAExecutionProvider", cuda)]
        if self.provider == "tensorrt":
            from ..catalog import cache_dir

            cache = cache_dir("trt")
            os.makedirs(cache, exist_ok=True)
            chain.insert(0, ("TensorrtExecutionProvider", {
                "device_id": "0", "trt_fp16_enable": "True" if self.fp16 else "False",
                "trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
                "trt_cuda_graph_enable": "True" if graph and self.cuda_graph else "False"}))
        if self.cpu_fallback:
            chain.append("CPUExecutionProvider")
        return chain

    def options(self) -> ort.SessionOptions:
        if self.session_options is not None:
            return self.session_options
        return session_options(strict=self.device == "cuda" and not self.cpu_fallback)

    def open(self, source, graph: bool = False) -> ort.InferenceSession:
        """A session on a model path or serialized model bytes.  ONNX Runtime's own exceptions pass through (callers
        name their model), except an op refused by the strict CUDA placement, which is an InfolensError naming
        --allow-cpu-fallback, and TensorRT asked for but not loaded."""
        try:
            session = ort.InferenceSession(source, self.options(), providers=self.providers(graph))
        except InfolensError:
            raise
        except Exception as e:
            text = str(e)
            if self.device == "cuda" and not self.cpu_fallback and "fallback" in text.lower():
                raise InfolensError(f"some ops have no CUDA kernel and would run on the CPU "
                                    f"({text.strip().splitlines()[0][:300]}); allow it with --allow-cpu-fallback",
                                    "cpu_fallback") from None
            raise
        if self.provider == "tensorrt" and "TensorrtExecutionProvider" not in session.get_providers():
            raise InfolensError("TensorRT did not load (its libraries, libnvinfer*, are not on the library path)",
                                "provider")
        return session


def _preload_cuda() -> None:
    """Load CUDA and cuDNN from the nvidia-* pip packages (what infolens[gpu] installs) before the CUDA provider
    looks for them on the library path, once; where the system provides them instead, this finds nothing and the
    provider loads them itself."""
    global _PRELOADED
    if not _PRELOADED and hasattr(ort, "preload_dlls"):  # onnxruntime-gpu ≥ 1.21
        _PRELOADED = True
        try:
            ort.preload_dlls()
        except Exception:  # best effort: the provider's own error, if any, comes when the session opens
            pass


_PRELOADED = False


def placement(where) -> Placement:
    """A Placement from a Placement or a device name ("cpu" | "cuda", with the defaults)."""
    return where if isinstance(where, Placement) else Placement(device=where)


_THREADS: int | None = None


def use_threads(n: int | None) -> None:
    """ONNX Runtime's intra-op threads for every session this process opens from now on (None: its default, one
    per core).  A process that shares the machine with others like it — a Ray actor holding one CPU slot — takes
    as many as its slot has: each spreading its sessions over every core would oversubscribe them, and one thread
    per process runs more forwards per second in all than one process on every core (measured on 2 cores with the
    shipped classifier, batch 64: two one-thread processes 108 images/s together, one two-thread process 102, two
    two-thread processes 89)."""
    global _THREADS
    _THREADS = None if n is None else max(1, int(n))


def session_options(strict: bool = False) -> ort.SessionOptions:
    """Options for every session infolens opens.

    Workers spin-wait inside a run (ONNX Runtime's default, faster than sleeping between ops) but stop when the run
    returns (`session.force_spinning_stop`): between two classifier calls the loop samples and composites on the same
    cores, and workers still spinning would steal them (measured with spinning left on: the Gaussian sampler ran 20×
    slower).

    ONNX Runtime logs only fatal errors (severity 4): its warnings (e.g. VerifyOutputSizes for a graph whose
    declared output shape is off) and its error lines arrive coloured on stderr before, and in place of, infolens's
    own one-line messages — and some errors are expected (a batch-size relaxation tried and refused: seen on the
    densenet121 of onnx's test data).  A real failure still raises, and the caller's error quotes it.

    strict: no op may fall back to the CPU provider (`session.disable_cpu_ep_fallback`; DESIGN §11: on a GPU a
    CPU op means a device round trip per call).  Intra-op threads: `use_threads`.
    """
    so = ort.SessionOptions()
    so.add_session_config_entry("session.force_spinning_stop", "1")
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.log_severity_level = 4
    if _THREADS is not None:
        so.intra_op_num_threads = _THREADS
    return so


def open_session(source, where="cpu", graph: bool = False) -> ort.InferenceSession:
    """`placement(where).open(source, graph)`."""
    return placement(where).open(source, graph)
