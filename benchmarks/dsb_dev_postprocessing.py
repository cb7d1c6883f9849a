"""DSB 2018: choose post-processing defaults on a development set, not on the test images.

``dsb_fewshot.py`` trains on the 30 images of ``fewshot30.txt`` and scores ``val/``. Settings
of the post-processing that the training cannot calibrate on its three validation images
(the merge level of the two-class watershed and its cut at necks, the minimum object size,
the smoothing and spacing of an 'offsets' model's vote peaks) are chosen here instead, on 60
other images of ``train/`` (drawn with a fixed seed from the 337 that are not in
``fewshot30.txt``), with the models that ``dsb_fewshot.py`` trained from scratch. Neither
those models nor their calibration saw these images; the shipped ``nuclei`` model did (it
was trained on all of ``train/``), so it is not used here.

For every model, every combination of instance method, foreground threshold (two-class:
the calibrated one and 0.8 / 0.9 / 0.95), merge level of the two-class watershed (none, 0.6,
0.7, 0.8), its cut at necks (none, or necks below 0.65-0.8 of the parts' radius) and
minimum object size (10, 25 px) is scored as in ``dsb_fewshot.py`` (AP@0.5 per
image, averaged; touching pairs separated), and reported as JSON, best first.

    python benchmarks/dsb_fewshot.py --out benchmarks/out/dsb_fewshot.json   # the models
    python benchmarks/dsb_dev_postprocessing.py --out benchmarks/out/dsb_dev.json
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import ROOT, fewshot_ids, load, probabilities, score  # noqa: E402

from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.instances import (  # noqa: E402
    instances_from_probabilities,
    vote_instances,
    watershed_two_class,
)


def dev_ids(n: int = 60, seed: int = 0) -> list[str]:
    """``n`` images of ``train/`` outside ``fewshot30.txt``, drawn with ``seed``."""
    every = sorted(p.stem for p in (ROOT / "train" / "images").glob("*.png"))
    rest = sorted(set(every) - set(fewshot_ids()))
    return sorted(np.random.default_rng(seed).choice(rest, n, replace=False).tolist())


def variants(target: str, calibrated: float):
    """(name, function of the probabilities) for every setting tried on ``target``."""
    for min_size in (10, 25):
        if target == "offsets":
            for th, sigma, dist in itertools.product(sorted({calibrated, 0.5, 0.7, 0.9}),
                                                     (1.0, 1.5, 2.0), (2, 3, 5)):
                yield ({"method": "votes", "threshold": th, "vote_sigma": sigma,
                        "vote_min_distance": dist, "min_size": min_size},
                       lambda p, t=th, g=sigma, d=dist, s=min_size: vote_instances(
                           p, threshold=t, sigma=g, min_distance=d, min_size=s))
            continue
        if target != "two_class":
            for method in ("watershed", "components"):
                yield ({"method": method, "min_size": min_size},
                       lambda p, m=method, s=min_size: instances_from_probabilities(
                           p, target=target, method=m, threshold=calibrated, min_size=s))
            continue
        for th in sorted({calibrated, 0.8, 0.9, 0.95}):
            yield ({"method": "components", "threshold": th, "min_size": min_size},
                   lambda p, t=th, s=min_size: instances_from_probabilities(
                       p, method="components", threshold=t, min_size=s))
            for merge, necks in itertools.product((None, 0.6, 0.7, 0.8),
                                                  (None, 0.65, 0.7, 0.75, 0.8)):
                yield ({"method": "watershed", "threshold": th, "merge": merge,
                        "necks": necks, "min_size": min_size},
                       lambda p, t=th, m=merge, n=necks, s=min_size: watershed_two_class(
                           p[1], threshold=t, merge=m, necks=n, min_size=s))


def min_size_sweep(target: str, calibrated: float, diameter: float | None, sizes: list[str]):
    """(setting, function) for the default instance method with each minimum size of
    ``sizes``: pixels ("25"), or a share of the area of a disc of the model's cell diameter
    ("0.1x", :func:`napari_unet.instances.min_size_for`)."""
    from napari_unet.instances import auto_min_size, min_size_for, remove_small_objects

    for spec in sizes:
        if spec.endswith("xm"):  # the smaller of the two shares below: the engine's 'auto'
            auto = functools.partial(auto_min_size, diameter=diameter, share=float(spec[:-2]))
            yield ({"method": "default", "min_size": spec},
                   lambda p, a=auto: remove_small_objects(instances_from_probabilities(
                       p, target=target, threshold=calibrated, min_size=10), a))
            continue
        if spec.endswith("m"):  # a share of the median area of the image's own objects
            yield ({"method": "default", "min_size": spec},
                   lambda p, f=float(spec[:-1]): _drop_below_median_share(
                       instances_from_probabilities(p, target=target, threshold=calibrated,
                                                    min_size=10), f))
            continue
        px = (min_size_for(diameter, float(spec[:-1])) if spec.endswith("x")
              else int(spec))
        yield ({"method": "default", "min_size": spec, "min_size_px": px},
               lambda p, s=px: instances_from_probabilities(p, target=target,
                                                            threshold=calibrated, min_size=s))


def _drop_below_median_share(labels, share: float):
    sizes = np.bincount(labels.ravel())
    objects = sizes[1:][sizes[1:] > 0]
    if not objects.size:
        return labels
    small = sizes < share * np.median(objects)
    small[0] = False
    return np.where(small[labels], 0, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("benchmarks/out/dsb_models"))
    ap.add_argument("--names", default="scratch_two_class,scratch_three_class,scratch_distance")
    ap.add_argument("--count", type=int, default=60, help="development images")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--min-sizes", default="",
                    help="instead of the whole grid, only the default instance method with "
                    "these minimum sizes, comma-separated: pixels (25), a share of the area "
                    "of the model's cell diameter (0.1x), of the image's median object "
                    "(0.2m), or the smaller of the two (0.2xm, the engine's 'auto')")
    ap.add_argument("--val", action="store_true",
                    help="with --min-sizes, score val/ too (reported, not used to choose)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = [s for s in args.min_sizes.split(",") if s]

    t0 = time.perf_counter()
    ids = dev_ids(args.count)
    images, truths, _ = load("train", ids)
    val = load("val") if sizes and args.val else None
    report = {"benchmark": "dsb_dev_postprocessing", "command": command(),
              "machine": machine(), "dev_images": ids, "models": {}}
    for name in filter(None, args.names.split(",")):
        ckpt = load_checkpoint(args.models / f"{name}.safetensors")
        probs, _ = probabilities(ckpt, images, args.device)
        grid = (list(min_size_sweep(ckpt.target, ckpt.threshold, ckpt.object_diameter, sizes))
                if sizes else list(variants(ckpt.target, ckpt.threshold)))
        rows = []
        for setting, fn in grid:
            rows.append({**setting, **score(truths, [fn(p) for p in probs])})
            print(name, rows[-1], file=sys.stderr)
        rows.sort(key=lambda r: -r["ap50"])
        report["models"][name] = {"target": ckpt.target, "calibrated_threshold":
                                  ckpt.threshold, "object_diameter": ckpt.object_diameter,
                                  "settings": rows}
        if val is not None:
            vprobs, _ = probabilities(ckpt, val[0], args.device)
            report["models"][name]["val"] = [
                {**setting, **score(val[1], [fn(p) for p in vprobs])} for setting, fn in grid]
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    emit(report, args.out)


if __name__ == "__main__":
    main()
