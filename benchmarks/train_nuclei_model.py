"""The recipe of the shipped nuclei model: train on all of DSB 2018 ``train/``, score ``val/``.

Trains a U-Net on the 367 images of ``dsb2018_fluo/train`` (a share held out by the training
itself for model selection), scores it on the 48 images of ``val/`` exactly as
``dsb_fewshot.py`` does, and writes the model with its metadata (data, licence, recipe,
machine, scores) to ``--out``:

    python benchmarks/train_nuclei_model.py --time-budget 4800 \\
        --out src/napari_unet/models/nuclei.safetensors

On a GPU add ``--device cuda`` and a wider network (``--base-channels 32``; stay under the
package's 20 MB: 32 channels at float32 are about 31 MB, so ``--half`` stores float16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, machine  # noqa: E402
from dsb_fewshot import evaluate, load  # noqa: E402

from napari_unet.checkpoint import save_checkpoint  # noqa: E402
from napari_unet.config import ModelConfig, TrainConfig  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.train import train  # noqa: E402

DESCRIPTIONS = {
    "two_class": "U-Net for fluorescence nuclei (instances): the paper's two-class target, "
                 "whose background lines and border weight map separate touching nuclei; "
                 "objects by the two-class seeded watershed that merges split nuclei "
                 "and cuts joined ones at necks (connected components selectable).",
    "three_class": "U-Net for fluorescence nuclei (instances): background / interior / "
                   "boundary target; objects by seeded watershed, cut at necks.",
}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-budget", type=float, default=4800)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--target", default="two_class", choices=["two_class", "three_class"])
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--half", action="store_true", help="store the weights as float16")
    ap.add_argument("--min-size", type=int, default=25,
                    help="smallest object scored on val/ (as dsb_fewshot.py)")
    ap.add_argument("--dice-weight", type=float, default=0.5,
                    help="soft Dice term beside the weighted cross-entropy; 0.5, the engine's "
                    "default until it became 0, is what the shipped model was trained with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/nuclei.safetensors"))
    args = ap.parse_args()

    commit = git_commit()  # the code that trains, before anything else is committed
    x, y, names = load("train")
    cfg = TrainConfig(mode="instances", target=args.target, epochs=None,
                      time_budget=args.time_budget, batch_size=args.batch_size,
                      patch_size=args.patch_size, learning_rate=args.lr,
                      val_fraction=args.val_fraction, dice_weight=args.dice_weight,
                      seed=args.seed, device=args.device)
    mc = ModelConfig(base_channels=args.base_channels, depth=4, padding="same", norm="batch",
                     dropout=0.0)
    t0 = time.perf_counter()
    result = run(train(x, y, cfg, model_config=mc, names=names),
                 lambda e: e.kind == "epoch" and print(
                     f"epoch {e.epoch} {e.elapsed:.0f}s loss {e.loss:.4f} {e.val}",
                     file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    ckpt = result.checkpoint
    vx, vy, _ = load("val")
    scores = evaluate(ckpt, vx, vy, args.device, min_size=args.min_size)
    if args.half:
        ckpt.state_dict = {k: v.half() if v.is_floating_point() else v
                           for k, v in ckpt.state_dict.items()}
    ckpt.training.update({
        "name": "nuclei",
        "description": DESCRIPTIONS[args.target],
        "data": {"name": "Data Science Bowl 2018 stage1_train, fluorescence subset "
                         "(BBBC038), community-fixed annotations",
                 "images": f"dsb2018_fluo/train ({len(x)} images)",
                 "citation": "Caicedo et al. 2019, Nature Methods 16:1247-1253",
                 "licence": "CC0"},
        "licence": "CC0",
        "recipe": {"script": "benchmarks/train_nuclei_model.py", "command": command(),
                   "commit": commit, "seconds": round(seconds, 1),
                   "steps": result.steps, "best_epoch": result.best_epoch,
                   "hardware": machine(),
                   "note": ("trained on the CPU (no GPU was available): a smaller model "
                            "than a GPU would allow") if result.device.startswith("CPU")
                   else "trained on a GPU"},
        "scores": {"data": "dsb2018_fluo/val (48 images)", **scores},
    })
    path = save_checkpoint(args.out, ckpt)
    print(json.dumps({"model": str(path), "bytes": path.stat().st_size,
                      "device": result.device, **ckpt.training["recipe"],
                      "scores": scores}, indent=2))


if __name__ == "__main__":
    main()
