"""Cells left unlabelled: how often the training's warning is right on real labels.

A biologist who paints some of the cells of an image and leaves the others at 0 teaches
the network that those are background. The training warns when an image holds regions that
look like its labelled cells but carry no label (`napari_unet.targets.left_unlabelled`).
This measures, on every labelled image of DSB 2018 (`train/` and `val/`), how often it
warns where the labels are complete (false alarms), and how often it warns where nuclei
were removed from the labels: a random half or three quarters of them (images with at least
8 nuclei), or all but those reaching into the left half (`dsb_partial.py`'s layout).

    python benchmarks/dsb_unlabelled_check.py --out benchmarks/results/dsb_unlabelled_check.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import load  # noqa: E402
from dsb_partial import half_painted  # noqa: E402

from napari_unet.targets import left_unlabelled, relabel_objects  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    warned = {"complete": [], "half kept": [], "quarter kept": [], "left half painted": []}
    alarms, seconds = [], []
    for split in ("train", "val"):
        images, labels, names = load(split)
        for image, lab, name in zip(images, labels, names):
            truth = relabel_objects(lab)
            t0 = time.perf_counter()
            count = left_unlabelled(image, truth)
            seconds.append(time.perf_counter() - t0)
            warned["complete"].append(bool(count))
            if count:
                alarms.append({"image": f"{split}/{name}", "regions": count})
            n = int(truth.max())
            if n >= 8:
                order = rng.permutation(np.arange(1, n + 1))
                for key, keep in (("half kept", n // 2), ("quarter kept", n // 4)):
                    part = np.where(np.isin(truth, order[:keep]), truth, 0)
                    warned[key].append(bool(left_unlabelled(image, part)))
                painted, _ = half_painted(truth)
                if painted.max() < n:  # some nuclei lie wholly in the right half
                    warned["left half painted"].append(
                        bool(left_unlabelled(image, relabel_objects(painted))))
    report = {
        "benchmark": "dsb_unlabelled_check",
        "command": command(),
        "machine": machine(),
        "images": {k: len(v) for k, v in warned.items()},
        "warned": {k: int(sum(v)) for k, v in warned.items()},
        "share_warned": {k: round(float(np.mean(v)), 4) for k, v in warned.items()},
        "false_alarms": alarms,
        "seconds_per_image": {"median": round(float(np.median(seconds)), 4),
                              "max": round(float(np.max(seconds)), 4)},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
