"""Does the rule that sends a prediction to disk count enough memory?

`napari_unet.memory.prediction_bytes` estimates what predicting an image in memory takes
beyond predicting it block by block on disk (48 bytes a pixel of one plane, and the
probabilities and labels of every further plane of a stack); the command line and the
Predict widget predict on disk what would take more than half the memory free. Here each
image is predicted both ways, with the settings a user gets (auto tile and batch size,
default labelling), each in a fresh process, and the peak resident set size (``VmHWM``)
beyond the same process with torch and the model loaded is measured: what the memory path
takes beyond the disk path is set against the estimate. (Both paths also hold the
network's working memory, a few hundred MB on a CPU, which the disk path does not save;
the rule's margin of half the memory free is for it.) Images: square mosaics of real DSB
2018 ``val/`` nuclei images, and stacks of planes cut from a larger mosaic.

Training is refused in a sentence where preparing its images (targets and the paper's
weight map) would take more than the memory free (``memory.TRAIN_BYTES_PER_PIXEL``); the
peak of that preparation is measured on square mosaics of ``train/`` images labelled all
over (``--train-sizes``).

    python benchmarks/memory_estimate.py --out benchmarks/results/memory_estimate_cpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA, command, emit, machine  # noqa: E402
from predict_memory import peak_rss  # noqa: E402
from predict_speed import mosaic  # noqa: E402

GB = 1024**3


def image_of(shape: tuple[int, ...]) -> np.ndarray:
    """A 2D mosaic of ``shape``, or a stack of its planes cut from one larger mosaic."""
    if len(shape) == 2:
        return mosaic(shape[0])
    n, side = shape[0], shape[1]
    per_row = int(np.ceil(np.sqrt(n)))
    big = mosaic(side * per_row)
    return np.stack([big[(k // per_row) * side:(k // per_row + 1) * side,
                         (k % per_row) * side:(k % per_row + 1) * side] for k in range(n)])


def labelled_mosaic(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` square mosaic of DSB ``train/`` images (256 px crops, cycled) and their
    instance labels, every nucleus its own number: a slide labelled all over."""
    from napari_unet.io import read_image

    folder = DATA / "dsb2018_fluo" / "train"
    pairs = []
    for f in sorted((folder / "images").glob("*.png")):
        img = read_image(f)
        pairs.append(((img if img.ndim == 2 else img[..., 0])[:256, :256],
                      read_image(folder / "labels" / f"{f.stem}.tif")[:256, :256]))
    image = np.zeros((size, size), np.uint8)
    labels = np.zeros((size, size), np.int32)
    n, top = -(-size // 256), 0
    for k in range(n * n):
        img, lab = pairs[k % len(pairs)]
        y, x = (k // n) * 256, (k % n) * 256
        h, w = image[y:y + 256, x:x + 256].shape
        image[y:y + h, x:x + w] = img[:h, :w]
        part = lab[:h, :w].astype(np.int32)
        labels[y:y + h, x:x + w] = np.where(part > 0, part + top, 0)
        top = int(labels.max())
    return image, labels


def child_prepare(args) -> None:
    """The peak memory of preparing one labelled image for training (targets and the
    paper's weight map), beyond the process with torch loaded and the image in memory."""
    import torch  # noqa: F401  (loaded, as in napari, before the baseline)

    from napari_unet.config import TrainConfig
    from napari_unet.memory import TRAIN_BYTES_PER_PIXEL
    from napari_unet.train import prepare

    image, labels = np.load(args.child[0]), np.load(args.child[1])
    before = peak_rss()
    t0 = time.perf_counter()
    prepare([image], [labels], TrainConfig(mode="instances"))
    print(json.dumps({"shape": list(image.shape), "mode": "prepare",
                      "seconds": round(time.perf_counter() - t0, 1),
                      "peak_beyond_process_gb": round((peak_rss() - before) / GB, 3),
                      "estimate_gb": round(image.size * TRAIN_BYTES_PER_PIXEL / GB, 3)}))


def child(args) -> None:
    from napari_unet.checkpoint import load_checkpoint
    from napari_unet.memory import prediction_bytes
    from napari_unet.predict import predict, zarr_outputs
    from napari_unet.pretrained import resolve_model
    from napari_unet.progress import run

    ckpt = load_checkpoint(resolve_model(args.model))
    ckpt.build()  # torch and the network loaded: the process's own size
    image = np.load(args.child[0])  # in memory before it is measured, as a napari layer is
    before = peak_rss()
    t0 = time.perf_counter()
    if args.mode == "disk":
        labels, _ = zarr_outputs(ckpt, image, args.child[1])
        run(predict(ckpt, image, out_labels=labels))
    else:
        run(predict(ckpt, image))
    seconds = time.perf_counter() - t0
    print(json.dumps({"shape": list(image.shape), "mode": args.mode,
                      "seconds": round(seconds, 1),
                      "peak_beyond_process_gb": round((peak_rss() - before) / GB, 3),
                      "estimate_gb": round(prediction_bytes(image.shape, ckpt.config) / GB,
                                           3)}))


def measure(args, npy: Path, mode: str, store: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(npy), str(store),
                           "--mode", mode, "--model", args.model], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--shapes", default="2048x2048,4096x4096,8192x8192,8x1024x1024,"
                    "32x1024x1024,12x2048x2048",
                    help="images (H x W) and stacks (N x H x W), comma-separated")
    ap.add_argument("--train-sizes", default="2048,4096,8192",
                    help="sides of the labelled mosaics prepared for training")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_prepare(args) if args.mode == "prepare" else child(args)
    runs, training = [], []
    with tempfile.TemporaryDirectory(prefix="memory-estimate-") as tmp:
        for spec in (v for v in args.shapes.split(",") if v):
            shape = tuple(int(v) for v in spec.split("x"))
            npy = Path(tmp) / "image.npy"
            np.save(npy, image_of(shape))
            memory = measure(args, npy, "memory", Path(tmp) / "unused.zarr")
            disk = measure(args, npy, "disk", Path(tmp) / f"labels_{spec}.zarr")
            saved = memory["peak_beyond_process_gb"] - disk["peak_beyond_process_gb"]
            runs.append({"shape": memory["shape"], "estimate_gb": memory["estimate_gb"],
                         "in_memory_gb": memory["peak_beyond_process_gb"],
                         "on_disk_gb": disk["peak_beyond_process_gb"],
                         "memory_beyond_disk_gb": round(saved, 3),
                         "estimate_covers_it": memory["estimate_gb"] >= saved,
                         "seconds_in_memory": memory["seconds"],
                         "seconds_on_disk": disk["seconds"]})
            print(json.dumps(runs[-1]), file=sys.stderr)
        for size in (int(v) for v in args.train_sizes.split(",") if v):
            image, labels = labelled_mosaic(size)
            np.save(Path(tmp) / "image.npy", image)
            np.save(Path(tmp) / "labels.npy", labels)
            run = measure(args, Path(tmp) / "image.npy", "prepare", Path(tmp) / "labels.npy")
            run["estimate_covers_it"] = run["estimate_gb"] >= run["peak_beyond_process_gb"]
            training.append(run)
            print(json.dumps(run), file=sys.stderr)
    emit({"benchmark": "memory_estimate", "command": command(), "machine": machine(),
          "model": args.model, "runs": runs, "training": training,
          "estimate_covers_every_image": all(r["estimate_covers_it"] for r in runs),
          "training_estimate_covers_every_image": all(r["estimate_covers_it"]
                                                      for r in training)},
         args.out)


if __name__ == "__main__":
    main()
