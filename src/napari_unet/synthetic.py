"""Synthetic fluorescence-like images of touching cells, with their instance labels.

Used for the napari sample data, the CLI's ``sample`` command and the tests: bright
elliptical nuclei, many of them touching, blurred and with Poisson-like noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError


def touching_cells(shape: tuple[int, int] = (256, 256), n_cells: int = 40, radius: float = 10.0,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ``uint8`` image and ``uint16`` instance labels of ``n_cells`` cells, many touching.

    Cells are placed in clusters so that about a third of them touch a neighbour; where two
    overlap the pixel goes to the nearer centre, so the touching boundary is a straight line.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    centres = []
    for _ in range(1000 * n_cells):  # bounded: too many cells for the image never fit
        if len(centres) == n_cells:
            break
        c = rng.uniform([radius, radius], [h - radius, w - radius])
        if centres and rng.random() < 0.5:  # a neighbour of an existing cell: they touch
            base = centres[rng.integers(len(centres))]
            angle = rng.uniform(0, 2 * np.pi)
            c = base + 1.7 * radius * np.array([np.sin(angle), np.cos(angle)])
            if not (radius <= c[0] < h - radius and radius <= c[1] < w - radius):
                continue
        if all(np.hypot(*(c - o)) > 1.4 * radius for o in centres):
            centres.append(c)
    if len(centres) < n_cells:
        raise InputError(f"{n_cells} cells of radius {radius:g} px do not fit into an image "
                         f"of {h} x {w} px; ask for fewer cells or a larger image.")
    yy, xx = np.mgrid[:h, :w]
    best = np.full(shape, np.inf)
    labels = np.zeros(shape, np.uint16)
    for i, (cy, cx) in enumerate(centres, start=1):
        ry, rx = radius * rng.uniform(0.8, 1.2, 2)
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(theta) + dx * np.sin(theta)) / ry
        v = (-dy * np.sin(theta) + dx * np.cos(theta)) / rx
        r = np.hypot(u, v)
        inside = (r <= 1.0) & (r < best)
        labels[inside] = i
        best = np.where(inside, r, best)
    brightness = rng.uniform(0.6, 1.0, n_cells + 1)
    brightness[0] = 0.08
    signal = brightness[labels] * (1.0 - 0.35 * np.clip(np.nan_to_num(best, posinf=1.0), 0, 1))
    edges = labels != ndi.grey_erosion(labels, size=3)  # dimmer cell borders
    signal = np.where(edges & (labels > 0), signal * 0.75, signal)
    signal = ndi.gaussian_filter(signal, 1.2)
    noisy = rng.poisson(signal * 60.0) / 60.0 + rng.normal(0, 0.02, shape)
    image = np.clip(noisy * 200, 0, 255).astype(np.uint8)
    return image, labels
