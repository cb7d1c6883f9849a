"""The command line: ``napari-unet train|predict|evaluate|measure|sample|info|export``,
driving the same engine as the napari widgets.

A problem with the input ends with one line naming the file and the problem on stderr and
exit status 2; nothing is half-written (results and models are written atomically).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from .config import TARGETS
from .errors import NapariUNetError, os_error_sentence

EXIT_BAD_INPUT = 2


def _add_device(p) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: CUDA, then Apple MPS, then the CPU (default auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 where the GPU or CPU computes it natively, else fp32")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model on image/label files",
                       description="Train a U-Net on IMAGES with LABELS (folders or globs of "
                       "TIFF/PNG files paired by file name) and save it to MODEL.")
    p.add_argument("images", help="folder or glob of image files (TIFF/PNG)")
    p.add_argument("labels", help="folder or glob of label files, paired with the images by "
                   "file name (img01.tif with img01.tif in another folder, or with "
                   "img01_masks.tif, _labels, _seg, ... in the same one): instance labels "
                   "(0 background, 1..N cells) or, with --mode semantic, class indices 0..K")
    p.add_argument("--out", required=True, metavar="MODEL",
                   help="model file to write (.safetensors, added to a name without it)")
    p.add_argument("--from", dest="init_from",
                   help="model to fine-tune: a model file, or 'nuclei' (shipped)")
    p.add_argument("--mode", choices=["instances", "semantic"],
                   help="instances: labels are cells 1..N, touching ones separated; semantic: "
                   "a class per pixel (default instances, with --from the model's)")
    p.add_argument("--target", choices=TARGETS,
                   help="instances: paper's two classes, background/interior/boundary, "
                        "the paper's two classes plus a regressed distance map (watershed), "
                        "or plus each pixel's vector to its cell's centre (centre voting) "
                        "(default two_class, with --from the model's)")
    dur = p.add_mutually_exclusive_group()
    dur.add_argument("--epochs", type=int, help="passes to train for (default 50)")
    dur.add_argument("--time-budget", type=float, metavar="SECONDS",
                     help="train for this long instead, keeping the best epoch")
    p.add_argument("--steps-per-epoch", type=int,
                   help="batches per epoch (default: from the number of images)")
    p.add_argument("--base-channels", type=int, default=32,
                   help="channels of the first level, doubled at each level down (the paper: "
                   "64; default 32)")
    p.add_argument("--depth", type=int, default=4, help="pooling steps (default 4)")
    p.add_argument("--padding", choices=["valid", "same"], default="valid",
                   help="valid: the paper's unpadded convolutions; same: padded, faster to "
                   "train (default valid)")
    p.add_argument("--norm", choices=["none", "batch", "group"], default="batch",
                   help="normalisation after each convolution (default batch)")
    p.add_argument("--w0", type=float, default=10.0,
                   help="border weight amplitude of the paper's weight map (default 10)")
    p.add_argument("--sigma", type=float, default=5.0,
                   help="border weight width in pixels (default 5)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the images held out to keep the best model and calibrate "
                   "the threshold (default 0.1; of one to five images, a strip of that "
                   "share of each image's longer side, at least 64 px; 0: none held out, "
                   "the epoch of the lowest training loss is kept and nothing is calibrated)")
    p.add_argument("--batch-size", type=int, default=4, help="patches per step (default 4)")
    p.add_argument("--patch-size", type=int, default=256,
                   help="side of the training patches in pixels (default 256)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam learning rate, decayed by a cosine (default 0.001)")
    p.add_argument("--dice-weight", type=float, default=0.0,
                   help="weight of a soft Dice term beside the weighted cross-entropy "
                   "(default 0: the paper's loss alone)")
    p.add_argument("--no-augment", action="store_true",
                   help="no elastic deformation, flips, rotations or intensity changes")
    p.add_argument("--zoom", type=float, default=0.0,
                   help="random zoom augmentation by up to a factor 1+ZOOM either way")
    p.add_argument("--no-class-balance", action="store_true",
                   help="leave out the weight map's class-frequency term w_c")
    p.add_argument("--no-label-offset", action="store_true",
                   help="semantic mode: do not calibrate the annotations' sub-pixel offset "
                   "on the validation images (napari_unet.label_offset)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="with --from: train the expanding path only")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the split, patches and augmentation (default 0)")
    p.add_argument("--match-size", action="store_true",
                   help="with --from: resize the images so that their cells have the size "
                   "the model learnt (then predict with --diameter or --diameter auto)")
    p.add_argument("--channel", type=_positive, metavar="N",
                   help="train a single-channel model on channel N (counted from 1, as Fiji "
                   "counts) of images of several channels (a Fiji hyperstack's C axis, a "
                   "colour image's red, green or blue)")
    p.add_argument("--regions", metavar="REGIONS",
                   help="folder (or glob) of masks paired with the images by file name: "
                   "nonzero where the labels are complete, for images labelled in part; "
                   "only there is the loss counted (images without a mask: all of it)")


def _diameter(text: str):
    """``--diameter``: a number of pixels or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', not "
                                         f"{text!r}") from None


def _positive(text: str) -> int:
    """A whole number of at least 1 (``--workers``, ``--chunk``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def _min_size(text: str):
    """``--min-size``: a number of pixels or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of pixels (0 or more) or "
                                         f"'auto', not {text!r}")
    return value


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images with a trained model",
                       description="Predict every INPUT (files, folders or globs) and write "
                       "DIR/<stem>.tif. A zarr or OME-Zarr INPUT is read lazily and its labels "
                       "are written block by block to DIR/<stem>.zarr (or to --out itself "
                       "when it ends in .zarr), in this process or on a Dask cluster "
                       "(--scheduler).")
    p.add_argument("model", help="a model file, a bioimage.io package, or 'nuclei' (shipped)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders or globs; zarr / OME-Zarr")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the results, or OUT.zarr for a single zarr input")
    p.add_argument("--scheduler", metavar="local|ADDRESS",
                   help="predict zarr inputs on Dask: 'local' starts a LocalCluster, "
                   "otherwise the address of a running scheduler (tcp://host:8786)")
    p.add_argument("--workers", type=_positive, default=2,
                   help="worker processes of --scheduler local (default 2)")
    p.add_argument("--chunk", type=_positive, default=1024,
                   help="block side of zarr outputs (a multiple of 2**depth; default 1024)")
    p.add_argument("--tile-size", type=int, default=0,
                   help="side of the tiles in pixels (default 0: 1024 on a CPU, on a CUDA GPU "
                   "the largest that half of its free memory holds)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="tiles per forward pass (default 0: from the free device memory)")
    _add_device(p)
    p.add_argument("--probabilities", action="store_true",
                   help="also write <stem>_prob.tif (float32, classes first)")
    p.add_argument("--measure", action="store_true",
                   help="also write <stem>.csv: one row per object (its label, area in "
                   "pixels and in the file's unit, centre, diameter, elongation, perimeter, "
                   "solidity, whether it "
                   "touches the image's edge, mean intensity), or per class of a semantic "
                   "model, and objects_per_image.csv: a row per image")
    p.add_argument("--rois", action="store_true",
                   help="also write <stem>_rois.zip: each object's outline as an ImageJ ROI, "
                   "which Fiji's ROI Manager opens (image files, not zarr inputs)")
    p.add_argument("--keep-going", action="store_true",
                   help="skip an image file the model cannot read (naming it and why) and "
                   "go on with the others, instead of stopping there; the exit status is "
                   "still 2 if any was skipped")
    p.add_argument("--threshold", type=float,
                   help="foreground threshold (default: the one calibrated in training)")
    p.add_argument("--instance-method", choices=["auto", "components", "watershed"],
                   default="auto",
                   help="auto/watershed: the model's own separation (a seeded watershed, or "
                        "centre voting for an offsets model); components: the paper's "
                        "connected components")
    p.add_argument("--no-neck-cut", dest="cut_necks", action="store_false",
                   help="do not cut objects where they narrow to a neck (the watershed of a "
                        "two- or three-class model cuts there by default, as between two "
                        "touching round cells); for cells that are not round")
    p.add_argument("--min-size", type=_min_size, default="auto", metavar="PX|auto",
                   help="objects smaller than this many pixels are removed (default auto: "
                        "a fifth of the area of the model's typical cell or of the image's "
                        "median object, the smaller, at least 10 px)")
    p.add_argument("--tta", action="store_true",
                   help="average over the 8 rotations and flips of the input (8x slower)")
    p.add_argument("--diameter", type=_diameter, default=0.0, metavar="PX|auto",
                   help="typical cell diameter in the images, in pixels: they are resized "
                   "so that their cells have the size the model was trained on (`info` "
                   "shows it), and the labels come back at the images' size; 'auto' "
                   "estimates it per image from a first pass (default 0: no resizing)")
    p.add_argument("--link-planes", type=float, default=0.0, metavar="IOU",
                   help="of a stack (z-stack, or a time-lapse whose cells move less than "
                   "their size): objects of consecutive planes that overlap by at least this "
                   "intersection over union get one label (e.g. 0.25; default 0: each plane "
                   "labelled on its own); a time-lapse of z-stacks (T, Z, Y, X) is linked "
                   "along Z within each time point")
    p.add_argument("--follow-time", action="store_true",
                   help="of a time-lapse of z-stacks (T, Z, Y, X): follow the objects that "
                   "--link-planes links along Z through the time points too, each taking "
                   "the label of the one it overlaps most in 3D at the time point before, "
                   "by at least that IoU (cells that move less than their size)")
    p.add_argument("--channel", type=_positive, metavar="N",
                   help="for a single-channel model: predict channel N (counted from 1, as "
                   "Fiji counts) of images of several channels (a Fiji hyperstack's C axis, "
                   "a colour image's red, green or blue)")
    p.add_argument("--halo", type=int,
                   help="context px per tile for 'same' padding models (default: the whole "
                   "receptive field, exact; e.g. 48: about 2x faster, approximate)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="napari-unet",
        description="Train, fine-tune and run a U-Net on microscopy images, headless: the "
        "engine of the napari-unet widgets. 'napari-unet COMMAND -h' describes each command.")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_predict(sub)
    s = sub.add_parser("sample", help="write synthetic touching-cell images and labels")
    s.add_argument("folder", help="writes FOLDER/images and FOLDER/labels")
    s.add_argument("--count", type=int, default=6, help="image pairs (default 6)")
    i = sub.add_parser("info", help="show what a model file holds")
    i.add_argument("model", help="a model file, a bioimage.io package, or 'nuclei'")
    e = sub.add_parser("export", help="write a model as a bioimage.io model package (.zip)",
                       description="Write MODEL (a model file, a shipped model's name or a "
                       "bioimage.io package) as a BioImage Model Zoo package for deepImageJ, "
                       "ilastik, bioimageio.core and napari; MODEL.zip opens in napari-unet "
                       "again.")
    e.add_argument("model", help="a model file, a bioimage.io package, or 'nuclei'")
    e.add_argument("--out", required=True,
                   help="package to write (.zip, added to a name without it)")
    e.add_argument("--name", help="model name (default: the file name)")
    e.add_argument("--author", action="append", dest="authors",
                   help="an author's name (repeat for several; default: your login)")
    e.add_argument("--test-image", help="image file for the test input and the cover "
                   "(default: synthetic touching cells)")
    e.add_argument("--no-torchscript", action="store_true",
                   help="state-dict weights only")
    v = sub.add_parser("evaluate", help="score segmentations against ground-truth labels",
                       description="Score the label files PREDICTED (e.g. the output folder "
                       "of predict) against the ground truth TRUTH, paired by file name: "
                       "for instances, average precision at IoU 0.5 (TP / (TP + FP + FN), "
                       "objects matched one to one), its mean over IoU 0.5:0.95 and the "
                       "share of touching true cells that came out separated; for semantic "
                       "class maps, the pixel error and each class's IoU and Dice.")
    v.add_argument("predicted", help="folder or glob of predicted label files")
    v.add_argument("truth", help="folder or glob of ground-truth label files (0/1 or 0/255 "
                   "masks become connected components for instances)")
    v.add_argument("--mode", choices=["instances", "semantic"], default="instances",
                   help="what the labels are (default instances)")
    v.add_argument("--out", help="also write the scores, per image too, as JSON here")
    m = sub.add_parser("measure", help="measure each object of label files (CSV)",
                       description="Write OUT/<stem>.csv for each label file of LABELS: one "
                       "row per object (its label, area in pixels and in the file's unit, "
                       "centre, diameter, elongation, perimeter, solidity, whether it "
                       "touches the image's edge, and, with its image, mean intensity), as "
                       "predict --measure writes them; for "
                       "label files corrected by hand, or made by another tool. Images are "
                       "paired with the label files by file name: a folder holding both "
                       "(img01.tif with img01_masks.tif), or --images.")
    m.add_argument("labels", help="folder or glob of label files (0 background, 1..N "
                   "objects; a 0/1 or 0/255 mask is measured as its connected components)")
    m.add_argument("--images", help="folder or glob of the images, paired by file name, for "
                   "the mean intensity")
    m.add_argument("--out", required=True, metavar="DIR", help="folder for the CSV files")
    m.add_argument("--mode", choices=["instances", "semantic"], default="instances",
                   help="what the labels are (default instances; semantic: a row per class)")
    m.add_argument("--linked", action="store_true",
                   help="of a stack, each label is one object through its planes (as "
                   "predict --link-planes writes them); without it, each plane is measured "
                   "on its own (as predict labels planes)")
    m.add_argument("--rois", action="store_true",
                   help="also write OUT/<stem>_rois.zip: each object's outline as an ImageJ "
                   "ROI, which Fiji's ROI Manager opens")
    for command in sub.choices.values():  # -q after the command too: 'napari-unet predict -q'
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars")
    return ap


def _file_out(out: str | None, example: str) -> None:
    """Refuse, before any work, an ``--out`` that names a folder where a file is written."""
    if out is not None and Path(out).is_dir():
        raise NapariUNetError(f"--out {out} is a folder; give the file a name in it, e.g. "
                              f"{Path(out) / example}.")


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .checkpoint import named_with
    from .config import ModelConfig, TrainConfig
    from .io import collect, match_by_stem, read_image, read_pairs
    from .progress import run
    from .train import STARTING_MODEL_KEPT, train

    _file_out(args.out, "model.safetensors")
    args.out = str(named_with(args.out, ".safetensors"))
    files, images, labels = read_pairs(args.images, args.labels)
    images = _train_channels(args, files, images)
    regions = None
    if args.regions:
        regions = []
        marked = collect(args.regions, besides=[args.images, args.labels])
        for f, lab in zip(match_by_stem(files, marked), labels):
            region = None if f is None else read_image(f)
            if region is not None and region.ndim != lab.ndim:  # same ndim: train() checks
                raise NapariUNetError(
                    f"{f.name}: the region file has shape {tuple(region.shape)}, the labels "
                    f"{tuple(lab.shape)}; a region is a single-channel mask of the labels' "
                    "shape (nonzero where the labels are complete).")
            regions.append(None if region is None else region != 0)
    files, images, labels, regions = _as_planes(files, images, labels, regions)
    epochs = args.epochs if args.epochs is not None or args.time_budget else 50
    mode, target = _kind(args)
    cfg = TrainConfig(
        mode=mode, target=target, epochs=epochs, time_budget=args.time_budget,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        patch_size=args.patch_size, learning_rate=args.lr, w0=args.w0, sigma=args.sigma,
        dice_weight=args.dice_weight, val_fraction=args.val_fraction,
        augment=not args.no_augment, zoom=args.zoom, class_balance=not args.no_class_balance,
        freeze_encoder=args.freeze_encoder, match_size=args.match_size, seed=args.seed,
        device=args.device, precision=args.precision, label_offset=not args.no_label_offset)
    mc = ModelConfig(base_channels=args.base_channels, depth=args.depth, padding=args.padding,
                     norm=args.norm, dropout=0.0)
    bar = None
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, rank 0 reports

    def show(event) -> None:
        nonlocal bar
        if rank:
            return
        if bar is None:  # only once the input has been accepted
            bar = tqdm(total=1000, disable=args.quiet,
                       bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")
        if event.kind in ("start", "saved", "info"):
            bar.write(event.message)
        elif event.kind == "warning":  # said even with -q
            tqdm.write(f"warning: {event.message}", file=sys.stderr)
        elif event.kind == "epoch":
            bar.write(f"epoch {event.epoch}: loss {event.loss:.4f}, " + (
                "validation " + ", ".join(f"{k} {v:.4f}" for k, v in event.val.items())
                if event.val else "no validation image"))
        bar.n = int(1000 * event.progress)
        if event.loss is not None:
            bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", refresh=False)
        bar.refresh()

    started = time.time()
    try:
        result = run(train(images, labels, cfg, model_config=mc, init_from=args.init_from,
                           out=args.out, names=files, regions=regions),
                     show)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        saved = Path(args.out)
        if not rank and saved.exists() and saved.stat().st_mtime >= started:  # this run's
            print(f"napari-unet: interrupted; the best model so far is saved in {args.out}",
                  file=sys.stderr)
            return 130
        raise
    if bar is not None:
        bar.close()
    if rank:
        return 0
    score = "none" if result.best_score is None else f"{result.best_score:.4f}"
    print(f"saved {result.path} (best validation score {score}, "
          f"epoch {result.best_epoch}, {result.steps} steps, {result.seconds:.0f} s on "
          f"{result.device})")
    if result.best_epoch == 0:
        print(STARTING_MODEL_KEPT)
    if result.report is not None:
        print(f"training report: {result.report}")
    return 0


def _train_channels(args, files, images) -> list:
    """Images of several channels (as their files name them) for training: channel
    ``--channel`` alone; fine-tuning, laid out for the model's channels, or refused in a
    sentence. Without either, a new model takes the files' channels as they are."""
    from .channels import channel_axis, for_model
    from .io import tiff_metadata

    if args.channel is None and not args.init_from:
        return images
    if args.channel is not None:
        channels = 1
    else:  # the model's header says it; its weights are read by the training
        from .checkpoint import read_header
        from .pretrained import resolve_model

        channels = read_header(resolve_model(args.init_from))[1]["model"]["in_channels"]
    laid = []
    for f, image in zip(files, images):
        axes = tiff_metadata(f).get("axes")
        if args.channel is not None or channel_axis(image, axes) is not None:
            image = for_model(image, axes, channels, args.channel, f.name)[0]
        laid.append(image)
    return laid


def _kind(args) -> tuple[str, str]:
    """``--mode`` and ``--target``; those not given are the model's to fine-tune (so that
    a model is not said to be fine-tuned for another kind than asked), else the defaults."""
    mode, target = args.mode, args.target
    if args.init_from and (mode is None or target is None):
        from .checkpoint import recorded_task
        from .pretrained import resolve_model

        task = recorded_task(resolve_model(args.init_from))
        mode = mode or task.get("mode")
        target = target or task.get("target")
    return mode or "instances", target or "two_class"


def _as_planes(files, images, labels, regions):
    """Files that hold a stack of planes with a stack of labels (``(N, H, W[, C])`` with
    ``(N, H, W)``), or channels first (``(C, H, W)`` with ``(H, W)``, in a TIFF that says
    so, as ImageJ saves them), become 2D training pairs as in the Train widget (planes
    without labels left out); other files stay as they are. Returns names, images,
    labels, regions."""
    from .data import plane_name, training_planes
    from .errors import InputError
    from .io import channels_first

    names, ims, labs, regs = [], [], [], []
    for k, (f, im, lab) in enumerate(zip(files, images, labels)):
        region = regions[k] if regions else None
        stack = lab.ndim >= 3
        first = im.ndim == 3 and lab.ndim == 2 and im.shape[1:] == lab.shape \
            and im.shape[:2] != lab.shape and channels_first(f)
        if not (stack or first):
            names.append(f.name)
            ims.append(im)
            labs.append(lab)
            regs.append(region)
            continue
        rgb = im.ndim == lab.ndim + 1 and im.shape[:-1] == lab.shape
        kept_ims, kept_labs, kept_regs, kept = training_planes(im, lab, rgb=rgb, name=f.name,
                                                                region=region)
        if not kept_ims:
            raise InputError(f"the labels of {f.name} contain no object in any plane: paint "
                             "or load some labels first.")
        names += [f"{f.name} {plane_name(p, lab.shape)}" if stack else f.name for p in kept]
        ims += kept_ims
        labs += kept_labs
        regs += kept_regs
    return names, ims, labs, (regs if regions else None)


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from .batch import predict_files, refuse_overwriting_inputs, refuse_the_summary
    from .checkpoint import load_checkpoint
    from .config import PredictConfig
    from .io import collect, is_zarr, without_label_files
    from .measure import SUMMARY, write_rows
    from .progress import run

    model = load_checkpoint(args.model)
    zarrs = [spec for spec in args.inputs if is_zarr(spec)]
    if args.scheduler and len(zarrs) < len(args.inputs):
        raise NapariUNetError("--scheduler predicts zarr inputs; convert the other inputs to "
                              "zarr or leave --scheduler out.")
    if args.scheduler:
        _distributed()  # before any work
    if str(args.out).lower().endswith(".zarr") and (len(zarrs) != 1 or len(args.inputs) != 1):
        raise NapariUNetError("--out ending in .zarr takes exactly one zarr input.")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NapariUNetError(f"--out {args.out} is a file; predict writes its results into "
                              "a folder (made if missing): give a folder.")
    lazy = [(spec, _zarr_image(spec, model, args.channel)) for spec in zarrs]  # refused now
    files, skipped = [], []
    for spec in args.inputs:
        if not is_zarr(spec):
            found = collect(spec, besides=[*args.inputs, args.out])
            kept, labels = without_label_files(found) if len(found) > 1 else (found, [])
            files += kept
            skipped += labels
    if skipped and not args.quiet:
        print(f"skipped {len(skipped)} label file(s) beside their images "
              f"({', '.join(f.name for f in skipped[:2])}{' ...' if len(skipped) > 2 else ''})")
    cfg = PredictConfig(tile_size=args.tile_size, batch_size=args.batch_size,
                        device=args.device, precision=args.precision, threshold=args.threshold,
                        instance_method=args.instance_method, cut_necks=args.cut_necks,
                        min_size=args.min_size,
                        tta=args.tta, halo=args.halo, diameter=args.diameter or None,
                        link_planes=args.link_planes, follow_time=args.follow_time)
    out = Path(args.out)
    refuse_overwriting_inputs([(Path(z), _zarr_outputs(Path(z), out)) for z in zarrs],
                              [Path(z) for z in zarrs], args.probabilities)
    if args.measure:
        refuse_the_summary([_zarr_outputs(Path(z), out)[0].with_suffix(".csv")
                            for z in zarrs], out)
    if args.rois and zarrs:
        raise NapariUNetError(f"--rois writes the ImageJ ROIs of image files, and {zarrs[0]} "
                              "is a zarr (a slide's objects: too many for Fiji's ROI "
                              "Manager); measure its objects with --measure instead.")
    files_done = predict_files(model, files, out, cfg, probabilities=args.probabilities,
                               channel=args.channel, chunk=args.chunk, measure=args.measure,
                               rois=args.rois,
                               skip_bad=args.keep_going)  # the TIFFs refused here, first
    overall = tqdm(total=len(files), disable=args.quiet or len(files) <= 1, unit="image")
    bars: dict[int, tqdm] = {}
    shown: set[str] = set()

    def show(event) -> None:
        if event.problem:
            tqdm.write(f"napari-unet: skipped {event.name}: {event.problem}", file=sys.stderr)
        if event.tiles is not None:
            tiles = event.tiles
            if event.index not in bars:
                shown.clear()
                bars[event.index] = tqdm(total=tiles.total, disable=args.quiet, leave=False,
                                         unit="tile", desc=event.name)
            bar = bars[event.index]
            bar.total, bar.n = tiles.total, tiles.done
            bar.refresh()
            if tiles.done and not args.quiet:
                _say_once(bar, event.name, tiles.message, shown)
            return
        if event.index in bars:
            bars.pop(event.index).close()
        for note in event.notes:  # e.g. the cell size 'auto' found
            if note not in shown and not args.quiet:
                print(f"{event.name}: {note}")
        if event.found and not args.quiet:
            tqdm.write(f"{event.name}: {event.found}")
        overall.update(1)

    try:
        done = run(files_done, show)
    finally:
        for bar in bars.values():
            bar.close()
        overall.close()
    rows = [_predict_zarr(args, model, cfg, Path(spec), image) for spec, image in lazy]
    if any(rows) and out.suffix.lower() != ".zarr":  # the zarr inputs' rows too
        write_rows(out / SUMMARY, [*done.rows, *filter(None, rows)])
    print(f"wrote {len(done.written) + len(zarrs)} result(s) to {out}")
    if done.skipped:
        print(f"napari-unet: skipped {len(done.skipped)} image file(s): "
              f"{', '.join(name for name, _ in done.skipped)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _say_once(bar, name: str, message: str, shown: set[str]) -> None:
    """Print what a prediction is doing above its progress bar, each thing once: a count
    such as 'labelling (3 of 16)' is said without its count, the first time."""
    said = re.sub(r" \(\d+ of \d+\)$", "", message)
    if said and said not in shown:
        bar.write(f"{name}: {said}")
        shown.add(said)


def _zarr_outputs(spec: Path, out: Path) -> tuple[Path, Path]:
    """Where ``predict`` writes the labels and probabilities of a zarr input."""
    target = out if str(out).lower().endswith(".zarr") else \
        out / f"{spec.name.removesuffix('.zarr')}.zarr"
    return target, target.with_name(target.name.removesuffix(".zarr") + "_prob.zarr")


def _distributed():
    """Dask's ``distributed`` package, or a sentence saying how to get it."""
    try:
        import distributed
    except ImportError as err:  # missing, or a release that does not match dask's
        raise NapariUNetError(
            f"--scheduler needs Dask's distributed package, which cannot be imported here "
            f"({err}); install it with: pip install \"napari-unet[distributed]\"") from None
    return distributed


def _client(args):
    distributed = _distributed()
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    if args.scheduler == "local":
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    try:
        return Client(args.scheduler), None
    except (OSError, TimeoutError, ValueError) as err:
        raise NapariUNetError(f"could not reach the Dask scheduler at {args.scheduler} "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__}"
                              "); start it, or use --scheduler local.") from None


def _zarr_image(spec, model, channel: int | None):
    """A zarr input, lazy, laid out for the model (:func:`napari_unet.channels.for_model`)."""
    from .channels import for_model
    from .io import open_zarr_axes

    image, axes = open_zarr_axes(spec)
    return for_model(image, axes, model.config.in_channels, channel, Path(spec).name)[0]


def _predict_zarr(args, model, cfg, spec: Path, image) -> dict | None:
    """A zarr input: labels (and probabilities) written block by block into zarr stores,
    first under temporary names that are renamed when everything is written. Returns its
    row of :data:`~napari_unet.measure.SUMMARY` where its objects were measured."""
    import os
    import shutil

    from tqdm import tqdm

    from .found import what_was_found
    from .predict import predict, zarr_outputs
    from .progress import run

    target, prob_target = _zarr_outputs(spec, Path(args.out))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp_prob = prob_target.with_name(f".{prob_target.name}.{os.getpid()}.tmp")
    labels, prob = zarr_outputs(model, image, tmp, tmp_prob if args.probabilities else None,
                                chunk=args.chunk, name=spec.name)
    bar = tqdm(disable=args.quiet, unit="tile", desc=spec.name, leave=False)
    shown: set[str] = set()

    def show(event) -> None:
        bar.total = event.total
        bar.n = event.done
        bar.refresh()
        if not args.quiet:
            _say_once(bar, spec.name, event.message, shown)

    client = cluster = None
    try:
        if args.scheduler:
            from .cgroups import usable_cpus
            from .distributed import predict_distributed

            client, cluster = _client(args)
            threads = (max(1, usable_cpus() // args.workers)
                       if args.scheduler == "local" else None)
            result = run(predict_distributed(args.model, image, labels, client=client,
                                             config=cfg, out_probabilities=prob,
                                             threads=threads, name=spec.name), show)
        else:
            result = run(predict(model, image, cfg, out_labels=labels,
                                 out_probabilities=prob, name=spec.name), show)
        found = what_was_found(result, cfg.link_planes > 0, on_disk=True,
                               followed=cfg.follow_time)
        if found and not args.quiet:
            bar.write(f"{spec.name}: {found}")
        for done, final in ((tmp, target), (tmp_prob, prob_target)):
            if done.exists():
                if final.exists():
                    shutil.rmtree(final)
                os.replace(done, final)
        _for_napari(args, result, target, prob_target if args.probabilities else None, spec)
        if args.measure:
            from .io import open_zarr
            from .measure import apart, measure, summary_row, write_csv

            labels = open_zarr(target)
            table = measure(labels, image, classes=model.mode == "semantic",
                            apart=apart(labels.ndim, cfg.link_planes > 0, model.mode))
            write_csv(target.with_suffix(".csv"), table)
            return summary_row(spec.name, table) if model.mode == "instances" else None
    finally:
        bar.close()
        for leftover in (tmp, tmp_prob):
            if leftover.exists():
                shutil.rmtree(leftover)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _for_napari(args, result, target: Path, prob_target: Path | None, spec: Path) -> None:
    """Beside a zarr result, what napari needs to show it: overview levels where a plane
    is too large to show whole (written under a temporary name, renamed when complete),
    and the ``<stem>.napari-unet`` file that napari-unet's reader opens (the layers placed
    as the OME-Zarr input is)."""
    import os
    import shutil

    import zarr
    from tqdm import tqdm

    from .io import zarr_placement
    from .pyramid import levels_folder, needs_levels, write_all_levels, write_pointer

    stem = spec.name.removesuffix(".zarr").removesuffix(".ome")
    labels = zarr.open_array(str(target), mode="r")
    stores = {"labels": target, "probabilities": prob_target}
    if needs_levels(labels.shape):
        final = levels_folder(target)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            made = write_all_levels({kind: zarr.open_array(str(store), mode="r")
                                     for kind, store in stores.items() if store}, tmp)
            for _ in tqdm(made, disable=args.quiet, leave=False,
                          desc=f"{stem}: overview levels for napari"):
                pass
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    scale, translate = zarr_placement(spec, labels.ndim)
    layers = [{"layer": "labels", "store": target.name, "name": f"{stem} segmentation",
               "scale": scale, "translate": translate}]
    if prob_target is not None:  # shown with a class axis where there are more than two
        extra = int(result.mode == "semantic" and zarr.open_array(
            str(prob_target), mode="r").shape[-3] > 2)
        layers.append({"layer": "probabilities", "store": prob_target.name,
                       "name": f"{stem} probabilities", "scale": [1.0] * extra + scale,
                       "translate": [0.0] * extra + translate})
    write_pointer(target, layers, mode=result.mode, target=result.target, model=args.model)


def cmd_sample(args) -> int:
    from .io import write_tiff
    from .synthetic import touching_cells

    folder = Path(args.folder)
    if args.count < 1:
        raise NapariUNetError(f"--count is the number of image pairs to write, at least 1, "
                              f"not {args.count}.")
    if folder.exists() and not folder.is_dir():
        raise NapariUNetError(f"{folder} is a file; give a folder to write the samples into.")
    for k in range(args.count):
        image, labels = touching_cells(seed=k)
        write_tiff(folder / "images" / f"cells_{k:02d}.tif", image)
        write_tiff(folder / "labels" / f"cells_{k:02d}.tif", labels)
    print(f"wrote {args.count} images to {folder / 'images'} and labels to {folder / 'labels'}")
    return 0


def cmd_info(args) -> int:
    import json

    from .checkpoint import load_checkpoint

    ck = load_checkpoint(args.model)
    print(json.dumps(ck.metadata(), indent=2, sort_keys=True))
    return 0


def cmd_export(args) -> int:
    from .checkpoint import load_checkpoint, named_with
    from .io import read_image
    from .modelzoo import export_package

    _file_out(args.out, "model.zip")
    args.out = str(named_with(args.out, ".zip"))
    ckpt = load_checkpoint(args.model)
    image = read_image(args.test_image) if args.test_image else None
    if image is not None and ckpt.config.in_channels == 1 and image.ndim == 3:
        image = image[..., 0]  # a grey image saved as RGB(A)
    out = export_package(ckpt, args.out, name=args.name, authors=args.authors, image=image,
                         torchscript=not args.no_torchscript)
    print(f"wrote {out}")
    return 0


def cmd_measure(args) -> int:
    from .batch import refuse_overwriting_inputs, refuse_the_summary
    from .io import collect, match_by_stem, stem_of, without_label_files
    from .measure import SUMMARY, summary_row, write_rows

    besides = [args.out, *([args.images] if args.images else [])]
    found = collect(args.labels, besides=besides)
    images, beside = without_label_files(found)
    labels = beside or found  # images with their label files beside them: those are labels
    if args.images:
        images = collect(args.images, besides=[args.labels, args.out])
    partners = match_by_stem(labels, images) if images else [None] * len(labels)
    missing = [f.name for f, image in zip(labels, partners) if image is None]
    if args.images and missing:
        raise NapariUNetError(
            f"no image of the same name in --images for {len(missing)} label file(s) "
            f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}): give the "
            "folder that holds them, or leave --images out to measure sizes and places only.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NapariUNetError(f"--out {out} is a file; measure writes a CSV file for each "
                              "label file into a folder (made if missing): give a folder.")
    if args.rois and args.mode == "semantic":
        raise NapariUNetError("ImageJ ROIs are of objects, and --mode semantic measures "
                              "classes: leave out --rois.")
    tables = [out / f"{stem_of(f)}.csv" for f in labels]
    refuse_overwriting_inputs([(f, (t, t)) for f, t in zip(labels, tables)], labels, False)
    refuse_the_summary(tables, out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for f, image, table in zip(labels, partners, tables):
        said, measured = _measure_file(args, f, image, table)
        rows.append(summary_row(f.name, measured))
        if not args.quiet:
            print(f"{f.name}: {said}")
    summary = ""
    if args.mode == "instances":
        summary = f" and a row per file to {write_rows(out / SUMMARY, rows).name}"
    print(f"wrote {len(tables)} table(s){summary} to {out}")
    return 0


def _measure_file(args, f: Path, image_file: Path | None, table: Path) -> tuple[str, dict]:
    """Measure the objects of label file ``f`` in ``image_file`` (or None) into ``table``;
    returns what was found, in words, and the measurements."""
    import numpy as np

    from .io import read_image, refuse_lossy_labels, tiff_metadata
    from .measure import apart, measure, tiff_pixel_size, write_csv
    from .rois import write_rois
    from .targets import looks_like_an_image, relabel_objects

    refuse_lossy_labels(f)
    labels = read_image(f)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise NapariUNetError(f"{f.name}: the labels are not whole numbers; measure "
                                  "takes label images (0 background, 1..N objects).")
        labels = labels.astype(np.int64)
    instances = args.mode == "instances"
    if instances and (seen := looks_like_an_image(labels)) is not None:
        raise NapariUNetError(f"{f.name} looks like an image, not labels: {seen}; measure "
                              "takes label images (0 background, 1..N objects).")
    mask = instances and labels.ndim == 2 and np.count_nonzero(np.unique(labels)) == 1
    if mask:  # one value for every object: its connected components
        labels = relabel_objects(labels.astype(bool))
    image = None if image_file is None else _image_for(image_file, labels.shape)
    size = tiff_pixel_size(tiff_metadata(f)) or (
        tiff_pixel_size(tiff_metadata(image_file)) if image_file else None)
    measured = measure(labels, image, pixel_size=size and size[0], unit=size and size[1],
                       classes=not instances,
                       apart=apart(labels.ndim, args.linked, args.mode))
    write_csv(table, measured)
    rows = len(measured["index"])
    if not instances:
        return f"{rows} class(es)", measured
    rois = table.with_name(f"{table.stem}_rois.zip")
    if args.rois and rows:  # none of labels without objects
        write_rois(rois, labels)
    border = int(np.count_nonzero(measured["on_border"]))
    return (f"{rows} object{'' if rows == 1 else 's'}, {border} on the image's edge"
            + (" (a mask: its connected components)" if mask else "")
            + ("" if image is not None else "; no image, so no intensities")
            + (f"; ImageJ ROIs in {rois.name}" if args.rois and rows else "")), measured


def _image_for(path: Path, shape: tuple[int, ...]):
    """The image of labels of ``shape``, its channels last where it has them."""
    import numpy as np

    from .io import read_image

    image = read_image(path)
    if image.shape == shape or image.shape[:-1] == shape:
        return image
    for axis in range(image.ndim):  # channels elsewhere (ImageJ's CYX, ZCYX)
        if image.ndim == len(shape) + 1 and image.shape[:axis] + image.shape[axis + 1:] \
                == shape:
            return np.moveaxis(image, axis, -1)
    raise NapariUNetError(f"{path.name}: an image of shape {image.shape} for labels of "
                          f"shape {shape}; its labels must have its size.")


def cmd_evaluate(args) -> int:
    import json

    from .data import plane_name
    from .io import (
        collect,
        match_by_stem,
        read_image,
        refuse_lossy_labels,
        without_label_files,
    )
    from .metrics import instance_scores, semantic_scores
    from .targets import looks_like_an_image, relabel_objects, semantic_classes

    _file_out(args.out, "scores.json")
    truth_files = collect(args.truth, besides=[args.predicted])
    _, beside = without_label_files(truth_files)
    if beside:  # a folder of images with their label files beside them: those are the truth
        truth_files = beside
    found = match_by_stem(truth_files, collect(args.predicted, besides=[args.truth]))
    missing = [t.name for t, f in zip(truth_files, found) if f is None]
    if missing:
        raise NapariUNetError(
            f"no predicted file with the same name for {len(missing)} of the "
            f"{len(truth_files)} truth file(s) ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}): predict them, or give only the truth "
            "files to score (their names, or a glob such as 'labels/a*.tif').")
    convert = relabel_objects if args.mode == "instances" else semantic_classes
    truths, preds, names, unlabelled = [], [], [], 0
    for t_file, p_file in zip(truth_files, found):
        refuse_lossy_labels(t_file)
        refuse_lossy_labels(p_file)
        t, p = read_image(t_file), read_image(p_file)
        for f, data in ((t_file, t), (p_file, p)):
            if args.mode == "instances" and (seen := looks_like_an_image(data)) is not None:
                raise NapariUNetError(
                    f"{f} looks like an image, not labels: {seen}; evaluate scores label "
                    "images (0 background, 1..N objects), such as predict writes.")
        if t.shape != p.shape:
            raise NapariUNetError(f"{p_file.name}: a {'x'.join(map(str, p.shape))} "
                                  f"prediction for a {'x'.join(map(str, t.shape))} truth; "
                                  "both must be label images of the same size.")
        if t.ndim == 2:
            truths.append(convert(t))
            preds.append(convert(p))
            names.append(t_file.name)
            continue
        # a stack: each plane whose truth holds labels is scored as an image
        flat_t, flat_p = t.reshape(-1, *t.shape[-2:]), p.reshape(-1, *p.shape[-2:])
        for k, (tk, pk) in enumerate(zip(flat_t, flat_p)):
            if not tk.any():
                unlabelled += 1
                continue
            truths.append(convert(tk))
            preds.append(convert(pk))
            names.append(f"{t_file.name} {plane_name(k, t.shape)}")
    if not truths:
        raise NapariUNetError("the truth holds no labels in any image or plane.")
    if unlabelled:
        print(f"left out {unlabelled} plane(s) without labels in the truth")
    counted = "images" if names == [f.name for f in truth_files] else "images and planes"
    score = instance_scores if args.mode == "instances" else semantic_scores
    scores = score(truths, preds, names)
    if args.mode == "instances":
        for row in scores["images"]:
            print(f"{row['name']}: AP@0.5 {row['ap50']:.3f}, mAP {row['map']:.3f}, "
                  f"{row['predicted']} objects for {row['objects']}, touching pairs "
                  f"separated {row['touching_separated']} of {row['touching_pairs']}")
        tp, fp, fn = scores["tp_fp_fn_at_0.5"]
        print(f"{len(names)} {counted}: AP@0.5 {scores['ap50']:.3f}, mAP 0.5:0.95 "
              f"{scores['map']:.3f}, touching pairs separated "
              f"{100 * scores['touching_separated']:.1f} % of {scores['touching_pairs']}; "
              f"TP {tp}, FP {fp}, FN {fn} at IoU 0.5")
    else:
        for row in scores["images"]:
            print(f"{row['name']}: pixel error {row['pixel_error']:.4f}")
        classes = ", ".join(f"{c}: {v:.3f}" for c, v in scores["iou"].items())
        print(f"{len(names)} {counted}: pixel error {scores['pixel_error']:.4f}; IoU per "
              f"class {classes}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(scores, indent=2))
        print(f"wrote {args.out}")
    return 0


def _warn_once(message, category, filename, lineno, file=None, line=None, *, _seen=None):
    """Show a Python warning as one line, ``warning: ...``, once per message: not the
    source file and line of the code that warned (a user's terminal is not a debugger), and
    not once per image where every image warns alike (a GPU asked for that is not there)."""
    from tqdm import tqdm

    if str(message) not in _seen:
        _seen.add(str(message))
        tqdm.write(f"warning: {message}", file=sys.stderr)  # above any progress bar


def main(argv: list[str] | None = None) -> int:
    import functools
    import warnings

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    commands = {"train": cmd_train, "predict": cmd_predict, "sample": cmd_sample,
                "info": cmd_info, "export": cmd_export, "evaluate": cmd_evaluate,
                "measure": cmd_measure}
    try:
        with warnings.catch_warnings():  # restored after: main() is called in tests too
            warnings.showwarning = functools.partial(_warn_once, _seen=set())
            return commands[args.command](args)
    except NapariUNetError as err:
        print(f"napari-unet: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output went to a reader that stopped (| head): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return 1
    except OSError as err:  # reading or writing where the system refused: one line too
        print(f"napari-unet: error: {os_error_sentence(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
