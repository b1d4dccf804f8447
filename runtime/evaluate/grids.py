"""The `grids` study of `infolens eval benchmark`: the removal study (removal.py) at other patch grids, for the few
maps that take a grid, on some of the photos — whether a map's standing holds at the CLI's setting and at the
PatchSampler's best scale, not only at the benchmark's."""
from __future__ import annotations

import dataclasses

from .benchmark import Study
from .removal import FILL_DEFAULTS, RemovalStudy, removal_section, srg_over_fills, table
from .stats import compare, fmt_ci, fmt_p, fmt_signed


class GridStudy(RemovalStudy):
    """The removal study at other grids, on `grid_photos` of the photos: grids, (K, S, N) each — by default the
    CLI's (16, 8, 8) and (8, 4, 4), the PatchSampler's best scale — for the few maps that take a grid; the
    PatchSampler fill at each grid's K.  The other keywords are RemovalStudy's (no smoothed copies, no
    candidates)."""

    name, every_photo = "grids", False

    def __init__(self, classifier, samplers, methods=("occlusion", "cam", "random", "edge"),
                 grids=((16, 8, 8), (8, 4, 4)), grid_photos=50, rise_masks=1000, steps=10, fills=FILL_DEFAULTS,
                 fill_draws=4, targets=("pred",), seed=0, batch_size=64):
        from .. import params

        for K, S, N in grids:
            params.check("K", K), params.check("stride", S), params.check("samples", N)
        params.check("grid_photos", grid_photos)
        super().__init__(classifier, samplers, methods, grids[0][0], grids[0][1], grids[0][2], rise_masks, steps,
                         fills, fill_draws, 0.0, False, (), targets, seed, batch_size)
        self.kwargs = dict(samplers=samplers, methods=methods, grids=[list(g) for g in grids], grid_photos=grid_photos,
                           rise_masks=rise_masks, steps=steps, fills=fills, fill_draws=fill_draws, targets=targets,
                           seed=seed, batch_size=batch_size)
        self.grid_photos = grid_photos
        self.grids = {grid_label(g): dataclasses.replace(self.plain, K=g[0], stride=g[1], samples=g[2])
                      for g in grids}

    def settings(self) -> dict:
        out = super().settings()
        for k in ("K", "S", "N", "extra_photos", "smooth", "shrink", "scales"):
            out.pop(k)
        return {**out, "grids": list(self.grids), "grid_photos": self.grid_photos}

    def items(self, photos, study_photos, folder):
        return Study.items(self, photos, self.grid_photos, folder)  # every_photo False: grid_photos of them

    run = Study.run  # no smoothed copies, no candidates

    def measure(self, image, pred, true_class) -> dict:
        targets = {t: {"pred": pred, "true": true_class}[t] for t in self.targets}
        return {"rows": [{"grid": g, **r} for g, ms in self.grids.items() for r in self.rows(image, targets, true_class, ms)]}

    headline_label = ""  # other grids, for a few maps: the removal study's SRG is the headline

    def headline(self, records):
        return []

    def section(self, records, out_dir) -> list[str]:
        lines = ["## Removal at other grids", "",
                 f"The removal study on {len(records)} of the photos for the maps that take a grid, at "
                 + ", ".join(self.grids) + ". First SRG averaged over the fills at every grid side by side, then "
                 "each grid's own tables.", ""]
        per_grid = {g: [{**r, "rows": [row for row in r["rows"] if row["grid"] == g]} for r in records]
                    for g in self.grids}
        for target in self.targets:
            means = {g: compare(srg_over_fills(table(recs), self.fills, target), "srg", "mean", target)
                     for g, recs in per_grid.items()}
            lines += [f"SRG averaged over the fills, class {target} (mean [95 % CI]; Δ, p: against the reference "
                      "at the same grid):", "", "| map | sampler | " + " | ".join(self.grids) + " |",
                      "|---|---|" + "---|" * len(self.grids)]
            for key in dict.fromkeys(k for m in means.values() for k in m):
                cells = [f"{fmt_ci(means[g][key])} {fmt_signed(means[g][key]['diff'])} {fmt_p(means[g][key]['p'])}"
                         if key in means[g] else "—" for g in self.grids]
                lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
            lines.append("")
        for g, recs in per_grid.items():
            prefix = "grid_" + g.replace(" ", "").lower() + "_"
            lines += removal_section(recs, self, out_dir, f"### Grid {g}", prefix)
        return lines


def grid_label(grid) -> str:
    """(K, S, N) as "K16 S8 N8"."""
    return "K{} S{} N{}".format(*grid)
