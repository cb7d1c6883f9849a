"""Dask-distributed prediction: throughput with 1 and 2 local workers on a large zarr image.

The image is a ``--size`` square mosaic of real DSB 2018 ``val/`` nuclei images stored as a
zarr array with ``--chunk`` chunks. In one run, with the same model and tiles:

* baseline: single-process ``predict(..., out_labels=zarr)`` (all torch threads);
* ``predict_distributed`` on a ``LocalCluster`` of 1, then 2 worker processes, each worker
  with ``--threads`` torch threads (default: the cores shared out between the workers of
  the largest cluster, so 1 and 2 workers use 1/2 and all of the machine).

Reports megapixels per second (probabilities and labels written), the speed-up of 2 workers
over 1, and checks that every run found the same objects.

    python benchmarks/distributed_scaling.py --size 4096 \
        --out benchmarks/results/distributed_scaling_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from predict_speed import mosaic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import zarr
    from distributed import Client, LocalCluster

    from napari_unet.config import PredictConfig
    from napari_unet.distributed import predict_distributed
    from napari_unet.metrics import same_partition
    from napari_unet.predict import predict
    from napari_unet.progress import run

    counts = [int(w) for w in args.workers.split(",")]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(counts))
    cfg = PredictConfig(tile_size=args.tile_size, device="cpu", batch_size=2)
    runs = []
    with tempfile.TemporaryDirectory(prefix="dist-scaling-") as tmp:
        tmp = Path(tmp)
        image = zarr.create_array(store=tmp / "image.zarr", shape=(args.size, args.size),
                                  chunks=(args.chunk, args.chunk), dtype="uint8")
        image[:] = mosaic(args.size)

        def labels_store(name):
            return zarr.create_array(store=tmp / name, shape=image.shape, dtype="uint32",
                                     chunks=(args.chunk, args.chunk))

        out = labels_store("single.zarr")
        t0 = time.perf_counter()
        run(predict(args.model, image, cfg, out_labels=out))
        runs.append({"setup": "single process", "workers": 0,
                     "torch_threads": int(__import__("torch").get_num_threads()),
                     "seconds": time.perf_counter() - t0})
        reference = out[:]
        for n in counts:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=None, silence_logs=40) as cluster, \
                    Client(cluster) as client:
                out = labels_store(f"dask{n}.zarr")
                t0 = time.perf_counter()
                run(predict_distributed(args.model, image, out, client=client, config=cfg,
                                        threads=threads))
                seconds = time.perf_counter() - t0
            got = out[:]
            same = same_partition(reference, got)
            runs.append({"setup": f"Dask LocalCluster, {n} worker(s)", "workers": n,
                         "torch_threads": threads, "seconds": seconds,
                         "same_objects_as_single_process": same})
    mp = args.size**2 / 1e6
    for r in runs:
        r["megapixels_per_second"] = round(mp / r["seconds"], 3)
        r["seconds"] = round(r["seconds"], 2)
    by = {r["workers"]: r for r in runs}
    report = {
        "benchmark": "distributed_scaling",
        "command": command(),
        "machine": machine(),
        "model": args.model,
        "image": [args.size, args.size],
        "chunk": args.chunk,
        "tile_size": args.tile_size,
        "runs": runs,
        "speedup_2_over_1_worker": (round(by[1]["seconds"] / by[2]["seconds"], 3)
                                    if 1 in by and 2 in by else None),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
