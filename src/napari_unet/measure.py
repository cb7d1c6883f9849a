"""Measurements of each object of a segmentation: how large it is, where it is, how bright.

One row per label value, as napari's Labels layers hold *features* (shown under the cursor
and in napari's *Features table widget*, which saves them as CSV) and as ``napari-unet
predict --measure`` writes them beside each label file (``<stem>.csv``). Columns:

- ``index``: the label (napari's name for the column that ties a row to a label value);
- ``area``: its pixels (voxels, for an object that spans the planes of a linked z-stack);
- ``centroid-0``, ``centroid-1`` (…): its centre, in pixels along each axis of the labels
  (the plane first in a stack), as scikit-image's ``regionprops_table`` names it;
- ``equivalent_diameter``: of the disc of that area, in pixels (labels of one plane);
- ``axis_major_length``, ``axis_minor_length``, ``eccentricity``: of the ellipse of the
  same second moments, as scikit-image's (labels of one plane): elongation, 0 for a disc;
- ``perimeter`` (pixels) and ``solidity`` (the share of its convex hull it fills: 1 for a
  convex object, less for a notched one such as two nuclei taken as one), as
  scikit-image's (labels of one plane; :mod:`napari_unet.outline`);
- ``on_border``: whether it touches the border of its plane, where it may be cut off (an
  object of a linked stack: of any of its planes), to leave out of sizes and counts;
- ``mean_intensity`` (``mean_intensity-0``, … for each channel): the image's mean over it;
- with the pixel size and its unit known (labels of one plane): ``area (um^2)``, say
  (the unit in ASCII, which every spreadsheet and R read as it is).

Of a model's classes (semantic labels) one row per class, without centres or diameters.
A stack whose planes were labelled apart (labels start at 1 in every plane) is measured
plane by plane, and a time-lapse of z-stacks time point by time point (:func:`apart`): one
row per object of each, led by its ``time`` and ``plane`` (counted from 0, as napari
counts them); an object followed through time keeps its label from row to row.

The labels (and image) are read a band of rows (or a chunk) at a time, so an array on disk
(zarr, memmap) is never loaded whole; counting is done with ``numpy.bincount``.

Of many images, :data:`SUMMARY` holds a row per image (:func:`summary_row`): how many
objects, how many of them on its border, and the median of each size, shape and intensity.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Generator
from pathlib import Path

import numpy as np

from .outline import outline_steps, reads
from .progress import mapped, run

#: The table of a folder of results with a row per image (its objects counted).
SUMMARY = "objects_per_image.csv"
#: Labels numbered beyond this (and beyond four times their pixels) are counted over the
#: values present, not over every number up to the largest.
COMPACT_ABOVE = 1 << 24
#: Rows of the first axis read at a time (of a plane: its rows; of a stack: its planes).
BAND_PIXELS = 1 << 22


def _blocks(labels):
    """Blocks of ``labels`` (tuples of slices) to read in turn: the chunks of a zarr or
    Dask array, else bands of the first axis of about :data:`BAND_PIXELS` pixels."""
    shape = tuple(np.shape(labels))
    chunks = getattr(labels, "chunks", None)
    if chunks is not None and len(chunks) == len(shape):
        if isinstance(chunks[0], tuple):  # Dask: the sizes of each axis's chunks
            chunks = tuple(c[0] for c in chunks)
        grid = [range(0, n, max(1, int(c))) for n, c in zip(shape, chunks, strict=True)]
        for starts in itertools.product(*grid):
            yield tuple(slice(a, min(a + int(c), n))
                        for a, c, n in zip(starts, chunks, shape, strict=True))
        return
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, BAND_PIXELS // per_row)
    for start in range(0, shape[0], step):
        yield (slice(start, min(start + step, shape[0])),)


def _channels(image, labels_shape: tuple[int, ...]) -> int:
    """0 for an image of the labels' shape, C for one with C channels last."""
    shape = tuple(np.shape(image))
    if shape == labels_shape:
        return 0
    if shape[:-1] == labels_shape:
        return shape[-1]
    raise ValueError(f"an image of shape {shape} does not fit labels of shape {labels_shape}")


def measure(labels, image=None, *, pixel_size=None, unit: str | None = None,
            classes: bool = False, apart: int = 0) -> dict[str, np.ndarray]:
    """The measurements of every object (label > 0) of ``labels``; see the module docstring.

    Parameters
    ----------
    labels : array-like of int
        ``(H, W)`` or a stack ``(…, H, W)``; numpy, memmap or zarr.
    image : array-like, optional
        The image the labels were found in: the labels' shape, or with channels last.
    pixel_size : sequence of float, optional
        The size of a pixel along the labels' last two axes, in ``unit``.
    unit : str, optional
        The unit of ``pixel_size`` (``"µm"``); with both, labels of one plane get an area
        column in that unit squared.
    classes : bool
        The labels are classes, not objects: no centres nor diameters.
    apart : int
        How many leading axes of a stack were labelled apart (:func:`apart`): each of their
        planes, or stacks, is measured on its own.
    """
    return run(measure_steps(labels, image, pixel_size=pixel_size, unit=unit,
                             classes=classes, apart=apart))


def measure_steps(labels, image=None, *, pixel_size=None, unit: str | None = None,
                  classes: bool = False, apart: int = 0
                  ) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
    """:func:`measure`, yielding ``(done, total)`` as it reads the blocks of ``labels``
    (of an array on disk, a while); returns its table."""
    shape = tuple(np.shape(labels))
    if apart:
        return _each_apart(labels, image, apart, pixel_size, unit, classes)
    ndim = len(shape)
    channels = None if image is None else _channels(image, shape)
    blocks = list(_blocks(labels))
    shape_of = ndim == 2 and not classes  # second moments, outlines
    total_steps = len(blocks) * (2 + (reads(labels, blocks) if shape_of else 0))
    done = 0
    top = total = 0
    for block in blocks:
        part = np.asarray(labels[block])
        if part.size:
            top, total = max(top, int(part.max())), total + part.size
        done += 1
        yield done, total_steps
    if top <= 0:
        return _empty(ndim, channels, pixel_size, unit, classes)
    values = None  # labels numbered far beyond their pixels (a label 10**12 painted):
    if top >= max(4 * total, COMPACT_ABOVE):  # counted over the values present
        values = np.unique(np.concatenate([[0], *(np.unique(np.asarray(labels[block]))
                                                  for block in blocks)]))
    n = top + 1 if values is None else len(values)
    area = np.zeros(n, np.int64)
    sums = np.zeros((ndim, n))
    bright = np.zeros((max(channels or 1, 1), n)) if channels is not None else None
    moments = np.zeros((3, n)) if shape_of else None  # yy, xx, yx
    for block in blocks:
        done += 1
        yield done, total_steps
        part = np.asarray(labels[block])
        if not part.size:
            continue
        keep = np.flatnonzero(part.ravel() > 0)  # the objects' pixels (below 0: background)
        if not keep.size:
            continue
        labelled = part.ravel()[keep]
        if values is not None:
            at, flat, m = slice(None), np.searchsorted(values, labelled), n
        elif n <= 4 * part.size:  # counted over every label value
            at, flat, m = slice(None), labelled.astype(np.intp, copy=False), n
        else:  # a block of a slide of millions of objects: over the labels it holds
            at, flat = np.unique(labelled, return_inverse=True)
            flat, m = flat.ravel(), len(at)
        area[at] += np.bincount(flat, minlength=m)
        along = []
        if not classes:
            where = np.unravel_index(keep, part.shape)
            for axis in range(ndim):
                start = block[axis].start if axis < len(block) else 0
                along.append(where[axis] + float(start))
                sums[axis, at] += np.bincount(flat, weights=along[-1], minlength=m)
        if moments is not None:
            y, x = along
            for k, weights in enumerate((y * y, x * x, y * x)):
                moments[k, at] += np.bincount(flat, weights=weights, minlength=m)
        if bright is not None:
            pixels = np.asarray(image[block], dtype=np.float64).reshape(part.size, -1)[keep]
            for c in range(pixels.shape[1]):
                bright[c, at] += np.bincount(flat, weights=pixels[:, c], minlength=m)
    found = np.flatnonzero(area)
    index = found if values is None else values[found]
    found, index = found[index > 0], index[index > 0]
    counts = area[found]
    table: dict[str, np.ndarray] = {"index": index, "area": counts}
    if not classes:
        for axis in range(ndim):
            table[f"centroid-{axis}"] = sums[axis, found] / counts
        if ndim == 2:
            table["equivalent_diameter"] = 2 * np.sqrt(counts / np.pi)
        if moments is not None:
            table.update(_ellipse(moments[:, found] / counts, table["centroid-0"],
                                  table["centroid-1"]))
            found_at, perimeter, convex = yield from mapped(
                outline_steps(labels, blocks), lambda step: (done + step[0], total_steps))
            at = np.searchsorted(found_at, index)  # every object has a border pixel
            table["perimeter"], table["solidity"] = perimeter[at], counts / convex[at]
        table["on_border"] = np.isin(index, _on_border(labels))
    if bright is not None:
        if channels == 0:
            table["mean_intensity"] = bright[0, found] / counts
        else:
            for c in range(channels):
                table[f"mean_intensity-{c}"] = bright[c, found] / counts
    scaled = _area_name(ndim, pixel_size, unit)
    if scaled:
        table[scaled] = counts * float(pixel_size[-1]) * float(pixel_size[-2])
    return table


def apart(ndim: int, linked: bool, mode: str = "instances") -> int:
    """How many leading axes of labels of ``ndim`` axes were labelled apart, their labels
    starting at 1 in each: every plane of a stack, unless its planes were ``linked``; of a
    time-lapse of z-stacks ``(T, Z, H, W)``, every time point (its planes linked or not;
    objects followed through time keep their labels, one row per time point). None of a
    model's classes."""
    if mode == "semantic" or ndim <= 2:
        return 0
    return ndim - 2 - (1 if linked else 0)


def _each_apart(labels, image, lead: int, pixel_size, unit, classes) -> dict[str, np.ndarray]:
    """:func:`measure` of each plane (or stack) of the first ``lead`` axes, led by where
    it is: its ``time`` and ``plane``."""
    ndim = np.ndim(labels)
    names = (("time", "plane")[-(ndim - 2):] if ndim <= 4
             else tuple(f"axis-{a}" for a in range(ndim - 2)))[:lead]
    parts = []
    for where in np.ndindex(*np.shape(labels)[:lead]):
        table = measure(labels[where], None if image is None else image[where],
                        pixel_size=pixel_size, unit=unit, classes=classes)
        rows = len(table["index"])
        parts.append({**{n: np.full(rows, k, np.int64)
                         for n, k in zip(names, where, strict=True)}, **table})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _area_name(ndim: int, pixel_size, unit: str | None) -> str | None:
    """The column of the area in ``unit`` squared, where that is known (labels of one
    plane, a pixel size that is not one 'pixel')."""
    if ndim != 2 or pixel_size is None or not unit or unit in ("pixel", "px"):
        return None
    return f"area ({unit.replace('µ', 'u').replace('μ', 'u')}^2)"


def _ellipse(moments: np.ndarray, cy: np.ndarray, cx: np.ndarray) -> dict[str, np.ndarray]:
    """The ellipse of the same second moments as each object (``moments``: the means of
    y², x² and yx over it; ``cy``, ``cx``: its centre), as scikit-image gives it: the
    lengths of its axes and its eccentricity (0 a disc, towards 1 a line)."""
    yy = np.maximum(moments[0] - cy * cy, 0.0)
    xx = np.maximum(moments[1] - cx * cx, 0.0)
    yx = moments[2] - cy * cx
    half, spread = (yy + xx) / 2, np.sqrt(((yy - xx) / 2) ** 2 + yx**2)
    major, minor = half + spread, np.maximum(half - spread, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        eccentricity = np.where(major > 0, np.sqrt(1 - minor / np.where(major > 0, major, 1)),
                                0.0)
    return {"axis_major_length": 4 * np.sqrt(major), "axis_minor_length": 4 * np.sqrt(minor),
            "eccentricity": eccentricity}


def _on_border(labels) -> np.ndarray:
    """The labels on the first and last rows and columns of each plane of ``labels``."""
    edges = (labels[..., 0, :], labels[..., -1, :], labels[..., :, 0], labels[..., :, -1])
    return np.unique(np.concatenate([np.asarray(edge).ravel() for edge in edges]))


def _empty(ndim: int, channels, pixel_size, unit, classes: bool) -> dict[str, np.ndarray]:
    """The columns, without rows: no object was found."""
    names = ["index", "area"]
    if not classes:
        names += [f"centroid-{a}" for a in range(ndim)]
        if ndim == 2:
            names += ["equivalent_diameter", "axis_major_length", "axis_minor_length",
                      "eccentricity", "perimeter", "solidity"]
        names.append("on_border")
    if channels == 0:
        names.append("mean_intensity")
    elif channels:
        names += [f"mean_intensity-{c}" for c in range(channels)]
    scaled = _area_name(ndim, pixel_size, unit)
    if scaled:
        names.append(scaled)
    kinds = {"index": np.int64, "area": np.int64, "on_border": bool}
    return {name: np.zeros(0, kinds.get(name, float)) for name in names}


def write_csv(path: str | os.PathLike, table: dict[str, np.ndarray]) -> Path:
    """Write ``table`` as a CSV file (a header row, then one row per object), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    columns = list(table)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for row in zip(*(table[c] for c in columns), strict=True):
            out.writerow([_cell(v) for v in row])
    os.replace(tmp, path)
    return path


def summary_row(name: str, table: dict[str, np.ndarray]) -> dict:
    """A row of :data:`SUMMARY` for the image ``name`` whose objects :func:`measure` gave
    ``table``: ``objects``, ``objects_on_border`` and the median of each size, shape and
    intensity column ('median area', 'median solidity', 'median mean_intensity', ...)."""
    row = {"image": name, "objects": len(table["index"])}
    if "on_border" in table:
        row["objects_on_border"] = int(np.count_nonzero(table["on_border"]))
    for key, column in table.items():
        if key.startswith(("area", "equivalent_diameter", "perimeter", "solidity",
                           "mean_intensity")):
            row[f"median {key}"] = float(np.median(column)) if len(column) else None
    return row


def write_rows(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts; their keys in order of first appearance are the columns, a
    key a row lacks an empty cell) as a CSV file, atomically."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return write_csv(path, {key: [row.get(key) for row in rows] for key in columns})


def _cell(value) -> str:
    """A number as CSV text: integers as they are, others to 6 significant digits, a
    truth value as True or False, a name as it is, nothing as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, np.integer | int):
        return str(int(value))
    return f"{float(value):.6g}"


def measured(gen, image, *, pixel_size=None, unit: str | None = None,
             linked: bool = False):
    """Drive ``gen`` (a :func:`~napari_unet.predict.predict` or
    :func:`~napari_unet.predict.relabel` generator of ``image``), passing its events on,
    then put the measurements of its result's labels in ``image`` into
    ``result.features`` (one row per label, as a napari Labels layer holds them), where
    the labels are in memory and each label is one object: of one plane, of a z-stack
    whose planes were ``linked``, or a class. Otherwise ``result.features`` stays None."""
    result = yield from gen
    if result is None or not isinstance(result.labels, np.ndarray):
        return result
    result.features = yield from measure_events(result.labels, image, pixel_size=pixel_size,
                                                unit=unit, mode=result.mode, linked=linked)
    return result


def measure_events(labels, image, *, pixel_size=None, unit: str | None = None,
                   mode: str = "instances", linked: bool = False):
    """:func:`measure` of a prediction's ``labels`` (in memory or on disk) in ``image``,
    yielding :class:`~napari_unet.predict.PredictEvent` progress ("measuring the objects")
    block by block; returns their table where each label is one object (of one plane, of
    a z-stack whose planes were ``linked``) or a class (``mode`` 'semantic'), else None
    (planes labelled apart: each has a label 1)."""
    from .predict import PredictEvent

    ndim = np.ndim(labels)
    if ndim > 3 or apart(ndim, linked, mode):
        return None
    try:
        _channels(image, np.shape(labels))
    except ValueError:  # none, or not laid out as its labels: their sizes and places only
        image = None
    steps = measure_steps(labels, image, pixel_size=pixel_size, unit=unit,
                          classes=mode == "semantic")
    return (yield from mapped(steps, lambda step: PredictEvent(*step, 0, 1,
                                                               "measuring the objects")))


def tiff_pixel_size(meta: dict) -> tuple[tuple[float, float], str] | None:
    """The pixel size ``((y, x), unit)`` that :func:`napari_unet.io.tiff_metadata` found in
    a TIFF, where it names a unit of length (ImageJ's ``unit``, an OME-TIFF's, or the
    centimetres of the resolution tag), else None (72 pixels per inch says nothing)."""
    resolution = meta.get("resolution")
    if not resolution or min(resolution) <= 0:
        return None
    size = (1.0 / float(resolution[1]), 1.0 / float(resolution[0]))
    unit = str(meta.get("unit") or "").strip()
    if unit in ("micron", "um", "\\u00B5m", "µm", "μm"):
        return size, "µm"
    if unit in ("nm", "mm", "cm", "m"):
        return size, unit
    if not unit and meta.get("resolutionunit") == 3:  # pixels per centimetre
        return (size[0] * 1e4, size[1] * 1e4), "µm"
    return None
