"""Training at one cell size (Cellpose's way) against training at the images' own sizes.

The nuclei of DSB 2018 range from about 8 to 50 px across. Cellpose resizes every training
image so that its cells have one diameter, and every image it predicts likewise. This
benchmark trains the paper's two-class model from scratch on the 30 images of
``fewshot30.txt`` twice, with `dsb_fewshot.py`'s settings and budget: at the images' own
size (the baseline, measured in the same run), and with each image resized so that the
median diameter of its nuclei is ``--cell-size`` px. It predicts the 48 images of ``val/``
with each model: at their own size; with each image's true median diameter (a user who
measures a few cells per image; ``PredictConfig.diameter``); and with the diameter estimated
from a first pass (``auto``). Minimum object size 25 px; scores as `dsb_fewshot.py`.

    python benchmarks/dsb_size_normalised.py --cell-size 25 --out benchmarks/out/dsb_size.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import fewshot_ids, load  # noqa: E402
from dsb_rescale import MIN_SIZE, evaluate, magnify  # noqa: E402

from napari_unet.config import ModelConfig, TrainConfig  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.scale import median_diameter  # noqa: E402
from napari_unet.train import train  # noqa: E402


def fit(images, labels, names, seconds: float, device: str, seed: int):
    cfg = TrainConfig(mode="instances", target="two_class", epochs=None, time_budget=seconds,
                      batch_size=4, patch_size=256, learning_rate=1e-3, seed=seed,
                      device=device)
    mc = ModelConfig(base_channels=16, depth=4, padding="same", norm="batch", dropout=0.0)
    result = run(train(images, labels, cfg, model_config=mc, names=names))
    return result.checkpoint, {"steps": result.steps, "best_epoch": result.best_epoch,
                               "epochs": len(result.history),
                               "object_diameter": result.checkpoint.object_diameter,
                               "threshold": result.checkpoint.threshold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell-size", type=float, default=25.0,
                    help="median nucleus diameter every training image is resized to (px)")
    ap.add_argument("--time-budget", type=float, default=400, help="seconds per model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    images, truths, names = load("train", fewshot_ids())
    val_images, val_truths, _ = load("val")
    sized = [magnify(i, t, args.cell_size / median_diameter([t]))
             for i, t in zip(images, truths)]
    modes = (("own_size", [None] * len(val_images)),
             ("image_diameter", [median_diameter([t]) for t in val_truths]),
             ("auto", ["auto"] * len(val_images)))
    report = {"benchmark": "dsb_size_normalised", "command": command(), "machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "cell_size": args.cell_size}
    for key, (imgs, labs) in (("native", (images, truths)),
                              ("one_cell_size", ([s[0] for s in sized], [s[1] for s in sized]))):
        ckpt, info = fit(imgs, labs, names, args.time_budget, args.device, args.seed)
        report[key] = {"training": info}
        for mode, ds in modes:
            row = evaluate(ckpt, val_images, val_truths, ds, args.device, MIN_SIZE)
            report[key][mode] = row
            print(f"{key} {mode}: AP@0.5 {row['ap50']:.3f}, touching "
                  f"{row['touching_separated']:.1%}", file=sys.stderr, flush=True)
    emit(report, args.out)


if __name__ == "__main__":
    main()
