"""Each object of a segmentation as an ImageJ ROI, for Fiji's ROI Manager.

Fiji users keep their objects as ROIs: a ``.zip`` of ``.roi`` files, which *File > Open*
(or a drop on Fiji) loads into the ROI Manager, to measure them there, on any channel,
with ImageJ's own *Measure*. Cellpose and StarDist export their objects so; here each
object's outline is a polygon through the midpoints between its pixels and the pixels
around it (marching squares at 0.5 on the object's mask), so that ImageJ, which fills a
polygon with the pixels whose centres lie inside it, gives back the object's own pixels. An
object in several pieces is the outline of its largest piece; a hole in an object is not
cut out. The ROIs of a stack are placed in their plane (``position``; of a time-lapse of
z-stacks, ``z`` and ``t``), named ``<plane>-<label>`` (``<label>`` alone in one plane).

The ``roifile`` package (C. Gohlke, BSD) writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError

#: More objects than this in one file are refused: Fiji's ROI Manager, a list, becomes
#: unusable long before (and a slide's labels would write millions of files into a zip).
MAX_ROIS = 200_000


def outlines(labels: np.ndarray, most: int = MAX_ROIS) -> list[tuple[int, np.ndarray]]:
    """``(label, polygon)`` of each object (label > 0) of the plane ``labels``, in order of
    label; each polygon an ``(N, 2)`` array of ``(x, y)`` in ImageJ's coordinates (a
    pixel ``[row, col]`` is the square from ``(col, row)`` to ``(col + 1, row + 1)``).
    More than ``most`` objects are refused before any is traced."""
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    labels = np.asarray(labels)
    inside = labels > 0
    values = np.unique(labels[inside])
    if len(values) > most:
        raise InputError(f"the labels hold more than {MAX_ROIS:,} objects: too many ROIs "
                         "for Fiji's ROI Manager; measure them instead (a table of one row "
                         "per object).")
    numbered = np.zeros(labels.shape, np.int64)  # 1..N, whatever the labels' numbers
    numbered[inside] = np.searchsorted(values, labels[inside]) + 1
    found = []
    for k, box in enumerate(ndi.find_objects(numbered), start=1):
        mask = np.pad(numbered[box] == k, 1).astype(np.float32)
        longest = max(find_contours(mask, 0.5), key=len)
        row = longest[:, 0] + (box[0].start - 1 + 0.5)  # the padding off, to pixel edges
        col = longest[:, 1] + (box[1].start - 1 + 0.5)
        found.append((int(values[k - 1]), np.stack([col, row], axis=1)))
    return found


def imagej_rois(labels) -> list:
    """The ImageJ ROIs (``roifile.ImagejRoi``) of every object of ``labels``: a plane
    ``(H, W)``, a stack ``(Z, H, W)`` or a time-lapse of z-stacks ``(T, Z, H, W)``, each
    plane's objects placed in it."""
    from roifile import ImagejRoi

    labels = np.asarray(labels) if not hasattr(labels, "shape") else labels
    ndim = len(labels.shape)
    if not 2 <= ndim <= 4:
        raise InputError(f"labels of shape {tuple(labels.shape)} cannot be ImageJ ROIs: "
                         "those are of a plane (Y, X), a stack (Z, Y, X) or a time-lapse of "
                         "z-stacks (T, Z, Y, X).")
    rois = []
    for where in np.ndindex(*labels.shape[:-2]):
        plane = np.asarray(labels[where])
        for label, polygon in outlines(plane, MAX_ROIS - len(rois)):
            if ndim == 2:
                place, name = {}, f"{label}"
            elif ndim == 3:  # roifile counts from 0, ImageJ (and the names) from 1
                place, name = {"position": where[0]}, f"{where[0] + 1:04d}-{label}"
            else:
                place = {"t": where[0], "z": where[1]}
                name = f"{where[0] + 1:04d}-{where[1] + 1:04d}-{label}"
            rois.append(ImagejRoi.frompoints(polygon, name=name, **place))
    return rois


def write_rois(path: str | os.PathLike, labels) -> Path:
    """Write the ImageJ ROIs of ``labels`` (:func:`imagej_rois`) as the ``.zip`` that
    Fiji's ROI Manager opens, atomically; labels without objects write none and raise."""
    from roifile import roiwrite

    path = Path(path)
    rois = imagej_rois(labels)
    if not rois:
        raise InputError("the labels hold no object (no label above 0) to write as an ImageJ "
                         "ROI.")
    tmp = path.with_name(f".{path.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        roiwrite(tmp, rois)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
