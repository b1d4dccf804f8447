"""Where the classifier runs: session creation (sessions.py) and the perturbation batch each backend provides
(cpu.py: in-fills composited into a host batch; composer.py: an ONNX graph composes the batch on the classifier's
device, handed over by IO binding).  The backend is chosen here (`choose`, `perturbation_batch`), not by the
classifier."""
from __future__ import annotations

import weakref

from .. import params
from ..errors import InfolensError

_COMPOSERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # classifier → {(capacity, K): batch}


def choose(name: str, placement) -> str:
    """The batch backend `name` ("auto" | "host" | "composer") for a backends.sessions.Placement:
    "auto" is the composer on CUDA (only in-fills and offsets cross the bus) and the host batch on the CPU."""
    name = params.check("batch_backend", name)
    if name == "auto":
        name = "composer" if placement.device == "cuda" else "host"
    if placement.cuda_graph and name != "composer":
        raise InfolensError("CUDA graphs replay the composer's batches: use --batch-backend composer (or auto)",
                            "cuda_graph")
    return name


def composers(classifier) -> dict:
    """The composer batches made for `classifier` so far, by (capacity, K): one per shape, reused image after image
    for the classifier's life."""
    return _COMPOSERS.setdefault(classifier, {})


def perturbation_batch(classifier, base, capacity: int, K: int, ys=None, xs=None):
    """A batch of `capacity` copies of the normalized image `base` (one row of `classifier.normalize`) to write K×K
    in-fills into and classify.  Where the classifier's `incremental` says so (incremental.decide; ys, xs: every
    patch position the batch will see), each copy runs through graphs that recompute only what its patch changes
    (incremental/); else by its `batch_backend`: "host" composites in numpy/C++ (cpu.py); "composer" composes by
    an ONNX graph on the classifier's device, bound to it (composer.py; made once per classifier, capacity and K, its
    device buffers reused image after image).  A model of fixed batch size uses the host batch unless incremental."""
    if ys is not None and classifier.incremental != "off":
        from .incremental import IncrementalPerturbationBatch, decide

        if decide(classifier, K, ys, xs):
            return IncrementalPerturbationBatch(classifier, base, capacity, K, ys, xs)
    if classifier.batch_backend == "composer" and not classifier.batch_limit:
        from .composer import ComposerPerturbationBatch

        made = composers(classifier)
        if (capacity, K) not in made:
            made[(capacity, K)] = ComposerPerturbationBatch(classifier, base, capacity, K)
        return made[(capacity, K)].load(base)
    from .cpu import CpuPerturbationBatch

    return CpuPerturbationBatch(classifier, base, capacity, K)
