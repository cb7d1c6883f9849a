"""What a prediction found, in words: how many objects, or each class's share of the
pixels. The Predict widget's status and the command line say it alike."""

from __future__ import annotations

import numpy as np


def object_count(result, linked: bool = False, *, on_disk: bool = False,
                 followed: bool = False) -> int | None:
    """The objects of an instance prediction; None for class maps. Labels written to disk
    are read block by block with ``on_disk`` (not on a GUI thread); without it their count
    is the one kept with the result (``PredictResult.objects``), if any. Each plane of a
    stack is numbered from 1 (each z-stack of a time-lapse, when ``linked``), so their
    objects add up; a time-lapse of z-stacks ``followed`` through time is numbered
    through."""
    labels = result.labels
    if result.mode == "semantic" or labels is None or labels.size == 0:
        return None
    if not (on_disk or isinstance(labels, np.ndarray)):
        return getattr(result, "objects", None)
    numbered = (labels.ndim if labels.ndim == 2 or _through_time(labels, linked, followed)
                else 3 if linked else 2)
    return int(sum(int(top) for top in _maxima(labels, numbered)))


def _through_time(labels, linked: bool, followed: bool) -> bool:
    return bool(linked and followed and labels.ndim == 4)


def what_was_found(result, linked: bool = False, *, on_disk: bool = False,
                   followed: bool = False) -> str | None:
    """The objects of an instance prediction ("64 objects", "120 objects in 3 planes"), or
    each class's share of the pixels of a class map ("class 1 34 % of the pixels, class 2
    8 %"). Labels written to disk are read only with ``on_disk`` (block by block: not on a
    GUI thread); without it, only the objects counted before are said."""
    labels = result.labels
    if labels is None or labels.size == 0:
        return None
    n = object_count(result, linked, on_disk=on_disk, followed=followed)
    if n is not None:
        shape = labels.shape
        planes = int(np.prod(shape[:-2]))
        where = ("" if planes == 1 else f" in {planes} planes" if not linked
                 else f" linked through {planes} planes" if len(shape) == 3
                 else f" followed through {shape[0]} time points of {shape[1]} planes"
                 if _through_time(labels, linked, followed)
                 else f" in {planes // shape[-3]} stacks, linked through their {shape[-3]} "
                      "planes")
        return f"{n:,} object{'' if n == 1 else 's'}{where}"
    if result.mode != "semantic" or not (on_disk or isinstance(labels, np.ndarray)):
        return None
    counts = np.zeros(1, np.int64)
    for _, block in _blocks(labels):
        found = np.bincount(block.ravel().clip(0).astype(np.intp))
        counts = np.pad(counts, (0, max(len(found) - len(counts), 0)))
        counts[: len(found)] += found
    shares = [f"class {k} {100 * c / labels.size:.0f} %" for k, c in enumerate(counts)
              if k and c]
    if not shares:
        return "background only"
    shares[0] += " of the pixels"
    return ", ".join(shares)


def _maxima(labels, numbered: int) -> np.ndarray:
    """The largest label of each part of ``labels`` numbered on its own (its last
    ``numbered`` axes); an array on disk is read a block at a time."""
    lead = labels.shape[: labels.ndim - numbered]
    if isinstance(labels, np.ndarray):
        return labels.reshape(int(np.prod(lead)), -1).max(1)
    tops = np.zeros(lead, np.int64)
    for index, block in _blocks(labels):
        part = index[: len(lead)]
        tops[part] = max(tops[part], int(block.max(initial=0)))
    return tops.ravel()


def _blocks(labels):
    """``(plane index, block)`` of ``labels``: a numpy array whole, an array on disk one 2D
    block of its chunks at a time."""
    if isinstance(labels, np.ndarray):
        yield (), labels
        return
    from .blockwise import blocks

    chunks = getattr(labels, "chunks", None)
    side = (tuple(int(np.max(c)) for c in chunks[-2:])  # zarr: ints; Dask: tuples
            if chunks else (1024, 1024))
    for index in np.ndindex(*labels.shape[:-2]):
        for block in blocks(labels.shape[-2:], side):
            yield index, np.asarray(labels[(*index, *block)])
