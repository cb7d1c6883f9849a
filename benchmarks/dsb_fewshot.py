"""DSB 2018 nuclei from 30 labelled images: instance quality of touching nuclei.

Trains on the 30 images of ``fewshot30.txt`` within a time budget per model, predicts the 48
images of ``val/`` and reports, as JSON on stdout, for every way of turning probabilities into
objects:

* ``ap50``: average precision at IoU 0.5, TP / (TP + FP + FN) with one-to-one matching,
  per image, averaged over the 48 images (``ap50_pooled``: with the counts pooled over
  them instead);
* ``map``: the mean of that over IoU 0.5:0.05:0.95 (``map_pooled`` likewise);
* ``touching_separated``: the share of touching ground-truth pairs that end up in two
  different predicted objects (see ``napari_unet.metrics.separated_pairs``);
* ``foreground_split_by_truth``: the same scores for the model's foreground divided among
  the true nuclei (each pixel to the nearest one): what perfect separation would reach with
  this foreground, which tells foreground errors from separation errors.

Models compared (each trained from scratch on the same 30 images, same budget, same seed):

* ``two_class``: the paper's model (separating background lines, border weight map) with
  (a) connected components, and (c) a seeded watershed (seeds above the calibrated
  threshold, flooded down the foreground probability, neighbours whose shared boundary is
  still foreground merged again, objects cut where they narrow to a neck; also reported
  without merging and cutting, and as the default was before the cut at necks);
* ``three_class``: background / interior / boundary with (b) seeded watershed, and connected
  components of the interior;
* ``distance``: the paper's two classes plus a regressed normalised distance map (each
  object's distance to its border over its largest one), whose cores seed a watershed over
  the foreground (Naylor et al. 2019), and connected components of the foreground;
* ``offsets`` (not trained by default: ``--targets offsets``): the paper's two classes plus
  each nucleus pixel's vector to its nucleus's centre; pixels grouped by the centre they
  vote for, and connected components of the foreground;
* ``fine_tuned``: the shipped pretrained nuclei model fine-tuned on the same 30 images with
  the same budget (and the pretrained model as it is, without fine-tuning).

Baseline measured in the same run: the ground truth with every touching pair merged
(connected components of the true foreground), which only separation of touching cells
beats.

    python benchmarks/dsb_fewshot.py --out benchmarks/out/dsb_fewshot.json

(four trainings of 400 s each by default: about 28 minutes on a 2-core CPU.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA, command, emit, machine  # noqa: E402

from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.config import ModelConfig, PredictConfig, TrainConfig  # noqa: E402
from napari_unet.instances import (  # noqa: E402
    instances_from_probabilities,
    remove_small_objects,
    watershed_two_class,
)
from napari_unet.io import read_image  # noqa: E402
from napari_unet.metrics import instance_scores  # noqa: E402
from napari_unet.predict import min_object_size, predict  # noqa: E402
from napari_unet.pretrained import resolve_model  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.train import train  # noqa: E402

ROOT = DATA / "dsb2018_fluo"


def load(split: str, ids=None):
    """Images and instance labels of ``split`` ('train' or 'val'), optionally only ``ids``."""
    folder = ROOT / split
    if ids is None:
        ids = sorted(p.stem for p in (folder / "images").glob("*.png"))
    return ([read_image(folder / "images" / f"{i}.png") for i in ids],
            [read_image(folder / "labels" / f"{i}.tif") for i in ids], list(ids))


def fewshot_ids() -> list[str]:
    return (ROOT / "fewshot30.txt").read_text().split()


def score(truths, preds) -> dict:
    """AP (pooled and per image), mean AP over IoU 0.5:0.95 and touching pairs separated
    (:func:`napari_unet.metrics.instance_scores`)."""
    return instance_scores(truths, preds)


def probabilities(checkpoint, images, device: str) -> tuple[list[np.ndarray], float]:
    t0 = time.perf_counter()
    probs = [run(predict(checkpoint, x, PredictConfig(device=device), labels=False)
                 ).probabilities for x in images]
    return probs, time.perf_counter() - t0


def split_by_truth(foreground: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """A predicted foreground divided among the true objects: each pixel goes to the
    nearest true object. Scores what the model's foreground would reach if the separation
    of touching objects were perfect (a diagnosis, not a method)."""
    from scipy import ndimage as ndi

    if not truth.any():
        return np.zeros_like(truth)
    idx = ndi.distance_transform_edt(truth == 0, return_distances=False, return_indices=True)
    return np.where(foreground, truth[tuple(idx)], 0)


def evaluate(checkpoint, images, truths, device: str, min_size: int) -> dict:
    """Scores of one model with each instance method that suits its target, and of its
    foreground (probability above 0.5, or not background) split by the truth."""
    probs, seconds = probabilities(checkpoint, images, device)
    target, th = checkpoint.target, checkpoint.threshold
    methods = ("watershed", "components")
    out = {"predict_seconds": round(seconds, 1), "threshold": th}
    for method in methods:
        preds = [instances_from_probabilities(p, target=target, method=method, threshold=th,
                                              min_size=min_size) for p in probs]
        out[method] = score(truths, preds)
    floor = [instances_from_probabilities(p, target=target, threshold=th, min_size=10)
             for p in probs]
    if min_size != 10:  # the default method with the engine's old default minimum size
        out["watershed_min_size_10"] = score(truths, floor)
    # ... and with its default since 2026-11-27, 'auto' (what a user gets)
    auto = min_object_size(PredictConfig(min_size="auto"), checkpoint)
    out["watershed_min_size_auto"] = score(truths, [remove_small_objects(lab, auto)
                                                    for lab in floor])
    if target == "two_class":  # the watershed alone: no merging, no cut at necks
        out["watershed_unmerged"] = score(truths, [watershed_two_class(
            p[1], threshold=th, min_size=min_size, merge=None, necks=None) for p in probs])
        # the default until 2026-11-27: merged above 0.7, not cut at necks
        out["watershed_merge_0.7_no_necks"] = score(truths, [watershed_two_class(
            p[1], threshold=th, min_size=min_size, merge=0.7, necks=None) for p in probs])
    fg = [(p[1] > 0.5) if target != "three_class" else (p[:3].argmax(0) != 0) for p in probs]
    out["foreground_split_by_truth"] = score(truths, [split_by_truth(f, t)
                                                     for f, t in zip(fg, truths)])
    return out


def fit(images, labels, names, args, *, target: str, init_from=None, out: Path) -> tuple:
    lr = args.lr if init_from is None else args.fine_tune_lr
    cfg = TrainConfig(mode="instances", target=target, epochs=None,
                      time_budget=args.time_budget, batch_size=args.batch_size,
                      patch_size=args.patch_size, learning_rate=lr, seed=args.seed,
                      zoom=args.zoom, w0=args.w0, sigma=args.sigma,
                      class_balance=not args.no_class_balance, dice_weight=args.dice_weight,
                      val_fraction=args.val_fraction,
                      freeze_encoder=args.freeze_encoder and init_from is not None,
                      device=args.device)
    mc = ModelConfig(base_channels=args.base_channels, depth=4, padding=args.padding,
                     norm="batch", dropout=args.dropout)
    t0 = time.perf_counter()
    result = run(train(images, labels, cfg, model_config=mc, init_from=init_from, out=out,
                       names=names),
                 lambda e: e.kind == "epoch" and print(
                     f"[{target}{' fine-tune' if init_from else ''}] epoch {e.epoch} "
                     f"{e.elapsed:.0f}s loss {e.loss:.4f} {e.val}", file=sys.stderr))
    info = {"seconds": round(time.perf_counter() - t0, 1), "steps": result.steps,
            "epochs": len(result.history), "best_epoch": result.best_epoch, "lr": lr,
            "best_validation": result.history[result.best_epoch - 1] if result.best_epoch
            else None, "model": result.checkpoint.config.to_dict()}
    return result.checkpoint, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-budget", type=float, default=400, help="seconds per model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--base-channels", type=int, default=16,
                    help="width of the models trained from scratch (the pretrained model's "
                         "own width is kept when fine-tuning)")
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="dropout at the end of the contracting path of the models trained "
                         "from scratch (the paper: 0.5)")
    ap.add_argument("--padding", default="same", choices=["same", "valid"],
                    help="of the models trained from scratch (valid: the paper's unpadded "
                    "convolutions)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate from scratch")
    ap.add_argument("--fine-tune-lr", type=float, default=3e-4)
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="fine-tune the expanding path only")
    ap.add_argument("--zoom", type=float, default=0.0, help="zoom augmentation (0: off)")
    ap.add_argument("--min-size", type=int, default=25,
                    help="objects smaller than this (px) are removed; 25 was chosen on the "
                    "development set (dsb_dev_postprocessing.py); every model is also scored "
                    "at the engine's default, 'auto' (instances.auto_min_size)")
    ap.add_argument("--w0", type=float, default=TrainConfig.w0,
                    help="border weight amplitude of the loss (the paper: 10)")
    ap.add_argument("--sigma", type=float, default=TrainConfig.sigma,
                    help="border weight width in pixels (the paper: 5)")
    ap.add_argument("--no-class-balance", action="store_true",
                    help="leave out the weight map's class-frequency term w_c")
    ap.add_argument("--dice-weight", type=float, default=TrainConfig.dice_weight,
                    help="weight of the soft Dice term added to the weighted cross-entropy "
                    "(0: the paper's loss alone)")
    ap.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction,
                    help="share of the 30 images the training holds out for model selection")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--targets", default="two_class,three_class,distance",
                    help="models to train from scratch (comma-separated; '' for none)")
    ap.add_argument("--pretrained", default="nuclei",
                    help="model to fine-tune: a shipped name or a file ('' to skip)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--models", type=Path, default=Path("benchmarks/out/dsb_models"))
    args = ap.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    x, y, names = load("train", fewshot_ids())
    vx, vy, _ = load("val")
    from scipy import ndimage as ndi

    merged = [ndi.label(t > 0)[0] for t in vy]
    report = {
        "benchmark": "dsb_fewshot",
        "command": command(),
        "machine": machine(),
        "data": {"train": "fewshot30.txt (30 images of train/)", "test": f"val/ ({len(vx)})"},
        "settings": {"time_budget_s_per_model": args.time_budget,
                     "batch_size": args.batch_size, "patch_size": args.patch_size,
                     "lr": args.lr, "fine_tune_lr": args.fine_tune_lr, "zoom": args.zoom,
                     "min_size": args.min_size, "seed": args.seed,
                     "w0": args.w0, "sigma": args.sigma,
                     "class_balance": not args.no_class_balance,
                     "dice_weight": args.dice_weight,
                     "val_fraction": args.val_fraction, "dropout": args.dropout},
        "baseline_truth_touching_merged": score(vy, merged),
        "models": {},
    }
    args.models.mkdir(parents=True, exist_ok=True)
    for target in filter(None, args.targets.split(",")):
        ckpt, info = fit(x, y, names, args, target=target,
                         out=args.models / f"scratch_{target}.safetensors")
        report["models"][f"scratch_{target}"] = {"train": info, "device": ckpt.training.get(
            "device"), **evaluate(ckpt, vx, vy, args.device, args.min_size)}
    if args.pretrained:
        path = resolve_model(args.pretrained)
        base = load_checkpoint(path)
        report["models"]["pretrained_as_is"] = {
            "file": str(path), "trained": base.training.get("recipe"),
            **evaluate(base, vx, vy, args.device, args.min_size)}
        ckpt, info = fit(x, y, names, args, target=base.target, init_from=base,
                         out=args.models / "fine_tuned.safetensors")
        report["models"]["fine_tuned"] = {"from": str(path), "train": info,
                                          **evaluate(ckpt, vx, vy, args.device, args.min_size)}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    report["aims"] = {"ap50_scratch": 0.85, "ap50_fine_tuned": 0.88, "touching_separated": 0.85}
    emit(report, args.out)


if __name__ == "__main__":
    main()
