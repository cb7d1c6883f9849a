"""Mistakes in the labels: how often the training's two warnings are right on real labels.

*Cells left unlabelled.* A biologist who paints some of the cells of an image and leaves
the others at 0 teaches the network that those are background. The training warns when an
image holds regions that look like its labelled cells but carry no label
(`napari_unet.targets.left_unlabelled`). Measured on every labelled image of DSB 2018
(`train/` and `val/`): how often it warns where the labels are complete (false alarms), and
where nuclei were removed from the labels: a random half or three quarters of them (images
with at least 8 nuclei), or all but those reaching into the left half (`dsb_partial.py`'s
layout); and with that left half as the annotated region (which should silence it), and
with only half of the nuclei in it painted (which should not).

*Touching cells painted with one label* (napari's brush keeps label 1 until the user asks
for a new one): such labels are a mask, whose touching cells become one object, and the
network never learns to separate them. The training warns when the labels of reused values
hold at least `JOINED_AT_LEAST` objects that look joined (`napari_unet.targets.joined_cells`).
Measured on the same images saved as 0/1 masks: how many flagged objects are joined nuclei,
and how often a set of 30 masks (as a user would label) is warned of, drawn 2,000 times from
all images and from those whose nuclei touch nowhere.

    python benchmarks/dsb_label_checks.py --out benchmarks/results/dsb_label_checks.json
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

from napari_unet.targets import (  # noqa: E402
    JOINED_AT_LEAST,
    joined_cells,
    joined_objects,
    left_unlabelled,
    relabel_objects,
)


def flagged_as_joined(lab: np.ndarray) -> tuple[int, int, int]:
    """The image's labels saved as a 0/1 mask: (objects flagged by ``joined_objects``, those
    of them that hold more than one nucleus, objects that hold more than one nucleus)."""
    mask, flagged = joined_objects((lab > 0).astype(np.uint8))
    several = {k for k in range(1, int(mask.max()) + 1)
               if np.unique(lab[mask == k]).size > 1}
    return len(flagged), len(several & set(flagged)), len(several)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    in_region = np.random.default_rng(args.seed + 1)  # its own draws: the others stay put
    warned = {"complete": [], "half kept": [], "quarter kept": [], "left half painted": [],
              "left half painted, left half as region": [],
              "left half as region, half of its nuclei painted": []}
    alarms, seconds = [], []
    masks = []  # per image: (flagged, flagged and joined, joined, touches nowhere)
    for split in ("train", "val"):
        images, labels, names = load(split)
        for image, lab, name in zip(images, labels, names):
            truth = relabel_objects(lab)
            t0 = time.perf_counter()
            count = left_unlabelled(image, truth)
            seconds.append(time.perf_counter() - t0)
            warned["complete"].append(bool(count))
            flagged, right, joined = flagged_as_joined(lab)
            masks.append((flagged, right, joined, joined == 0))
            if joined_cells(lab):
                alarms.append({"image": f"{split}/{name}", "joined (instance labels)": 1})
            if count:
                alarms.append({"image": f"{split}/{name}", "regions": count})
            n = int(truth.max())
            if n >= 8:
                order = rng.permutation(np.arange(1, n + 1))
                for key, keep in (("half kept", n // 2), ("quarter kept", n // 4)):
                    part = np.where(np.isin(truth, order[:keep]), truth, 0)
                    warned[key].append(bool(left_unlabelled(image, part)))
                painted, region = half_painted(truth)
                painted = relabel_objects(painted)
                if painted.max() < n:  # some nuclei lie wholly in the right half
                    warned["left half painted"].append(bool(left_unlabelled(image, painted)))
                    warned["left half painted, left half as region"].append(
                        bool(left_unlabelled(image, painted, region)))
                    if painted.max() >= 8:
                        keep = in_region.permutation(np.arange(1, painted.max() + 1))
                        part = np.where(np.isin(painted, keep[: painted.max() // 2]), painted, 0)
                        warned["left half as region, half of its nuclei painted"].append(
                            bool(left_unlabelled(image, part, region)))
    flagged = np.array([m[0] for m in masks])
    clean = flagged[np.array([m[3] for m in masks])]
    draws = np.random.default_rng(args.seed)

    def warned_sets(pool):
        return round(float(np.mean([pool[draws.choice(len(pool), 30, replace=False)].sum()
                                    >= JOINED_AT_LEAST for _ in range(2000)])), 4)

    report = {
        "benchmark": "dsb_label_checks",
        "command": command(),
        "machine": machine(),
        "images": {k: len(v) for k, v in warned.items()},
        "warned": {k: int(sum(v)) for k, v in warned.items()},
        "share_warned": {k: round(float(np.mean(v)), 4) for k, v in warned.items()},
        "false_alarms": alarms,
        "masks": {
            "objects_flagged": int(flagged.sum()),
            "flagged_that_are_joined_nuclei": int(sum(m[1] for m in masks)),
            "joined_objects": int(sum(m[2] for m in masks)),
            "images": len(masks),
            "images_touching_nowhere": int(len(clean)),
            "sets_of_30_warned": warned_sets(flagged),
            "sets_of_30_touching_nowhere_warned": warned_sets(clean),
            "single_images_warned": round(float(np.mean(flagged >= JOINED_AT_LEAST)), 4),
        },
        "seconds_per_image": {"median": round(float(np.median(seconds)), 4),
                              "max": round(float(np.max(seconds)), 4)},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
