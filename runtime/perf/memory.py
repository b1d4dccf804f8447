"""Memory: the peak resident memory of one explanation at several strides, each in a fresh process — it does not grow
with the number of positions (the maps are reduced as the batches stream; incremental inference plans one position
per class of the network's period)."""
from __future__ import annotations

import time

import numpy as np

from ..classifier import OnnxClassifier
from ..methods import Explainer
from ..samplers import load_sampler


def rss_table(args) -> int:
    import multiprocessing

    print(f"peak RSS of one explain: sampler {args.sampler} K={args.K} N={args.N} top-3, batch {args.batch_size}, "
          f"incremental {args.incremental}, {args.model or 'shipped EfficientNet-Lite0'}")
    print(f"{'S':>4} {'positions':>9} {'forwards':>9} {'seconds':>8} {'peak RSS MB':>12}")
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for S in args.rss:
            row = pool.apply(_one_explain_rss, (args.model, args.sampler, args.K, S, args.N, args.batch_size,
                                                args.device, args.incremental))
            print(f"{S:>4} {row[0]:>9} {row[1]:>9} {row[2]:>8.1f} {row[3]:>12.1f}")
    return 0


def _one_explain_rss(model, sampler, K, S, N, batch_size, device, incremental="off") -> tuple:
    """In a fresh process: explain a seeded random image; positions, forwards, seconds and the peak RSS (MB)."""
    import resource

    from ..catalog import DEFAULT_CLASSIFIER, shipped

    clf = OnnxClassifier.from_card(model or shipped(DEFAULT_CLASSIFIER, "model"), device=device,
                                   incremental=incremental)
    ex = Explainer(clf, load_sampler(sampler, K=K, device=device), batch_size=batch_size)
    image = np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    e = ex.explain(image, classes="top3", stride=S, samples=N)
    return (e.params["positions"], e.forwards, time.perf_counter() - t0,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
