"""Measuring each object of a segmentation (``napari_unet.measure``) against scikit-image.

A mosaic of real DSB 2018 training images and their labels (ids kept distinct), 1024² to
4096² px, measured in one run by:

* ``napari_unet.measure.measure`` (area, centre, diameter, the axes and eccentricity of the
  ellipse of the same second moments, perimeter, solidity, whether on the border, mean
  intensity: what a segmentation layer's features and ``predict --measure`` hold), on the
  array in memory and on a zarr copy read chunk by chunk;
* the baseline, scikit-image's ``regionprops_table`` with the same properties;

and the largest difference between the two tables; and, of the largest mosaic written to a
zarr on the local disk in 512² and 1024² chunks, ``measure`` with each chunk's margin (the
outline needs two pixels around it) taken from its neighbours' edges kept from a first read
(napari-unet's way) against reading the chunks around it for each (the way before,
``napari_unet.outline.reads`` patched to 1). The size where napari-unet still
measures a layer again after each edit (``_widgets._features.LIVE_PIXELS``, 16 MP) is
chosen from these times.

    python benchmarks/measure_speed.py --out benchmarks/results/measure_speed_cpu.json
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
from napari_unet.measure import measure  # noqa: E402


def dsb_mosaic(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Real DSB training images (grey) and labels tiled into a ``size`` square, the labels
    of each tile numbered on from the tile before."""
    folder = DATA / "dsb2018_fluo" / "train"
    files = sorted((folder / "labels").glob("*.tif"))
    image = np.zeros((size, size), np.float32)
    labels = np.zeros((size, size), np.int32)
    y = x = row_h = offset = 0
    while True:
        for f in files:
            lab = read_image(f).astype(np.int32)[:256, :256]
            img = read_image(next((folder / "images").glob(f"{f.stem}.*")))
            img = (img[..., 0] if img.ndim == 3 else img)[:256, :256]
            h, w = lab.shape
            if x + w > size:
                x, y, row_h = 0, y + row_h, 0
            if y + h > size:
                return image, labels
            labels[y:y + h, x:x + w] = np.where(lab > 0, lab + offset, 0)
            image[y:y + h, x:x + w] = img
            offset += int(lab.max())
            x, row_h = x + w, max(row_h, h)


def main() -> None:
    import zarr
    from skimage.measure import regionprops_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = []
    for size in args.sizes:
        image, labels = dsb_mosaic(size)
        on_disk = zarr.create_array(store={}, shape=labels.shape, chunks=(1024, 1024),
                                    dtype=labels.dtype)
        on_disk[:] = labels
        t_ours, ours = timed(lambda: measure(labels, image), 3)
        t_zarr, from_zarr = timed(lambda: measure(on_disk, image), 1)
        t_skimage, theirs = timed(lambda: regionprops_table(
            labels, image, properties=("label", "area", "centroid", "equivalent_diameter",
                                       "axis_major_length", "axis_minor_length",
                                       "eccentricity", "perimeter", "solidity",
                                       "intensity_mean")), 1)
        assert np.array_equal(ours["index"], theirs["label"])
        assert np.array_equal(from_zarr["index"], theirs["label"])
        pairs = {"area": "area", "centroid-0": "centroid-0", "centroid-1": "centroid-1",
                 "equivalent_diameter": "equivalent_diameter",
                 "axis_major_length": "axis_major_length",
                 "axis_minor_length": "axis_minor_length", "eccentricity": "eccentricity",
                 "perimeter": "perimeter", "solidity": "solidity",
                 "mean_intensity": "intensity_mean"}
        runs.append({
            "shape": [size, size], "objects": len(ours["index"]),
            "napari_unet_measure_s": round(t_ours, 3),
            "napari_unet_measure_zarr_chunks_s": round(t_zarr, 3),
            "skimage_regionprops_table_s": round(t_skimage, 3),
            "speedup": round(t_skimage / t_ours, 2),
            "max_abs_difference": max(float(np.abs(np.asarray(ours[a], float)
                                                   - np.asarray(theirs[b], float)).max())
                                      for a, b in pairs.items()),
            "max_abs_difference_zarr": max(float(np.abs(np.asarray(from_zarr[a], float)
                                                        - np.asarray(ours[a], float)).max())
                                           for a in pairs)})
    emit({"benchmark": "measure_speed", "command": command(), "machine": machine(),
          "data": "DSB 2018 fluorescence nuclei, train/ (CC0), tiled", "runs": runs,
          "zarr_on_disk_margins": margins(labels)}, args.out)


def margins(labels: np.ndarray) -> list[dict]:
    """``measure`` of ``labels`` from a zarr on the local disk, each chunk's margin from its
    neighbours' kept edges against from reading the chunks around it; best of 3."""
    import tempfile

    import zarr

    from napari_unet import outline

    kept, runs = outline.reads, []
    with tempfile.TemporaryDirectory() as folder:
        for chunk in (512, 1024):
            path = Path(folder) / f"labels{chunk}.zarr"
            zarr.create_array(store=str(path), shape=labels.shape, chunks=(chunk, chunk),
                              dtype=labels.dtype)[...] = labels
            stored = zarr.open_array(str(path), mode="r")
            times = {}
            for way, reads in (("neighbours_read_s", lambda *_: 1), ("edges_kept_s", kept)):
                outline.reads = reads
                try:
                    times[way] = round(timed(lambda: measure(stored), 3)[0], 3)
                finally:
                    outline.reads = kept
            runs.append({"shape": list(labels.shape), "chunks": [chunk, chunk], **times})
    return runs


if __name__ == "__main__":
    main()
