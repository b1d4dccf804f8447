"""Opening the classifier's graph: its session, in-memory edits, and a fixed batch dimension relaxed where it can be."""
from __future__ import annotations

import os

import numpy as np

from ..catalog import shipped_names
from ..errors import InfolensError


def open_classifier(path: str, where, edit=None):
    """Session plus batch limit: None when any batch size runs, else the fixed batch size to pad/split to.
    where: a backends.sessions.Placement; edit: ModelProto → ModelProto applied in memory before opening (the file
    is not changed).

    A fixed batch dimension is first rewritten to a symbolic one (the common export accident); the rewrite is kept
    only if a two-image batch then gives the same answers as two single-image calls.
    """
    if not os.path.isfile(path):
        raise InfolensError(f"model file not found: {path} (or name a shipped model: {', '.join(shipped_names())})",
                            "model")
    try:
        source = path if edit is None else edit(load_graph(path)).SerializeToString()
        session = where.open(source)
    except InfolensError:
        raise
    except Exception as e:
        raise InfolensError(f"cannot load ONNX model {path}: {first_line(e)}", "model") from None
    limit = fixed_batch(session)
    if limit is None:
        return session, None
    relaxed = _relax_batch(path, where, session, edit)
    return (relaxed, None) if relaxed is not None else (session, limit)


def fixed_batch(session) -> int | None:
    """The session's fixed batch size, or None when its first input takes any batch."""
    dim0 = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None
    return dim0 if isinstance(dim0, int) else None


def load_graph(path: str):
    """The ModelProto of an ONNX file (the onnx package is imported only here, where a graph is edited)."""
    import onnx

    return onnx.load(path)


def _relax_batch(path, where, fixed, edit=None):
    model = load_graph(path)
    if edit is not None:
        model = edit(model)
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    try:
        session = where.open(model.SerializeToString())
        inp = session.get_inputs()[0]
        shape = [2] + [d if isinstance(d, int) else 1 for d in fixed.get_inputs()[0].shape[1:]]
        dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        x = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
        both = session.run(None, {inp.name: x})[0]
        one = np.concatenate([fixed.run(None, {inp.name: x[i:i + 1]})[0] for i in range(2)])
        return session if both.shape == one.shape and np.allclose(both, one, rtol=1e-4, atol=1e-5) else None
    except Exception:  # any failure of the relaxed graph means: keep the fixed batch and split calls
        return None


def pick(args, name, what, param):
    """The graph input or output (`what`) named `name`, or the first; an InfolensError naming `param` otherwise."""
    if name is None:
        if what == "input" and len(args) > 1:
            raise InfolensError(f"model has {len(args)} inputs ({', '.join(a.name for a in args)}); "
                                f"infolens needs exactly one image input", param)
        return args[0]
    for a in args:
        if a.name == name:
            return a
    raise InfolensError(f"model has no {what} named {name!r}; it has {', '.join(a.name for a in args)}", param)


def first_line(e: Exception) -> str:
    """An exception's message as one line (ONNX Runtime's run over several)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
