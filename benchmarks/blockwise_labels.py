"""Objects of an image larger than memory: labelled block by block vs in one pass.

The image is a ``--size`` square mosaic of real DSB 2018 ``val/`` nuclei images (256 px
crops, cycled) with the mosaic of their ground-truth labels. The shipped ``nuclei`` model
predicts it once; the same probabilities are then labelled

* in one pass over the whole image in memory (the default objects: the seeded watershed
  with its merges and neck cuts; the baseline);
* block by block as ``predict(..., out_labels=<zarr>)`` labels an image larger than memory
  (:func:`napari_unet.predict.stream_labels`): each block with its context (the halo),
  objects joined across block faces — for blocks of ``--blocks`` px, which do not line up
  with the mosaic's crops;
* block by block as connected components (``--instance-method components``; what the
  block-wise path gave for every setting before the halo).

Reports, per way: AP@0.5, mAP 0.5:0.95 and touching pairs separated against the truth
(the whole mosaic as one image), the agreement with the one-pass objects (the same
partition; objects matched at IoU 0.9), and the labelling time, as JSON.

    python benchmarks/blockwise_labels.py --size 4096 --out benchmarks/out/blockwise_labels.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA, command, emit, machine  # noqa: E402

from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.config import PredictConfig  # noqa: E402
from napari_unet.io import read_image  # noqa: E402
from napari_unet.metrics import instance_scores, matched_counts, same_partition  # noqa: E402
from napari_unet.predict import labelling_halo, relabel, stream_labels  # noqa: E402
from napari_unet.predict import predict as run_predict  # noqa: E402
from napari_unet.pretrained import resolve_model  # noqa: E402
from napari_unet.progress import run  # noqa: E402


def mosaic_with_truth(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` square mosaic of 256 px crops of DSB ``val/`` images and of their labels
    (each crop's objects numbered after those of the crops before it)."""
    root = DATA / "dsb2018_fluo" / "val"
    crops = []
    for f in sorted((root / "images").glob("*.png")):
        img = read_image(f)
        img = img if img.ndim == 2 else img[..., 0]
        lab = read_image(root / "labels" / f"{f.stem}.tif").astype(np.int64)
        crops.append((img[:256, :256], lab[:256, :256]))
    n = -(-size // 256)
    image = np.zeros((n * 256, n * 256), np.uint8)
    truth = np.zeros(image.shape, np.int64)
    top = 0
    for k in range(n * n):
        img, lab = crops[k % len(crops)]
        r, c = divmod(k, n)
        image[r * 256: r * 256 + img.shape[0], c * 256: c * 256 + img.shape[1]] = img
        ids, inverse = np.unique(lab, return_inverse=True)
        local = np.where(ids > 0, np.arange(len(ids)) + top, 0)[inverse.reshape(lab.shape)]
        truth[r * 256: r * 256 + lab.shape[0], c * 256: c * 256 + lab.shape[1]] = local
        top += int((ids > 0).sum())
    return image[:size, :size].copy(), truth[:size, :size].copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1000, 500])
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--out")
    args = ap.parse_args()

    ckpt = load_checkpoint(resolve_model(args.model))
    image, truth = mosaic_with_truth(args.size)
    t0 = time.perf_counter()
    first = run(run_predict(ckpt, image, PredictConfig()))
    predict_s = time.perf_counter() - t0
    prob = first.probabilities
    rows = []

    def add(name, labels, seconds, **extra):
        scores = instance_scores([truth], [labels])
        tp, fp, fn = matched_counts(rows[0]["labels"], labels, 0.9)[:3] if rows else (0, 0, 0)
        rows.append({"labels": labels, "row": {
            "way": name, **extra, "objects": int(len(np.unique(labels)) - 1),
            "ap50": scores["ap50"], "map": scores["map"],
            "touching_separated": scores["touching_separated"],
            "same_partition_as_one_pass": bool(same_partition(rows[0]["labels"], labels))
            if rows else True,
            "matched_to_one_pass_at_iou_0.9": [int(tp), int(fp), int(fn)] if rows else None,
            "labelling_s": round(seconds, 2)}})
        print(rows[-1]["row"], file=sys.stderr)

    t0 = time.perf_counter()
    whole = run(relabel(ckpt, first, PredictConfig())).labels
    add("one pass in memory (the baseline)", whole, time.perf_counter() - t0)
    for method in ("auto", "components"):
        for block in args.blocks:
            out = np.zeros(image.shape, np.uint32)
            chunked = _Chunked(out, block)
            t0 = time.perf_counter()
            run(stream_labels(ckpt, prob, chunked, PredictConfig(instance_method=method)))
            add("block by block" + (", connected components" if method == "components"
                                    else ", with a halo"), out, time.perf_counter() - t0,
                block=block, halo=labelling_halo(ckpt) if method == "auto" else None)
    emit({"benchmark": "blockwise_labels", "machine": machine(), "command": command(),
          "image": f"{args.size}x{args.size} mosaic of DSB 2018 val/ crops",
          "truth_objects": int(len(np.unique(truth)) - 1), "model": args.model,
          "predict_s": round(predict_s, 1), "results": [r["row"] for r in rows]}, args.out)


class _Chunked:
    """A numpy output seen with zarr-like ``chunks``, so that blocks follow them."""

    def __init__(self, array: np.ndarray, block: int):
        self.array, self.chunks = array, (block, block)
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        return self.array[key]

    def __setitem__(self, key, value):
        self.array[key] = value


if __name__ == "__main__":
    main()
