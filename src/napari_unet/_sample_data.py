"""Sample data for File > Open Sample > napari-unet."""

from __future__ import annotations

from .synthetic import touching_cells


def touching_cells_sample():
    """A 256x256 image of touching nuclei-like cells and its instance labels."""
    image, labels = touching_cells((256, 256), n_cells=40, seed=0)
    return [
        (image, {"name": "touching cells"}, "image"),
        (labels, {"name": "touching cells labels"}, "labels"),
    ]
