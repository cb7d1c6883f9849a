"""Training throughput and time to a target validation score on the ISBI 2012 split.

In one run, on the same data, model and batch:

1. data only: augmented patches per second the patch sampler makes (elastic deformation,
   flips, rotations, intensity), in the training process's thread;
2. model only: patches per second of training steps (forward, loss, backward, Adam) on one
   batch made beforehand — the device's ceiling;
3. end to end: ``napari_unet.train.train`` on ISBI slices 00-24 (validation images held out
   from them, as in ``isbi_membrane.py``) for ``--time-budget`` seconds: patches per second
   of the steps (validation excluded) and the ratio to (2), which says whether the device
   waited for data; and the time at which the validation score first reached ``--target``.

    python benchmarks/train_speed.py --time-budget 300 \
        --out benchmarks/results/train_speed_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from isbi_membrane import load  # noqa: E402

from napari_unet.config import ModelConfig, TrainConfig  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.train import train  # noqa: E402


def sampler_for(images, labels, config: TrainConfig, mc: ModelConfig):
    """The patch sampler ``train`` builds, on all the given images."""
    from napari_unet.augment import Augmenter
    from napari_unet.data import PatchSampler
    from napari_unet.train import _sizes, prepare

    prep = prepare(images, labels, config)
    mc = mc.replace(in_channels=prep.channels, n_classes=prep.n_classes)
    in_size, out_size = _sizes(mc, config.patch_size)
    sampler = PatchSampler(prep.images, prep.targets, prep.weights, in_size=in_size,
                           out_size=out_size, foreground_bias=config.foreground_bias,
                           augment=Augmenter() if config.augment else None,
                           rng=np.random.default_rng(0))
    return sampler, mc


def data_only(sampler, batch_size: int, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sampler.batch(batch_size)
        n += batch_size
    return n / (time.perf_counter() - t0)


def model_only(sampler, mc: ModelConfig, config: TrainConfig, device, seconds: float) -> float:
    import torch

    from napari_unet.device import autocast, memory_format, resolve_precision
    from napari_unet.losses import unet_loss
    from napari_unet.model import UNet

    net = UNet(mc).to(device, memory_format=memory_format(device)).train()
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    precision = resolve_precision(device, config.precision)
    x, t, w = (torch.from_numpy(a).to(device) for a in sampler.batch(config.batch_size))
    x = x.contiguous(memory_format=memory_format(device))

    def step():
        with autocast(device, precision):
            logits = net(x)
        loss = unet_loss(logits.float(), t, w, config.dice_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += config.batch_size
    sync()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-budget", type=float, default=300)
    ap.add_argument("--target", type=float, default=0.94,
                   help="validation score (mean Dice of membrane and interior) to reach")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--loader-workers", type=int, default=None)
    ap.add_argument("--probe-seconds", type=float, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from napari_unet.device import describe_device, resolve_device, resolve_precision

    images, labels = load(range(25))
    config = TrainConfig(mode="semantic", time_budget=args.time_budget,
                         batch_size=args.batch_size, patch_size=args.patch_size,
                         device=args.device, precision=args.precision,
                         loader_workers=args.loader_workers, val_fraction=0.12)
    mc = ModelConfig(base_channels=args.base_channels, depth=4, padding="same", norm="batch",
                     dropout=0.0)
    device = resolve_device(args.device)
    sampler, full = sampler_for(images, labels, config, mc)
    data_rate = data_only(sampler, args.batch_size, args.probe_seconds)
    model_rate = model_only(sampler, full, config, device, args.probe_seconds)

    per_epoch: dict[int, float] = {}

    def watch(event) -> None:  # the rate over each epoch's steps, validation excluded
        if event.kind == "step" and event.patches_per_s:
            per_epoch[event.epoch] = event.patches_per_s

    result = run(train(images, labels, config, model_config=mc), watch)
    history = result.history
    reached = next((h for h in history if h["score"] >= args.target), None)
    end_to_end = float(np.median(list(per_epoch.values()))) if per_epoch else None
    report = {
        "benchmark": "train_speed",
        "command": command(),
        "machine": machine(),
        "device": describe_device(device),
        "model": {"base_channels": args.base_channels, "depth": 4, "padding": "same",
                  "norm": "batch"},
        "batch_size": args.batch_size,
        "patch": config.patch_size,
        "precision": resolve_precision(device, config.precision),
        "data_only_patches_per_s": round(data_rate, 2),
        "model_only_patches_per_s": round(model_rate, 2),
        "end_to_end_patches_per_s": end_to_end and round(end_to_end, 2),
        "end_to_end_over_model_only": end_to_end and round(end_to_end / model_rate, 3),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "target_score": args.target,
        "seconds_to_target": reached and round(reached["elapsed"], 1),
        "epoch_at_target": reached and reached["epoch"],
        "best_score": result.best_score,
        "history": [{k: h[k] for k in ("epoch", "step", "elapsed", "score", "loss")}
                    for h in history],
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
