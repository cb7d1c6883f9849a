"""DSB 2018: a model trained on one labelled image, with and without a validation strip.

A user who labels a single image used to get a model without validation: its threshold
stayed 0.5 (the two-class watershed then seeds at 0.5 and leaves touching nuclei joined) and
its last epoch was kept. Training now holds out a strip of a single image for validation
(``train.hold_out_strip``). For each of the few-shot images with the most nuclei, this
trains the Train widget's default model (16 base channels, depth 4, the paper's 'valid'
padding, 2 minutes, 20 % held out) twice with the same seed — with the strip, and with
the rule before it (no validation for one image) — then segments ``val/``
(48 images) with the engine's defaults and scores it as ``dsb_fewshot.py`` does. The
model without validation is also scored at the threshold that the strip calibrated for
the other one: what the threshold alone does.

    python benchmarks/dsb_one_image.py --out benchmarks/results/dsb_one_image_cpu.json

With ``--per-model 2`` each model trains on two of the images (pairs of the ones chosen),
with a strip of each held out against one of the two held out whole (the rule before).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import fewshot_ids, load, score  # noqa: E402

from napari_unet.config import ModelConfig, PredictConfig, TrainConfig  # noqa: E402
from napari_unet.predict import predict  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.train import train  # noqa: E402


def fit(images, labels, names, val_fraction: float, args, strips: bool = True) -> tuple:
    cfg = TrainConfig(mode="instances", epochs=None, time_budget=args.time_budget,
                      val_fraction=val_fraction, seed=args.seed, device=args.device)
    mc = ModelConfig(base_channels=16, depth=4, padding=args.padding, norm="batch",
                     dropout=0.0)
    t0 = time.perf_counter()
    first = []
    import napari_unet.train as engine

    rule, up_to = engine.hold_out_strips, engine.STRIPS_UP_TO
    if not strips:  # the rule before strips: whole images, none of a single image
        engine.hold_out_strips = lambda prep, *a, **k: (prep, [])
    elif args.force_strips:  # strips whatever the number of images
        engine.STRIPS_UP_TO = len(images)
    try:
        result = run(train(images, labels, cfg, model_config=mc, names=names),
                     lambda e: e.kind == "start" and first.append(e.message))
    finally:
        engine.hold_out_strips, engine.STRIPS_UP_TO = rule, up_to
    ck = result.checkpoint
    return ck, {"seconds": round(time.perf_counter() - t0, 1), "steps": result.steps,
                "epochs": len(result.history), "kept_epoch": result.best_epoch,
                "threshold": ck.threshold, "validation_strips": ck.training["validation_strips"],
                "start": first[0] if first else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4,
                    help="how many of the few-shot images with the most nuclei")
    ap.add_argument("--per-model", type=int, default=1,
                    help="images each model is trained on (2: pairs of the images chosen, "
                    "where the rule before held one of the two out whole)")
    ap.add_argument("--time-budget", type=float, default=120, help="seconds per model")
    ap.add_argument("--padding", default="valid", choices=["valid", "same"])
    ap.add_argument("--force-strips", action="store_true",
                    help="strips even where the engine would hold out whole images (to "
                    "measure where its rule should change)")
    ap.add_argument("--val-fraction", type=float, default=0.2,
                    help="the strip's share (the Train widget's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np

    images, labels, names = load("train", fewshot_ids())
    chosen = sorted(range(len(names)), key=lambda i: -int(labels[i].max()))[:args.images]
    val_images, val_truths, _ = load("val")
    def scores(ck, threshold=None):
        cfg = PredictConfig(device=args.device, threshold=threshold)
        s = score(val_truths, [run(predict(ck, x, cfg)).labels for x in val_images])
        return {"val_ap50": s["ap50"], "val_map": s["map"],
                "val_touching_separated": s["touching_separated"],
                "val_tp_fp_fn": s["tp_fp_fn_at_0.5"]}

    rows = []
    k = args.per_model
    before = "no validation" if k == 1 else "whole image held out"
    for g in range(0, len(chosen) - k + 1, k):
        group = chosen[g:g + k]
        calibrated = None
        for mode, strips in (("validation strip", True), (before, False)):
            ck, info = fit([images[i] for i in group], [labels[i] for i in group],
                           [names[i] for i in group], args.val_fraction, args, strips)
            s = scores(ck)
            row = {"image": " + ".join(names[i] for i in group),
                   "shape": [list(images[i].shape[:2]) for i in group],
                   "nuclei": [int(labels[i].max()) for i in group], "mode": mode, **info, **s}
            if mode == "validation strip":
                calibrated = ck.threshold
            elif calibrated != ck.threshold:  # what the threshold alone does
                row["at_the_strip_models_threshold"] = {"threshold": calibrated,
                                                        **scores(ck, calibrated)}
            print(f"{row['image'][:12]} {mode}: threshold {ck.threshold}, AP@0.5 "
                  f"{s['val_ap50']:.3f}, touching {s['val_touching_separated']:.1%}",
                  file=sys.stderr, flush=True)
            rows.append(row)
    summary = {}
    for mode in ("validation strip", before):
        sel = [r for r in rows if r["mode"] == mode]
        summary[mode] = {"mean_val_ap50": round(float(np.mean([r["val_ap50"] for r in sel])), 4),
                         "mean_val_touching_separated": round(float(np.mean(
                             [r["val_touching_separated"] for r in sel])), 4)}
    emit({"benchmark": "dsb_one_image", "command": command(), "machine": machine(),
          "settings": vars(args), "summary": summary, "runs": rows}, args.out)


if __name__ == "__main__":
    main()
