"""Sub-pixel offset between what a semantic model sees and where its annotations were drawn.

Annotations can sit a fraction of a pixel off the image they were drawn on: in ISBI 2012
every one of the 30 label slices lies about 0.6 px above and 0.1-0.2 px left of the
membranes of its image (the image-label cross-correlation peaks there on all 30). A
network trained with flips and 90 degree rotations cannot learn such an offset, since
every flip reverses it, so it draws membranes where the image has them and loses the
pixels at every membrane edge on the annotations' side.

After training, :func:`estimate` tries shifts of the validation probabilities on a grid
of quarter pixels up to one pixel either way and keeps the one with the fewest pixels of
the wrong class, when it removes at least :data:`MIN_GAIN` of them; the model file keeps it
(``task["label_offset"]``) and prediction shifts the probabilities by it (:func:`shift`),
tile by tile, each tile computing :func:`shift_margin` pixels more around what it keeps.
Annotations drawn on the image's own grid keep ``(0, 0)`` (DSB 2018 nuclei: the
cross-correlation peaks at 0, 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Shifts tried on each axis, in pixels.
GRID = tuple(k / 4 for k in range(-4, 5))
#: Share of the wrong pixels a shift must remove from the validation images to be kept.
MIN_GAIN = 0.02
#: At most this many validation pixels are scored per shift (the first images' whole).
MAX_PIXELS = 4_000_000


def shift(prob, offset: Sequence[float]):
    """``prob`` (a torch tensor ``(..., H, W)``) moved by ``offset = (dy, dx)`` pixels:
    ``out[y, x] = prob[y - dy, x - dx]``, linear between pixels, edge values repeated."""
    for axis, d in ((-2, float(offset[0])), (-1, float(offset[1]))):
        if d == 0:
            continue
        n = math.floor(d)
        f = d - n
        moved = _whole(prob, n, axis)
        prob = moved if f == 0 else (1 - f) * moved + f * _whole(prob, n + 1, axis)
    return prob


def shift_margin(offset: Sequence[float], factor: float = 1.0) -> int:
    """Output pixels a tile must compute beyond its kept region for :func:`shift` by
    ``offset`` (scaled by ``factor``, on a resized image) to be exact across tile seams."""
    return math.ceil(max(abs(float(o)) for o in offset) * factor)


def _whole(prob, k: int, axis: int):
    import torch

    size = prob.shape[axis]
    idx = torch.clamp(torch.arange(size, device=prob.device) - k, 0, size - 1)
    return prob.index_select(axis % prob.dim(), idx)


def estimate(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray],
             regions: Sequence | None = None, threshold: float = 0.5) -> dict:
    """The shift of semantic probabilities that best matches their annotations.

    Parameters
    ----------
    probs : sequence of ``(C, H, W)`` float arrays
        A model's probabilities of its validation images.
    truths : sequence of ``(H, W)`` class maps
    regions : sequence of boolean arrays or None, optional
        Where each image's labels are complete (None: everywhere).
    threshold : float
        The foreground threshold of a two-class model.

    Returns
    -------
    dict
        ``offset`` ([dy, dx], [0, 0] unless a shift removes at least :data:`MIN_GAIN` of
        the wrong pixels), ``error`` (share of wrong pixels without a shift) and
        ``error_shifted`` (with ``offset``), ``best`` (the best shift tried, kept or not).
    """
    import torch

    from .instances import labels_from_probabilities

    regions = regions or [None] * len(probs)
    wrong = {(dy, dx): 0 for dy in GRID for dx in GRID}
    counted = 0
    for prob, truth, region in zip(probs, truths, regions):
        if counted >= MAX_PIXELS:
            break
        p = torch.from_numpy(np.ascontiguousarray(prob, np.float32))
        t = np.asarray(truth)
        keep = None if region is None else np.asarray(region, bool)
        counted += int(t.size if keep is None else keep.sum())
        for dy in GRID:
            rows = shift(p, (dy, 0.0))
            for dx in GRID:
                drawn = labels_from_probabilities(shift(rows, (0.0, dx)).numpy(),
                                                  mode="semantic", threshold=threshold)
                miss = drawn != t
                if keep is not None:
                    miss &= keep
                wrong[dy, dx] += int(miss.sum())
    if not counted:
        return {"offset": [0.0, 0.0], "error": None, "error_shifted": None, "best": [0.0, 0.0]}
    best = min(wrong, key=lambda s: (wrong[s], abs(s[0]) + abs(s[1])))
    kept = best if wrong[best] <= (1 - MIN_GAIN) * wrong[0.0, 0.0] else (0.0, 0.0)
    return {"offset": [float(kept[0]), float(kept[1])],
            "error": wrong[0.0, 0.0] / counted, "error_shifted": wrong[kept] / counted,
            "best": [float(best[0]), float(best[1])]}
