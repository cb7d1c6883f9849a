"""Instance labels of images larger than memory, block by block.

Two ways. :func:`label_components`: the foreground is labelled one block at a time
(4-connected components), each block's ids are offset by the objects of the blocks before
it, and objects that meet across a block face are merged (union-find over the pairs seen on
the faces, every object mapped to the smallest id of its group). The growth into the
separating lines, the size filter and the sequential ids follow, each pass reading at most a
block plus a ``grow``-pixel halo. The result is the same partition as
:func:`napari_unet.instances.components` on the whole image.

:func:`label_with_halo`: any labeller of a whole image (the seeded watershed, centre
voting) labels each block with a halo of context wider than the objects and writes the
block's core; an object that crosses a block face is joined where the two blocks' labels of
it agree. On DSB nuclei it gave the objects of one pass over the whole image
(``benchmarks/blockwise_labels.py``).

Every pass is a map over blocks with a function of this module, so it runs in this process
(:func:`local_map`) or on a Dask cluster (:func:`napari_unet.distributed.dask_map`); the
blocks are written in place and never share a chunk when they follow the output's chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError
from .instances import _CROSS, grow_labels

Block = tuple[slice, slice]


def blocks(shape: Sequence[int], block: Sequence[int] | int) -> list[Block]:
    """The blocks of a 2D ``shape``, in raster order (the last ones may be smaller)."""
    bh, bw = (block, block) if isinstance(block, int) else block
    h, w = shape
    return [(slice(y, min(y + bh, h)), slice(x, min(x + bw, w)))
            for y in range(0, h, bh) for x in range(0, w, bw)]


def local_map(func: Callable, items: Sequence, **kwargs) -> list:
    """Run ``func(item, **kwargs)`` for every item in this process."""
    return [func(item, **kwargs) for item in items]


@dataclass(frozen=True)
class Foreground:
    """The object pixels of a block, read from class probabilities ``(C, H, W)``.

    Two-class models: the foreground probability above ``threshold``; three-class models:
    the pixels whose most likely class is the object interior.
    """

    probabilities: object
    three_class: bool = False
    threshold: float = 0.5

    def __call__(self, sl: Block) -> np.ndarray:
        if self.three_class:
            return np.argmax(np.asarray(self.probabilities[(slice(None), *sl)]), axis=0) == 1
        return np.asarray(self.probabilities[(1, *sl)]) > self.threshold


def semantic_labels(sl: Block, *, probabilities, out, threshold: float = 0.5) -> None:
    """Class labels of one block: the class of highest probability, or for two classes the
    foreground above ``threshold``."""
    prob = np.asarray(probabilities[(slice(None), *sl)])
    out[sl] = (prob[1] > threshold) if prob.shape[0] == 2 else np.argmax(prob, axis=0)


def _label(sl: Block, *, foreground, out) -> int:
    lab, n = ndi.label(foreground(sl), structure=_CROSS)
    out[sl] = lab
    return int(n)


def _offset(item: tuple[Block, int], *, out) -> None:
    sl, offset = item
    if offset:
        lab = np.asarray(out[sl])
        out[sl] = np.where(lab > 0, lab.astype(np.int64) + offset, 0)


def _face_pairs(sl: Block, *, out) -> np.ndarray:
    ys, xs = sl
    found = []
    if ys.start > 0:
        a, b = np.asarray(out[ys.start - 1, xs]), np.asarray(out[ys.start, xs])
        found.append(np.stack([a, b], 1)[(a > 0) & (b > 0)])
    if xs.start > 0:
        a, b = np.asarray(out[ys, xs.start - 1]), np.asarray(out[ys, xs.start])
        found.append(np.stack([a, b], 1)[(a > 0) & (b > 0)])
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def _grow(sl: Block, *, foreground, out, lut, grow, shape) -> tuple[np.ndarray, np.ndarray]:
    window = tuple(slice(max(s.start - grow, 0), min(s.stop + grow, n))
                   for s, n in zip(sl, shape))
    raw = np.where(foreground(window), lut[np.asarray(out[window])], 0)
    grown = grow_labels(raw, grow)
    core = grown[tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(sl, window))]
    out[sl] = core
    return np.unique(core, return_counts=True)


def _final(sl: Block, *, out, lut) -> None:
    out[sl] = lut[np.asarray(out[sl])]


def merge_lut(n: int, pairs: np.ndarray) -> np.ndarray:
    """Map ids ``0..n`` to the smallest id of the group each is joined to by ``pairs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = pairs.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(n + 1, n + 1))
    _, group = connected_components(graph, directed=False)
    roots = np.full(group.max() + 1, n + 1, np.int64)
    np.minimum.at(roots, group, np.arange(n + 1))
    return roots[group]


def label_components(foreground: Callable[[Block], np.ndarray], out, *, block=2048,
                     grow: int = 1, min_size: int | Callable = 10,
                     mapper: Callable = local_map) -> int:
    """Label the components of ``foreground`` into ``out`` (an integer array-like).

    Parameters
    ----------
    foreground : callable
        ``foreground(block) -> bool array`` for a pair of slices (e.g. :class:`Foreground`).
    out : array-like
        ``(H, W)`` integer output (numpy, memmap, zarr); also holds the intermediate ids.
    block : int or (int, int)
        Block size; use the output's chunks when tasks run in parallel.
    grow, min_size :
        As in :func:`napari_unet.instances.components`; ``min_size`` may also be a function
        of the objects' sizes (pixels) that returns the minimum size.
    mapper : callable
        ``mapper(func, items, **kwargs) -> list``: where the passes run.

    Returns
    -------
    int
        The number of objects (ids are ``1..n``).
    """
    shape = tuple(out.shape)
    if not np.issubdtype(np.dtype(out.dtype), np.integer):
        raise InputError(f"the labels output has data type {out.dtype}; expected integers.")
    parts = blocks(shape, block)
    counts = mapper(_label, parts, foreground=foreground, out=out)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n = int(np.sum(counts))
    _fits(n, out)
    mapper(_offset, list(zip(parts, offsets.tolist())), out=out)
    pairs = mapper(_face_pairs, parts, out=out)
    lut = merge_lut(n, np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64))
    final = _kept(n, mapper(_grow, parts, foreground=foreground, out=out, lut=lut,
                            grow=grow, shape=shape), min_size)
    mapper(_final, parts, out=out, lut=final)
    return int(final.max(initial=0))


def _fits(n: int, out) -> None:
    if n > np.iinfo(np.dtype(out.dtype)).max:
        raise InputError(f"{n} objects do not fit into a labels output of type {out.dtype}; "
                         "use uint32.")


def _kept(n: int, counted, min_size) -> np.ndarray:
    """The final ids (``1..k``, 0 for objects under ``min_size``) of ids ``0..n`` from
    the ``(ids, counts)`` of every block."""
    sizes = np.zeros(n + 1, np.int64)
    for ids, cnt in counted:
        np.add.at(sizes, ids, cnt)
    sizes[0] = 0
    if callable(min_size):
        min_size = min_size(sizes[sizes > 0])
    keep = np.flatnonzero(sizes >= max(min_size, 1))
    final = np.zeros(n + 1, np.int64)
    final[keep] = np.arange(1, len(keep) + 1)
    return final


#: Rows (or columns) across a block face in which two blocks' labels of an object must
#: agree for the object to be one.
FACE_STRIP = 8


def _label_window(sl: Block, *, labeller, probabilities, out, halo: int, shape, strip: int):
    """Label one block with ``halo`` px of context: write the labels of its core (the
    objects present there, numbered 1..k) and return k with this block's labels of the
    strips above and left of its core, which lie in the neighbours' cores."""
    window = tuple(slice(max(s.start - halo, 0), min(s.stop + halo, n))
                   for s, n in zip(sl, shape))
    lab = np.asarray(labeller(np.asarray(probabilities[(slice(None), *window)])))
    oy, ox = sl[0].start - window[0].start, sl[1].start - window[1].start
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    core = lab[oy: oy + h, ox: ox + w]
    present = np.unique(core)
    present = present[present > 0]
    local = np.zeros(int(lab.max(initial=0)) + 1, np.int64)
    local[present] = np.arange(1, len(present) + 1)
    out[sl] = local[core]
    top = local[lab[oy - strip: oy, ox: ox + w]] if sl[0].start > 0 else None
    left = local[lab[oy: oy + h, ox - strip: ox]] if sl[1].start > 0 else None
    return len(present), top, left


def _strip_pairs(item, *, out, strip: int) -> np.ndarray:
    """Pairs of ids (the neighbour's, this block's) that label one object across this
    block's top and left faces: their pixels in the strip beyond the face overlap with an
    intersection over union of at least one half."""
    sl, offset, top, left = item
    ys, xs = sl
    found = []
    for mine, theirs in ((top, (slice(ys.start - strip, ys.start), xs)),
                         (left, (ys, slice(xs.start - strip, xs.start)))):
        if mine is None:
            continue
        other = np.asarray(out[theirs]).astype(np.int64).ravel()
        mine = np.where(mine > 0, mine + offset, 0).ravel()
        both = (other > 0) & (mine > 0)
        if not both.any():
            continue
        pairs, overlap = np.unique(np.stack([other[both], mine[both]], 1), axis=0,
                                   return_counts=True)
        ids_o, n_o = np.unique(other[other > 0], return_counts=True)
        ids_m, n_m = np.unique(mine[mine > 0], return_counts=True)
        size_o = n_o[np.searchsorted(ids_o, pairs[:, 0])]
        size_m = n_m[np.searchsorted(ids_m, pairs[:, 1])]
        found.append(pairs[overlap * 2 >= size_o + size_m - overlap])
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def _sizes(sl: Block, *, out, lut) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(lut[np.asarray(out[sl])], return_counts=True)


def label_with_halo(labeller: Callable[[np.ndarray], np.ndarray], probabilities, out,
                    **kwargs) -> int:
    """:func:`iter_label_with_halo` run to its end: the number of objects."""
    from .progress import run

    return run(iter_label_with_halo(labeller, probabilities, out, **kwargs))


def iter_label_with_halo(labeller: Callable[[np.ndarray], np.ndarray], probabilities, out, *,
                         block=2048, halo: int = 64, min_size: int | Callable = 10,
                         mapper: Callable = local_map, group: int | None = 1
                         ) -> Generator[tuple[int, int], None, int]:
    """Instance labels of ``probabilities`` ``(C, H, W)`` into ``out`` block by block,
    with any labeller of a whole image (the seeded watershed with its merges and neck
    cuts, centre voting): each block is labelled with ``halo`` px of context on every
    side and writes its core; an object that crosses a block face is one where the two
    blocks' labels of it agree (intersection over union of at least one half in the
    :data:`FACE_STRIP` px beyond the face). With a halo wider than the objects, each
    block sees every object of its core whole, as one pass over the whole image does;
    its decisions can still differ a little from that pass where context beyond the halo
    mattered. ``min_size`` (pixels, or a function of the objects' sizes) is applied to
    the joined objects; the labeller's own minimum size should not exceed it.

    Yields ``(blocks labelled, blocks)`` after every ``group`` blocks of the first pass,
    the long one (None: all at once, for a mapper that runs them in parallel); returns
    the number of objects (ids ``1..n``).
    """
    shape = tuple(out.shape)
    if not np.issubdtype(np.dtype(out.dtype), np.integer):
        raise InputError(f"the labels output has data type {out.dtype}; expected integers.")
    parts = blocks(shape, block)
    bh, bw = (block, block) if isinstance(block, int) else block
    strip = max(1, min(FACE_STRIP, halo, bh, bw))  # within the window and the neighbour
    done: list = []
    step = group or len(parts)
    for first in range(0, len(parts), step):
        done += mapper(_label_window, parts[first: first + step], labeller=labeller,
                       probabilities=probabilities, out=out, halo=halo, shape=shape,
                       strip=strip)
        yield len(done), len(parts)
    counts = [k for k, _, _ in done]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n = int(np.sum(counts))
    _fits(n, out)
    mapper(_offset, list(zip(parts, offsets.tolist())), out=out)
    items = [(sl, int(off), top, left) for sl, off, (_, top, left) in zip(parts, offsets, done)]
    pairs = mapper(_strip_pairs, items, out=out, strip=strip)
    lut = merge_lut(n, np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64))
    final = _kept(n, mapper(_sizes, parts, out=out, lut=lut), min_size)
    mapper(_final, parts, out=out, lut=final[lut])
    return int(final.max(initial=0))
