"""The outline of each object of a labelled plane: its perimeter and its convex hull.

- The perimeter is scikit-image's (``regionprops``' ``perimeter``; Benkrid and Crookes'
  estimator): the object's border pixels (those with a 4-neighbour outside it) weighted by
  how their border neighbours run — 1 along a row or column, √2 on a diagonal — so a disc
  of radius r measures close to 2πr, not the 8r of its pixels' edges.
- The convex area is scikit-image's too (``area_convex``, of which ``solidity`` is the
  object's share): the pixels whose centres lie in the convex hull of the object's pixels
  (of the midpoints of their edges), so a convex object's is its own area and a clump of
  two round nuclei's is larger by the notches between them.

Both are found a block of the labels at a time (a band of rows, or a zarr or Dask chunk,
read with a margin of two pixels), as :mod:`napari_unet.measure` reads them. The hull is
found from two pixels per row of each object (its first and last there), so what is kept
between blocks grows with the objects' heights, not their areas, and found for all objects
at once (numpy, no loop over objects).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Generator

import numpy as np

#: The weight of a border pixel by its code (1 for itself, 2 for each border 4-neighbour
#: of the same object, 10 for each such diagonal neighbour), as scikit-image weighs it.
_WEIGHTS = np.zeros(50)
_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_WEIGHTS[[21, 33]] = math.sqrt(2)
_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
_NEAR = ((-1, 0), (1, 0), (0, -1), (0, 1))
_DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))
#: How far beyond a block the labels are read.
MARGIN = 2


def outline_steps(labels, blocks) -> Generator[tuple[int, int], None, tuple[np.ndarray, ...]]:
    """The perimeter and the convex area of every object (label > 0) of the plane
    ``labels`` (numpy, memmap, zarr or Dask), read block by block (``blocks``: tuples of
    slices that tile it), yielding ``(done, total)`` blocks as it goes. Returns ``(index,
    perimeter, convex_area)``, ``index`` the labels found, ascending; in pixels."""
    height, width = np.shape(labels)
    sums, rows = [], []
    blocks = list(blocks)
    total, strips = reads(labels, blocks) * len(blocks), None
    if total > len(blocks):  # chunks: their edges first, then each chunk once more
        strips = {}
        for done, block in enumerate(blocks, 1):
            yield done, total
            part = np.asarray(labels[block])
            strips[block[0].start, block[1].start] = (part[:MARGIN], part[-MARGIN:],
                                                      part[:, :MARGIN], part[:, -MARGIN:])
        grid = tuple(sorted({start[k] for start in strips}) for k in (0, 1))
    for done, block in enumerate(blocks, total - len(blocks) + 1):
        yield done, total
        ys, xs = block[0], block[1] if len(block) > 1 else slice(0, width)
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        part = (_with_margin(labels, ys, xs, height, width) if strips is None
                else _from_strips(np.asarray(labels[block]), ys, xs, strips, grid))
        label, y, x, weight = _border(part)
        if not label.size:
            continue
        found, inverse = np.unique(label, return_inverse=True)
        sums.append((found, np.bincount(inverse, weights=weight)))
        rows.append(_row_ends(label, y + ys.start, x + xs.start))
    if not sums:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    found, inverse = np.unique(np.concatenate([f for f, _ in sums]), return_inverse=True)
    perimeter = np.bincount(inverse, weights=np.concatenate([s for _, s in sums]))
    return found, perimeter, _convex_areas(found, *map(np.concatenate, zip(*rows, strict=True)))


def reads(labels, blocks: list) -> int:
    """How many times :func:`outline_steps` reads each block: once from an array in memory
    (bands with their margins), twice from one read chunk by chunk (zarr, Dask: a chunk
    is read whole, so each one's margin is taken from its neighbours' edges, kept from a
    first read, not by reading eight neighbours for each); once where chunks are thinner
    than the margin."""
    chunked = getattr(labels, "chunks", None) is not None and all(len(b) == 2 for b in blocks)
    return 2 if chunked and min(b[k].stop - b[k].start for b in blocks for k in (0, 1)) \
        >= MARGIN else 1


def _from_strips(part: np.ndarray, ys: slice, xs: slice, strips: dict,
                 grid: tuple[list, list]) -> np.ndarray:
    """The chunk ``part`` (at ``ys, xs``) with :data:`MARGIN` pixels around it from the
    edges of the chunks beside it (``strips``: of each chunk by its first row and column,
    its first and last rows, its first and last columns; ``grid``: the chunks' first rows
    and first columns, ascending), background beyond the plane."""
    m, (h, w) = MARGIN, part.shape
    out = np.zeros((h + 2 * m, w + 2 * m), part.dtype)
    out[m:m + h, m:m + w] = part
    starts_y, starts_x = grid
    row, col = bisect_left(starts_y, ys.start), bisect_left(starts_x, xs.start)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) == (0, 0) or not (0 <= row + dy < len(starts_y)
                                          and 0 <= col + dx < len(starts_x)):
                continue
            top, bottom, left, right = strips[starts_y[row + dy], starts_x[col + dx]]
            edge = {-1: bottom, 0: right if dx == -1 else left, 1: top}[dy]
            if dy == 0:
                piece = edge  # a side: the whole strip of columns
            else:
                piece = {-1: edge[:, -m:], 0: edge, 1: edge[:, :m]}[dx]
            at_y = {-1: slice(0, m), 0: slice(m, m + h), 1: slice(m + h, h + 2 * m)}[dy]
            at_x = {-1: slice(0, m), 0: slice(m, m + w), 1: slice(m + w, w + 2 * m)}[dx]
            out[at_y, at_x] = piece
    return np.where(out < 0, 0, out) if out.min() < 0 else out


def _with_margin(labels, ys: slice, xs: slice, height: int, width: int) -> np.ndarray:
    """The labels of the block ``ys, xs`` with :data:`MARGIN` pixels around it: the
    neighbours' labels inside the plane, background beyond its edges."""
    top, left = max(ys.start - MARGIN, 0), max(xs.start - MARGIN, 0)
    bottom, right = min(ys.stop + MARGIN, height), min(xs.stop + MARGIN, width)
    part = np.asarray(labels[top:bottom, left:right])
    part = np.where(part < 0, 0, part) if part.size and part.min() < 0 else part
    out = np.zeros((ys.stop - ys.start + 2 * MARGIN, xs.stop - xs.start + 2 * MARGIN),
                   part.dtype)
    y0, x0 = top - (ys.start - MARGIN), left - (xs.start - MARGIN)
    out[y0:y0 + part.shape[0], x0:x0 + part.shape[1]] = part
    return out


def _border(part: np.ndarray) -> tuple[np.ndarray, ...]:
    """Of the block inside the margin of ``part``: each border pixel's label, row, column
    (in the block) and its weight in the perimeter."""
    m, (h, w) = MARGIN, part.shape
    # border pixels, one pixel beyond the block too (their neighbours' codes need them)
    centre = part[1:h - 1, 1:w - 1]
    inside = centre > 0
    for dy, dx in _NEAR:
        inside &= part[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] == centre
    border = (centre > 0) & ~inside
    y, x = np.nonzero(border[m - 1:h - m - 1, m - 1:w - m - 1])
    # each one's code, from the border pixels beside it of its own object
    at, on = (y + m) * w + (x + m), (y + m - 1) * (w - 2) + (x + m - 1)
    flat, edge = part.ravel(), border.ravel()
    label = flat[at]
    code = np.ones(y.size, np.int8)
    for step, offsets in ((2, _NEAR), (10, _DIAGONAL)):
        for dy, dx in offsets:
            code += step * (edge[on + dy * (w - 2) + dx] & (flat[at + dy * w + dx] == label))
    return label, y, x, _WEIGHTS[code]


def _row_ends(label: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The first and last column of each object in each row it crosses, given its border
    pixels (the ends of a row are border pixels): ``(label, row, first, last)``."""
    order = np.lexsort((x, y, label))
    label, y, x = label[order], y[order], x[order]
    new = np.ones(label.size, bool)
    new[1:] = (label[1:] != label[:-1]) | (y[1:] != y[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], label.size) - 1
    return label[starts], y[starts], x[starts], x[ends]


def _convex_areas(index: np.ndarray, label, row, first, last) -> np.ndarray:
    """The pixels in the convex hull of each object (``index``: the labels, ascending),
    from the first and last column of each of its rows, as scikit-image counts them: the
    pixel centres inside or on the hull of the midpoints of its pixels' edges."""
    obj = np.searchsorted(index, label)
    ys = np.concatenate([row - 0.5, row, row + 0.5])
    obj = np.concatenate([obj, obj, obj])
    right = _side(obj, ys, np.concatenate([last, last + 0.5, last]), 1)
    left = _side(obj, ys, np.concatenate([first, first - 0.5, first]), -1)
    # every row of every object, from its first to its last
    top = np.full(index.size, np.iinfo(np.int64).max)
    bottom = np.full(index.size, -1)
    np.minimum.at(top, obj[:label.size], row)
    np.maximum.at(bottom, obj[:label.size], row)
    heights = bottom - top + 1
    each = np.repeat(np.arange(index.size), heights)
    rows = np.arange(each.size) - np.repeat(np.cumsum(heights) - heights, heights) + top[each]
    ends = _at(right, each, rows) + 1e-9
    starts = _at(left, each, rows) - 1e-9
    count = np.maximum(np.floor(ends) - np.ceil(starts) + 1, 0)
    return np.bincount(each, weights=count, minlength=index.size)


def _at(chain: tuple[np.ndarray, ...], obj: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The column of the polyline ``chain`` (points ``(obj, y, x)``, sorted by object then
    row) of object ``obj`` at row ``y``, between the points around it."""
    c_obj, c_y, c_x = chain
    span = 2 * (max(float(c_y.max()), float(y.max())) + 2)  # rows are halves: keys doubled
    keys = c_obj * span + 2 * (c_y + 1)
    i = np.searchsorted(keys, obj * span + 2 * (y + 1), side="right") - 1
    j = np.minimum(i + 1, c_x.size - 1)
    exact = (c_y[i] == y) | (c_obj[j] != obj)
    rise = np.where(exact, 1.0, c_y[j] - c_y[i])
    return np.where(exact, c_x[i], c_x[i] + (y - c_y[i]) * (c_x[j] - c_x[i]) / rise)


def _side(obj: np.ndarray, y: np.ndarray, x: np.ndarray, side: int) -> tuple[np.ndarray, ...]:
    """One side of each object's convex hull, of the points ``(y, x)`` of object ``obj``:
    the outermost ``x`` of each ``y`` (the largest for ``side`` 1, the smallest for -1),
    then of those, points dropped while any lies on or inside the segment between its
    neighbours (all objects at once; a corner of the hull never does, so what is left is
    the hull's side): ``(obj, y, x)``, by object, then row."""
    order = np.lexsort((side * x, y, obj))
    obj, y, x = obj[order], y[order], x[order]
    last = np.ones(obj.size, bool)
    last[:-1] = (obj[1:] != obj[:-1]) | (y[1:] != y[:-1])
    obj, y, x = obj[last], y[last], x[last]
    while obj.size > 2:
        middle = (obj[1:-1] == obj[:-2]) & (obj[1:-1] == obj[2:])
        turn = ((y[1:-1] - y[:-2]) * (x[2:] - x[:-2]) - (x[1:-1] - x[:-2]) * (y[2:] - y[:-2]))
        drop = middle & (side * turn >= 0)
        if not drop.any():
            break
        keep = np.ones(obj.size, bool)
        keep[1:-1] = ~drop
        obj, y, x = obj[keep], y[keep], x[keep]
    return obj, y, x
