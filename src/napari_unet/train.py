"""Training as a generator of progress events whose return value is the result.

::

    gen = train(images, labels, TrainConfig(time_budget=600), out="model.safetensors")
    for event in gen:            # TrainEvent after every step; val metrics after each epoch
        ...
    # or: result = napari_unet.progress.run(gen)

Fine-tuning is training that starts from an existing model file (``init_from``); with
validation images, the model it starts from is scored first and is the first candidate
(epoch 0), so fine-tuning never hands back a model that scores worse there. The best
model (by the validation score averaged over the last :data:`SELECTION_WINDOW` epochs) is
saved to ``out`` whenever it improves, atomically; if the
generator is closed early (Cancel), the best model so far stays on disk, and a model is
written even if no validation had happened yet.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, check_writable, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import (
    NORM_HIGH,
    NORM_LOW,
    BatchPrefetcher,
    PatchSampler,
    as_array,
    as_channels_last,
    check_pair,
    match_channels,
    normalize,
    region_box,
)
from .errors import InputError, OutputError
from .memory import check_training_fits
from .scale import match_cell_size, median_diameter
from .targets import (
    JOINED_AT_LEAST,
    compact_ids,
    instance_targets,
    joined_cells,
    left_unlabelled,
    looks_like_an_image,
    numbered_objects,
    relabel_objects,
    semantic_classes,
    semantic_targets,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainEvent:
    """One step of progress.

    ``kind`` is 'start', 'warning' (what may be a mistake, to show the user), 'step',
    'epoch' (with ``val``), 'saved' (with ``path``) or 'info'.
    ``progress`` runs from 0 to 1 (by steps, or by time with a time budget).
    """

    kind: str
    epoch: int = 0
    step: int = 0
    progress: float = 0.0
    loss: float | None = None
    lr: float | None = None
    val: dict | None = None
    elapsed: float = 0.0
    patches_per_s: float | None = None
    path: str | None = None
    message: str = ""


@dataclass
class TrainResult:
    """What a finished (or cancelled) training left behind."""

    checkpoint: Checkpoint
    path: Path | None
    best_score: float | None  # the kept epoch's score averaged with the epochs before it
    #                           (None without validation images: the loss chose the epoch)
    best_epoch: int | None  # 0: the model fine-tuning started from scored best
    history: list[dict] = field(default_factory=list)
    device: str = ""
    seconds: float = 0.0
    steps: int = 0
    stopped: str = "completed"
    report: Path | None = None  # the report PNG beside the saved model


@dataclass
class _Prepared:
    images: list[np.ndarray]
    targets: list[np.ndarray]
    weights: list[np.ndarray]
    truths: list[np.ndarray]  # instance labels or classes, for validation
    n_classes: int
    channels: int
    regions: list[np.ndarray | None] = field(default_factory=list)  # annotated, or None
    notes: list[str] = field(default_factory=list)  # what was done to the images, in words
    warnings: list[str] = field(default_factory=list)  # what may be a mistake, in words


def _more(named: list, shown: int = 3) -> str:
    """' and N more' after the first ``shown`` of a list named in a message."""
    return f" and {len(named) - shown} more" if len(named) > shown else ""


def _kept_kind(base: Checkpoint, config: TrainConfig) -> str:
    """Why a fine-tuning keeps its model's mode and target where ``config`` asks for
    others (a network's outputs are what it was made for)."""
    def kind(mode: str, target: str) -> str:
        return "classes (semantic)" if mode == "semantic" else f"objects ({target} target)"

    return (f"the model to fine-tune segments {kind(base.mode, base.target)}, so it is "
            f"fine-tuned as such, not for {kind(config.mode, config.target)}")


def _instance_label_warnings(names, images, labels, truths, regions) -> list[str]:
    """What looks like a mistake in instance labels: touching cells painted with one label
    (:func:`~napari_unet.targets.joined_cells`), cells left unlabelled (in an image's
    annotated region, if it has one; :func:`~napari_unet.targets.left_unlabelled`)."""
    warnings = []
    joined = [(name, count) for name, lab, truth in zip(names, labels, truths)
              if (count := joined_cells(lab, truth))]
    if sum(count for _, count in joined) >= JOINED_AT_LEAST:
        shown = ", ".join(f"{name} ({count})" for name, count in joined[:3])
        warnings.append(
            "objects that look like touching cells painted with one label (much larger than "
            f"the others, not convex): {shown}{_more(joined)}. Where cells touch, the network "
            "learns to separate them only if each has its own label: in napari, press M for a "
            "new label before painting the next cell (the Touching-cell separation view "
            "shows which objects)")
    unlabelled = [(name, count) for name, image, truth, region
                  in zip(names, images, truths, regions)
                  if (count := left_unlabelled(image, truth, region))]
    if unlabelled:
        shown = ", ".join(f"{name} ({count})" for name, count in unlabelled[:3])
        warnings.append(
            f"{'some images hold' if len(unlabelled) > 1 else 'the image holds'} regions that "
            f"look like the labelled cells but carry no label: {shown}{_more(unlabelled)}. "
            "Cells left unlabelled are learnt as background: label them, or mark where the "
            "labels are complete (the Train widget's 'Labelled in' Shapes layer, or --regions)")
    return warnings


def prepare(images: Sequence, labels: Sequence, config: TrainConfig,
            n_classes: int | None = None, names: Sequence[str] | None = None,
            regions: Sequence | None = None, channels: int | None = None) -> _Prepared:
    """Check image/label pairs and build normalised images, targets and weight maps
    (images with an annotated region are cropped around it, :func:`crop_to_region`).
    ``n_classes`` and ``channels``: those of the model to fine-tune, if any; RGB images that
    hold a grey image are read as grey where that fits (:func:`match_channels`)."""
    for given, what in ((images, "images"), (labels, "labels")):
        if getattr(given, "ndim", None) == 2:  # one image, taken row by row
            raise InputError(
                f"{what} is one image of shape {tuple(given.shape)}; training takes a list "
                "of images and a list of their labels: train([image], [labels], ...).")
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images were given.")
    if len(images) == 0:
        raise InputError("no training images were given.")
    regions = list(regions) if regions is not None else [None] * len(images)
    if len(regions) != len(images):
        raise InputError(f"{len(images)} images but {len(regions)} annotated regions were "
                         "given.")
    named = bool(names)
    names = list(names) if named else [f"image {i + 1}" for i in range(len(images))]
    imgs, labs, regs = [], [], []
    for im, lab, region, name in zip(images, labels, regions, names):
        arr = as_channels_last(np.asarray(as_array(im, name)), name)  # lazy ones read
        lab = np.asarray(as_array(lab, f"labels of {name}"))
        check_pair(arr, lab, name)
        if region is not None:
            arr, lab, region = crop_to_region(arr, lab, region, name)
        imgs.append(arr)
        labs.append(lab)
        regs.append(region)
    check_training_fits(sum(lab.size for lab in labs), imgs[0].shape[-1])
    labs = [(compact_ids(lab) if config.mode == "instances" else lab).astype(np.int64)
            for lab in labs]
    imgs, notes = match_channels(imgs, names, channels)
    warnings = []
    counts = {a.shape[-1] for a in imgs}
    if len(counts) > 1:
        raise InputError(f"the training images have different channel counts {sorted(counts)}.")
    what = f"the labels of {names[0]}" if named and len(set(names)) == 1 else "the labels"
    if config.mode == "instances":
        for lab, name in zip(labs, names):
            if (seen := looks_like_an_image(lab)) is not None:
                raise InputError(
                    f"the labels of {name} look like an image, not labels: {seen}. Labels "
                    "are 0 for the background and 1..N for the cells: were the image and its "
                    "labels given the other way round?")
    if not any(lab.any() for lab in labs):
        raise InputError(f"{what} contain no object: paint or load some labels first.")
    if config.mode == "instances" and all(lab.all() for lab in labs):
        raise InputError(f"{what} have no background (0) pixel: label what is not an object "
                         "as 0, or the network has nothing to tell objects from.")
    norm = []
    for arr, name in zip(imgs, names):
        norm.append(normalize(arr, name=name))  # refuses NaN and infinite values first
        if float(np.ptp(arr)) == 0:
            raise InputError(f"{name} is constant (every pixel is {arr.flat[0]}): there is "
                             "nothing to learn from.")
    if config.mode == "semantic":
        classes = [semantic_classes(lab) for lab in labs]
        found = int(max(c.max() for c in classes)) + 1
        present = np.unique(np.concatenate([np.unique(c) for c in classes]))
        if present.size < 2:
            raise InputError(f"{what} hold a single class ({present[0]}); at least two are "
                             "needed, e.g. background 0 and objects 1.")
        if found > 256:
            raise InputError(f"the labels hold {found} classes; for objects numbered 1..N "
                             "use the instances mode.")
        if numbered_objects(classes, present):  # said, not refused: organs are single objects too
            warnings.append(f"{what} hold {present.size - 1} classes besides the background, "
                         "each a single object: if they are objects numbered 1..N, cancel "
                         "and choose the instances mode (semantic labels give each class "
                         "one number, 1..K)")
        k = max(found, n_classes or 2)
        if n_classes is not None and found > n_classes:
            raise InputError(f"the labels hold {found} classes but the model predicts "
                             f"{n_classes}.")
        pairs = [semantic_targets(c, k, config.class_balance, r)
                 for c, r in zip(classes, regs)]
        truths = classes
    else:
        k = 3 if config.target == "three_class" else 2
        truths = [relabel_objects(lab) for lab in labs]
        warnings += _instance_label_warnings(names, imgs, labs, truths, regs)
        pairs = [instance_targets(t, target=config.target, w0=config.w0, sigma=config.sigma,
                                  balance=config.class_balance, region=r)
                 for t, r in zip(truths, regs)]
    return _Prepared(norm, [p[0] for p in pairs], [p[1] for p in pairs], truths, k,
                     counts.pop(), regs, notes, warnings)


#: One image is split for validation only if its longer side has at least this many pixels
#: and the strip held out holds at least :data:`STRIP_MIN_OBJECTS` labelled objects; the
#: strip is at least :data:`STRIP_MIN_WIDTH` px wide.
STRIP_MIN_SIDE = 192
#: Strips validate instead of whole images where at most this many images are labelled:
#: holding one of a few out whole takes much of what there is to learn from (DSB, the Train
#: widget's defaults: strips scored higher from one, two, three, four and five images;
#: benchmarks/RESULTS.md, "One labelled image, or two").
STRIPS_UP_TO = 5
STRIP_MIN_OBJECTS = 3
STRIP_MIN_WIDTH = 64


def _strip(truth, region, share: float, instances: bool):
    """Where to cut a validation strip off one image (see :func:`hold_out_strips`):
    ``(axis, training part, strip, where, width)``, or None."""
    long_axis = int(truth.shape[1] > truth.shape[0])
    width = min(max(round(share * max(truth.shape)), STRIP_MIN_WIDTH),
                max(truth.shape) // 2)
    for axis in (long_axis, 1 - long_axis):
        length = truth.shape[axis]
        if length < STRIP_MIN_SIDE or width > length // 2:
            continue
        for keep, strip in ((slice(0, length - width), slice(length - width, None)),
                            (slice(width, None), slice(0, width))):
            index = (slice(None),) * axis + (strip,)
            held = truth[index] * (1 if region is None else region[index])
            if (len(np.unique(held[held > 0])) >= STRIP_MIN_OBJECTS if instances
                    else held.any()):
                where = ["bottom", "top", "right", "left"][2 * axis + (strip.start == 0)]
                return axis, keep, strip, where, width
    return None


def hold_out_strips(prep: _Prepared, share: float, instances: bool, context: int = 0,
                    grid: int = 1) -> tuple[_Prepared, list[int]]:
    """Prepared images split in two for validation: a strip across each, ``share`` of its
    longer side (:data:`STRIP_MIN_WIDTH` px to half the image), becomes a validation image
    of its own and the rest stays a training image, so that a model trained on one or a
    few labelled images still has its epochs compared, its threshold calibrated and its
    label offset found on pixels it never learnt from, without giving up a whole image. The
    strip is taken at the end of the longer side, else at its start, else across the
    shorter side, wherever it first holds at least :data:`STRIP_MIN_OBJECTS` labelled
    objects (semantic labels: a labelled pixel); objects that the cut crosses are cut in
    both parts. An image of which no side of :data:`STRIP_MIN_SIDE` px or more has such a
    strip is trained on whole. A strip is validated with up to ``context`` px of the
    training part beside it as the network's input (the network's own context, so that the
    strip is predicted as it would be in its image, not with mirrored borders where the cut
    is), and scored on the strip alone (its region); the context starts on the network's
    pooling ``grid`` of the image, so the strip's prediction is the image's. Returns the
    training parts (in their order) followed by the strips, and the strips' indices (none:
    ``prep`` unchanged)."""
    cuts = [_strip(t, r, share, instances)
            for t, r in zip(prep.truths, prep.regions or [None] * len(prep.truths))]
    if not any(cuts):
        return prep, []
    fields = ("images", "targets", "weights", "truths", "regions")
    kept = {f: [] for f in fields}
    held = {f: [] for f in fields}
    for i, cut in enumerate(cuts):
        for f in fields:
            array = (getattr(prep, f) or [None] * len(cuts))[i]
            if cut is None:
                kept[f].append(array)
                continue
            axis, keep, strip = cut[:3]
            kept[f].append(None if array is None  # spatial axes first
                           else array[(slice(None),) * axis + (keep,)])
            first = max(strip.start - context, 0)
            seen = (slice(first - first % grid, None) if strip.start
                    else slice(0, strip.stop + context))  # the strip and its context
            if f == "regions":  # scored on the strip only
                scored = np.zeros(prep.truths[i].shape[:2], bool)
                scored[(slice(None),) * axis + (strip,)] = True
                array = scored if array is None else scored & (array > 0)
            held[f].append(None if array is None else array[(slice(None),) * axis + (seen,)])
    made = [c for c in cuts if c]
    widths = sorted({c[4] for c in made})
    across = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]}–{widths[-1]}"
    note = (f"the {made[0][3]} {made[0][4]} px of the image held out for validation"
            if len(cuts) == 1 else
            f"a strip of {len(made)} of the {len(cuts)} images ({across} px across) held out "
            "for validation")
    n = len(cuts)
    out = _Prepared(*(kept[f] + held[f] for f in fields[:4]), prep.n_classes,
                    prep.channels, kept["regions"] + held["regions"], [*prep.notes, note],
                    prep.warnings)
    return out, list(range(n, n + len(made)))


def crop_to_region(image: np.ndarray, labels: np.ndarray, region, name: str):
    """An image, its labels and its annotated region (where the labels are complete: the
    only pixels that carry loss) cropped to the region's bounding box plus
    :data:`~napari_unet.data.REGION_MARGIN`, so that a few cells painted in a large image
    cost no more than their neighbourhood."""
    region = np.asarray(region)
    if region.shape != labels.shape:
        raise InputError(f"the annotated region of {name} has shape {tuple(region.shape)}; "
                         f"expected {tuple(labels.shape)}, the shape of its labels.")
    region = region.astype(bool)
    box = region_box(region)
    if box is None:
        raise InputError(f"the annotated region of {name} is empty: draw it over the part "
                         "of the image whose cells are all labelled.")
    return image[box], labels[box], region[box]


def at_model_size(images, labels, regions, names, base: Checkpoint | None,
                  config: TrainConfig):
    """``TrainConfig.match_size``: the training data resized so that its cells have the
    size the model to fine-tune learnt; returns images, labels, regions and what was done
    (None if nothing)."""
    if base is None or not base.object_diameter or config.mode != "instances":
        raise InputError("training at the model's cell size needs an instances model to "
                         "fine-tune that records the size of its cells.")
    regions = list(regions) if regions is not None else [None] * len(images)
    if not len(images) == len(labels) == len(regions):
        raise InputError(f"{len(images)} images, {len(labels)} label images and "
                         f"{len(regions)} annotated regions were given.")
    for i, (im, lab) in enumerate(zip(images, labels)):  # bad pairs refused before resizing
        check_pair(as_channels_last(np.asarray(im)), np.asarray(lab),
                   names[i] if names else f"image {i + 1}")
    diameter = median_diameter(relabel_objects(np.asarray(lab).astype(np.int64))
                               for lab in labels)
    if not diameter:
        return images, labels, regions, None
    images, labels, regions, factor = match_cell_size(images, labels, regions,
                                                      base.object_diameter, diameter)
    return images, labels, regions, {"factor": round(factor, 4),
                                     "cell_diameter": round(diameter, 2)}


def _sizes(mc: ModelConfig, patch: int) -> tuple[int, int]:
    """(input, output) side of training patches."""
    if mc.padding == "valid":
        halo = mc.context()
        inp = mc.valid_input_size(patch + 2 * halo)
        return inp, mc.output_size(inp)
    align = 2**mc.depth
    side = -(-patch // align) * align
    return side, side


#: Foreground thresholds tried on the validation images of a two-class model: a fine grid
#: for semantic models, whose Dice varies smoothly with it; a coarse one for instances
#: models, whose score on a few validation images jumps with every object split or merged,
#: so that a fine grid lets that noise pick extremes (DSB, 30 images: 0.95 was picked, and
#: the model scored AP@0.5 0.715 on val/ against 0.728 at 0.9 in the run before).
THRESHOLDS = {"semantic": tuple(round(0.05 * k, 2) for k in range(1, 20)),  # 0.05 ... 0.95
              "instances": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
#: Epochs whose validation scores are averaged to select the model kept: a few validation
#: images score single epochs noisily (DSB, 3 images: an early epoch's spike was kept twice,
#: and those models scored lowest on held-out images; see benchmarks/RESULTS.md).
SELECTION_WINDOW = 3

#: What the validation score (``TrainResult.best_score``) measures, by mode (1 is perfect).
SCORE_MEANING = {"semantic": "the classes' mean Dice",
                 "instances": "average precision of the objects over IoU 0.5 to 0.9"}

#: Said when no fine-tuned epoch scored as well as the model fine-tuning started from.
STARTING_MODEL_KEPT = ("No fine-tuned epoch scored as well on the validation images as the "
                       "model you started from, so that model was saved as it was (with "
                       "its threshold calibrated on your validation images).")
#: IoU thresholds whose mean average precision scores an instances model in validation.
VAL_IOUS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def validate(net, prep: _Prepared, idx: Sequence[int], config: TrainConfig, device) -> dict:
    """Validation metrics of ``net`` on the images ``idx``.

    For two-class models the foreground threshold is calibrated: weighted losses shift the
    probabilities, so the threshold with the best validation score is kept with the model.
    Two-class instances are scored as connected components, where the threshold is what
    separates touching objects; the default watershed seeds at that threshold and merges
    what it split wrongly, which makes its score nearly flat in the threshold on a few
    validation images (DSB, 30 images: 0.5 was then picked, and only 28 % of the touching
    pairs were separated).
    The score is the mean Dice over classes for semantic models and, for instances models,
    the average precision averaged over IoU 0.5 to 0.9: with the few validation images of a
    small training set, AP at IoU 0.5 alone often ties between epochs.
    """
    from .instances import labels_from_probabilities
    from .metrics import average_precision, dice

    net.eval()
    probs = _probabilities(net, prep, idx, device)
    net.train()
    calibrate = prep.n_classes == 2
    method = "components" if config.target == "two_class" else "auto"
    best = None
    for th in THRESHOLDS[config.mode] if calibrate else (0.5,):
        dices, aps, maps = [], [], []
        for i, prob in zip(idx, probs):
            truth = prep.truths[i]
            pred = labels_from_probabilities(prob, mode=config.mode, target=config.target,
                                             threshold=th, method=method)
            region = prep.regions[i] if prep.regions else None
            if region is not None:  # scored where the labels are complete
                truth, pred = truth * region, pred * region
            if config.mode == "semantic":
                dices.append(np.mean([dice(truth == c, pred == c)
                                      for c in range(1, prep.n_classes)]))
            else:
                dices.append(dice(truth > 0, pred > 0))
                ap = average_precision(truth, pred, VAL_IOUS)
                aps.append(ap[0.5])
                maps.append(np.mean(list(ap.values())))
        out = {"dice": float(np.mean(dices))}
        if aps:
            out["ap50"] = float(np.mean(aps))
            out["map"] = float(np.mean(maps))
        out["score"] = out.get("map", out["dice"])
        out["threshold"] = th
        if best is None or out["score"] > best["score"]:
            best = out
    return best


def _probabilities(net, prep: _Prepared, idx: Sequence[int], device) -> list[np.ndarray]:
    """``net``'s probabilities of the (normalised) images ``idx``."""
    from .device import HOST_TILE
    from .predict import infer_plane
    from .tiling import plan_tiles

    tile = 512 if device.type == "cuda" else HOST_TILE  # a GPU holds the training beside
    probs = []
    for i in idx:
        img = prep.images[i]
        plan = plan_tiles(img.shape[:2], net.config, tile)
        prob = np.zeros((net.config.out_channels, *img.shape[:2]), np.float32)
        for _ in infer_plane(net, img, plan, prob, batch_size=4, device=device):
            pass
        probs.append(prob)
    return probs


def _calibrate_offset(best: Checkpoint, prep: _Prepared, idx: Sequence[int], device
                      ) -> tuple[Checkpoint, str]:
    """``best`` with the label offset of its validation images
    (:mod:`napari_unet.label_offset`), and a sentence saying what was found."""
    from . import label_offset

    probs = _probabilities(best.build(device), prep, idx, device)
    found = label_offset.estimate(probs, [prep.truths[i] for i in idx],
                                  [prep.regions[i] for i in idx] if prep.regions else None,
                                  best.threshold)
    if found["error"] is None:
        return best, ""
    dy, dx = found["offset"]
    best = replace(best, task={**best.task, "label_offset": [dy, dx]},
                   training={**best.training, "label_offset": found})
    if not (dy or dx):
        message = "the annotations lie where the network draws (no sub-pixel offset)"
    else:
        where = ([f"{abs(dy):g} px {'below' if dy > 0 else 'above'}"] if dy else []) + (
            [f"{abs(dx):g} px {'right of' if dx > 0 else 'left of'}"] if dx else [])
        message = (f"the annotations lie {' and '.join(where)} what the network draws on the "
                   "validation images; predictions are shifted to match (wrong pixels "
                   f"{found['error']:.2%} -> {found['error_shifted']:.2%})")
    return best, message


def train(images: Sequence, labels: Sequence, config: TrainConfig | None = None, *,
          model_config: ModelConfig | None = None, init_from=None, out=None,
          names: Sequence[str] | None = None, regions: Sequence | None = None
          ) -> Generator[TrainEvent, None, TrainResult]:
    """Train (or fine-tune) a U-Net; see the module docstring.

    Parameters
    ----------
    images, labels : sequences of arrays
        2D images ``(H, W)`` / ``(H, W, C)`` and their ``(H, W)`` labels.
    config : TrainConfig
        Mode, duration, loss and augmentation settings.
    model_config : ModelConfig, optional
        The architecture (channels and classes are set from the data); ignored when
        fine-tuning, where the model file's architecture is kept.
    init_from : Checkpoint, str or Path, optional
        Start from this model (fine-tuning).
    out : str or Path, optional
        Where the best model is saved (atomically, whenever it improves).
    names : sequence of str, optional
        What to call each image in error messages (file or layer names).
    regions : sequence of boolean arrays or None, optional
        Per image, where its labels are complete (True), for images labelled in part: only
        those pixels carry loss, draw patches and are scored in validation; None: the
        whole image.
    """
    from .device import describe_device, load_torch, resolve_device, resolve_precision

    torch = load_torch()  # a sentence, not an import's traceback, where it cannot be

    from . import ddp
    from .augment import Augmenter
    from .loader import ProcessBatches, default_workers

    config = config or TrainConfig()
    start = time.perf_counter()
    if out is not None and Path(out).is_dir():
        raise InputError(f"{out} is a folder; the model needs a file name, e.g. "
                         f"{Path(out) / 'model.safetensors'}.")
    if out is not None:
        check_writable(out)
    base, config, kept_kind = _starting_model(init_from, config)
    resized = None
    if config.match_size:
        images, labels, regions, resized = at_model_size(images, labels, regions, names, base,
                                                         config)
    prep = prepare(images, labels, config, base.config.n_classes if base else None, names,
                   regions, base.config.in_channels if base else None)
    mc = _architecture(base, prep, model_config, config)

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    n_given = len(prep.images)
    regions_given = sum(r is not None for r in prep.regions)
    prep, train_idx, val_idx = _split(prep, config, mc, rng)
    n, n_val = len(prep.images), len(val_idx)

    procs, device_name = ddp.join(config.device)
    device = resolve_device(device_name)
    net = _network(mc, base, config.freeze_encoder, device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad],
                           lr=config.learning_rate)
    step_net = ddp.wrap(net, procs, device)
    precision = resolve_precision(device, config.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if procs.active:  # every process draws its own patches
        rng = np.random.default_rng([config.seed, procs.rank])

    in_size, out_size = _sizes(mc, config.patch_size)
    sampler = PatchSampler(
        [prep.images[i] for i in train_idx], [prep.targets[i] for i in train_idx],
        [prep.weights[i] for i in train_idx], in_size=in_size, out_size=out_size,
        foreground_bias=config.foreground_bias,
        augment=Augmenter(zoom=config.zoom) if config.augment else None, rng=rng)
    steps_per_epoch = config.steps_per_epoch or int(np.clip(math.ceil(
        sum(prep.targets[i].size for i in train_idx) / (config.batch_size * out_size**2)),
        50, 500))  # about one pass over the training pixels
    budget = config.time_budget
    total_steps = None if budget else config.epochs * steps_per_epoch

    task = _task(config, prep)
    record = {
        "config": config.to_dict(), "images": n_given, "validation_images": n_val,
        "validation_strips": n - n_given,
        "annotated_regions": regions_given,
        "resized_to_the_models_cell_size": resized,
        "fine_tuned_from": (None if base is None else
                            str(init_from) if isinstance(init_from, (str, Path)) else "model"),
        "device": describe_device(device), "patch": [in_size, out_size],
        "processes": procs.world, "precision": precision,
    }

    def snapshot(extra: dict) -> Checkpoint:
        state = {k: v.detach().to("cpu").contiguous().clone()
                 for k, v in net.state_dict().items()}
        return Checkpoint(config=mc, state_dict=state, task=task,
                          normalization={"kind": "percentile", "low": NORM_LOW,
                                         "high": NORM_HIGH},
                          training={**record, **extra})

    unsaved: list[str] = []  # why the best model is not on disk: its last write failed

    def save(best: Checkpoint) -> Path | None:
        """``best`` written to ``out``; None if that failed (the disk full), said in
        ``unsaved``, so that training goes on and tries again."""
        try:
            path = save_checkpoint(out, best)
        except OutputError as err:
            unsaved[:] = [str(err)]
            return None
        unsaved.clear()
        return path

    def with_offset(best: Checkpoint) -> tuple[Checkpoint, str]:
        """``best`` with a semantic model's label offset calibrated (and saved to ``out``),
        and the sentence that says what was found ("": nothing was calibrated)."""
        if not (calibrating and procs.main and best.training.get("validation")):
            return best, ""
        best, message = _calibrate_offset(best, prep, val_idx, device)
        if message and out is not None:
            save(best)
        return best, message

    def keep(val: dict | None, epoch: int) -> Checkpoint:
        """The network as it is now, as the model to keep, with the threshold that ``val``
        calibrated (None: not validated)."""
        if val is not None:
            task["threshold"] = val.get("threshold", 0.5)
        else:
            not_calibrated()
        return snapshot({"best_epoch": epoch, "steps": step, "validation": val})

    def not_calibrated() -> None:
        """Without validation images nothing is calibrated: a fine-tuned model keeps the
        threshold and label offset of the model it started from (its outputs are nearest
        those), a new one records none (0.5 and no shift are used)."""
        for key in ("threshold", "label_offset"):
            if base is not None and key in base.task:
                task[key] = base.task[key]
            else:
                task.pop(key, None)

    yield TrainEvent("start", message=(
        f"training on {describe_device(device)}: {len(train_idx)} training and {n_val} "
        f"validation image(s), patches {out_size} px, {steps_per_epoch} steps per epoch"
        + "".join(f"; {note}" for note in prep.notes)))
    for warning in [*kept_kind, *prep.warnings]:
        yield TrainEvent("warning", message=f"{warning[0].upper()}{warning[1:]}.")

    best: Checkpoint | None = None
    best_score = best_epoch = None
    saved_path: Path | None = None
    history: list[dict] = []
    step = epoch = 0
    val_seconds = 0.0
    stopped = "completed"
    workers = (default_workers(device) if config.loader_workers is None
               else config.loader_workers)
    if base is not None and val_idx and procs.main:
        # the model fine-tuning starts from is the first candidate: a fine-tuned epoch
        # replaces it only if it scores at least as well on the validation images
        t_val = time.perf_counter()
        start_val = validate(net, prep, val_idx, config, device)
        val_seconds = time.perf_counter() - t_val
        best_score, best_epoch = start_val["score"], 0
        best = keep(start_val, 0)
        if out is not None:
            saved_path = save(best) or saved_path
        yield TrainEvent("info", val=start_val, elapsed=time.perf_counter() - start,
                         message=(f"the model fine-tuning starts from scores "
                                  f"{start_val['score']:.3f} on the validation images; a "
                                  "fine-tuned model replaces it only if it does as well"))
    # every process stops by rank 0's clock and validation time (the start's included)
    val_seconds = ddp.share(val_seconds, procs, device)
    # the label offset is calibrated after the last epoch, at about a validation's cost
    calibrating = bool(config.mode == "semantic" and config.label_offset and val_idx)
    reserve = 2 if calibrating else 1
    batches = (ProcessBatches(sampler, config.batch_size, workers=workers,
                              seed=config.seed * 1000 + procs.rank,
                              pin_memory=device.type == "cuda")
               if workers else BatchPrefetcher(sampler, config.batch_size))
    fit = [1]  # the parts each batch goes through the network in (more after out of memory)
    try:
        while True:
            epoch += 1
            losses = []
            t_epoch = time.perf_counter()
            for _ in range(steps_per_epoch):
                # rank 0's clock, so that every process uses the same rate and stops together
                elapsed = ddp.share(time.perf_counter() - start, procs, device)
                progress = (elapsed / budget) if budget else step / total_steps
                if budget and elapsed + reserve * val_seconds >= budget:
                    break
                lr = learning_rate(config.learning_rate, progress)
                for group in opt.param_groups:
                    group["lr"] = lr
                losses.append((yield from _step_fitted(
                    step_net, opt, scaler, batches, device, precision, config, mc, fit, procs,
                    (epoch, step, min(progress, 1.0)))))
                step += 1
                rate = (len(losses) * config.batch_size * procs.world
                        / (time.perf_counter() - t_epoch))
                yield TrainEvent("step", epoch, step, min(progress, 1.0), losses[-1], lr,
                                 elapsed=time.perf_counter() - start, patches_per_s=rate)
            if not losses:
                epoch -= 1
                stopped = "time budget"
                break
            t_val = time.perf_counter()
            val = (validate(net, prep, val_idx, config, device) if val_idx and procs.main
                   else None)
            val_seconds = ddp.share(time.perf_counter() - t_val, procs, device)
            entry = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)),
                     "elapsed": time.perf_counter() - start,
                     # no validation image: the lowest loss chooses the model kept
                     **(val if val is not None else {"score": -float(np.mean(losses))})}
            history.append(entry)
            done = budget is None and step >= total_steps
            progress = (entry["elapsed"] / budget) if budget else step / total_steps
            yield TrainEvent("epoch", epoch, step, min(progress, 1.0), entry["loss"],
                             val=val, elapsed=entry["elapsed"])
            smoothed = float(np.mean([h["score"] for h in history[-SELECTION_WINDOW:]]))
            if best_score is None or smoothed >= best_score:  # ties: the later model
                best_score, best_epoch = smoothed, epoch
                best = keep(val, epoch)
                written = save(best) if out is not None and procs.main else None
                if written is not None:
                    saved_path = written
                    yield TrainEvent("saved", epoch, step, min(progress, 1.0),
                                     path=str(saved_path), val=val,
                                     message=f"saved the best model so far to {saved_path}")
                elif unsaved:
                    yield TrainEvent("warning", epoch, step, min(progress, 1.0), message=(
                        f"The best model so far was not saved: {unsaved[0]} Training goes "
                        "on and saves it at its next better epoch and at its end."))
            now = ddp.share(time.perf_counter() - start, procs, device)
            if done or (budget and now + reserve * val_seconds >= budget):
                stopped = "epochs" if done else "time budget"
                break
    except (GeneratorExit, KeyboardInterrupt):  # Cancel, or Ctrl-C on the command line
        stopped = "cancelled"
        raise
    finally:
        batches.close()
        if best is None:
            not_calibrated()
            best = snapshot({"steps": step, "validation": None, "note": "not validated"})
            if out is not None and procs.main:
                saved_path = save(best) or saved_path
        ddp.leave(procs)
        if stopped == "cancelled" and out is not None:
            # a cancelled training's file is its best model, label offset included (one
            # validation pass more); nothing can be yielded any more
            with_offset(best)
    best, message = with_offset(best)
    if out is not None and procs.main and unsaved:  # its last write failed: once more
        earlier, saved_path = saved_path, save(best)
        if saved_path is None:
            raise OutputError(
                f"{unsaved[0][0].upper()}{unsaved[0][1:]} The trained model could not be "
                "saved" + (f"; {earlier} holds the best model of an earlier epoch."
                           if earlier is not None else "."))
    if message:
        yield TrainEvent("info", epoch, step, 1.0, elapsed=time.perf_counter() - start,
                         message=message)
    result = TrainResult(checkpoint=best, path=saved_path,
                         best_score=best_score if val_idx else None,  # else: minus the loss
                         best_epoch=best_epoch, history=history,
                         device=describe_device(device), seconds=time.perf_counter() - start,
                         steps=step, stopped=stopped)
    if saved_path is not None:
        result.report = _report(result, prep, val_idx, device)
    return result


def learning_rate(peak: float, progress: float) -> float:
    """The learning rate at ``progress`` (0 to 1) of a training: cosine decay from
    ``peak`` to a hundredth of it."""
    return peak * max(0.5 * (1 + math.cos(math.pi * min(progress, 1))), 0.01)


def _step(net, opt, scaler, batch, device, precision: str, dice_weight: float,
          mc: ModelConfig, parts: int = 1) -> float:
    """One optimisation step of ``net`` on ``batch`` (images, targets, weights as numpy);
    returns the loss. With ``parts`` > 1 (the device ran out of memory for the whole
    batch) the batch goes through the network in that many parts, each part's loss
    weighted by its share of the patches and their gradients added up before the step."""
    from .device import autocast, memory_format
    from .loader import as_tensor
    from .losses import unet_loss

    x, t, w = (as_tensor(a, device) for a in batch)
    x = x.contiguous(memory_format=memory_format(device))
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for rows in np.array_split(np.arange(len(x)), min(parts, len(x))):
        part = slice(int(rows[0]), int(rows[-1]) + 1)
        with autocast(device, precision):
            logits = net(x[part])
        loss = unet_loss(logits.float(), t[part], w[part], dice_weight, mc.distance,
                         mc.offsets) * (len(rows) / len(x))
        scaler.scale(loss).backward()
        total += float(loss.detach())
    scaler.step(opt)
    scaler.update()
    return total


#: What a training that runs out of memory for a single patch says.
TRAIN_OUT_OF_MEMORY = (
    "the {device} device ran out of memory training on {what}: choose a smaller network "
    "(base channels, depth) or smaller patches, or train on the CPU; the best model so "
    "far, if one was saved, is kept.")


def _step_fitted(step_net, opt, scaler, batches, device, precision, config: TrainConfig,
                 mc: ModelConfig, fit: list, procs, where: tuple):
    """:func:`_step` on the next batch; where the device runs out of memory, the batch in
    twice as many parts (``fit[0]``, kept for the steps after), saying so, until a part
    is one patch. Yields the warnings; returns the loss."""
    from .device import freed_after_out_of_memory

    batch = batches.get()
    while True:
        try:
            return _step(step_net, opt, scaler, batch, device, precision,
                         config.dice_weight, mc, fit[0])
        except RuntimeError as err:
            if not freed_after_out_of_memory(err, device):
                raise
            if fit[0] >= config.batch_size or procs.active:  # no parts across processes
                what = (f"batches of {config.batch_size} patches in {procs.world} processes"
                        if procs.active else f"one patch of {config.patch_size} px at a time")
                raise InputError(TRAIN_OUT_OF_MEMORY.format(
                    device=device.type.upper(), what=what)) from None
            fit[0] = min(2 * fit[0], config.batch_size)
        yield TrainEvent("warning", *where, message=(
            f"out of memory on {device.type.upper()}: each batch of {config.batch_size} "
            f"patches now goes through the network in {fit[0]} parts, their gradients "
            "added up (slower; batch norm sees the smaller parts)"))


def _starting_model(init_from, config: TrainConfig):
    """``(base, config, notes)``: the model fine-tuning starts from (None: a new one), the
    config with that model's mode and target where it asked for others, and the sentence
    that says so (in a list, empty where nothing was changed)."""
    if init_from is None:
        return None, config, []
    base = init_from if isinstance(init_from, Checkpoint) else load_checkpoint(init_from)
    if base.mode == config.mode and (config.mode != "instances" or
                                     base.target == config.target):
        return base, config, []
    return (base, config.replace(mode=base.mode, target=base.target),
            [_kept_kind(base, config)])


def _architecture(base: Checkpoint | None, prep: _Prepared, model_config: ModelConfig | None,
                  config: TrainConfig) -> ModelConfig:
    """The network to train: the model file's, which must read the images' channels and
    predict the labels' classes, or a new one of ``model_config`` for them."""
    if base is not None:
        mc = base.config
        if mc.in_channels != prep.channels:
            raise InputError(f"the model to fine-tune reads {mc.in_channels} channel(s), the "
                             f"images have {prep.channels}.")
        if mc.n_classes != prep.n_classes:
            raise InputError(f"the model to fine-tune predicts {mc.n_classes} classes, the "
                             f"labels need {prep.n_classes}.")
        return mc
    instances = config.mode == "instances"
    return (model_config or ModelConfig(base_channels=32, norm="batch", dropout=0.0)).replace(
        in_channels=prep.channels, n_classes=prep.n_classes,
        distance=instances and config.target == "distance",
        offsets=instances and config.target == "offsets")


def _split(prep: _Prepared, config: TrainConfig, mc: ModelConfig, rng):
    """``(prep, train_idx, val_idx)``: up to :data:`STRIPS_UP_TO` images each give a strip
    to validation (added to ``prep`` after them; every image trains), more give
    ``val_fraction`` of them whole (at least one of two or more), drawn by ``rng``."""
    n_given, share = len(prep.images), config.val_fraction
    if share > 0 and n_given <= STRIPS_UP_TO:  # few images: a strip of each
        prep, val_idx = hold_out_strips(prep, share, config.mode == "instances",
                                        context=mc.context(), grid=2 ** mc.depth)
        if val_idx:
            return prep, list(range(n_given)), val_idx
    n_val = 0 if n_given < 2 or share == 0 else max(1, round(share * n_given))
    order = rng.permutation(n_given)
    return prep, sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _task(config: TrainConfig, prep: _Prepared) -> dict:
    """What the model file says the model does: mode, target, classes, and for objects the
    median diameter of the cells it learnt (predictions can be rescaled to it)."""
    task = {"mode": config.mode, "target": config.target, "n_classes": prep.n_classes}
    if config.mode == "instances":
        diameter = median_diameter(prep.truths)
        if diameter:
            task["object_diameter"] = round(diameter, 2)
    return task


def _network(mc: ModelConfig, base: Checkpoint | None, freeze_encoder: bool, device):
    """The U-Net to train on ``device``, in training mode: ``base``'s weights (its encoder
    frozen with ``freeze_encoder``), or new ones."""
    from .device import memory_format
    from .model import UNet

    net = UNet(mc)
    if base is not None:
        net.load_state_dict(base.state_dict)
    net = net.to(device, memory_format=memory_format(device)).train()
    if freeze_encoder and base is not None:
        for module in net.encoder:
            for p in module.parameters():
                p.requires_grad_(False)
    return net


def _report(result: TrainResult, prep: _Prepared, val_idx: Sequence[int], device) -> Path | None:
    """Write the training report beside the model; a failure here never costs the model."""
    from .config import PredictConfig
    from .predict import predict
    from .progress import run
    from .report import write_report

    try:
        cfg = PredictConfig(device=device.type)
        examples = []
        for i in list(val_idx)[:3]:
            image = prep.images[i][..., 0] if prep.channels == 1 else prep.images[i]
            labels = run(predict(result.checkpoint, image, cfg)).labels
            examples.append((image, prep.truths[i], labels))
        return write_report(result.path, result, examples)[0]
    except Exception as err:  # noqa: BLE001 - reported, and the model is saved already
        log.warning("the training report could not be written: %s", err)
        return None
