"""Objects linked across the planes of a stack.

A 2D U-Net labels each plane of a z-stack on its own, so one nucleus cut by ten planes
comes out as ten objects with unrelated ids. Linking gives the objects of consecutive
planes that overlap one id: plane by plane, the pairs of objects (one in the plane before,
already linked, one in this plane) are ranked by their intersection over union, and taken
greedily, each object at most once, while their IoU is at least ``min_iou``; an object of
this plane left unmatched starts a new id (as Cellpose stitches 2D masks into 3D with its
``stitch_threshold``). The same works for a time-lapse whose cells move less than their
own size between frames.

Planes are read and written one block at a time, so a stack on disk (zarr, memmap) is
linked in the memory of two blocks.
:func:`plane` gives a plane of any of them that reads and writes in place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np

from .blockwise import blocks
from .errors import InputError


def _counts(values: np.ndarray) -> Counter:
    ids, n = np.unique(values, return_counts=True)
    return Counter(dict(zip(ids.tolist(), n.tolist(), strict=True)))


def _overlaps(prev, cur, block) -> tuple[Counter, Counter]:
    """Pixel counts of ``cur``'s objects and of their intersections with ``prev``'s
    (``prev`` None: none)."""
    sizes, shared = Counter(), Counter()
    for sl in blocks(cur.shape, block):
        b = np.asarray(cur[sl]).ravel().astype(np.uint64)
        if b.size and int(b.max()) >> 32:
            raise InputError("labels of 2**32 or more cannot be linked across planes.")
        sizes.update(_counts(b[b > 0]))
        if prev is not None:
            a = np.asarray(prev[sl]).ravel().astype(np.uint64)
            both = (a > 0) & (b > 0)
            shared.update(_counts((a[both] << np.uint64(32)) | b[both]))
    return sizes, shared


def match_objects(sizes_prev: Counter, sizes_cur: Counter, shared: Counter,
                  min_iou: float) -> dict[int, int]:
    """This plane's id -> the previous plane's id it continues, one to one, greedily by
    IoU (ties to the smaller ids), for pairs whose IoU is at least ``min_iou``."""
    pairs = []
    for key, inter in shared.items():
        p, c = key >> 32, key & 0xFFFFFFFF
        iou = inter / (sizes_prev[p] + sizes_cur[c] - inter)
        if iou >= min_iou:
            pairs.append((-iou, p, c))
    match, taken = {}, set()
    for _, p, c in sorted(pairs):
        if c not in match and p not in taken:
            match[c] = p
            taken.add(p)
    return match


def _relabel(plane, mapping: dict[int, int], block, dtype) -> None:
    keys = np.array(sorted(mapping), np.uint64)
    values = np.array([mapping[k] for k in keys.tolist()], dtype)
    for sl in blocks(plane.shape, block):
        old = np.asarray(plane[sl])
        new = np.zeros(old.shape, dtype)
        inside = old > 0
        if keys.size and inside.any():
            new[inside] = values[np.searchsorted(keys, old[inside].astype(np.uint64))]
        plane[sl] = new


def iter_link_planes(labels, min_iou: float = 0.25, *, block=None) -> Iterator[int]:
    """Link the objects of ``labels`` (``(N, H, W)``, numpy, zarr or memmap; changed in
    place) across its planes; yields the number of planes done after each one.

    Ids come out consecutive from 1 in order of first appearance plane by plane.
    ``block``: the side of the blocks read at once (default: the labels' chunks, or
    2048 px).
    """
    _check_iou(min_iou)
    if labels.ndim != 3:
        raise InputError(f"objects are linked across the planes of a stack (N, H, W), not "
                         f"an array of shape {tuple(labels.shape)}.")
    yield from _iter_link([[plane(labels, k)] for k in range(labels.shape[0])], labels,
                          min_iou, block, "planes")


def iter_follow_time(labels, min_iou: float = 0.25, *, block=None) -> Iterator[int]:
    """Follow the objects of a time-lapse of z-stacks ``(T, Z, H, W)`` (numpy, zarr;
    changed in place), each z-stack's already linked along Z (:func:`iter_link_stacks`),
    through its time points: an object takes the id of the object of the time point before
    that it overlaps most in 3D, one to one, where their intersection over union is at
    least ``min_iou`` (cells that move less than their size between time points); the
    others, new ids. Yields the time points done."""
    _check_iou(min_iou)
    if labels.ndim != 4:
        raise InputError(f"objects are followed through the time points of a time-lapse of "
                         f"z-stacks (T, Z, H, W), not an array of shape {tuple(labels.shape)}.")
    stacks = [plane(labels, t) for t in range(labels.shape[0])]
    yield from _iter_link([[plane(stack, z) for z in range(labels.shape[1])]
                           for stack in stacks], labels, min_iou, block, "time points")


def _check_iou(min_iou: float) -> None:
    if not 0 < min_iou <= 1:
        raise InputError(f"the overlap to link objects across planes must be an IoU "
                         f"between 0 and 1, not {min_iou}.")


def _iter_link(units: list[list], labels, min_iou: float, block, across: str
               ) -> Iterator[int]:
    """Link the objects of each unit (a plane, or a z-stack: a list of 2D planes read and
    written in place) to those of the unit before, greedily by IoU over all their planes;
    ids come out consecutive from 1 in order of first appearance. Yields the units done."""
    chunks = getattr(labels, "chunks", None)
    block = block or (tuple(chunks[-2:]) if chunks else 2048)
    dtype = np.dtype(labels.dtype)
    top = np.iinfo(dtype).max
    next_id, sizes_prev = 1, Counter()  # the unit before's objects, by their new ids
    for k, cur in enumerate(units):
        sizes_cur, shared = Counter(), Counter()
        for z, part in enumerate(cur):
            sizes, overlaps = _overlaps(units[k - 1][z] if k else None, part, block)
            sizes_cur.update(sizes)
            shared.update(overlaps)
        match = match_objects(sizes_prev, sizes_cur, shared, min_iou)
        mapping = {}
        for c in sorted(sizes_cur):
            if c in match:
                mapping[c] = match[c]
            else:
                mapping[c] = next_id
                next_id += 1
        if next_id - 1 > top:
            raise InputError(f"linked across the {across} there are {next_id - 1} objects, "
                             f"more than labels of type {dtype} can number.")
        for part in cur:
            _relabel(part, mapping, block, dtype)
        sizes_prev = Counter({mapping[c]: n for c, n in sizes_cur.items()})
        yield k + 1


def link_planes(labels, min_iou: float = 0.25, *, block=None):
    """:func:`iter_link_planes` run to the end; returns ``labels`` (changed in place)."""
    for _ in iter_link_planes(labels, min_iou, block=block):
        pass
    return labels


class _Plane:
    """Plane ``k`` of a stacked array-like, read and written in place (zarr has no views)."""

    def __init__(self, array, k: int):
        self.array, self.k = array, k
        self.shape, self.dtype = tuple(array.shape[1:]), array.dtype
        self.ndim = len(self.shape)
        self.chunks = getattr(array, "chunks", None) and tuple(array.chunks[1:])

    def _key(self, key):
        return (self.k, *(key if isinstance(key, tuple) else (key,)))

    def __getitem__(self, key):
        return self.array[self._key(key)]

    def __setitem__(self, key, value):
        self.array[self._key(key)] = value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array[self.k], dtype=dtype)


def plane(array, k: int):
    """Plane ``k`` of a stack: a view for numpy, a read/write proxy for zarr and the like."""
    return array[k] if isinstance(array, np.ndarray) else _Plane(array, k)


def outer_axes(image, channels: int) -> tuple[int, ...]:
    """The axes before the planes' stack axis of an image of more than one stack axis,
    for a model of ``channels`` channels: ``(T,)`` for a time-lapse of z-stacks
    ``(T, Z, H, W)`` (``(T, Z, H, W, C)`` for a model of several channels), ``()`` for a 2D
    image or a stack of them. An image whose last axis looks like colour (3 or 4) is no
    grey stack."""
    image_axes = 2 if channels == 1 else 3
    if image.ndim < image_axes + 2:
        return ()
    if channels == 1 and image.shape[-1] in (3, 4):
        return ()
    if channels > 1 and image.shape[-1] not in (channels, 4 if channels == 3 else channels):
        return ()
    return tuple(int(s) for s in image.shape[: image.ndim - image_axes - 1])


def one_stack(image, outer: tuple[int, ...]):
    """``image`` with its outer axes (:func:`outer_axes`) and stack axis made one stack
    axis: ``(T, Z, H, W)`` as ``(T * Z, H, W)``. Lazy data stays lazy."""
    shape = (-1, *image.shape[len(outer) + 1 :])
    if isinstance(image, np.ndarray):
        return image.reshape(shape)
    import dask.array as da

    return da.asarray(image).reshape(shape)


class _Flat:
    """An array-like ``(*outer, N, ...)`` seen as one stack ``(prod(outer) * N, ...)``,
    read and written a plane at a time, in place (zarr has no reshaped views)."""

    def __init__(self, array, outer: tuple[int, ...]):
        self.array, self.lead = array, (*outer, int(array.shape[len(outer)]))
        self.shape = (int(np.prod(self.lead)), *array.shape[len(self.lead):])
        self.ndim, self.dtype = len(self.shape), array.dtype
        chunks = getattr(array, "chunks", None)
        self.chunks = chunks and (1, *tuple(chunks)[len(self.lead):])

    def _key(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if not isinstance(key[0], (int, np.integer)):
            raise TypeError("a flattened stack is read and written a plane at a time")
        return (*np.unravel_index(int(key[0]), self.lead), *key[1:])

    def __getitem__(self, key):
        return self.array[self._key(key)]

    def __setitem__(self, key, value):
        self.array[self._key(key)] = value


def flat_stack(array, outer: tuple[int, ...]):
    """``array`` with its outer axes and stack axis made one stack axis, as
    :func:`one_stack` for outputs: a view for numpy, a read/write proxy otherwise."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array.reshape(-1, *array.shape[len(outer) + 1 :])
    return _Flat(array, outer)


def iter_link_stacks(labels, min_iou: float) -> Iterator[int]:
    """:func:`iter_link_planes` along the stack axis (the third from last) of labels
    ``(..., N, H, W)`` (numpy, zarr), each stack on its own (the z-stack of every time
    point: ids start at 1 in each; :func:`iter_follow_time` then follows them through the
    time points); yields the planes done."""
    if labels.ndim == 3:
        yield from iter_link_planes(labels, min_iou)
        return
    stacks = flat_stack(labels, tuple(labels.shape[:-4]))
    for s in range(stacks.shape[0]):
        stack = plane(stacks, s)
        for k in iter_link_planes(stack, min_iou):
            yield s * stack.shape[0] + k
