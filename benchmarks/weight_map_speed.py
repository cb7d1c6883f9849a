"""The paper's weight map: local windows against whole-image distance transforms.

For a 1024 x 1024 label image with about 300 cells (synthetic touching cells, and a mosaic of
real DSB 2018 training labels), times in one run:

* ``instance_targets`` as trained on (class map, class balance, border term computed in a
  window of ``d1 + d2 <= sigma * sqrt(2 ln 1e6)`` around each object);
* the baseline: ``d1``/``d2`` from one Euclidean distance transform of the whole image per
  object (the textbook way), and the largest difference of the two border terms.

    python benchmarks/weight_map_speed.py --out benchmarks/results/weight_map_speed_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA, command, emit, machine  # noqa: E402
from predict_speed import timed  # noqa: E402

from napari_unet.io import read_image  # noqa: E402
from napari_unet.synthetic import touching_cells  # noqa: E402
from napari_unet.targets import border_weights, instance_targets  # noqa: E402


def whole_image_border(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The border term from a full-image distance transform per object."""
    from scipy import ndimage as ndi

    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for i in np.unique(labels[labels > 0]):
        d = ndi.distance_transform_edt(labels != i)
        d2 = np.where(d < d1, d1, np.minimum(d2, d))
        d1 = np.minimum(d1, d)
    return w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def dsb_mosaic(size: int) -> np.ndarray:
    """Real DSB training labels tiled into a ``size`` square, ids kept distinct."""
    files = sorted((DATA / "dsb2018_fluo" / "train" / "labels").glob("*.tif"))
    out = np.zeros((size, size), np.int32)
    y = x = 0
    row_h = 0
    offset = 0
    for f in files:
        lab = read_image(f).astype(np.int32)[:256, :256]
        h, w = lab.shape
        if x + w > size:
            x, y, row_h = 0, y + row_h, 0
        if y + h > size:
            break
        out[y:y + h, x:x + w] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
        x, row_h = x + w, max(row_h, h)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cases = {"synthetic touching cells": touching_cells((args.size, args.size), n_cells=300,
                                                        radius=14, seed=0)[1].astype(np.int32)}
    if (DATA / "dsb2018_fluo").is_dir():
        cases["DSB 2018 training labels (mosaic)"] = dsb_mosaic(args.size)
    runs = []
    for name, labels in cases.items():
        t_targets, _ = timed(lambda: instance_targets(labels), 3)
        t_local, local = timed(lambda: border_weights(labels, 10.0, 5.0), 3)
        t_whole, whole = timed(lambda: whole_image_border(labels, 10.0, 5.0), 1)
        runs.append({"labels": name, "objects": int(len(np.unique(labels)) - 1),
                     "instance_targets_s": round(t_targets, 3),
                     "border_term_local_windows_s": round(t_local, 3),
                     "border_term_whole_image_s": round(t_whole, 3),
                     "speedup": round(t_whole / t_local, 1),
                     "max_abs_difference": float(np.abs(local - whole).max())})
    emit({"benchmark": "weight_map_speed", "command": command(), "machine": machine(),
          "shape": [args.size, args.size], "w0": 10.0, "sigma": 5.0, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
