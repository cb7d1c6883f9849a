"""Where results are placed in napari's world: as the layer they come from is (its scale,
translation, rotation, shear and affine transform), for the axes they have. A rotated,
sheared or affine-transformed layer's segmentation was placed by its scale and translation
only: drawn unrotated, beside its cells."""

from __future__ import annotations

import numpy as np

#: how a layer is placed in napari's world, as its keyword arguments name it
PLACEMENT = ("scale", "translate", "rotate", "shear", "affine")


def _transforms(source):
    """``source``'s data-to-physical transform (scale, translation, rotation, shear) and
    its affine transform, from a layer or a description of one (which may leave out the
    rotation, shear and affine transform: none)."""
    from napari.utils.transforms import Affine, CompositeAffine

    dims = len(source.scale)
    to_physical = CompositeAffine(scale=source.scale, translate=source.translate,
                                  rotate=getattr(source, "rotate", None),
                                  shear=getattr(source, "shear", None), ndim=dims)
    affine = getattr(source, "affine", None)
    if affine is None:
        affine = Affine(ndim=dims)
    elif not isinstance(affine, Affine):
        affine = Affine(affine_matrix=np.asarray(affine, float), ndim=dims)
    return to_physical, affine


def _sliced(source, nd: int | None = None, axes=None):
    """:func:`_transforms` of ``source`` for results of ``axes`` of it, or of ``nd`` axes
    (see :func:`placement`)."""
    to_physical, affine = _transforms(source)
    dims = len(source.scale)
    if axes is None and nd is not None and nd > dims:
        extra = list(range(nd - dims))
        return to_physical.expand_dims(extra), affine.expand_dims(extra)
    if axes is None:
        axes = list(range(dims - (dims if nd is None else nd), dims))
    return to_physical.set_slice(list(axes)), affine.set_slice(list(axes))


def placement(source, nd: int | None = None, axes=None) -> dict:
    """How to place results of ``source``'s data (a layer, or a description of one) where
    it is in napari's world: its scale, translation, rotation, shear and affine transform
    (a rotated or sheared layer's segmentation was drawn unrotated, beside its cells).
    ``axes``: those of ``source`` that the results have (its channel axis left out, say);
    else ``nd``: the results' number of axes, ``source``'s last ones, or all of them after
    leading axes of their own (a class axis, placed as it is)."""
    to_physical, affine = _sliced(source, nd, axes)
    return {"scale": to_physical.scale, "translate": to_physical.translate,
            "rotate": to_physical.rotate, "shear": to_physical.shear,
            "affine": affine.affine_matrix}


def to_world(source, nd: int) -> np.ndarray:
    """The homogeneous matrix, ``nd + 1`` square, that takes points of ``source``'s last
    ``nd`` axes (pixels) into napari's world."""
    to_physical, affine = _sliced(source, nd)
    return affine.affine_matrix @ to_physical.affine_matrix


def moved_by(source, offset) -> np.ndarray:
    """The translation that places the part of ``source``'s data starting at ``offset``
    (in pixels, per axis) where that part is: rotated, sheared and scaled as ``source``."""
    to_physical, _ = _transforms(source)
    return to_physical.translate + to_physical.linear_matrix @ np.asarray(offset, float)
