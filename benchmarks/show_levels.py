"""How long napari takes to show the labels of a large image predicted on disk, and how much
memory: as one array (napari reads the whole plane) against with overview levels
(``napari_unet.pyramid``, what the Predict widget adds above 8,192² px).

The labels are real: the shipped ``nuclei`` model's labels of a 4,096² mosaic of DSB
``val/`` images (``predict_speed.mosaic``), repeated ``--repeat`` x ``--repeat`` times with
new ids into a zarr array on disk (1,024² chunks, uint32, as the Predict widget writes
them). Each way of showing it runs in a fresh napari process (under Xvfb where there is no
display): the time from ``add_labels`` until the first draw has been processed, and the
process's peak resident memory. Needs a display (``xvfb-run -a python ...``).

    xvfb-run -a python benchmarks/show_levels.py --repeat 4 --out benchmarks/out/show_levels.json
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


def make_labels(folder: Path, repeat: int) -> Path:
    import zarr
    from predict_speed import mosaic

    from napari_unet.config import PredictConfig
    from napari_unet.predict import predict
    from napari_unet.progress import run

    labels = run(predict("nuclei", mosaic(4096), PredictConfig())).labels.astype(np.uint32)
    n = int(labels.max())
    side = 4096 * repeat
    path = folder / "labels.zarr"
    z = zarr.create_array(store=str(path), shape=(side, side), chunks=(1024, 1024),
                          dtype="uint32")
    for i in range(repeat):
        for j in range(repeat):
            z[i * 4096:(i + 1) * 4096, j * 4096:(j + 1) * 4096] = np.where(
                labels > 0, labels + (i * repeat + j) * n, 0)
    return path


def peak_gb() -> float:
    """This process's peak resident memory (VmHWM: since its exec, not its parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def show(path: Path, levels: Path | None) -> dict:
    """In this (fresh) process: napari shows the labels; seconds and peak memory."""
    import napari
    import zarr
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    QApplication.processEvents()
    before = peak_gb()
    full = zarr.open_array(str(path), mode="r")
    start = time.perf_counter()
    if levels is None:
        viewer.add_labels(full)
    else:
        n = len(list(levels.iterdir()))
        viewer.add_labels([full, *(zarr.open_array(str(levels / str(k)), mode="r")
                                   for k in range(1, n + 1))], multiscale=True)
    QApplication.processEvents()
    seconds = time.perf_counter() - start
    peak = peak_gb()
    return {"seconds_to_show": round(seconds, 2), "peak_rss_gb": round(peak, 2),
            "viewer_alone_gb": round(before, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=4, help="the 4,096² labels, N x N times")
    ap.add_argument("--runs", type=int, default=2, help="napari processes per way")
    ap.add_argument("--out")
    ap.add_argument("--show", nargs=2, help=argparse.SUPPRESS)  # PATH LEVELS|-: a child run
    args = ap.parse_args()
    if args.show:
        path, levels = args.show
        print(json.dumps(show(Path(path), None if levels == "-" else Path(levels))))
        return

    from napari_unet.pyramid import write_levels

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = make_labels(folder, args.repeat)
        start = time.perf_counter()
        made = write_levels(__import__("zarr").open_array(str(path), mode="r"),
                            folder / "levels")
        try:
            while True:
                next(made)
        except StopIteration as stop:
            shapes = [list(level.shape) for level in stop.value]
        write_seconds = time.perf_counter() - start
        runs = {}
        for way, levels in (("one array", "-"), ("with overview levels",
                                                  str(folder / "levels"))):
            runs[way] = []
            for _ in range(args.runs):
                child = subprocess.run([sys.executable, __file__, "--show", str(path), levels],
                                       capture_output=True, text=True, check=True)
                runs[way].append(json.loads(child.stdout.strip().splitlines()[-1]))
    emit({"benchmark": "show_levels", "command": command(), "machine": machine(),
          "labels_shape": [4096 * args.repeat] * 2, "levels": shapes,
          "write_levels_seconds": round(write_seconds, 2), "runs": runs}, args.out)


if __name__ == "__main__":
    main()
