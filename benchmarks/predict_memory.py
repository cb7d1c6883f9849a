"""Peak memory predicting a very large image to a labels file on disk.

The image is a ``--size`` square uint8 mosaic of real DSB 2018 ``val/`` nuclei images, saved
as a ``.npy`` file and opened memory-mapped. Each measurement runs in a fresh process and
reports its peak resident set size (``VmHWM``), next to the same process's size after
loading torch and the model (before any image is touched):

* ``stream``: ``predict(..., out_labels=<zarr on disk>)`` — tiles read from the memmap,
  probabilities in a temporary zarr, labels block by block (the large-image path);
* ``memory`` (baseline, at ``--baseline-sizes``): the in-memory path, everything as numpy,
  and ``stream`` at the same sizes, so the two are compared in the same run.

Aim (issue 5): the input, the output and at most 1.5 GB more for a 16384 x 16384 image.

    python benchmarks/predict_memory.py --size 16384 \
        --out benchmarks/results/predict_memory_cpu.json
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
from predict_speed import mosaic  # noqa: E402

GB = 1024**3


def peak_rss() -> int:
    """This process's peak resident set size (VmHWM; unlike ru_maxrss it does not carry
    the parent's peak over a fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(args) -> None:
    import zarr

    from napari_unet.checkpoint import load_checkpoint
    from napari_unet.config import PredictConfig
    from napari_unet.predict import predict
    from napari_unet.progress import run

    ckpt = load_checkpoint(args.model)
    ckpt.build()  # torch and the network loaded: the process's own size
    before = peak_rss()
    image = np.load(args.child[0], mmap_mode="r")
    cfg = PredictConfig(tile_size=args.tile_size, device="cpu", batch_size=args.batch_size)
    t0 = time.perf_counter()
    if args.mode == "stream":
        labels = zarr.create_array(store=args.child[1], shape=image.shape, dtype="uint32",
                                   chunks=(2048, 2048))
        result = run(predict(ckpt, image, cfg, out_labels=labels))
        out_bytes = labels.nbytes
    else:
        result = run(predict(ckpt, np.asarray(image), cfg))
        out_bytes = result.labels.nbytes
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    print(json.dumps({"mode": args.mode, "shape": list(image.shape), "seconds": seconds,
                      "peak_rss_bytes": peak, "rss_after_model_bytes": before,
                      "input_bytes": int(image.nbytes), "output_bytes": int(out_bytes),
                      "notes": result.notes}))


def measure(args, npy: Path, mode: str, store: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(npy), str(store), "--mode", mode,
           "--model", args.model, "--tile-size", str(args.tile_size),
           "--batch-size", str(args.batch_size)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    extra = report["peak_rss_bytes"] - report["input_bytes"] - report["output_bytes"]
    report["peak_gb"] = round(report["peak_rss_bytes"] / GB, 3)
    report["beyond_input_and_output_gb"] = round(extra / GB, 3)
    report["process_with_model_gb"] = round(report["rss_after_model_bytes"] / GB, 3)
    report["beyond_process_with_model_gb"] = round(
        (report["peak_rss_bytes"] - report["rss_after_model_bytes"]) / GB, 3)
    report["megapixels_per_second"] = round(np.prod(report["shape"]) / 1e6
                                            / report["seconds"], 3)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--baseline-sizes", default="4096,8192",
                    help="sizes at which both paths are measured (comma-separated)")
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    runs = []
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
        tmp = Path(tmp)
        plan = [(int(n), ("memory", "stream")) for n in args.baseline_sizes.split(",")]
        for size, modes in (*plan, (args.size, ("stream",))):
            npy = tmp / f"mosaic_{size}.npy"
            np.save(npy, mosaic(size))
            for mode in modes:
                runs.append(measure(args, npy, mode, tmp / f"labels_{size}_{mode}.zarr"))
                print(json.dumps(runs[-1]), file=sys.stderr)
            npy.unlink()
    big = runs[-1]
    report = {
        "benchmark": "predict_memory",
        "command": command(),
        "machine": machine(),
        "model": args.model,
        "tile_size": args.tile_size,
        "batch_size": args.batch_size,
        "runs": runs,
        "aim_gb_beyond_input_and_output": 1.5,
        "aim_met": big["beyond_input_and_output_gb"] <= 1.5,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
