"""MIP-IN: maps per second of a fitted inverse (one tapped forward and one inverse forward per batch) against raw
forwards per second on the same model and batch."""
from __future__ import annotations

import platform
import statistics
import time

import numpy as np
import onnxruntime as ort

from ..backends.sessions import session_options
from ..classifier import OnnxClassifier
from .throughput import cores, raw_throughput


def maps_per_second(args) -> int:
    """MIP-IN maps per second (one tapped forward and one inverse forward per batch of images, one class each,
    maps resized to the input) against raw forwards per second, alternating rounds in one process."""
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..methods.mipin import MIPIN

    clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device)
    method = MIPIN(clf, args.inverse)
    B = args.batch_size
    images = np.random.default_rng(0).integers(0, 256, (B, *clf.pre.size, 3), dtype=np.uint8)
    method.batch_maps(images)  # warm-up
    raw, maps = [], []
    for _ in range(args.rounds):
        raw.append(raw_throughput(clf, B, session_options()))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 4.0:
            method.batch_maps(images)
            n += B
        maps.append(n / (time.perf_counter() - t0))
    r, m = statistics.median(raw), statistics.median(maps)
    print(f"machine     {platform.processor() or platform.machine()}, {cores()} cores, onnxruntime {ort.__version__} "
          f"{clf.session.get_providers()[0]}")
    print(f"model       {clf.model_path}  batch {B}; inverse {method.inverse_path} (map layer "
          f"{method.card['map_shape']})")
    print(f"raw ORT     {r:8.1f} forwards/s   (rounds: {', '.join(f'{v:.1f}' for v in raw)})")
    print(f"MIP-IN      {m:8.1f} maps/s       (rounds: {', '.join(f'{v:.1f}' for v in maps)}; one class per image, "
          f"tapped forward + inverse + resize)")
    print(f"ratio       {m / r:8.3f}   (maps/s ÷ raw forwards/s; goal ≥ 0.5)")
    return 0
