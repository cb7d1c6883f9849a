"""A training report people can look at: ``<model>.report.png`` and ``<model>.report.json``.

The PNG shows the training loss and the validation scores per epoch (the best epoch marked)
and up to three validation images with the ground truth (green) and the saved model's
prediction (magenta) outlined; the JSON holds the same numbers. Written beside the model by
every training that saves one (CLI, widget, Python API). Drawn with matplotlib's Agg canvas,
so it works in any thread and without a display.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def report_paths(model_path: str | Path) -> tuple[Path, Path]:
    """``(png, json)`` beside a model file."""
    model_path = Path(model_path)
    stem = model_path.name.removesuffix(".safetensors")
    return (model_path.with_name(f"{stem}.report.png"),
            model_path.with_name(f"{stem}.report.json"))


def _outline(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(labels, mode="inner")


def summary(name: str, result, chosen: str | None) -> str:
    """The report's text: the model kept, and the validation score that chose it (``chosen``:
    the metric it averages, None where no image was validated)."""
    from .train import SELECTION_WINDOW

    best = (f"{result.best_score:.4f}" if result.best_score is not None
            else "none (no validation image)")
    window = [h["epoch"] for h in result.history if h["epoch"] <= (result.best_epoch or 0)]
    window = window[-SELECTION_WINDOW:]
    if chosen and len(window) > 1:  # the score that chose the model
        best += f"\n({chosen} averaged over epochs {window[0]}-{window[-1]})"
    kept = (f"the starting model kept, {len(result.history)} epochs" if result.best_epoch == 0
            else f"epoch {result.best_epoch} of {len(result.history)}")
    return (f"{name}\n\nbest validation score {best}\n{kept}, {result.steps} steps\n"
            f"{result.seconds:.0f} s on {result.device}\nended: {result.stopped}")


def write_report(model_path, result, examples=()) -> tuple[Path, Path]:
    """Write the report of a :class:`~napari_unet.train.TrainResult`.

    ``examples``: ``(image, truth, prediction)`` triples of validation images (channels
    last), their true labels and the saved model's labels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .train import SELECTION_WINDOW

    png, js = report_paths(model_path)
    history = result.history
    numbers = {
        "model": Path(model_path).name,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "device": result.device,
        "seconds": result.seconds,
        "steps": result.steps,
        "stopped": result.stopped,
        "history": history,
    }
    js.write_text(json.dumps(numbers, indent=2, default=float))

    examples = list(examples)[:3]
    fig = Figure(figsize=(12, 7.5 if examples else 3.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if examples else 1, 3, height_ratios=[1, 1.4][: 2 if examples
                                                                              else 1])
    epochs = [h["epoch"] for h in history]
    loss_ax = fig.add_subplot(grid[0, 0])
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", ms=3)
    loss_ax.set(title="training loss", xlabel="epoch")
    ax = fig.add_subplot(grid[0, 1])
    keys = [k for k in ("dice", "ap50", "map") if history and k in history[0]]
    for key in keys:
        ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label=key)
    if result.best_epoch is not None:  # 0: the model fine-tuning started from
        (ax if keys else loss_ax).axvline(result.best_epoch, color="grey", ls="--", lw=1,
                                          label="saved")
    chosen = "map" if "map" in keys else "dice"
    if keys:
        ax.set(title=f"validation (the model kept: the best {chosen})", xlabel="epoch")
    else:  # the lowest training loss chose the epoch kept
        ax.axis("off")
        ax.text(0.5, 0.5, "no validation image:\nthe model kept is the epoch of the lowest "
                f"training loss\n(averaged over {SELECTION_WINDOW} epochs)", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
    if history:
        (ax if keys else loss_ax).legend(fontsize=8)
    ax = fig.add_subplot(grid[0, 2])
    ax.axis("off")
    ax.text(0, 1, summary(Path(model_path).name, result, chosen if keys else None),
            va="top", fontsize=9, family="monospace")
    for k, (image, truth, pred) in enumerate(examples):
        ax = fig.add_subplot(grid[1, k])
        grey = image if image.ndim == 2 else (image[..., 0] if image.shape[-1] != 3
                                              else image.mean(-1))
        lo, hi = np.percentile(grey, [1, 99.8])
        rgb = np.stack([np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)] * 3, -1)
        rgb[_outline(truth)] = (0.1, 0.9, 0.1)
        rgb[_outline(pred)] = (1.0, 0.0, 1.0)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"validation image {k + 1}: truth green, prediction magenta", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png)
    return png, js
