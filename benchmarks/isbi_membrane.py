"""ISBI 2012 EM membranes: train on slices 00-24 within a time budget, score 25-29.

Reports, as JSON on stdout: pixel error, foreground (cell interior) Dice and adapted Rand
error of the U-Net (at the foreground threshold the training calibrated on its own validation
images, taken from 00-24, and at 0.5; with and without test-time rotations/flips), next
to two baselines measured in the same run on the same slices: 'all interior' (every pixel
called cell) and 'otsu' (a smoothed Otsu threshold). The model shifts its probabilities by
the annotations' sub-pixel offset that the training calibrated on its validation slices
(napari_unet.label_offset); the same model is also scored without that shift.

    python benchmarks/isbi_membrane.py --time-budget 900 --out benchmarks/out/isbi_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA, command, emit, machine  # noqa: E402

from napari_unet.config import ModelConfig, PredictConfig, TrainConfig  # noqa: E402
from napari_unet.io import read_image  # noqa: E402
from napari_unet.metrics import adapted_rand_error, dice, pixel_error  # noqa: E402
from napari_unet.predict import predict  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.train import train  # noqa: E402


def load(ids):
    root = DATA / "isbi2012_em"
    return ([read_image(root / "images" / f"{i:02d}.png") for i in ids],
            [read_image(root / "labels" / f"{i:02d}.png") for i in ids])


def scores(truth_interior: np.ndarray, pred_interior: np.ndarray) -> dict:
    from scipy import ndimage as ndi

    cross = ndi.generate_binary_structure(2, 1)
    t_seg, _ = ndi.label(truth_interior, cross)
    p_seg, _ = ndi.label(pred_interior, cross)
    return {"pixel_error": pixel_error(truth_interior, pred_interior),
            "dice": dice(truth_interior, pred_interior),
            "rand_error": adapted_rand_error(t_seg, p_seg)}


def mean(rows):
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-budget", type=float, default=900)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="of the training steps (auto: bf16 on GPUs and CPUs that have it)")
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="dropout at the end of the contracting path (the paper: 0.5)")
    ap.add_argument("--padding", default="same", choices=["valid", "same"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--mode", default="semantic", choices=["semantic", "instances"])
    ap.add_argument("--w0", type=float, default=10.0)
    ap.add_argument("--dice-weight", type=float, default=0.0,
                    help="soft Dice term (default off: plain cross-entropy is the loss whose "
                         "minimum is the pixel error's)")
    ap.add_argument("--class-balance", action=argparse.BooleanOptionalAction, default=False,
                    help="the weight map's class-frequency term w_c (default off, see "
                         "benchmarks/RESULTS.md)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--label-offset", action=argparse.BooleanOptionalAction, default=True,
                    help="calibrate the annotations' sub-pixel offset on the validation "
                         "slices (napari_unet.label_offset); the model is also scored "
                         "without it")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of slices 00-24 held out for model selection and threshold "
                         "calibration (0: train on all 25, keep the epoch of the lowest training "
                         "loss, threshold 0.5)")
    ap.add_argument("--strips", action="store_true",
                    help="validate on a strip of each of the 25 slices (the rule for one to "
                         "five images, napari_unet.train.hold_out_strips) instead of whole "
                         "slices")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--model-out", type=Path,
                    default=Path("benchmarks/out/isbi_model.safetensors"))
    args = ap.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.strips:
        import napari_unet.train as engine

        engine.STRIPS_UP_TO = 25
    train_x, train_y = load(range(0, 25))
    test_x, test_y = load(range(25, 30))
    truth = [y > 127 for y in test_y]

    cfg = TrainConfig(mode=args.mode, target="two_class", epochs=None,
                      time_budget=args.time_budget, batch_size=args.batch_size,
                      patch_size=args.patch_size, w0=args.w0, dice_weight=args.dice_weight,
                      class_balance=args.class_balance, learning_rate=args.lr,
                      val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                      precision=args.precision, label_offset=args.label_offset)
    mc = ModelConfig(base_channels=args.base_channels, depth=args.depth, padding=args.padding,
                     norm="batch", dropout=args.dropout)
    t0 = time.perf_counter()
    result = run(train(train_x, train_y, cfg, model_config=mc, out=args.model_out),
                 lambda e: e.kind == "epoch" and print(
                     f"epoch {e.epoch} {e.elapsed:.0f}s loss {e.loss:.4f} {e.val}",
                     file=sys.stderr))
    train_s = time.perf_counter() - t0

    ckpt = result.checkpoint
    # the same model without its calibrated label offset: the baseline of that step
    plain = replace(ckpt, task={k: v for k, v in ckpt.task.items() if k != "label_offset"})
    rows, rows05, rows_tta, t_pred = [], [], [], time.perf_counter()
    rows_plain, rows_plain_tta = [], []
    threshold = ckpt.threshold  # calibrated on the training validation split
    for x, t in zip(test_x, truth):
        r = run(predict(ckpt, x, PredictConfig(device=args.device), labels=False))
        rows.append(scores(t, r.probabilities[1] > threshold))
        rows05.append(scores(t, r.probabilities[1] > 0.5))
    pred_s = time.perf_counter() - t_pred
    for x, t in zip(test_x, truth):
        r = run(predict(ckpt, x, PredictConfig(device=args.device, tta=True), labels=False))
        rows_tta.append(scores(t, r.probabilities[1] > threshold))
        for cfg, out in ((PredictConfig(device=args.device), rows_plain),
                         (PredictConfig(device=args.device, tta=True), rows_plain_tta)):
            r = run(predict(plain, x, cfg, labels=False))
            out.append(scores(t, r.probabilities[1] > threshold))

    from skimage.filters import gaussian, threshold_otsu
    otsu = []
    for x, t in zip(test_x, truth):
        s = gaussian(x.astype(float), 1.0)
        otsu.append(scores(t, s > threshold_otsu(s)))
    allfg = [scores(t, np.ones_like(t)) for t in truth]

    report = {
        "benchmark": "isbi_membrane",
        "command": command(),
        "machine": machine(),
        "device": result.device,
        "train": {"slices": "00-24", "time_budget_s": args.time_budget,
                  "seconds": round(train_s, 1), "steps": result.steps,
                  "epochs": len(result.history), "best_epoch": result.best_epoch,
                  "model": mc.to_dict(), "batch_size": args.batch_size,
                  "patch_size": args.patch_size, "w0": args.w0, "mode": args.mode,
                  "class_balance": args.class_balance, "lr": args.lr,
                  "val_fraction": args.val_fraction, "precision": args.precision,
                  "dice_weight": args.dice_weight, "label_offset": args.label_offset,
                  "strips": args.strips,
                  "validation_images": result.checkpoint.training.get("validation_images"),
                  "validation_strips": result.checkpoint.training.get("validation_strips"),
                  "history": result.history},
        "test": {"slices": "25-29", "predict_seconds": round(pred_s, 2)},
        "unet": {**mean(rows), "threshold": threshold,
                 "label_offset": list(ckpt.label_offset),
                 "label_offset_calibration": ckpt.training.get("label_offset")},
        "unet_without_label_offset": {**mean(rows_plain), "threshold": threshold},
        "unet_tta_without_label_offset": {**mean(rows_plain_tta), "threshold": threshold},
        "unet_threshold_0.5": mean(rows05),
        "unet_tta": {**mean(rows_tta), "threshold": threshold,
                     "note": "averaged over the 8 rotations/flips, as the paper averages "
                             "rotated inputs for ISBI 2012"},
        "baseline_otsu": mean(otsu),
        "baseline_all_interior": mean(allfg),
        "aims": {"pixel_error_cpu_15min": 0.07, "pixel_error_gpu": 0.06},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
