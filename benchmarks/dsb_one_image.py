"""DSB 2018: a model trained on one labelled image, with and without a validation strip.

A user who labels a single image used to get a model without validation: its threshold
stayed 0.5 (the two-class watershed then seeds at 0.5 and leaves touching nuclei joined) and
its last epoch was kept. Training now holds out a strip of a single image for validation
(``train.hold_out_strip``). For each of the few-shot images with the most nuclei, this
trains the Train widget's default model (16 base channels, depth 4, the paper's 'valid'
padding, 2 minutes, 20 % held out) twice with the same seed — with the strip, and with
no validation (``val_fraction=0``, what one image got before) — then segments ``val/``
(48 images) with the engine's defaults and scores it as ``dsb_fewshot.py`` does. The
model without validation is also scored at the threshold that the strip calibrated for
the other one: what the threshold alone does.

    python benchmarks/dsb_one_image.py --out benchmarks/results/dsb_one_image_cpu.json
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


def fit(image, labels, name: str, val_fraction: float, args) -> tuple:
    cfg = TrainConfig(mode="instances", epochs=None, time_budget=args.time_budget,
                      val_fraction=val_fraction, seed=args.seed, device=args.device)
    mc = ModelConfig(base_channels=16, depth=4, padding=args.padding, norm="batch",
                     dropout=0.0)
    t0 = time.perf_counter()
    first = []
    result = run(train([image], [labels], cfg, model_config=mc, names=[name]),
                 lambda e: e.kind == "start" and first.append(e.message))
    ck = result.checkpoint
    return ck, {"seconds": round(time.perf_counter() - t0, 1), "steps": result.steps,
                "epochs": len(result.history), "kept_epoch": result.best_epoch,
                "threshold": ck.threshold, "validation_strip": ck.training["validation_strip"],
                "start": first[0] if first else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4,
                    help="how many of the few-shot images with the most nuclei")
    ap.add_argument("--time-budget", type=float, default=120, help="seconds per model")
    ap.add_argument("--padding", default="valid", choices=["valid", "same"])
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
    for i in chosen:
        calibrated = None
        for mode, share in (("validation strip", args.val_fraction), ("no validation", 0.0)):
            ck, info = fit(images[i], labels[i], names[i], share, args)
            s = scores(ck)
            row = {"image": names[i], "shape": list(images[i].shape[:2]),
                   "nuclei": int(labels[i].max()), "mode": mode, **info, **s}
            if mode == "validation strip":
                calibrated = ck.threshold
            elif calibrated != ck.threshold:  # what the threshold alone does
                row["at_the_strip_models_threshold"] = {"threshold": calibrated,
                                                        **scores(ck, calibrated)}
            print(f"{names[i][:12]} {mode}: threshold {ck.threshold}, AP@0.5 "
                  f"{s['val_ap50']:.3f}, touching {s['val_touching_separated']:.1%}",
                  file=sys.stderr, flush=True)
            rows.append(row)
    summary = {}
    for mode in ("validation strip", "no validation"):
        sel = [r for r in rows if r["mode"] == mode]
        summary[mode] = {"mean_val_ap50": round(float(np.mean([r["val_ap50"] for r in sel])), 4),
                         "mean_val_touching_separated": round(float(np.mean(
                             [r["val_touching_separated"] for r in sel])), 4)}
    emit({"benchmark": "dsb_one_image", "command": command(), "machine": machine(),
          "settings": vars(args), "summary": summary, "runs": rows}, args.out)


if __name__ == "__main__":
    main()
