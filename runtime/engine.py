"""The marginalization loop: patch grid, counter-based RNG streams, batch scheduling, reduction to p(Y|x without r)."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from tqdm import tqdm

from . import kernels, measures, params
from .classifier import OnnxClassifier
from .errors import InfolensError
from .explanation import Explanation
from .samplers import Sampler, load_sampler

METHODS = ("pmi", "ig", "occlusion", "pda", "rise")
SAMPLER_POSITIONS = 32  # positions per sampler call when that exceeds one classifier batch: amortizes the call


def patch_grid(H: int, W: int, K: int, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of K×K patches at stride S, row-major, int64 [P] each.

    Offsets 0, S, 2S, … ≤ H−K, plus H−K itself if the stride skipped it, so every pixel is covered (DESIGN §3).
    """
    def axis(n):
        a = list(range(0, n - K + 1, S))
        if a[-1] != n - K:
            a.append(n - K)
        return np.array(a, np.int64)

    gy, gx = np.meshgrid(axis(H), axis(W), indexing="ij")
    return gy.ravel(), gx.ravel()


def streams(seed: int, positions: np.ndarray) -> list[np.random.Generator]:
    """The random stream of each position: Philox keyed by (seed, position index).

    Sample n of a position always consumes the n-th block of its stream, so results depend only on
    (seed, position, sample) — never on batch size, thread count or backend.
    """
    return [np.random.Generator(np.random.Philox(key=np.array([seed, p], np.uint64))) for p in positions]


def resolve_classes(classes, probs: np.ndarray) -> np.ndarray:
    """"top3" / "topK" / "285,281" / an int / a list of ints → int64 [k] class indices, checked against [0, Y)."""
    Y = len(probs)
    if isinstance(classes, str) and classes.lower().startswith("top"):
        k = classes[3:] or "1"
        if not k.isdigit() or int(k) < 1:
            raise InfolensError(f"bad class selection {classes!r}: use topK (e.g. top3) or indices like 285,281",
                                "classes")
        return np.argsort(-probs, kind="stable")[: min(int(k), Y)].astype(np.int64)
    if isinstance(classes, str):
        try:
            classes = [int(c) for c in classes.split(",") if c.strip()]
        except ValueError:
            raise InfolensError(f"bad class selection {classes!r}: use topK or comma-separated indices",
                                "classes") from None
    idx = np.atleast_1d(np.asarray(classes, dtype=np.int64))
    if idx.size == 0:
        raise InfolensError("no classes selected", "classes")
    bad = idx[(idx < 0) | (idx >= Y)]
    if bad.size:
        raise InfolensError(f"class {bad[0]} out of range: the model has {Y} classes, 0..{Y - 1}", "classes")
    return idx


class Explainer:
    """PMI and IG maps (bits) of one classifier, marginalizing each patch with one sampler.

    Parameters
    ----------
    classifier : OnnxClassifier.
    sampler : a Sampler (samplers.load_sampler); its K is the patch size.  Default: the shipped PatchSampler, K=8.
    batch_size : classifier images per ONNX Runtime call.
    progress : show a tqdm bar on stderr (it appears only for work longer than a second).
    rise_grid, rise_p : RISE's mask grid size s and keep probability (method "rise" only).
    """

    def __init__(self, classifier: OnnxClassifier, sampler: Sampler | None = None, batch_size: int = 64,
                 progress: bool = False, rise_grid: int = 7, rise_p: float = 0.5):
        params.check("batch_size", batch_size)
        self.classifier = classifier
        self._sampler = sampler
        self.batch_size = batch_size
        self.progress = progress
        self.rise_grid, self.rise_p = rise_grid, rise_p

    @property
    def sampler(self) -> Sampler:
        """The sampler; the shipped PatchSampler (K=8) when none was given, loaded on first use (RISE needs none)."""
        if self._sampler is None:
            self._sampler = load_sampler("patchsampler", K=8, device=self.classifier.device)
        return self._sampler

    def explain(self, image, classes="top3", stride: int | None = None, samples: int = 8, seed: int = 0,
                source: str | None = None, method: str = "pmi") -> Explanation:
        """Explain one image.

        image : path, or uint8 RGB [h, w, 3] (resized into the input space per the classifier's `resize`).
        classes : "top3", "topK", "285,281" or ints — classes that get a class map.
        stride : S in pixels (default K).  samples : N in-fills per patch (RISE: N masks).  seed : RNG key (≥ 0).
        method : "pmi" (or "ig": the same run) → maps "pmi" [k, H, W] and "ig" [H, W] in bits;
                 "pda" → "woe" [k, H, W] bits;  "occlusion" → "occlusion" [k, H, W] probability difference
                 (use them with the gaussian and gray samplers for Zintgraf's PDA and Zeiler's occlusion);
                 "rise" → "rise" [k, H, W], ignoring the sampler (see `rise`).
        Returns an Explanation; probs float64 [Y].
        """
        if method not in METHODS:
            raise InfolensError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}", "method")
        t_start = time.perf_counter()
        clf = self.classifier
        if isinstance(image, (str, os.PathLike)):
            source = source or os.fspath(image)
        img = clf.load_image(image)
        H, W = img.shape[:2]
        if method == "rise":
            _check_params(1, 1, samples, seed, H, W)
        base = clf.normalize(img[None])
        p0 = clf.predict(base)[0]
        cls = resolve_classes(classes, p0)
        if method == "rise":
            saliency, timing = self.rise(img, cls, samples, seed, self.rise_grid, self.rise_p)
            maps, stderr = {"rise": saliency.astype(np.float32)}, {}
            params = {"method": method, "N": samples, "grid": self.rise_grid, "p_keep": self.rise_p, "seed": seed,
                      "batch_size": self.batch_size}
            forwards = 1 + samples
        else:
            K = self.sampler.K
            S = K if stride is None else stride
            _check_params(K, S, samples, seed, H, W)
            ys, xs = patch_grid(H, W, K, S)
            deterministic = self.sampler.deterministic
            n = 1 if deterministic else samples
            per_patch: dict[str, tuple[np.ndarray, np.ndarray]] = {}

            def reduce(idx, probs):  # positions idx have all n of their forwards: keep only what the maps need
                for name, (v, se) in measures.reduce_samples("pmi" if method == "ig" else method, p0, probs, cls,
                                                             deterministic).items():
                    if name not in per_patch:
                        per_patch[name] = (np.empty(v.shape[:-1] + (len(ys),)), np.empty(v.shape[:-1] + (len(ys),)))
                    per_patch[name][0][..., idx], per_patch[name][1][..., idx] = v, se

            timing = self._marginalize(img, base[0], ys, xs, n, seed, source, reduce)
            maps = {name: measures.patches_to_pixels(v, ys, xs, K, (H, W)) for name, (v, _) in per_patch.items()}
            stderr = {name: measures.patches_to_pixels_stderr(se, ys, xs, K, (H, W))
                      for name, (_, se) in per_patch.items()}
            params = {"method": method, "K": K, "S": S, "N": samples, "N_used": n, "seed": seed,
                      "batch_size": self.batch_size, "positions": len(ys), **self.sampler.describe(),
                      "kernels": kernels.backend()}
            forwards = 1 + len(ys) * n
        timing["total_s"] = time.perf_counter() - t_start
        return Explanation(image=img, probs=p0, classes=cls, labels=[clf.labels[c] for c in cls], maps=maps,
                           stderr=stderr, params=params, model=clf.describe(), timing=timing, forwards=forwards,
                           source=source)

    def rise(self, image: np.ndarray, classes: np.ndarray, n_masks: int, seed: int, grid: int = 7,
             p_keep: float = 0.5):
        """RISE (Petsiuk et al.): saliency float64 [k, H, W] = Σ_i p(c | image·M_i) M_i / (N · p_keep) for each of
        the k `classes`, plus timings.

        Mask i: an s×s grid of cells kept with probability p_keep, bilinearly upsampled to cells of
        ceil(H/s) × ceil(W/s) pixels and shifted by a random offset within one cell; the masked image is
        image·M_i (removed pixels go black).  Grid and shift come from the Philox stream (seed, i), so the
        result does not depend on the batch size.
        """
        params.check("rise_grid", grid)
        params.check("rise_p", p_keep)
        H, W = image.shape[:2]
        ch, cw = -(-H // grid), -(-W // grid)
        sal = np.zeros((len(classes), H * W))
        t = {"masks_s": 0.0, "classifier_s": 0.0}
        with tqdm(total=n_masks, unit="fwd", desc="rise", delay=1.0, disable=not self.progress, file=sys.stderr,
                  leave=False) as bar:
            for i0 in range(0, n_masks, self.batch_size):
                t0 = time.perf_counter()
                masks = np.stack([_rise_mask(g, grid, p_keep, H, W, ch, cw) for g in
                                  streams(seed, np.arange(i0, min(n_masks, i0 + self.batch_size)))])
                batch = np.rint(image[None] * masks[..., None]).astype(np.uint8)
                t1 = time.perf_counter()
                probs = self.classifier.predict_images(batch)
                t2 = time.perf_counter()
                sal += probs[:, classes].T @ masks.reshape(len(masks), -1)
                t["masks_s"] += (t1 - t0) + (time.perf_counter() - t2)
                t["classifier_s"] += t2 - t1
                bar.update(len(masks))
        return (sal / (n_masks * p_keep)).reshape(len(classes), H, W), t

    def _marginalize(self, img, base, ys, xs, n, seed, source, reduce) -> dict:
        """Runs the classifier on the n in-fills of every position r; as soon as positions have all n outputs,
        calls reduce(idx int64 [m], probs float64 [m, n, Y]) with them (in order) and lets them go, so memory does
        not grow with the number of positions.  Returns timings (s).

        When the classifier runs on another device, the sampler fills the next chunk of positions in a worker
        thread while the classifier runs the current one (both release the GIL inside ONNX Runtime and the C++
        kernels), so its cost hides.  When both share the CPU, it runs between the classifier's calls instead: two
        thread pools on the same cores only took turns less well (measured on 2 cores, K=16, N=8: 3–4 % more
        forwards/s in turn than overlapped).  sampler_s is its own time, sampler_wait_s the part the classifier
        waited for.
        """
        clf, K, B = self.classifier, self.sampler.K, self.batch_size
        P = len(ys)
        buf = np.repeat(base[None], B, axis=0)
        step = max(SAMPLER_POSITIONS, -(-B // n))
        chunks = [np.arange(i, min(P, i + step)) for i in range(0, P, step)]
        t = {"sampler_s": 0.0, "sampler_wait_s": 0.0, "composite_s": 0.0, "classifier_s": 0.0}

        def sample(idx):
            t0 = time.perf_counter()
            return self.sampler.sample(img, ys[idx], xs[idx], n, streams(seed, idx)), time.perf_counter() - t0

        pend_pos = np.empty(0, np.int64)
        pend_patch = np.empty((0, K, K, 3), np.uint8)
        done_pos, done_probs = [], []  # classifier outputs of positions still missing some of their n rows
        desc = os.path.basename(source) if source else "explain"
        overlap = clf.device != "cpu"
        worker = ThreadPoolExecutor(1) if overlap else contextlib.nullcontext()
        with worker as pool, tqdm(total=P * n, unit="fwd", desc=desc, delay=1.0, disable=not self.progress,
                                  file=sys.stderr, leave=False) as bar:
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
                    kernels.composite(buf, ptc, ys[pos], xs[pos], clf.lut, clf.src, clf.nchw)
                    t1 = time.perf_counter()
                    probs = clf.predict(buf[:m])
                    t2 = time.perf_counter()
                    kernels.restore(buf, base, ys[pos], xs[pos], K, clf.nchw)
                    # rows come in position order, n per position: the complete positions are a prefix
                    done_pos.append(pos)
                    done_probs.append(probs)
                    held_pos, held = np.concatenate(done_pos), np.concatenate(done_probs)
                    ready = len(held_pos) // n * n
                    if ready:
                        reduce(held_pos[:ready:n], held[:ready].reshape(ready // n, n, -1))
                    done_pos, done_probs = [held_pos[ready:]], [held[ready:]]
                    t["composite_s"] += (t1 - t0) + (time.perf_counter() - t2)
                    t["classifier_s"] += t2 - t1
                    bar.update(m)
        return t


def _check_params(K, S, N, seed, H, W):
    params.check("K", K)
    if K > min(H, W):
        raise InfolensError(f"patch size K={K} is larger than the {H}x{W} input image", "K")
    params.check("stride", S)
    if S > K:
        raise InfolensError(f"stride {S} is larger than the patch size K={K}: pixels between patches would get "
                            f"no value; use a stride of {K} or less", "stride")
    params.check("samples", N)
    params.check("seed", seed)


def _rise_mask(rng: np.random.Generator, grid: int, p_keep: float, H: int, W: int, ch: int, cw: int) -> np.ndarray:
    cells = (rng.random((grid, grid)) < p_keep).astype(np.float32)
    dy, dx = rng.integers(0, ch), rng.integers(0, cw)
    up = cv2.resize(cells, ((grid + 1) * cw, (grid + 1) * ch), interpolation=cv2.INTER_LINEAR)
    return up[dy:dy + H, dx:dx + W]
