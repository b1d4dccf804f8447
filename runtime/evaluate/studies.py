"""The studies of `infolens eval benchmark`, by name (STUDIES, in report order), built with the benchmark's settings
(`build`).  Each lives in its own room: removal.py (removal, grids), pointing.py, indist.py, negative.py (Fig. 10),
randomization.py (sanity, Figs. 15, 24; cause), settings.py (samples, Fig. 23; patch, Fig. 22) and mipin.py;
benchmark.py runs them and assembles the report."""
from __future__ import annotations

from .. import params
from ..errors import InfolensError
from .benchmark import Study
from .indist import IndistStudy
from .maps import CONTROLS
from .mipin import MipinStudy
from .negative import NegativeStudy
from .pointing import PointingStudy
from .randomization import CauseStudy, SanityStudy
from .grids import GridStudy
from .removal import RemovalStudy
from .settings import PatchStudy, SamplesStudy


STUDIES = ("removal", "grids", "pointing", "indist", "negative", "sanity", "cause", "samples", "patch", "mipin")


def build(names, classifier, samplers, methods, K, stride, samples, rise_masks, steps, fills, seed, batch_size,
          sanity_every=10, counts=(1, 2, 4, 8, 16), sizes=(8, 16, 32), negative_steps=10, fill_draws=4, smooth=8.0,
          mosaics=100, targets=("pred",), min_p=0.5, shrink=True, scales=(), extra_photos=50, grid_photos=50,
          grids=((16, 8, 8), (8, 4, 4)), fit_data=(), sanity_crops=256, indist_photos=50, evaluator=None,
          cell=24) -> list[Study]:
    """The studies `names` (of STUDIES, in that order) with the benchmark's settings; `samplers[0]` is the
    reference sampler of every study after the removal and pointing ones."""
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise InfolensError(f"unknown study {unknown[0]!r}: choose from {', '.join(STUDIES)}", "studies")
    params.check("sanity_every", sanity_every)
    params.check("negative_steps", negative_steps)
    common = dict(sampler=samplers[0], K=K, stride=stride, seed=seed, batch_size=batch_size)
    # the N and K studies compare settings of one map, under the fills that cost one forward per step
    cheap = tuple(f for f in fills if f in ("blur", "black", "mean")) or ("blur",)
    make = {
        "removal": lambda: RemovalStudy(classifier, samplers, methods, K, stride, samples, rise_masks, steps, fills,
                                        fill_draws, smooth, shrink, scales, targets, seed, batch_size,
                                        extra_photos),
        # the maps that take a grid: the first sampler, the two in-fills that carry nothing or little of the patch,
        # and black, which leads the pointing game
        "grids": lambda: GridStudy(classifier, list(dict.fromkeys((samplers[0], "mean", "ring-mean", "black"))),
                                   [m for m in methods if m in ("occlusion", "cam", *CONTROLS)], grids, grid_photos,
                                   rise_masks, steps, fills, fill_draws, targets, seed, batch_size),
        "pointing": lambda: PointingStudy(classifier, samplers, methods, K, stride, samples, rise_masks, smooth,
                                          mosaics, min_p, shrink, scales, seed, batch_size),
        "indist": lambda: IndistStudy(classifier, samplers, methods, K, stride, samples, rise_masks, fills,
                                      fill_draws, smooth, shrink, scales, evaluator, cell, indist_photos, seed,
                                      batch_size),
        "negative": lambda: NegativeStudy(classifier, samples=samples, steps=negative_steps,
                                          fills=tuple(dict.fromkeys(("patchsampler", *cheap))), **common),
        "sanity": lambda: SanityStudy(classifier, samples=samples, rise_masks=rise_masks, every=sanity_every,
                                      methods=[m for m in methods if m not in CONTROLS], **common),
        "cause": lambda: CauseStudy(classifier, samples=samples, **common),
        "samples": lambda: SamplesStudy(classifier, counts=list(counts), steps=steps, fills=cheap, **common),
        "patch": lambda: PatchStudy(classifier, sizes=list(sizes), samples=samples, steps=steps, fills=cheap,
                                    samplers=[samplers[0], "mean"], seed=seed, batch_size=batch_size, reference=K),
        "mipin": lambda: MipinStudy(classifier, samples=samples, steps=steps, fit_data=fit_data,
                                    sanity_crops=sanity_crops, **common),
    }
    return [make[n]() for n in STUDIES if n in names]


__all__ = ["STUDIES", "build", "NegativeStudy", "SanityStudy", "CauseStudy", "SamplesStudy", "PatchStudy"]
