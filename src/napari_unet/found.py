"""What a prediction found, in words: how many objects, or each class's share of the
pixels. The Predict widget's status and the command line say it alike."""

from __future__ import annotations

import numpy as np


def object_count(result, linked: bool = False) -> int | None:
    """The objects of an instance prediction held in memory; None for class maps and for
    labels written to disk. Each plane of a stack is numbered from 1 (each z-stack of a
    time-lapse, when ``linked``), so their objects add up."""
    labels = result.labels
    if not isinstance(labels, np.ndarray) or result.mode == "semantic" or labels.size == 0:
        return None
    numbered = labels.shape[-3 if linked else -2:] if labels.ndim > 2 else labels.shape
    return int(labels.reshape(-1, int(np.prod(numbered))).max(1).astype(np.int64).sum())


def what_was_found(result, linked: bool = False) -> str | None:
    """The objects of an instance prediction held in memory ("64 objects", "120 objects in
    3 planes"), or each class's share of the pixels of a class map ("class 1 34 % of the
    pixels, class 2 8 %"); None for labels written to disk."""
    n = object_count(result, linked)
    if n is not None:
        shape = result.labels.shape
        planes = int(np.prod(shape[:-2]))
        where = ("" if planes == 1 else f" in {planes} planes" if not linked
                 else f" linked through {planes} planes" if len(shape) == 3
                 else f" in {planes // shape[-3]} stacks, linked through their {shape[-3]} "
                      "planes")
        return f"{n:,} object{'' if n == 1 else 's'}{where}"
    labels = result.labels
    if not isinstance(labels, np.ndarray) or labels.size == 0:
        return None
    counts = np.bincount(labels.ravel().clip(0).astype(np.intp))
    shares = [f"class {k} {100 * c / labels.size:.0f} %" for k, c in enumerate(counts)
              if k and c]
    if not shares:
        return "background only"
    shares[0] += " of the pixels"
    return ", ".join(shares)
