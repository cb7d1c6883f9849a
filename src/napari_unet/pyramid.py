"""Overview levels of a large result on disk, so that napari shows it as it shows a slide.

napari draws a 2D layer that is not multiscale by reading the whole plane in view into
memory: the labels of a 16,384² image predicted block by block took 8–14 s on the GUI
thread and 4.6 GB to appear (uint32, 1 GB; 1.2 s and 0.4 GB with levels;
benchmarks/show_levels.py), those of a 100,000² slide (40 GB) could not appear at all, and
took napari down with the user's unsaved layers. A result whose plane
has more than :data:`LEVELS_ABOVE` pixels therefore gets levels beside it, each half the
size of the one before, down to at most :data:`SMALLEST` px a side, written block by block:
napari then reads only the chunks in view, at the level the zoom needs. Each level takes
every other row and column of the one before (nearest neighbour), so labels keep their
values and an object is never blended with its neighbour.

A multiscale Labels layer cannot be painted in napari; below :data:`LEVELS_ABOVE` a result
is shown as one array, which napari can paint.

The Predict widget's results on disk and the command line's zarr results get levels, and a
``x.napari-unet`` file beside their stores (:func:`write_pointer`) that napari-unet's
reader opens as the layers they are, after napari was closed or on another machine.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import numpy as np

#: Planes of more pixels than this get overview levels (8,192² px: 3.6–4.0 s and 1.4 GB for
#: napari to show them whole as uint32 labels, and they can be painted; 16,384²: 8–14 s and
#: 4.6 GB).
LEVELS_ABOVE = 8192 * 8192
#: The smallest level is at most this many pixels a side.
SMALLEST = 2048


def needs_levels(shape: tuple[int, ...]) -> bool:
    """Whether a result of ``shape`` (``(..., H, W)``) is shown with overview levels."""
    return int(shape[-2]) * int(shape[-1]) > LEVELS_ABOVE


def level_count(shape: tuple[int, ...], smallest: int | None = None) -> int:
    """How many levels below the full resolution :func:`write_levels` makes."""
    side, n = max(int(shape[-2]), int(shape[-1])), 0
    while side > (smallest or SMALLEST):
        side = (side + 1) // 2
        n += 1
    return n


def write_levels(array, folder: str | os.PathLike, *, smallest: int | None = None
                 ) -> Generator[tuple[int, int], None, list]:
    """Write the overview levels of ``array`` (zarr, ``(..., H, W)``) into ``folder``
    (``1``, ``2``, ... as zarr arrays, chunked as ``array``; the smallest at most
    ``smallest`` px a side, :data:`SMALLEST` by default), each from the one before,
    a chunk at a time. Yields ``(levels done, levels)`` after each chunk; returns
    ``[array, level 1, level 2, ...]``, napari's multiscale data."""
    from .blockwise import blocks
    from .io import create_zarr

    folder = Path(folder)
    total = level_count(array.shape, smallest)
    levels = [array]
    for k in range(1, total + 1):
        source = levels[-1]
        shape = (*source.shape[:-2], (source.shape[-2] + 1) // 2, (source.shape[-1] + 1) // 2)
        chunks = tuple(min(c, s) for c, s in zip(source.chunks, shape, strict=True))
        level = create_zarr(folder / str(k), shape, source.dtype, chunks)
        for index in np.ndindex(*level.cdata_shape[:-2]):  # planes, classes: by chunk
            lead = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=False))
            for ys, xs in blocks(shape[-2:], chunks[-2:]):
                level[(*lead, ys, xs)] = np.asarray(source[(
                    *lead, slice(2 * ys.start, 2 * ys.stop, 2),
                    slice(2 * xs.start, 2 * xs.stop, 2))])
                yield k - 1, total  # a block at a time, so that it can be stopped
        levels.append(level)
    yield total, total
    return levels


def write_all_levels(arrays: dict, folder: str | os.PathLike
                     ) -> Generator[tuple[int, int], None, dict]:
    """:func:`write_levels` of each of ``arrays`` (``{"labels": ..., "probabilities":
    ...}``, None left out) into ``folder/<kind>``; yields as it does; returns their
    levels by kind."""
    levels = {}
    for kind, array in arrays.items():
        if array is not None:
            levels[kind] = yield from write_levels(array, Path(folder) / kind)
    return levels


#: The suffix of the file beside a prediction's zarr stores that opens them in napari as
#: the layers they are (napari-unet's reader).
POINTER = ".napari-unet"


def levels_folder(labels_path: str | os.PathLike, kind: str | None = None) -> Path:
    """Where the overview levels of the labels stored at ``labels_path`` (``x.zarr``, or
    their probabilities ``x_prob.zarr``) are: ``x_levels/`` and, for ``kind``
    ('labels', 'probabilities'), in it."""
    path = Path(labels_path)
    folder = path.with_name(path.name.removesuffix(".zarr").removesuffix("_prob") + "_levels")
    return folder / kind if kind else folder


def write_pointer(labels_path: str | os.PathLike, layers: list[dict], *, mode: str,
                  target: str, model: str) -> Path:
    """Write ``x.napari-unet`` beside the labels store ``x.zarr``: the layers its stores
    are shown as, each ``{"layer": "labels" | "probabilities", "store": folder name,
    "name", "scale", "translate", "rotate", "shear", "affine"}`` (the last three since
    napari-unet places results of rotated and sheared layers; older files lack them), and
    the model's mode and target (the probabilities
    are shown as the Predict widget shows them). Returns its path."""
    import json

    path = Path(labels_path)
    pointer = path.with_name(path.name.removesuffix(".zarr") + POINTER)
    pointer.write_text(json.dumps({"model": str(model), "mode": mode, "target": target,
                                   "layers": layers}, indent=1))
    return pointer
