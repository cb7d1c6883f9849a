"""The annotated region of a Labels layer, from a Shapes layer drawn over it."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._placement import to_world


def region_mask(shapes, labels) -> np.ndarray:
    """Where the shapes of ``shapes`` cover ``labels``, in the labels layer's pixels.

    Both layers' placement is followed (shapes drawn over a scaled, moved or rotated image
    land on the pixels they cover on screen). 2D shapes over a stack of labels cover every plane;
    shapes drawn in a plane of a stack cover that plane.
    """
    from napari.layers import Shapes

    if len(shapes.data) == 0:
        raise InputError(f"shapes layer '{shapes.name}' has no shape: draw a rectangle or "
                         "polygon around the part of the image whose cells are all labelled.")
    shape = tuple(labels.data.shape)
    nd = min(shapes.ndim, len(shape))
    move = np.linalg.inv(to_world(labels, nd)) @ to_world(shapes, nd)  # shapes to labels
    moved = [np.asarray(v, float)[:, -nd:] @ move[:nd, :nd].T + move[:nd, nd]
             for v in shapes.data]
    # drawn in the shapes' box alone (napari draws them as int64 labels of the whole
    # plane: 7 GB for a 30,000² slide, on the GUI thread), then placed in the plane; the
    # plane's untouched zeros take no memory until written
    corners = np.concatenate(moved)[:, -2:]
    top = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, shape[-2:])
    end = np.clip(np.ceil(corners.max(0)).astype(int) + 2, 0, shape[-2:])
    mask = np.zeros(shape[-nd:], bool)
    if (end > top).all():
        offset = np.zeros(nd)
        offset[-2:] = top
        box = Shapes([v - offset for v in moved], shape_type=list(shapes.shape_type))
        mask[..., top[0]:end[0], top[1]:end[1]] = box.to_labels(
            (*shape[-nd:-2], *(end - top))) > 0
    return np.broadcast_to(mask, shape) if nd < len(shape) else mask
