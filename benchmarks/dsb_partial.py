"""Images labelled in part: what annotated regions save when only half of each image is painted.

A biologist often paints the cells of one part of an image, not all of them. Here each of
the 30 few-shot DSB 2018 images keeps the labels of the nuclei that reach into its left half
(painted whole, as a user paints a rectangle: every cell in it) and loses all others. Three
models are trained in one run with `dsb_fewshot.py`'s settings (two-class target from
scratch, 16 channels, the same time budget each) and scored on `val/`:

- all nuclei labelled (the baseline: what full painting gives),
- half painted, the rest left as background (what training on such labels does without
  regions: the unpainted nuclei are learnt as background),
- half painted, with the left half as the annotated region (`train(..., regions=...)`).

    python benchmarks/dsb_partial.py --out benchmarks/out/dsb_partial.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import evaluate, fewshot_ids, load  # noqa: E402

from napari_unet.config import ModelConfig, TrainConfig  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.train import train  # noqa: E402


def half_painted(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels of the nuclei that reach into the left half (whole), and that half."""
    region = np.zeros(labels.shape, bool)
    region[:, : labels.shape[1] // 2] = True
    painted = np.unique(labels[region])
    return np.where(np.isin(labels, painted[painted > 0]), labels, 0), region


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-budget", type=float, default=400, help="seconds per model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--min-size", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t_start = time.perf_counter()
    x, y, names = load("train", fewshot_ids())
    vx, vy, _ = load("val")
    halves = [half_painted(lab) for lab in y]
    partial, regions = [h[0] for h in halves], [h[1] for h in halves]
    kept = sum(int(np.unique(p).size - 1) for p in partial)
    total = sum(int(np.unique(t).size - 1) for t in y)
    cfg = TrainConfig(mode="instances", target="two_class", epochs=None,
                      time_budget=args.time_budget, batch_size=4, patch_size=256,
                      seed=args.seed, device=args.device)
    mc = ModelConfig(base_channels=16, depth=4, padding="same", norm="batch", dropout=0.0)
    report = {"benchmark": "dsb_partial", "command": command(), "machine": machine(),
              "data": {"train": "fewshot30.txt (30 images of train/)",
                       "test": f"val/ ({len(vx)})",
                       "nuclei_painted": kept, "nuclei_in_the_30_images": total},
              "settings": {"time_budget_s_per_model": args.time_budget,
                           "min_size": args.min_size, "seed": args.seed},
              "models": {}}
    runs = {"all_labelled": (y, None), "half_painted_no_regions": (partial, None),
            "half_painted_with_regions": (partial, regions)}
    for key, (labels, regs) in runs.items():
        t0 = time.perf_counter()
        result = run(train(x, labels, cfg, model_config=mc, names=names, regions=regs),
                     lambda e, key=key: e.kind == "epoch" and print(
                         f"[{key}] epoch {e.epoch} {e.elapsed:.0f}s loss {e.loss:.4f}",
                         file=sys.stderr))
        report["models"][key] = {
            "train": {"seconds": round(time.perf_counter() - t0, 1), "steps": result.steps,
                      "best_epoch": result.best_epoch, "epochs": len(result.history)},
            **evaluate(result.checkpoint, vx, vy, args.device, args.min_size)}
        ws = report["models"][key]["watershed"]
        print(f"[{key}] AP@0.5 {ws['ap50']:.3f}, touching {ws['touching_separated']:.1%}",
              file=sys.stderr, flush=True)
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    emit(report, args.out)


if __name__ == "__main__":
    main()
