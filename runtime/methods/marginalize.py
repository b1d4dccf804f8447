"""The patch-marginalization core the PMI/IG, PDA and occlusion methods share: grid, scheduling of sampler and
classifier, counter-based streams, and the streaming reduction (DESIGN §3).  A method only names its reduction
(`measures.reduce_samples`) and its default sampler."""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from .. import backends, kernels, measures, params
from ..classifier import OnnxClassifier
from ..errors import InfolensError
from ..explanation import Explanation
from ..progress import Progress
from ..samplers import Sampler, load_sampler
from ..samplers.rng import streams
from .base import Attribution, Plan
from .grid import check_grid, patch_grid

SAMPLER_POSITIONS = 32  # positions per sampler call when that exceeds one classifier batch: amortizes the call


@dataclass
class Shard:
    """The results of some positions of one image's grid (PatchMarginalization.run): positions int64 [m] (grid
    indices), values and stderr: map name → float64 [..., m] per-patch values and their standard errors (before
    averaging onto pixels; bits for PMI/IG), counts int64 [m] in-fills used, forwards run, seconds, timing."""

    positions: np.ndarray
    values: dict
    stderr: dict
    counts: np.ndarray
    forwards: int = 0
    seconds: float = 0.0
    timing: dict = field(default_factory=dict)

    def save(self, file) -> None:
        """As an .npz into `file` (a path or a binary file object, e.g. outfiles.write_atomic's)."""
        arrays = {"positions": self.positions, "counts": self.counts,
                  "meta": np.array([self.forwards, self.seconds]),
                  "timing_keys": np.array(list(self.timing), dtype=str),
                  "timing_values": np.array(list(self.timing.values()), dtype=np.float64),
                  **{f"value_{k}": v for k, v in self.values.items()},
                  **{f"stderr_{k}": v for k, v in self.stderr.items()}}
        np.savez(file, **arrays)

    @classmethod
    def load(cls, file) -> "Shard":
        with np.load(file) as z:
            names = [k[len("value_"):] for k in z.files if k.startswith("value_")]
            return cls(positions=z["positions"], counts=z["counts"], forwards=int(z["meta"][0]),
                       seconds=float(z["meta"][1]), timing=dict(zip(z["timing_keys"].tolist(),
                                                                     z["timing_values"].tolist())),
                       values={k: z[f"value_{k}"] for k in names}, stderr={k: z[f"stderr_{k}"] for k in names})


def shared_methods(names, own: str) -> tuple:
    """The PatchMarginalization classes of the METHODS names `names` (without `own` and repeats): what `also` may
    name (InfolensError naming `also` otherwise)."""
    from . import METHODS

    out = []
    for name in names:
        cls = METHODS.get(name)
        if cls is None or not issubclass(cls, PatchMarginalization):
            choices = ", ".join(k for k, c in METHODS.items() if issubclass(c, PatchMarginalization))
            raise InfolensError(f"also: {name!r} does not marginalize patches, so it cannot share a run's forwards: "
                                f"choose from {choices}", "also")
        if cls.name != own and cls not in out:
            out.append(cls)
    return tuple(out)


class PatchMarginalization(Attribution):
    """p(Y | x without patch r) for every patch r of the grid, as the mean of p(Y | x with r := in-fill) over N
    in-fills from the sampler, reduced to the method's per-patch values and their Monte-Carlo standard errors, then
    averaged onto pixels.

    sampler : a loaded Sampler (its K is the patch size), or a sampler's name (a SAMPLERS key; default the
    method's `default_sampler`) loaded at `K` when first used.  K : the patch size in pixels for a sampler given by
    name (default `ExplainConfig.K`, the CLI's -K); given with a loaded sampler, it must be that sampler's K.  The
    run's parameters record K.

    Adaptive N (`target_se` in the maps' units, bits for PMI/IG): after the first N in-fills, a position whose
    largest per-patch standard error (over the maps and classes) is above the target gets as many in-fills again,
    in further passes, until it meets the target or has `max_samples` (default 8N).  A position's in-fills
    continue its own counter-based stream, so its values are exactly those of a fixed-N run with its final count.
    Until a position is done its earlier outputs are kept (n × Y floats each).

    also : other patch-marginalization methods (METHODS names) whose maps come from the same forwards — each reduces
    the same in-fills its own way, so PMI's run with the gaussian sampler also gives PDA's woe, exactly the map of
    PDA's own run with that sampler and seed, for no forward more.  The run's parameters record them ("also").  With
    adaptive N a position's in-fills follow the largest standard error of all the maps, the shared ones included.
    """

    reduction: str = ""  # the measures.reduce_samples method
    settings = {"stride": None, "samples": 8, "seed": 0}  # stride None: K

    def __init__(self, classifier: OnnxClassifier, sampler: Sampler | str | None = None, batch_size: int = 64,
                 progress: bool = False, target_se: float | None = None, max_samples: int | None = None,
                 K: int | None = None, also: tuple = ()):
        super().__init__(classifier, batch_size, progress)
        self.also = shared_methods(also, self.name)
        if sampler is None or isinstance(sampler, str):
            name = params.check("sampler", sampler or self.default_sampler)
            self._sampler, self._load = None, (name, params.check("K", params.ExplainConfig.K if K is None else K))
        else:
            if K is not None and params.check("K", K) != sampler.K:
                raise InfolensError(f"K={K} but the sampler given has K={sampler.K}: K belongs to the sampler, "
                                    "leave K out or load the sampler at that K", "K")
            self._sampler, self._load = sampler, None
        self.target_se = None if target_se is None else params.check("target_se", target_se)
        self.max_samples = None if max_samples is None else params.check("max_samples", max_samples)

    @classmethod
    def from_explainer(cls, explainer, also: tuple = ()) -> "PatchMarginalization":
        return cls(explainer.classifier, explainer.sampler, explainer.batch_size, explainer.progress,
                   explainer.target_se, explainer.max_samples, explainer.K, also)

    @property
    def sampler(self) -> Sampler:
        """The sampler; one given by name is loaded on first use (a PatchSampler's session is the cost)."""
        if self._sampler is None:
            name, K = self._load
            self._sampler = load_sampler(name, K, device=self.classifier.placement)
        return self._sampler

    def run(self, plan: Plan, positions=None, progress: Progress | None = None) -> "Shard":
        """The per-position values of `positions` (int64 indices into the grid, see `positions`; default all) of
        the image `plan` (Attribution.plan) describes.  Each position's in-fills come from its own counter-based
        stream, so shards of any split `merge` into exactly the maps of one `attribute` call."""
        return self._run(plan, positions, progress or Progress("", False))

    def positions(self, img: np.ndarray, stride: int | None = None) -> int:
        """How many patch positions the grid of the input-space image `img` [H, W, 3] has at `stride` (default K);
        shards index them 0..positions−1."""
        return len(self._geometry(img, stride, 1, 0)[0])

    def merge(self, plan: Plan, shards: list["Shard"]) -> Explanation:
        """The Explanation of `plan` from shards that cover every position once (InfolensError otherwise)."""
        maps, stderr, run_params, timing = self._assemble(plan, shards)
        return self.finish(plan, maps, stderr, run_params, timing, sum(s.forwards for s in shards),
                           sum(s.seconds for s in shards))

    def _attribute(self, plan: Plan, progress: Progress):
        return self._assemble(plan, [self._run(plan, None, progress)])

    def _geometry(self, img, stride, samples, seed):
        H, W = img.shape[:2]
        K = self.sampler.K
        S = K if stride is None else stride
        check_grid(K, S, samples, seed, H, W)
        ys, xs = patch_grid(H, W, K, S)
        return ys, xs, K, S

    def _run(self, plan: Plan, positions, progress: Progress) -> "Shard":
        t_start, rows = time.perf_counter(), self.classifier.rows_run
        img, base, p0, cls, samples, seed = plan.img, plan.base, plan.p0, plan.classes, plan.samples, plan.seed
        ys, xs, K, S = self._geometry(img, plan.stride, samples, seed)
        todo = np.arange(len(ys)) if positions is None else np.asarray(positions, np.int64)
        if todo.size and (todo.min() < 0 or todo.max() >= len(ys) or len(np.unique(todo)) != len(todo)):
            raise InfolensError(f"positions must be distinct indices in [0, {len(ys)})", "positions")
        deterministic = self.sampler.deterministic
        n = 1 if deterministic else samples
        adaptive = self.target_se is not None and not deterministic
        cap = max(n, self.max_samples or 8 * n) if adaptive else n
        counts = np.full(len(ys), n)
        per_patch: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        held: dict[int, np.ndarray] = {}  # outputs so far of positions that get more in-fills
        more: list[np.ndarray] = []

        def reduce(idx, probs):  # positions idx have all their forwards of this pass: keep only what the maps need
            if start:  # a later pass: these positions' earlier outputs come first
                probs = np.concatenate([np.stack([held.pop(int(i)) for i in idx]), probs], axis=1)
            worst = np.zeros(len(idx))
            reduced = {}
            for reduction in dict.fromkeys([self.reduction] + [m.reduction for m in self.also]):
                reduced.update(measures.reduce_samples(reduction, p0, probs, cls, deterministic,
                                                       self.classifier.output.bernoulli))
            for name, (v, se) in reduced.items():
                if name not in per_patch:
                    per_patch[name] = (np.empty(v.shape[:-1] + (len(ys),)), np.empty(v.shape[:-1] + (len(ys),)))
                per_patch[name][0][..., idx], per_patch[name][1][..., idx] = v, se
                worst = np.maximum(worst, se.reshape(-1, len(idx)).max(0))
            counts[idx] = probs.shape[1]
            if adaptive and probs.shape[1] < cap:
                again = idx[worst > self.target_se]
                held.update((int(i), probs[j]) for i, j in zip(again, np.flatnonzero(worst > self.target_se)))
                more.append(again)

        timing: dict[str, float] = {}
        done, start, n_pass = todo, 0, n
        while todo.size:
            t = self._marginalize(img, base, ys, xs, todo, n_pass, start, seed, reduce, progress)
            timing = {k: timing.get(k, 0.0) + v for k, v in t.items()}
            todo, more[:] = (np.concatenate(more) if more else np.empty(0, np.int64)), []
            start += n_pass
            n_pass = min(start, cap - start)  # double each pass, up to the cap
        return Shard(positions=done, values={k: v[..., done] for k, (v, _) in per_patch.items()},
                     stderr={k: se[..., done] for k, (_, se) in per_patch.items()}, counts=counts[done],
                     forwards=self.classifier.rows_run - rows, seconds=time.perf_counter() - t_start, timing=timing)

    def _assemble(self, plan: Plan, shards):
        """Maps, standard errors, run parameters and timings from shards covering every position once."""
        img, samples, seed = plan.img, plan.samples, plan.seed
        ys, xs, K, S = self._geometry(img, plan.stride, samples, seed)
        P = len(ys)
        every = np.concatenate([s.positions for s in shards]) if shards else np.empty(0, np.int64)
        if len(every) != P or not np.array_equal(np.sort(every), np.arange(P)):
            raise InfolensError(f"the shards cover {len(np.unique(every))} of {P} positions"
                                f"{' (some twice)' if len(np.unique(every)) != len(every) else ''}", "positions")
        names = [k for s in shards for k in s.values] if shards else []
        values, errors = {}, {}
        for name in dict.fromkeys(names):
            first = next(s for s in shards if name in s.values)
            values[name] = np.empty(first.values[name].shape[:-1] + (P,))
            errors[name] = np.empty(first.values[name].shape[:-1] + (P,))
            for s in shards:
                values[name][..., s.positions], errors[name][..., s.positions] = s.values[name], s.stderr[name]
        counts = np.empty(P, np.int64)
        for s in shards:
            counts[s.positions] = s.counts
        H, W = img.shape[:2]
        maps = {name: measures.patches_to_pixels(v, ys, xs, K, (H, W)) for name, v in values.items()}
        stderr = {name: measures.patches_to_pixels_stderr(se, ys, xs, K, (H, W)) for name, se in errors.items()}
        n = 1 if self.sampler.deterministic else samples
        run_params = {"K": K, "S": S, "N": samples, "N_used": n, "seed": seed, "batch_size": self.batch_size,
                      "positions": P, **self.sampler.describe(), "kernels": kernels.backend()}
        if self.also:
            run_params["also"] = [m.name for m in self.also]
        if self.target_se is not None and not self.sampler.deterministic:
            run_params.update(target_se=self.target_se, max_samples=max(n, self.max_samples or 8 * n),
                              samples_per_position={int(c): int(k) for c, k in zip(*np.unique(counts,
                                                                                             return_counts=True))})
        timing: dict[str, float] = {}
        for s in shards:
            timing = {k: timing.get(k, 0.0) + v for k, v in s.timing.items()}
        return maps, stderr, run_params, timing

    def _marginalize(self, img, base, ys, xs, todo, n, start, seed, reduce, progress) -> dict:
        """Runs the classifier on in-fills start..start+n−1 of the positions `todo` (indices into ys, xs); as soon
        as positions have all n outputs, calls reduce(idx int64 [m], probs float64 [m, n, Y]) with them (in order)
        and lets them go, so memory does not grow with the number of positions; counts the forwards on
        `progress`.  Returns timings (s).

        When the classifier runs on another device, the sampler fills the next chunk of positions in a worker
        thread while the classifier runs the current one (both release the GIL inside ONNX Runtime and the C++
        kernels), so its cost hides.  When both share the CPU, it runs between the classifier's calls instead: two
        thread pools on the same cores only took turns less well (measured on 2 cores, K=16, N=8: 3–4 % more
        forwards/s in turn than overlapped).  sampler_s is its own time, sampler_wait_s the part the classifier
        waited for.
        """
        clf, K, B = self.classifier, self.sampler.K, self.batch_size
        P = len(todo)
        batch = backends.perturbation_batch(clf, base, B, K, ys, xs)
        if hasattr(batch, "order"):  # the backend runs some positions together best (the incremental one)
            todo = todo[batch.order(ys[todo], xs[todo])]
        step = max(SAMPLER_POSITIONS, -(-B // n))
        chunks = [todo[i:i + step] for i in range(0, P, step)]
        t = {"sampler_s": 0.0, "sampler_wait_s": 0.0, "composite_s": 0.0, "classifier_s": 0.0}

        def sample(idx):
            t0 = time.perf_counter()
            return (self.sampler.sample(img, ys[idx], xs[idx], n, streams(seed, idx), start),
                    time.perf_counter() - t0)

        pend_pos = np.empty(0, np.int64)
        pend_patch = np.empty((0, K, K, 3), np.uint8)
        done_pos, done_probs = [], []  # classifier outputs of positions still missing some of their n rows
        overlap = clf.device != "cpu"
        worker = ThreadPoolExecutor(1) if overlap else contextlib.nullcontext()
        progress.add(P * n)
        with worker as pool:
            ahead = pool.submit(sample, chunks[0]) if overlap else None
            for c, idx in enumerate(chunks):
                t0 = time.perf_counter()
                patches, dt = ahead.result() if overlap else sample(idx)
                t["sampler_wait_s"] += time.perf_counter() - t0
                t["sampler_s"] += dt
                if overlap and c + 1 < len(chunks):
                    ahead = pool.submit(sample, chunks[c + 1])
                pend_pos = np.concatenate([pend_pos, np.repeat(idx, n)])
                pend_patch = np.concatenate([pend_patch, patches.reshape(-1, K, K, 3)])
                last = c + 1 == len(chunks)
                while len(pend_pos) >= B or (last and len(pend_pos)):
                    m = min(B, len(pend_pos))
                    pos, pend_pos = pend_pos[:m], pend_pos[m:]
                    ptc, pend_patch = pend_patch[:m], pend_patch[m:]
                    t0 = time.perf_counter()
                    batch.write(ptc, ys[pos], xs[pos])
                    t1 = time.perf_counter()
                    probs = batch.run(m)
                    t2 = time.perf_counter()
                    batch.restore(ys[pos], xs[pos])
                    # rows come in position order, n per position: the complete positions are a prefix
                    done_pos.append(pos)
                    done_probs.append(probs)
                    out_pos, out_probs = np.concatenate(done_pos), np.concatenate(done_probs)
                    ready = len(out_pos) // n * n
                    if ready:
                        reduce(out_pos[:ready:n], out_probs[:ready].reshape(ready // n, n, -1))
                    done_pos, done_probs = [out_pos[ready:]], [out_probs[ready:]]
                    t["composite_s"] += (t1 - t0) + (time.perf_counter() - t2)
                    t["classifier_s"] += t2 - t1
                    progress.update(m)
        return t
