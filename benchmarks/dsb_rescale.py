"""Cells larger or smaller than the model saw: predicting with a cell diameter.

A user's microscope rarely images nuclei at the size the shipped model learnt them (DSB 2018
`train/`, median diameter 18.85 px, which the model file records). This benchmark magnifies
the 48 images of `val/` (image linear, labels nearest) by each factor, and predicts them
with the shipped `nuclei` model, in one run:

- as they are (no diameter; the baseline),
- with one diameter for the whole set (what a user types once: the median diameter of the
  magnified set's true nuclei),
- with each image's own diameter (the median of its true nuclei: a user who measures a
  few cells per image),
- with the diameter estimated per image from a first pass at its own size (`auto`).

The minimum object size is the DSB benchmark's 25 px times the factor squared, for every
mode. Scores as `dsb_fewshot.py` (AP@0.5 per image, mAP 0.5:0.95, touching pairs separated).

With ``--fine-tune SECONDS`` the shipped model is also fine-tuned, for each factor, on the
30 few-shot images magnified alike (`dsb_fewshot.py`'s fine-tuning settings): at the images'
own size (``native``), and resized to the model's cell size (``matched``,
``TrainConfig.match_size``); each is scored the same ways.

    python benchmarks/dsb_rescale.py --factors 1,2,3,4 --out benchmarks/out/dsb_rescale.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import load, score  # noqa: E402

from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.config import PredictConfig  # noqa: E402
from napari_unet.predict import predict  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.scale import (  # noqa: E402
    equivalent_diameters,
    median_diameter,
    resize_image,
    resize_labels,
    scaled_shape,
)

MIN_SIZE = 25


def magnify(image: np.ndarray, labels: np.ndarray, factor: float):
    """``image`` (linear, smoothed when shrinking) and ``labels`` (nearest) resized."""
    shape = scaled_shape(labels.shape, factor)
    return resize_image(image, shape), resize_labels(labels, shape)


def evaluate(ckpt, images, truths, diameters, device: str, min_size: int) -> dict:
    preds, start = [], time.perf_counter()
    for image, d in zip(images, diameters):
        cfg = PredictConfig(device=device, min_size=min_size, diameter=d)
        preds.append(run(predict(ckpt, image, cfg)).labels)
    return {**score(truths, preds), "predict_seconds": round(time.perf_counter() - start, 1)}


def fine_tune(ckpt, factor: float, seconds: float, device: str, match: bool):
    """The model fine-tuned on the few-shot images magnified by ``factor`` (``match``: with
    the images resized to the model's cell size, ``TrainConfig.match_size``)."""
    from dsb_fewshot import fewshot_ids

    from napari_unet.config import TrainConfig
    from napari_unet.train import train

    images, truths, names = load("train", fewshot_ids())
    pairs = [magnify(i, t, factor) for i, t in zip(images, truths)]
    cfg = TrainConfig(mode="instances", target=ckpt.target, epochs=None, time_budget=seconds,
                      batch_size=4, patch_size=256, learning_rate=3e-4, device=device,
                      match_size=match)
    result = run(train([p[0] for p in pairs], [p[1] for p in pairs], cfg, init_from=ckpt,
                       names=names))
    return result.checkpoint, {"steps": result.steps, "best_epoch": result.best_epoch,
                               "object_diameter": result.checkpoint.object_diameter,
                               "resized": result.checkpoint.training.get(
                                   "resized_to_the_models_cell_size")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--factors", default="1,2,3,4",
                    help="magnifications of the val/ images, comma-separated")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fine-tune", type=float, default=0.0, metavar="SECONDS",
                    help="also fine-tune the model on the magnified few-shot images")
    ap.add_argument("--fine-tune-modes", default="native,matched",
                    help="native: at the images' size; matched: resized to the model's "
                    "cell size (--match-size)")
    ap.add_argument("--out")
    args = ap.parse_args()
    ckpt = load_checkpoint(args.model)
    images, truths, _ = load("val")
    rows = []
    for factor in (float(f) for f in args.factors.split(",")):
        pairs = [magnify(i, t, factor) for i, t in zip(images, truths)]
        imgs, labs = [p[0] for p in pairs], [p[1] for p in pairs]
        min_size = round(MIN_SIZE * factor**2)
        whole = median_diameter(labs)
        own = [float(np.median(equivalent_diameters(lab))) for lab in labs]
        row = {"factor": factor, "min_size": min_size, "set_diameter_px": round(whole, 2),
               "model_diameter": ckpt.object_diameter}
        modes = (("as_is", [None] * len(imgs)), ("set_diameter", [whole] * len(imgs)),
                 ("image_diameter", own), ("auto", ["auto"] * len(imgs)))
        models = [("", ckpt)]
        for how in filter(None, args.fine_tune_modes.split(",")) if args.fine_tune else ():
            tuned, row[f"fine_tuning_{how}"] = fine_tune(ckpt, factor, args.fine_tune,
                                                         args.device, how == "matched")
            models.append(("fine_tuned_" if how == "native" else "fine_tuned_matched_",
                           tuned))
        for prefix, model in models:
            for mode, ds in modes:
                key = prefix + mode
                row[key] = evaluate(model, imgs, labs, ds, args.device, min_size)
                print(f"x{factor:g} {key}: AP@0.5 {row[key]['ap50']:.3f}, touching "
                      f"{row[key]['touching_separated']:.1%}, {row[key]['predict_seconds']} s",
                      file=sys.stderr, flush=True)
        rows.append(row)
    emit({"benchmark": "dsb_rescale", "command": command(), "machine": machine(),
          "model": args.model, "date": time.strftime("%Y-%m-%d"), "results": rows}, args.out)


if __name__ == "__main__":
    main()
