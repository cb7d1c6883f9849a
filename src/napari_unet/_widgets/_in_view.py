"""The part in view of a large plane: the separation view works on a slide's labels where
the user looks, not on all of them, which would take more memory than is free (napari, and
the unsaved layers, killed with it); the Predict widget segments only that part when asked
(a quick look at a slide, in seconds rather than hours)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..errors import InputError
from ._placement import moved_by, placement

#: The largest plane (pixels) worked on whole; beyond it, the part in view, at most as large.
WHOLE_PLANE = 4096 * 4096


def view_box(viewer, layer, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of ``layer``'s last two axes (full resolution, ``shape``) that
    napari's canvas shows: the canvas's corners in the world, in the layer's data."""
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # 0.9: scene
    h, w = viewer.canvas.size
    centre = np.asarray(camera.center, float)[-2:]
    half = np.array([h, w], float) / 2 / camera.zoom
    point = np.asarray(viewer.dims.point, float)
    corners = []
    for sign in ((-1, -1), (-1, 1), (1, -1), (1, 1)):  # all four: the layer may be rotated
        world = point.copy()
        world[-2:] = centre + np.array(sign) * half
        corners.append(np.asarray(layer.world_to_data(world), float)[-2:])
    (r0, c0), (r1, c1) = np.min(corners, axis=0), np.max(corners, axis=0)
    return (slice(max(int(np.floor(r0)), 0), min(int(np.ceil(r1)) + 1, shape[0])),
            slice(max(int(np.floor(c0)), 0), min(int(np.ceil(c1)) + 1, shape[1])))


def part_in_view(viewer, layer, plane):
    """``(plane, box, where results go)``: a plane of up to :data:`WHOLE_PLANE` pixels
    whole (box None, placed as the layer); a larger one's part in view, placed there (the
    layer's translation moved by its offset); refused in a sentence where even that part
    is larger, or none of the plane is in view."""
    h, w = plane.shape[-2:]
    if h * w <= WHOLE_PLANE:
        return plane, None, layer
    side = int(WHOLE_PLANE ** 0.5)
    if viewer.dims.ndisplay == 3:  # no part of a plane is "in view" from any angle
        raise InputError(
            f"labels layer '{layer.name}' is {h} x {w} px; the separation view works on at "
            f"most {side} x {side} px of it at a time, the part in view: switch napari to "
            "its 2D view and zoom in on the part to look at.")
    rows, cols = view_box(viewer, layer, (h, w))
    size = max(rows.stop - rows.start, 0) * max(cols.stop - cols.start, 0)
    if not 0 < size <= WHOLE_PLANE:
        raise InputError(
            f"labels layer '{layer.name}' is {h} x {w} px; the separation view works on at "
            f"most {side} x {side} px of it at a time (more would not fit the memory of most "
            "machines): zoom in on the part to look at.")
    return plane[..., rows, cols], (rows, cols), _moved(layer, rows, cols, layer.name)


def _moved(placed, rows: slice, cols: slice, name: str) -> SimpleNamespace:
    """Where the results of the part ``rows``, ``cols`` of ``placed`` (a layer, or its
    description) go: its placement, its translation moved by the part's offset (turned and
    scaled as it is)."""
    offset = np.zeros(len(placed.scale))
    offset[-2:] = rows.start, cols.start
    return SimpleNamespace(name=name, **{**placement(placed), "translate": moved_by(placed,
                                                                                  offset)})


def crop_in_view(viewer, layer, data, placed):
    """``data`` (``layer``'s, laid out for a model) cut to the rows and columns that napari's
    canvas shows, at full resolution, in every plane; and where its results go: beside
    ``placed`` (the layer, or its description), moved by the cut's offset and named
    ``'<layer> in view'``, so that the whole image's segmentation is never replaced by a
    part. Refused in a sentence in the 3D view, or where none of the image is in view."""
    nd = len(placed.scale)
    h, w = data.shape[nd - 2 : nd]  # a channel axis, if any, comes after them
    if viewer.dims.ndisplay == 3:
        raise InputError(f"'only the part in view' segments what napari's 2D view shows of "
                         f"layer '{layer.name}': switch napari to its 2D view.")
    rows, cols = view_box(viewer, layer, (h, w))
    if rows.stop <= rows.start or cols.stop <= cols.start:
        raise InputError(f"no part of layer '{layer.name}' is in view: move the view onto "
                         "it, or leave 'only the part in view' off.")
    part = data[(slice(None),) * (nd - 2) + (rows, cols)]
    return part, _moved(placed, rows, cols, f"{placed.name} in view")
