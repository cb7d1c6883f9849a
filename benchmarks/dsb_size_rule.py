"""Resize only the images whose cells are far from the model's size? A per-image rule.

Each `val/` image (DSB 2018 nuclei) is predicted by a model as it is, at its true median
nucleus diameter, and at the median diameter of the objects of the first prediction (what
the Predict widget's *estimate* finds); minimum object size 25 px. For each rule — resize
an image only where that diameter is more than 1.25, 1.5, 1.75 or 2 times larger or
smaller than the model's, or only larger, or only smaller — the resized result is kept
where the rule says so and the image-size result elsewhere; AP@0.5 (per image, averaged)
for each, with the default (every image as it is) as the baseline of the same run.

    python benchmarks/dsb_size_rule.py --model nuclei --out benchmarks/out/dsb_size_rule.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine
from dsb_fewshot import load

from napari_unet.checkpoint import load_checkpoint
from napari_unet.config import PredictConfig
from napari_unet.metrics import instance_scores
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.scale import median_diameter

LIMITS = (1.25, 1.5, 1.75, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--min-size", type=int, default=25)
    parser.add_argument("--out")
    args = parser.parse_args()
    t0 = time.perf_counter()
    ckpt = load_checkpoint(args.model)
    model_d = ckpt.object_diameter
    images, truths, _ = load("val")
    cfg = PredictConfig(min_size=args.min_size)
    rows = []
    for image, truth in zip(images, truths):
        base = run(predict(ckpt, image, cfg)).labels
        row = {"true_d": median_diameter([truth]), "first_d": median_diameter([base]),
               "as_it_is": instance_scores([truth], [base])["ap50"]}
        for kind in ("true", "first"):
            d = row[f"{kind}_d"]
            lab = run(predict(ckpt, image, cfg.replace(diameter=d))).labels if d else base
            row[kind] = instance_scores([truth], [lab])["ap50"]
        rows.append(row)

    def rule(kind, keep) -> float:
        return float(np.mean([r[kind] if r[f"{kind}_d"] and keep(r[f"{kind}_d"] / model_d)
                              else r["as_it_is"] for r in rows]))

    scores = {"every image as it is (the default)": float(np.mean([r["as_it_is"]
                                                                  for r in rows]))}
    for kind in ("true", "first"):
        scores[f"every image at its {kind} diameter"] = rule(kind, lambda ratio: True)
        for lim in LIMITS:
            scores[f"{kind} diameter, resized beyond {lim}x either way"] = rule(
                kind, lambda ratio, lim=lim: ratio > lim or 1 / ratio > lim)
            scores[f"{kind} diameter, larger cells beyond {lim}x only"] = rule(
                kind, lambda ratio, lim=lim: ratio > lim)
            scores[f"{kind} diameter, smaller cells beyond {lim}x only"] = rule(
                kind, lambda ratio, lim=lim: 1 / ratio > lim)
    emit({"benchmark": "dsb_size_rule", "command": command(), "machine": machine(),
          "model": args.model, "model_diameter": model_d, "min_size": args.min_size,
          "ap50": {k: round(v, 4) for k, v in scores.items()}, "per_image": rows,
          "seconds": round(time.perf_counter() - t0, 1)}, args.out)


if __name__ == "__main__":
    main()
