"""Prediction speed: model-only vs end-to-end ``predict`` vs MONAI's sliding window.

One model (by default the shipped ``nuclei`` model) and one large image: a mosaic of real
DSB 2018 ``val/`` nuclei images (``--size`` square). In one run, for each tile size:

1. model only: the network alone on exactly the tiles ``predict`` uses, already cut,
   normalised and batched in memory (forward + softmax + the probabilities back to the
   host), in megapixels of image per second; and network only, the same without the copy
   back;
2. end to end: ``napari_unet.predict.predict`` from the raw uint8 image to probabilities
   (normalisation, mirrored tiles, batching, writing), and to instance labels;
3. the peer: MONAI's ``sliding_window_inference`` with the same weights at overlap 0.25
   (Gaussian-free 'constant' blending, zero padding at the image border).

Reports ratios and the agreement (Dice of the foreground) of the outputs, as JSON.

    python benchmarks/predict_speed.py --size 2048 --out benchmarks/out/predict_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA, command, emit, machine  # noqa: E402

import napari_unet.model as unet_model  # noqa: E402
from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.config import PredictConfig  # noqa: E402
from napari_unet.data import normalize  # noqa: E402
from napari_unet.device import (  # noqa: E402
    auto_batch_size,
    auto_tile_size,
    autocast,
    describe_device,
    memory_format,
    resolve_device,
    resolve_precision,
)
from napari_unet.io import read_image  # noqa: E402
from napari_unet.metrics import dice  # noqa: E402
from napari_unet.model import fused_layers  # noqa: E402
from napari_unet.predict import predict  # noqa: E402
from napari_unet.progress import run  # noqa: E402
from napari_unet.tiling import plan_tiles  # noqa: E402


def mosaic(size: int) -> np.ndarray:
    """A ``size`` x ``size`` uint8 mosaic of DSB ``val/`` images (256 px crops, cycled)."""
    files = sorted((DATA / "dsb2018_fluo" / "val" / "images").glob("*.png"))
    crops = []
    for f in files:
        img = read_image(f)
        img = img if img.ndim == 2 else img[..., 0]
        crops.append(img[:256, :256])
    n = -(-size // 256)
    rows = [np.hstack([crops[(r * n + c) % len(crops)] for c in range(n)]) for r in range(n)]
    return np.vstack(rows)[:size, :size].copy()


def untrained(name: str):
    """'random64': the paper's width (64 base channels, depth 4) with 'same' padding and
    batch norm, untrained — speed does not depend on the weights."""
    import torch

    from napari_unet.checkpoint import Checkpoint
    from napari_unet.model import UNet

    torch.manual_seed(0)
    net = UNet(base_channels=int(name.removeprefix("random")), depth=4, padding="same",
               norm="batch", dropout=0.0)
    return Checkpoint(net.config, net.state_dict(), task={"mode": "instances",
                                                          "target": "two_class"})


def fused_modules(net) -> list:
    """The network's convolution + ReLU layers that run fused (checked on a first pass)."""
    from napari_unet.model import ConvReLU

    return [m for m in net.modules() if isinstance(m, ConvReLU) and m.fused]


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        out = None  # the last output freed first, as in a loop over images
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def profile(fn, device) -> None:
    """The top operators of one call of ``fn`` by device time, to stderr."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        fn()
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15), file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nuclei",
                    help="a model file, 'nuclei', or 'random64' (untrained, the paper's width)")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tiles", default="512,1024",
                    help="tile sizes (comma-separated; 0: predict's automatic choice)")
    ap.add_argument("--batch-size", type=int, default=4,
                    help="tiles per batch (0: predict's automatic choice)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the network alone compiled by torch.compile (the time "
                         "to compile reported apart): does fusing the bias and ReLU into the "
                         "convolutions pay?")
    ap.add_argument("--profile", action="store_true",
                    help="print the network's top operators of one model-only pass per tile "
                         "size (torch.profiler)")
    ap.add_argument("--e2e-only", action="store_true",
                    help="time the network and predict only (no labels, MONAI, fp32 check)")
    ap.add_argument("--profile-predict", action="store_true",
                    help="print the host functions of one predict call by time (cProfile)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="of all three paths (auto: bf16 on CUDA, fp32 elsewhere)")
    ap.add_argument("--halo", type=int, default=48,
                    help="also time predict with this reduced halo (0: do not)")
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    ckpt = untrained(args.model) if args.model.startswith("random") else load_checkpoint(
        args.model)
    device = resolve_device(args.device)
    net = ckpt.build(device)
    precision = resolve_precision(device, args.precision)
    image = mosaic(args.size)
    mp = image.size / 1e6
    norm = normalize(image[..., None])
    report = {"benchmark": "predict_speed", "command": command(), "machine": machine(),
              "device": describe_device(device), "model": args.model,
              "model_config": ckpt.config.to_dict(), "image": [args.size, args.size],
              "megapixels": mp, "batch_size": args.batch_size, "precision": precision,
              "runs": []}
    for asked in (int(t) for t in args.tiles.split(",")):
        tile = asked or auto_tile_size(ckpt.config, device, precision)
        plan = plan_tiles(image.shape, ckpt.config, tile)
        tiles = list(plan)
        batch = args.batch_size or auto_batch_size(ckpt.config, plan.input_shape, device,
                                                   precision)
        batches = [torch.from_numpy(np.ascontiguousarray(np.stack(
            [np.moveaxis(plan.read(norm, t), -1, 0) for t in tiles[i:i + batch]]),
            dtype=np.float32)).to(device, memory_format=memory_format(device))
            for i in range(0, len(tiles), batch)]

        def model_only():
            with torch.inference_mode(), autocast(device, precision):
                for x in batches:
                    net(x).float().softmax(1).cpu()

        def network_only():  # the same, the probabilities left on the device
            with torch.inference_mode(), autocast(device, precision):
                for x in batches:
                    net(x).float().softmax(1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def say(what: str, seconds: float) -> None:  # each figure as soon as it is measured
            print(json.dumps({"tile": asked, "input_tile": list(plan.input_shape),
                              "batch": batch, what: round(seconds, 4)}),
                  file=sys.stderr, flush=True)

        cfg = PredictConfig(tile_size=asked, batch_size=args.batch_size, device=args.device,
                            precision=precision)
        t0 = time.perf_counter()
        model_only()  # the first pass at a new tile shape: cuDNN's autotuning on a GPU
        t_first = time.perf_counter() - t0
        say("first_model_only_s", t_first)
        t_model, _ = timed(model_only, args.repeats)
        say("model_only_s", t_model)
        t_net, _ = timed(network_only, args.repeats)
        say("network_only_s", t_net)
        layers = fused_layers(net)  # convolution + bias + ReLU in one cuDNN call, checked
        t_unfused = None
        fused = fused_modules(net)
        if fused:  # the baseline: the same network with every layer unfused
            for m in fused:
                m.fused = False
            t_unfused, _ = timed(network_only, args.repeats)
            say("network_only_unfused_s", t_unfused)
            for m in fused:
                m.fused = True
        compiled = {}
        if args.compile:
            plain, net = net, torch.compile(net)
            t0 = time.perf_counter()
            network_only()
            compiled["compile_and_first_s"] = round(time.perf_counter() - t0, 2)
            t_compiled, _ = timed(network_only, args.repeats)
            say("network_only_compiled_s", t_compiled)
            compiled["network_only_compiled_mp_s"] = round(mp / t_compiled, 3)
            net = plain
        t_e2e, res = timed(lambda: run(predict(ckpt, image, cfg, labels=False)), args.repeats)
        say("predict_s", t_e2e)
        t_e2e_unfused = None
        if fused:  # the baseline end to end: predict with no layer fused
            unet_model.FUSE_CONV_RELU = False
            t_e2e_unfused, _ = timed(lambda: run(predict(ckpt, image, cfg, labels=False)),
                                     args.repeats)
            unet_model.FUSE_CONV_RELU = True
            say("predict_unfused_s", t_e2e_unfused)
        if args.profile:
            profile(model_only, device)
        if args.profile_predict:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(lambda: run(predict(ckpt, image, cfg, labels=False)))
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        if args.e2e_only:
            report["runs"].append({
                "tile": asked or f"auto ({tile})", "tiles": len(tiles), "batch_size": batch,
                "input_tile": list(plan.input_shape), "conv_relu_layers": layers,
                "model_only_mp_s": round(mp / t_model, 3),
                "network_only_mp_s": round(mp / t_net, 3),
                "network_only_unfused_mp_s": t_unfused and round(mp / t_unfused, 3),
                "predict_mp_s": round(mp / t_e2e, 3),
                "predict_unfused_mp_s": t_e2e_unfused and round(mp / t_e2e_unfused, 3),
                "predict_over_network_only": round(t_net / t_e2e, 3),
                **compiled,
                "seconds": {"first_model_only": round(t_first, 2), "predict": round(t_e2e, 4)},
            })
            print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
            continue
        t_labels, _ = timed(lambda: run(predict(ckpt, image, cfg)), 1)
        say("predict_with_labels_s", t_labels)
        from monai.inferers import sliding_window_inference

        x = torch.from_numpy(np.moveaxis(norm, -1, 0)[None].copy()).to(device)

        def monai():
            with torch.inference_mode(), autocast(device, precision):
                return sliding_window_inference(x, plan.input_shape, batch, net,
                                                overlap=0.25, mode="constant"
                                                ).float().softmax(1)[0].cpu().numpy()

        t_monai, peer = timed(monai, args.repeats)
        say("monai_s", t_monai)
        approx = {}
        if args.halo:  # a smaller halo than the receptive field: faster, approximate
            cfg_h = cfg.replace(halo=args.halo)
            t_h, res_h = timed(lambda: run(predict(ckpt, image, cfg_h, labels=False)),
                               args.repeats)
            plan_h = plan_tiles(image.shape, ckpt.config, tile, args.halo)
            fg_h = np.asarray(res_h.probabilities)[1] > ckpt.threshold
        th = ckpt.threshold
        ours = np.asarray(res.probabilities)[1] > th
        if args.halo:
            approx = {"halo": plan_h.geometry.halo, "halo_tiles": len(plan_h),
                      "halo_input_tile": list(plan_h.input_shape),
                      "predict_halo_mp_s": round(mp / t_h, 3),
                      "predict_halo_over_monai": round(t_monai / t_h, 3),
                      "dice_foreground_halo_vs_exact": round(dice(fg_h, ours), 5)}
        agreement = {}
        if precision != "fp32":  # the reduced precision against fp32, same tiles
            full = run(predict(ckpt, image, cfg.replace(precision="fp32"), labels=False))
            agreement["dice_foreground_vs_fp32"] = round(
                dice(ours, np.asarray(full.probabilities)[1] > th), 5)
        report["runs"].append({
            "tile": asked or f"auto ({tile})", "tiles": len(tiles), "batch_size": batch,
            "input_tile": list(plan.input_shape),
            "kept_per_tile": list(plan.stride),
            "model_only_mp_s": round(mp / t_model, 3),
            "network_only_mp_s": round(mp / t_net, 3),
            "conv_relu_layers": layers,
            "network_only_unfused_mp_s": t_unfused and round(mp / t_unfused, 3),
            "predict_mp_s": round(mp / t_e2e, 3),
            "predict_unfused_mp_s": t_e2e_unfused and round(mp / t_e2e_unfused, 3),
            "predict_with_labels_mp_s": round(mp / t_labels, 3),
            "monai_mp_s": round(mp / t_monai, 3),
            "predict_over_model_only": round(t_model / t_e2e, 3),
            "predict_over_monai": round(t_monai / t_e2e, 3),
            "dice_foreground_predict_vs_monai": round(dice(ours, peer[1] > th), 5),
            **agreement,
            **approx,
            **compiled,
            "seconds": {"first_model_only": round(t_first, 2),
                        "model_only": round(t_model, 2), "network_only": round(t_net, 2),
                        "predict": round(t_e2e, 2),
                        "predict_with_labels": round(t_labels, 2),
                        "monai": round(t_monai, 2)},
        })
        print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
    report["aims"] = {"cpu_predict_over_model_only": 0.85, "cpu_faster_than_monai": True}
    emit(report, args.out)


if __name__ == "__main__":
    main()
