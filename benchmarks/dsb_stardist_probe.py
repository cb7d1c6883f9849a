"""A probe of star-convex polygons (StarDist: Schmidt et al., MICCAI 2018) on the U-Net,
on the DSB 2018 few-shot set: not part of the engine.

StarDist is a U-Net whose head predicts, for every pixel, an object probability (the pixel's
distance to its object's border over the object's largest one) and the distances along
``--rays`` directions to its object's border; objects are the star-convex polygons of the
pixels above a probability threshold, kept greedily from the most probable by non-maximum
suppression (a polygon is dropped when it covers more than ``nms`` of a kept one, or a kept
one covers more than ``nms`` of it). Distances are exact along rays, so rotations by 90
degrees and flips permute the rays (as StarDist augments); elastic deformation, which does
not, is left out.

This script trains such a head on the engine's ``UNet`` (16 base channels, depth 4, 'same'
padding, batch norm, bf16 autocast on a CPU that has it) from scratch on the 30 images of
``fewshot30.txt`` for ``--time-budget`` seconds, predicts the 48 ``val/`` images and scores
them as ``dsb_fewshot.py`` does, over a grid of probability and NMS thresholds (read them as
an upper bound: the grid is chosen on ``val/`` itself).

    python benchmarks/dsb_stardist_probe.py --time-budget 400 --out benchmarks/out/stardist.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from skimage.segmentation import relabel_sequential

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from dsb_fewshot import fewshot_ids, load  # noqa: E402

from napari_unet.config import ModelConfig  # noqa: E402
from napari_unet.data import normalize  # noqa: E402
from napari_unet.metrics import instance_scores  # noqa: E402
from napari_unet.model import UNet  # noqa: E402

R = 32


def star_distances(labels, n_rays=R):
    """``(H, W, n_rays)``: from every object pixel, the distance along each ray to the first
    pixel that is not its object (or the image's edge); StarDist's ``star_dist``."""
    h, w = labels.shape
    ys, xs = np.nonzero(labels)
    vals = labels[ys, xs]
    out = np.zeros((h, w, n_rays), np.float32)
    for r in range(n_rays):
        phi = 2 * np.pi * r / n_rays
        dy, dx = np.sin(phi), np.cos(phi)
        corr = 1 - 0.5 / max(abs(dy), abs(dx))
        active = np.arange(len(ys))
        dist = np.zeros(len(ys), np.float32)
        k = 0
        while active.size:
            k += 1
            ii = np.rint(ys[active] + k * dy).astype(np.int64)
            jj = np.rint(xs[active] + k * dx).astype(np.int64)
            outside = (ii < 0) | (ii >= h) | (jj < 0) | (jj >= w)
            np.clip(ii, 0, h - 1, out=ii)
            np.clip(jj, 0, w - 1, out=jj)
            stop = outside | (labels[ii, jj] != vals[active])
            dist[active[stop]] = k - corr
            active = active[~stop]
        out[ys, xs, r] = dist
    return out


def object_prob(labels):
    """Each object pixel's distance to the object's border over the object's largest: as
    :func:`napari_unet.targets.normalized_distance`, but the image's edge counts as a
    border, as in StarDist."""
    out = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = labels[sl] == i
        d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        d = d[m]
        out[sl][m] = d / max(d.max(), 1e-6)
    return out


def augment(img, prob, dist, rng):
    """Flips and 90-degree rotations (rays permuted to match) and intensity changes."""
    rays = np.arange(R)
    if rng.random() < 0.5:  # flip rows: phi -> -phi
        img, prob, dist = img[::-1], prob[::-1], dist[::-1][..., -rays % R]
    if rng.random() < 0.5:  # flip columns: phi -> pi - phi
        img, prob, dist = img[:, ::-1], prob[:, ::-1], dist[:, ::-1][..., (R // 2 - rays) % R]
    for _ in range(int(rng.integers(4))):  # rot90: new ray r = old ray r + R/4
        img, prob, dist = np.rot90(img), np.rot90(prob), np.rot90(dist)[..., (rays + R // 4) % R]
    scale, shift = 1 + rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
    return img * scale + shift, prob, dist


def polygons_to_labels(points, prob, dist, shape, nms=0.4, min_size=25):
    """Greedy NMS by intersection over the smaller polygon; overlaps go to the more
    probable polygon."""
    order = np.argsort(-prob, kind="stable")
    phis = 2 * np.pi * np.arange(R) / R
    canvas = np.zeros(shape, np.int32)
    areas, kept = [0], []  # areas[i]: polygon i's
    for idx in order:
        y, x = points[idx]
        d = dist[idx]
        rr, cc = draw_polygon(y + d * np.sin(phis), x + d * np.cos(phis), shape)
        a = rr.size
        if a < min_size:
            continue
        cover = canvas[rr, cc]
        hit = cover[cover > 0]
        if hit.size:
            ids, cnt = np.unique(hit, return_counts=True)
            if np.any(cnt / np.minimum(a, np.asarray(areas)[ids]) > nms):
                continue
        new = len(areas)
        areas.append(a)
        free = cover == 0
        canvas[rr[free], cc[free]] = new
        kept.append((rr, cc))
    out = np.zeros(shape, np.int32)
    for n, (rr, cc) in reversed(list(enumerate(kept, 1))):
        out[rr, cc] = n
    sizes = np.bincount(out.ravel())
    small = np.nonzero(sizes < min_size)[0]
    out[np.isin(out, small[small > 0])] = 0
    return relabel_sequential(out)[0]


def predict_raw(net, img, scale):
    """The object probability and the ray distances of a whole normalised image."""
    x = img[None, None]
    h, w = img.shape
    ph, pw = (-h) % 16, (-w) % 16
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = F.pad(t, (8, 8 + pw, 8, 8 + ph), mode="reflect")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        o = net(t.contiguous(memory_format=torch.channels_last)).float()
    o = o[0, :, 8:8 + h, 8:8 + w]
    return torch.sigmoid(o[0]).numpy(), (scale * o[1:]).clamp_min(0).permute(1, 2, 0).numpy()


def instances(prob, dist, thr=0.5, nms=0.4, stride=2, min_size=25):
    sub = np.zeros_like(prob, bool)
    sub[::stride, ::stride] = True
    pts = np.argwhere((prob > thr) & sub)
    return polygons_to_labels(pts, prob[pts[:, 0], pts[:, 1]], dist[pts[:, 0], pts[:, 1]],
                              prob.shape, nms=nms, min_size=min_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-budget", type=float, default=400, help="seconds of training")
    ap.add_argument("--distance-scale", type=float, default=10.0,
                    help="the network regresses distances divided by this (StarDist: 1)")
    ap.add_argument("--distance-weight", type=float, default=1.0,
                    help="of the distance loss against the probability's (StarDist: 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    x, y, _ = load("train", fewshot_ids())
    imgs = [grey(a) for a in x]
    probs = [object_prob(lab.astype(np.int32)) for lab in y]
    dists = [star_distances(lab.astype(np.int32)) for lab in y]
    target_s = time.perf_counter() - t0
    mc = ModelConfig(in_channels=1, n_classes=1 + R, base_channels=16, depth=4,
                     padding="same", norm="batch", dropout=0.0)
    net = UNet(mc).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    size, batch, k = 256, 4, args.distance_scale
    start, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - start < args.time_budget:
        progress = (time.perf_counter() - start) / args.time_budget
        for g in opt.param_groups:  # cosine decay, as the engine's training
            g["lr"] = 1e-3 * max(0.5 * (1 + math.cos(math.pi * progress)), 0.01)
        bx, bp, bd = [], [], []
        for _ in range(batch):  # half the patches around a random object pixel
            i = int(rng.integers(len(imgs)))
            im, pr, di = imgs[i], probs[i], dists[i]
            h, w = im.shape
            if rng.random() < 0.5 and (pr > 0).any():
                fy, fx = np.argwhere(pr > 0)[rng.integers((pr > 0).sum())]
                y0 = int(np.clip(fy - size // 2 + rng.integers(-64, 65), 0, h - size))
                x0 = int(np.clip(fx - size // 2 + rng.integers(-64, 65), 0, w - size))
            else:
                y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            win = (slice(y0, y0 + size), slice(x0, x0 + size))
            a, b, c = augment(im[win], pr[win], di[win], rng)
            bx.append(np.ascontiguousarray(a))
            bp.append(np.ascontiguousarray(b))
            bd.append(np.ascontiguousarray(c))
        xb = torch.from_numpy(np.stack(bx)[:, None]).contiguous(memory_format=torch.channels_last)
        pb = torch.from_numpy(np.stack(bp))
        db = torch.from_numpy(np.stack(bd)).permute(0, 3, 1, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = net(xb)
        o = o.float()
        loss_p = F.binary_cross_entropy_with_logits(o[:, 0], pb)
        mask = pb[:, None]  # distances count where the object probability does (StarDist)
        loss_d = ((o[:, 1:] - db / k).abs() * mask).mean() / mask.mean().clamp_min(1e-6)
        reg = 1e-4 * (o[:, 1:].abs() * (1 - mask)).mean()
        loss = loss_p + args.distance_weight * loss_d + reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append([float(loss_p.detach()), float(loss_d.detach()) * k])
        if step % 100 == 0:
            print(step, round(time.perf_counter() - start), *np.round(losses[-1], 3),
                  file=sys.stderr)
    train_s = time.perf_counter() - start
    net.eval()
    vx, vy, _ = load("val")
    truths = [t.astype(np.int32) for t in vy]
    tp = time.perf_counter()
    raws = [predict_raw(net, grey(a), k) for a in vx]
    report = {"benchmark": "dsb_stardist_probe", "command": command(), "machine": machine(),
              "rays": R, "targets_seconds": round(target_s, 1),
              "train_seconds": round(train_s, 1), "steps": step,
              "last_100_steps_loss_prob_and_distance_px": np.mean(losses[-100:], 0).round(4)
              .tolist(), "predict_seconds": round(time.perf_counter() - tp, 1), "scores": {}}
    for thr in (0.3, 0.4, 0.5):
        for nms in (0.3, 0.4, 0.5):
            tq = time.perf_counter()
            s = instance_scores(truths, [instances(p, d, thr, nms) for p, d in raws])
            row = {key: s[key] for key in ("ap50", "map", "touching_separated",
                                           "tp_fp_fn_at_0.5")}
            row["seconds"] = round(time.perf_counter() - tq, 1)
            report["scores"][f"prob {thr}, nms {nms}"] = row
            print(thr, nms, row, file=sys.stderr)
    best = max(report["scores"].items(), key=lambda kv: kv[1]["ap50"])
    report["best_on_val"] = {"setting": best[0], **best[1]}
    emit(report, args.out)


def grey(image: np.ndarray) -> np.ndarray:
    """A normalised 2D float image (the first channel of a colour one)."""
    return normalize(image[..., None] if image.ndim == 2 else image[..., :1])[..., 0]


if __name__ == "__main__":
    main()
