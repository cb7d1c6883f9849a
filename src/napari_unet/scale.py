"""Object size: the diameter of the cells a model was trained on, and rescaling an image so
that its cells have that size before prediction (as Cellpose rescales to its "diameter").

A U-Net learns cells at the size it saw them. The training records the median diameter of
its objects in the model file (``task["object_diameter"]``); at prediction, an image whose
cells are ``d`` px across is resized by ``model diameter / d``, predicted, and its
probabilities resized back, so the labels come out at the image's own size.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import InputError

#: Why a model that does not record its cells' size cannot take a diameter.
NO_CELL_SIZE = ("this model does not record the size of the cells it was trained on, so it "
                "cannot rescale to a cell diameter; leave the diameter empty (0), or train "
                "or fine-tune the model again to record it.")

#: Rescaling by less than this relative amount is skipped (it changes nothing a network sees).
MIN_CHANGE = 0.02


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Each object's equivalent diameter (that of a disc of the same area), in pixels."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    return 2.0 * np.sqrt(areas / np.pi)


def median_diameter(labels: Iterable[np.ndarray]) -> float | None:
    """The median equivalent diameter of all objects of all label images; None if there are
    none."""
    sizes = [equivalent_diameters(lab) for lab in labels]
    sizes = [s for s in sizes if s.size]
    return float(np.median(np.concatenate(sizes))) if sizes else None


def scale_factor(model_diameter: float | None, diameter: float | None) -> float:
    """How much to magnify an image whose cells are ``diameter`` px across so that they
    have the model's size (1.0: no rescaling)."""
    if not diameter:
        return 1.0
    if diameter < 0 or not np.isfinite(diameter):
        raise InputError(f"the cell diameter must be a positive number of pixels, not "
                         f"{diameter}.")
    if not model_diameter:
        raise InputError(NO_CELL_SIZE)
    factor = float(model_diameter) / float(diameter)
    return 1.0 if abs(factor - 1.0) < MIN_CHANGE else factor


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """The ``(H, W)`` of an image of ``shape`` magnified by ``factor`` (at least 1 px)."""
    return tuple(max(1, int(round(s * factor))) for s in shape)  # type: ignore[return-value]


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``(H, W)`` or ``(H, W, C)`` image resized to ``shape`` (linear; smoothed first when
    shrinking, so that nothing aliases), float32."""
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float32)
    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    return resize(image, (*shape, *image.shape[2:]), order=1, mode="reflect",
                  anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def resize_probabilities(prob: np.ndarray, shape: tuple[int, int], *,
                         vectors: bool = False) -> np.ndarray:
    """A ``(C, h, w)`` network output resized back to ``(C, *shape)`` (linear; smoothed
    first when shrinking).

    With ``vectors`` the last two channels are displacements (y, x) in pixels of the
    resized image: they are converted to pixels of ``shape``.
    """
    from skimage.transform import resize

    prob = np.asarray(prob, dtype=np.float32)
    shrink = shape[0] < prob.shape[1] or shape[1] < prob.shape[2]
    out = np.empty((prob.shape[0], *shape), np.float32)
    for c in range(prob.shape[0]):
        out[c] = resize(prob[c], shape, order=1, mode="edge", anti_aliasing=shrink,
                        preserve_range=True)
    if vectors:
        out[-2] *= shape[0] / prob.shape[1]
        out[-1] *= shape[1] / prob.shape[2]
    return out


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Integer labels (or a boolean mask) resized to ``shape`` by nearest neighbour: no
    value is invented."""
    from skimage.transform import resize

    labels = np.asarray(labels)
    return resize(labels, shape, order=0, mode="edge", anti_aliasing=False,
                  preserve_range=True).astype(labels.dtype)


def match_cell_size(images, labels, regions, model_diameter: float, diameter: float):
    """Training images, their labels and regions (None or boolean) magnified by
    ``model_diameter / diameter``, so that cells of ``diameter`` px get the model's size;
    returns them and the factor."""
    factor = scale_factor(model_diameter, diameter)
    if factor == 1.0:
        return list(images), list(labels), list(regions), factor
    out_images, out_labels, out_regions = [], [], []
    for image, lab, region in zip(images, labels, regions):
        shape = scaled_shape(np.shape(lab), factor)
        out_images.append(resize_image(image, shape))
        out_labels.append(resize_labels(lab, shape))
        out_regions.append(None if region is None else resize_labels(region, shape))
    return out_images, out_labels, out_regions, factor
