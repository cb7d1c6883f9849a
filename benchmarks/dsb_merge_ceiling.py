"""DSB 2018: how far better merge decisions could lift a two-class model (a diagnosis).

The default instances of a two-class model (``watershed_two_class``) are seeds above the
calibrated threshold, flooded, merged where their shared boundary averages a foreground
probability above 0.6, then cut at necks. Of the touching pairs it leaves joined, many
*are* apart somewhere in the network's probabilities, at a threshold above the calibrated
one. This script measures, on ``val/`` with each model given:

* ``separable``: of the touching ground-truth pairs the default leaves joined, how many
  fall into two different connected components of ``p > t`` for some ``t`` of 0.9-0.998;
* ``oracle``: an over-segmentation (the default's own seeds without merge or cut, or the
  h-maxima of the smoothed foreground logit, h = 1, 2, 3) whose regions are merged by the
  truth (regions mostly covering the same true nucleus become one): the ceiling of any
  rule that only merges those regions;
* ``learned``: the same h = 1 regions merged by a logistic regression of 15 features of each
  pair of neighbouring regions (their shared boundary's logits, the regions' peaks, means,
  areas, the boundary's length and the neck's width), fitted on 60 development images of
  ``train/`` (``dsb_dev_postprocessing.dev_ids``; the truth says which neighbours belong to
  one nucleus) and applied by greedy additive edge contraction (the multicut heuristic:
  the most certain merge first, the weights of parallel edges summed), with and without
  the cut at necks that follows the default's merge.

    python benchmarks/dsb_merge_ceiling.py --model nuclei --model MODEL.safetensors \
        --out benchmarks/results/dsb_merge_ceiling_cpu.json
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from dsb_dev_postprocessing import dev_ids  # noqa: E402
from dsb_fewshot import load, probabilities, score  # noqa: E402

from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.instances import (  # noqa: E402
    _CROSS,
    _boundary_pairs,
    _finish,
    _keep_unseeded,
    split_at_necks,
    watershed_two_class,
)
from napari_unet.metrics import _overlaps, touching_pairs  # noqa: E402
from napari_unet.pretrained import resolve_model  # noqa: E402

MIN_SIZE = 25  # the benchmarks' minimum object size (dsb_fewshot.py)
THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)
FEATURES = ("boundary mean", "boundary min", "boundary max", "boundary 25th percentile",
            "log boundary length", "lower peak", "higher peak", "lower region mean",
            "higher region mean", "log smaller area", "log larger area",
            "boundary length / sqrt(smaller area)", "neck width / smaller radius",
            "lower peak - boundary mean", "higher peak - boundary mean")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def seeds_at_threshold(p: np.ndarray, threshold: float) -> np.ndarray:
    """The default's regions before its merge and cut."""
    from skimage.segmentation import watershed

    mask = p > min(threshold, 0.5)
    seeds, n = ndi.label(p > threshold, structure=_CROSS)
    return _keep_unseeded(watershed(-p, seeds, mask=mask), mask, n)


def h_maxima_regions(p: np.ndarray, h: float, sigma: float = 1.0) -> np.ndarray:
    """The foreground (p > 0.5) flooded from the h-maxima of the smoothed logit."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    lg = ndi.gaussian_filter(logit(p), sigma)
    mask = p > 0.5
    peaks = h_maxima(np.where(mask, lg, lg.min()), h).astype(bool) & mask
    seeds, n = ndi.label(peaks, structure=np.ones((3, 3)))
    return _keep_unseeded(watershed(-lg, seeds, mask=mask), mask, n)


def _by_id(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pixel counts of every (truth id, predicted id) pair, indexed by the ids themselves
    (rows and columns of absent ids are 0)."""
    table, t_ids, p_ids = _overlaps(truth, pred)
    full = np.zeros((int(t_ids.max()) + 1, int(p_ids.max()) + 1), table.dtype)
    full[np.ix_(t_ids, p_ids)] = table
    return full


def merged_by_truth(regions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Regions that mostly cover the same true object become one."""
    dominant = _by_id(truth, regions).argmax(0)
    ids = np.arange(regions.max() + 1)
    first: dict[int, int] = {}
    for r in range(1, len(ids)):
        g = int(dominant[r])
        if g:
            ids[r] = first.setdefault(g, r)
    return ids[regions]


def edge_features(regions: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of neighbouring regions (rows of ``ab``) and its features (FEATURES)."""
    n = int(regions.max())
    lg = logit(p)
    keys, vals = _boundary_pairs(regions, lg)
    if not keys.size:
        return np.zeros((0, 2), np.int64), np.zeros((0, len(FEATURES)))
    dist = ndi.distance_transform_edt(p > 0.5)
    _, widths = _boundary_pairs(regions, dist)
    pairs, inv = np.unique(keys, return_inverse=True)
    cnt = np.bincount(inv)
    mean = np.bincount(inv, vals) / cnt
    low = np.full(len(pairs), np.inf)
    np.minimum.at(low, inv, vals)
    high = np.full(len(pairs), -np.inf)
    np.maximum.at(high, inv, vals)
    neck = np.zeros(len(pairs))
    np.maximum.at(neck, inv, widths)
    order = np.lexsort((vals, inv))
    q25 = vals[order][np.r_[0, np.cumsum(cnt)[:-1]] + (cnt * 0.25).astype(int)]
    a, b = pairs // (n + 1), pairs % (n + 1)
    flat = regions.ravel()
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, flat, lg.ravel())
    area = np.bincount(flat, minlength=n + 1).astype(float)
    rmean = np.bincount(flat, lg.ravel(), minlength=n + 1) / np.maximum(area, 1)
    radius = np.zeros(n + 1)
    np.maximum.at(radius, flat, dist.ravel())
    pl, ph = np.minimum(peak[a], peak[b]), np.maximum(peak[a], peak[b])
    small = np.minimum(area[a], area[b])
    x = np.stack([mean, low, high, q25, np.log(cnt), pl, ph,
                  np.minimum(rmean[a], rmean[b]), np.maximum(rmean[a], rmean[b]),
                  np.log(small), np.log(np.maximum(area[a], area[b])), cnt / np.sqrt(small),
                  neck / np.maximum(np.minimum(radius[a], radius[b]), 0.5),
                  pl - mean, ph - mean], 1)
    return np.stack([a, b], 1), x


def edge_truth(regions: np.ndarray, truth: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """1: both regions mostly cover the same true object, 0: two different ones, -1:
    one of them mostly covers background."""
    dominant = _by_id(truth, regions).argmax(0)
    da, db = dominant[ab[:, 0]], dominant[ab[:, 1]]
    return np.where((da > 0) & (db > 0), (da == db).astype(int), -1)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0):
    """Logistic regression by Newton's method on standardised features (L2 penalty)."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.zeros(z.shape[1])
    for _ in range(50):
        q = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (q - y) + l2 * np.r_[w[:-1], 0]
        hess = (z * (q * (1 - q))[:, None]).T @ z + l2 * np.diag(np.r_[np.ones(len(w) - 1), 0])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return lambda f: np.c_[(f - mu) / sd, np.ones(len(f))] @ w, w, mu, sd


def contract(regions: np.ndarray, ab: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Greedy additive edge contraction: join the pair with the largest positive weight,
    sum the weights of the edges the join makes parallel, repeat."""
    adj: dict[int, dict[int, float]] = {}
    for (a, b), x in zip(ab.tolist(), weights.tolist()):
        adj.setdefault(a, {})[b] = x
        adj.setdefault(b, {})[a] = x
    heap = [(-x, a, b) for (a, b), x in zip(ab.tolist(), weights.tolist()) if x > 0]
    heapq.heapify(heap)
    parent = np.arange(regions.max() + 1)
    while heap:
        neg, a, b = heapq.heappop(heap)
        if b not in adj.get(a, {}) or adj[a][b] != -neg:
            continue  # stale: one of the two was joined since
        for c, x in adj.pop(b).items():
            adj[c].pop(b)
            if c == a:
                continue
            adj[a][c] = adj[c][a] = adj[a].get(c, 0.0) + x
            if adj[a][c] > 0:
                heapq.heappush(heap, (-adj[a][c], a, c))
        parent[b] = a
    while True:  # every region to its root
        up = parent[parent]
        if np.array_equal(up, parent):
            break
        parent = up
    return parent[regions]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True,
                    help="a two-class model file or shipped name (repeatable)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    dev_images, dev_truths, _ = load("train", dev_ids(60))
    val_images, val_truths, _ = load("val")
    report = {"benchmark": "dsb_merge_ceiling", "command": command(), "machine": machine(),
              "min_size": MIN_SIZE, "features": FEATURES, "models": {}}
    for name in args.model:
        ck = load_checkpoint(resolve_model(name))
        th = ck.threshold
        dev = [p[1] for p in probabilities(ck, dev_images, args.device)[0]]
        val = [p[1] for p in probabilities(ck, val_images, args.device)[0]]
        rows = {}

        def put(key, preds, rows=rows, name=name):
            rows[key] = score(val_truths, [_finish(x, MIN_SIZE) for x in preds])
            s = rows[key]
            print(f"{name} {key}: AP@0.5 {s['ap50']:.3f} mAP {s['map']:.3f} touching "
                  f"{s['touching_separated']:.1%}", file=sys.stderr, flush=True)

        default = [watershed_two_class(p, threshold=th, min_size=MIN_SIZE) for p in val]
        put("default", default)
        # touching pairs the default leaves joined, apart at some higher threshold
        joined = separable = 0
        for p, t, lab in zip(val, val_truths, default):
            pairs = touching_pairs(t)
            if not len(pairs):
                continue
            d = _by_id(t, lab).argmax(1)
            bad = pairs[~((d[pairs[:, 0]] > 0) & (d[pairs[:, 1]] > 0)
                          & (d[pairs[:, 0]] != d[pairs[:, 1]]))]
            joined += len(bad)
            hit = np.zeros(len(bad), bool)
            for level in THRESHOLDS:
                ov = _by_id(t, ndi.label(p > level)[0])
                ov[:, 0] = 0
                c = ov.argmax(1)
                hit |= (c[bad[:, 0]] > 0) & (c[bad[:, 1]] > 0) & (c[bad[:, 0]] != c[bad[:, 1]])
            separable += int(hit.sum())
        rows["joined_by_default"] = joined
        rows["of_those_apart_at_a_higher_threshold"] = separable
        own = [seeds_at_threshold(p, th) for p in val]
        put("seeds_unmerged", own)
        put("seeds_merged_by_truth", [merged_by_truth(r, t) for r, t in zip(own, val_truths)])
        for h in (1, 2, 3):
            regions = [h_maxima_regions(p, h) for p in val]
            put(f"h{h}_unmerged", regions)
            put(f"h{h}_merged_by_truth",
                [merged_by_truth(r, t) for r, t in zip(regions, val_truths)])
        # a merge rule learnt on the development images
        xs, ys = [], []
        for p, t in zip(dev, dev_truths):
            r = h_maxima_regions(p, 1)
            ab, x = edge_features(r, p)
            y = edge_truth(r, t, ab)
            xs.append(x[y >= 0])
            ys.append(y[y >= 0])
        predict_logit, w, _, _ = fit_logistic(np.concatenate(xs), np.concatenate(ys))
        rows["learned_weights"] = dict(zip(FEATURES + ("bias",), np.round(w, 3).tolist()))
        rows["dev_edges"] = int(sum(len(y) for y in ys))
        learned = []
        for p in val:
            r = h_maxima_regions(p, 1)
            ab, x = edge_features(r, p)
            learned.append(contract(r, ab, predict_logit(x)) if len(ab) else r)
        put("h1_learned_merge", learned)
        put("h1_learned_merge_then_necks", [split_at_necks(x) for x in learned])
        report["models"][name] = {"threshold": th, "val": rows}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    emit(report, args.out)


if __name__ == "__main__":
    main()
