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
from _common import command, emit, machine  # noqa: E402
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
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    runs = []
    with tempfile.TemporaryDirectory(prefix="memory-estimate-") as tmp:
        for spec in args.shapes.split(","):
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
    emit({"benchmark": "memory_estimate", "command": command(), "machine": machine(),
          "model": args.model, "runs": runs,
          "estimate_covers_every_image": all(r["estimate_covers_it"] for r in runs)},
         args.out)


if __name__ == "__main__":
    main()
