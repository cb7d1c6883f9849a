"""Prediction with the overlap-tile strategy: a generator of progress events.

``predict(model, image)`` accepts a 2D image ``(H, W)`` / ``(H, W, C)`` or a stack of them
``(N, H, W)`` / ``(N, H, W, C)`` (the model's channel count decides which), runs the network
over mirrored overlapping tiles in batches, writes class probabilities tile by tile into any
array-like (numpy, memmap, zarr) and turns them into labels, plane by plane (the objects
of a stack's planes linked into one label where ``link_planes`` asks). It yields a
:class:`PredictEvent` after every batch of tiles and returns a :class:`PredictResult`::

    gen = predict("model.safetensors", image)
    for event in gen: ...   # or: result = napari_unet.progress.run(predict(...))
"""

from __future__ import annotations

import functools
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import resident as _resident
from .checkpoint import Checkpoint, load_checkpoint
from .config import PredictConfig
from .data import (
    as_array,
    as_channels_last,
    grey_of_colour,
    normalize_channels_first,
    percentiles,
)
from .device import freed_after_out_of_memory
from .errors import InputError
from .instances import (
    MIN_SIZE_FLOOR,
    auto_min_size,
    labels_from_probabilities,
    remove_small_objects,
)
from .label_offset import shift_margin
from .memory import check_prediction_fits
from .scale import (
    NO_CELL_SIZE,
    median_diameter,
    resize_image,
    resize_probabilities,
    scale_factor,
    scaled_shape,
)
from .stacks import (
    flat_stack,
    iter_follow_time,
    iter_link_planes,
    iter_link_stacks,
    one_stack,
    outer_axes,
    plane,
)
from .tiling import TilePlan, plan_tiles, read_window

#: Why a cell diameter is refused where labels are written block by block.
BLOCKWISE_DIAMETER = ("rescaling to a cell diameter needs the whole image in memory, so it "
                      "is not available where labels are written block by block (zarr "
                      "inputs, lazy layers, Dask); leave the diameter out (0) there.")

#: Why linking planes is refused for semantic models.
SEMANTIC_LINK = ("objects are linked across planes for instance models; this model "
                 "segments classes, whose labels are the same in every plane already.")


@dataclass(frozen=True)
class PredictEvent:
    """Progress: ``done`` of ``total`` tiles over all planes."""

    done: int
    total: int
    plane: int
    n_planes: int
    message: str = ""


@dataclass
class PredictResult:
    """Labels ``(H, W)`` / ``(N, H, W)`` and probabilities ``(C, H, W)`` / ``(N, C, H, W)``
    (``(T, Z, H, W)`` and ``(T, Z, C, H, W)`` for a time-lapse of z-stacks)."""

    labels: np.ndarray | None
    probabilities: object
    device: str
    seconds: float
    mode: str
    target: str
    notes: list[str] = field(default_factory=list)
    #: How much each image was magnified for the network (1: at its own size), so that
    #: :func:`relabel` labels the probabilities again as they were labelled.
    factor: float = 1.0
    #: The objects of labels written to disk, where they were counted (off the GUI
    #: thread; :func:`napari_unet.found.object_count`), else None.
    objects: int | None = None
    #: Overview levels of outputs on disk too large for napari to show whole
    #: (:mod:`napari_unet.pyramid`): ``{"labels": [labels, level 1, ...],
    #: "probabilities": [...]}``; empty where there are none.
    levels: dict = field(default_factory=dict)
    #: Each object's measurements (:func:`napari_unet.measure.measure`), where they were
    #: taken (:func:`napari_unet.measure.measured`), else None.
    features: dict | None = None


def as_checkpoint(model) -> Checkpoint:
    """A :class:`Checkpoint` from a checkpoint or a model file path."""
    if isinstance(model, Checkpoint):
        return model
    if isinstance(model, (str, Path)):
        return load_checkpoint(model)
    raise InputError(f"expected a model file or a loaded model, not {type(model).__name__}.")


def looks_like_rgb(image) -> bool:
    """``(H, W, 3|4)`` or ``(N, H, W, 3|4)``: colour channels last (a stack of three or four
    tiny planes is not taken for one)."""
    return image.shape[-1] in (3, 4) and (
        image.ndim == 4 or (image.ndim == 3 and image.shape[0] > 4 and image.shape[1] > 4))


def drop_unit_channel(image, channels: int):
    """A grey image or stack saved with a channel axis of length one, ``(H, W, 1)`` or
    ``(N, H, W, 1)`` (as tifffile reads such a TIFF), without that axis, for a model of one
    channel: planes one pixel wide are no image. Lazy data stays lazy."""
    if channels != 1 or image.ndim not in (3, 4) or image.shape[-1] != 1:
        return image
    if isinstance(image, np.ndarray):
        return image[..., 0]
    import dask.array as da

    return da.asarray(image)[..., 0]


def split_planes(image, channels: int, name: str = "image") -> tuple[bool, int]:
    """Decide whether ``image`` is one 2D image or a stack, given the model's channels.

    Returns ``(is_stack, n_planes)``.
    """
    nd = image.ndim
    if nd == 2:
        stack = False
    elif nd == 3 and channels > 1:
        stack = image.shape[-1] not in (channels, 4 if channels == 3 else channels)
        if stack:
            raise InputError(f"{name} has shape {tuple(image.shape)}; a model for {channels} "
                             "channels expects (H, W, C) or (N, H, W, C).")
    elif nd in (3, 4) and channels == 1:
        if looks_like_rgb(image):
            raise InputError(f"{name} looks like an RGB image {tuple(image.shape)} in colour, "
                             "but the model was trained on single-channel images: use the "
                             "channel that shows the cells (in napari: right-click the layer, "
                             "Split RGB).")
        stack = True
    elif nd == 4 and channels > 1:
        stack = True
    else:
        raise InputError(f"{name} has shape {tuple(image.shape)}, which this model "
                         f"({channels} channel(s)) cannot read as 2D images or a stack.")
    return stack, (int(image.shape[0]) if stack else 1)


def grey_for_grey_model(image) -> tuple[object, list[str]]:
    """An RGB(A) image or stack of them that holds a grey image (:func:`grey_of_colour`),
    as that grey image, for a model that reads one channel; ``(image, notes)``."""
    grey, why = grey_of_colour(image) if looks_like_rgb(image) else (None, "")
    if grey is None:
        return image, []
    return grey, [f"read as grey ({why})"]


def forward(net, x, tta: bool = False):
    """Probabilities of a batch (:func:`napari_unet.model.activate`); with ``tta``,
    averaged over the 8 rotations and flips of the input (the paper averages rotated
    versions for ISBI 2012).

    Every max pooling of an accepted tile sees an even size, so a flipped or rotated tile is
    pooled on the same pixel pairs and the tiling stays exact.
    """
    import torch

    from .model import activate

    if not tta:
        return activate(net(x), net.config)
    total = None
    for k in range(4):
        for flip in (False, True):
            y = torch.rot90(x, k, (2, 3))
            y = y.flip(3) if flip else y
            p = activate(net(y), net.config)
            p = torch.rot90(p.flip(3) if flip else p, -k, (2, 3))
            if net.config.offsets:
                p = torch.cat([p[:, :-2], _unturn_vectors(p[:, -2:], k, flip)], 1)
            total = p if total is None else total + p
    return total / 8


def _unturn_vectors(v, k: int, flip: bool):
    """``(N, 2, H, W)`` vectors (y, x) predicted on an input rotated by ``k`` quarter turns
    (``torch.rot90``) and then flipped left-right, turned back to the input's frame (their
    positions have been already)."""
    import torch

    dy, dx = v[:, 0], v[:, 1]
    if flip:
        dx = -dx
    for _ in range(k % 4):  # undo one quarter turn: (dy, dx) -> (dx, -dy)
        dy, dx = dx, -dy
    return torch.stack([dy, dx], 1)


def infer_plane(net, image, plan: TilePlan, out, *, batch_size: int, device,
                tta: bool = False, notes: list[str] | None = None, lo=None, hi=None,
                origin: tuple[int, int] = (0, 0), precision: str = "fp32",
                resident: bool | None = None, label_offset=(0.0, 0.0)) -> Iterator[int]:
    """Run ``net`` over the tiles of one channels-last ``(H, W, C)`` image.

    ``image`` is normalised already, or raw with the normalisation's ``lo``/``hi``, applied
    tile by tile (so a lazy image is never read whole). ``plan`` covers a region starting at
    ``origin`` of ``image``; windows beyond the image are mirrored. Writes softmax
    probabilities into ``out`` (``(C, h, w)`` array-like for the region) and yields the number
    of tiles done after each batch.

    Two ways, the same result to float tolerance:

    - streamed (a CPU, lazy images, outputs on disk): each batch is read, mirrored and
      normalised on the host in a thread while the device computes the one before, and its
      kept centres are written into ``out``; memory grows with the batch, not the image.
    - device-resident (``resident``; None chooses it on a CUDA GPU for an in-memory image
      and output that take at most an eighth of its free memory): the region's raw pixels
      go to the device once, are mirrored and normalised there, the tiles are cut from
      them on the device and their centres gathered there, and the probabilities come
      back in one copy. The host then does nothing per tile, which was most of the time
      of a large image on a GPU (end to end 0.24x of the network alone, H200, 4096 px).

    ``label_offset`` (a model's :attr:`~napari_unet.checkpoint.Checkpoint.label_offset`)
    shifts each tile's probabilities before its centre is kept, so that they lie where the
    model's annotations were drawn (:mod:`napari_unet.label_offset`).

    When the device runs out of memory, the batch is halved and retried (saying so in
    ``notes``); with one tile per batch it gives up with a sentence that says what to change.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from .device import autocast, memory_format
    from .label_offset import shift

    tiles = list(plan)
    oy, ox = origin
    pin = device.type == "cuda"
    if resident is None:
        resident = _resident.fits(image, out, plan, device)
    on_device = (_resident.device_region(image, plan, tiles, origin, lo, hi, device)
                 if resident else None)
    if resident and on_device is None:
        resident = False
        if notes is not None:
            notes.append(f"out of memory on {device.type.upper()} for the whole image: "
                         "streaming its tiles instead")
    if resident:
        padded, (py, px) = on_device
        result = torch.empty((out.shape[0], *plan.shape), dtype=torch.float32, device=device)
        ih, iw = plan.input_shape

        def prepare(i: int, size: int):
            chunk = tiles[i : i + size]
            return chunk, torch.stack([padded[:, t.top - py : t.top - py + ih,
                                              t.left - px : t.left - px + iw] for t in chunk])

        def write(chunk, prob) -> None:
            for t, p in zip(chunk, prob):
                result[(slice(None), *t.out)] = p[(slice(None), *t.crop)]
    else:
        def prepare(i: int, size: int):
            chunk = tiles[i : i + size]
            batch = np.empty((len(chunk), image.shape[-1], *plan.input_shape), np.float32)
            for k, t in enumerate(chunk):  # one copy per tile, cast on the way
                batch[k] = np.moveaxis(read_window(image, t.top + oy, t.left + ox,
                                                   *plan.input_shape), -1, 0)
            if lo is not None:
                normalize_channels_first(batch, lo, hi)
            x = torch.from_numpy(batch)
            return chunk, (x.pin_memory() if pin else x)

        def write(chunk, prob) -> None:
            prob = prob.cpu().numpy()
            for t, p in zip(chunk, prob):
                out[(slice(None), *t.out)] = p[(slice(None), *t.crop)]

    done = 0
    pool = ThreadPoolExecutor(1, thread_name_prefix="napari-unet-tiles")
    try:
        with torch.inference_mode():
            i = 0
            ahead = pool.submit(prepare, 0, batch_size)
            while i < len(tiles):
                chunk, x = ahead.result()
                nxt = i + len(chunk)
                ahead = pool.submit(prepare, nxt, batch_size) if nxt < len(tiles) else None
                try:
                    x = x.to(device, memory_format=memory_format(device), non_blocking=pin)
                    with autocast(device, precision):
                        prob = forward(net, x, tta)
                    if any(label_offset):
                        prob = shift(prob, label_offset)
                    write(chunk, prob)
                except (RuntimeError, MemoryError) as err:
                    if not freed_after_out_of_memory(err, device):
                        raise
                    del err  # its frames hold the failed batch's tensors
                    if batch_size == 1:
                        raise InputError(
                            f"the {device.type.upper()} device ran out of memory for a single "
                            f"tile of {plan.input_shape[0]} px; choose a smaller tile size or "
                            "the CPU.") from None
                    batch_size = max(1, batch_size // 2)
                    if notes is not None:
                        notes.append(f"out of memory on {device.type.upper()}: continuing "
                                     f"with batches of {batch_size} tile(s)")
                    if ahead is not None:
                        ahead.result()
                    ahead = pool.submit(prepare, i, batch_size)
                    continue
                done += len(chunk)
                i = nxt
                yield done
            if resident:
                _resident.copy_to_host(result, out)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _network(ckpt: Checkpoint, device):
    """The checkpoint's inference network on ``device`` (:meth:`Checkpoint.build`), built
    once and kept with the checkpoint object for the next call on the same device: a
    model's weights go to the GPU once, not with every image."""
    nets, key = ckpt.__dict__.setdefault("_networks", {}), str(device)
    if key not in nets:
        nets.clear()  # one network per checkpoint: the device last used
        nets[key] = ckpt.build(device)
    return nets[key]


def _infer_resized(net, raw, plan: TilePlan, out, factor: float, *, batch_size: int, device,
                   tta: bool, notes: list[str], precision: str, vectors: bool,
                   name: str, label_offset=(0.0, 0.0)) -> Iterator[int]:
    """:func:`infer_plane` on one channels-last plane magnified by ``factor`` (the whole
    plane is resized for it, and ``label_offset`` with it), its probabilities resized back
    into ``out``."""
    work = out
    if factor != 1.0:
        raw = resize_image(np.asarray(raw), plan.shape)
        work = np.zeros((out.shape[0], *plan.shape), np.float32)
    lo, hi = percentiles(raw, name=name)
    yield from infer_plane(net, raw, plan, work, batch_size=batch_size, device=device,
                           tta=tta, notes=notes, lo=lo, hi=hi, precision=precision,
                           label_offset=tuple(factor * o for o in label_offset))
    if factor != 1.0:
        out[...] = resize_probabilities(work, tuple(out.shape[1:]), vectors=vectors)


def _estimate_note(found: float | None, factor: float, model_diameter: float) -> str:
    """What the estimate of the cell size found and did, in words."""
    if not found:
        return "no cell found to estimate their size from: predicted at the image's size"
    done = (f"resized by {factor:.2f} to the model's {model_diameter:.0f} px"
            if factor != 1.0 else "predicted at the image's size")
    return f"cells of about {found:.0f} px found: {done}"


class _WithChannel:
    """A lazy 2D image seen as ``(H, W, 1)``; only the windows asked for are read."""

    def __init__(self, array):
        self.array, self.dtype = array, array.dtype
        self.shape, self.ndim = (*array.shape, 1), 3

    def __getitem__(self, key):
        return np.asarray(self.array[key[:2] if isinstance(key, tuple) else key])[..., None]


def _lazy_channels_last(image, name: str, channels: int):
    if image.ndim == 2 and not isinstance(image, np.ndarray):
        image = _WithChannel(image)
    return as_channels_last(image, name, channels)


def scratch_beside(array, prefix: str):
    """A scratch folder for the probabilities of a prediction whose labels are written into
    ``array``: beside it where it is a zarr array on local disk (a slide's probabilities
    take gigabytes, and the system's temporary folder is often small, or held in memory),
    else in the system's temporary folder. A ``TemporaryDirectory``."""
    import tempfile

    inner = getattr(array, "array", array)  # a time-lapse's stack seen flat (stacks._Flat)
    root = getattr(getattr(inner, "store", None), "root", None)
    return tempfile.TemporaryDirectory(prefix=prefix,
                                       dir=Path(root).parent if root else None)


def zarr_outputs(ckpt: Checkpoint, image, labels_path, prob_path=None, *, chunk: int = 1024,
                 name: str = "image"):
    """New zarr arrays for the labels (and probabilities) of ``image``, in blocks of
    ``chunk`` px rounded to the network's pooling grid; ``(labels, probabilities)``."""
    from .io import create_zarr

    image = drop_unit_channel(image, ckpt.config.in_channels)
    outer = outer_axes(image, ckpt.config.in_channels)  # a time-lapse of z-stacks: (T,)
    stack, n = split_planes(one_stack(image, outer) if outer else image,
                            ckpt.config.in_channels, name)
    lead = (*outer, image.shape[len(outer)]) if stack else ()
    spatial = tuple(image.shape[len(lead) : len(lead) + 2])
    align = 2**ckpt.config.depth
    side = max(chunk // align, 1) * align
    ones = (1,) * len(lead)
    labels = create_zarr(labels_path, (*lead, *spatial),
                         "int32" if ckpt.mode == "semantic" else "uint32", (*ones, side, side))
    prob = None
    if prob_path is not None:
        c = ckpt.config.out_channels
        prob = create_zarr(prob_path, (*lead, c, *spatial), "float32",
                           (*ones, c, side, side))
    return labels, prob


def stream_labels(ckpt, prob, out, config: PredictConfig, *,
                  mapper=None) -> Generator[str, None, None]:
    """Labels of one plane's probabilities block by block (images larger than memory), in
    blocks of ``out``'s chunks; ``mapper`` runs the block passes (default: this process).
    Objects are made as for an image in memory (the watershed, centre voting, connected
    components: ``config.instance_method``), each block with :func:`labelling_halo`
    pixels of context, and joined across block faces. Yields what it is doing
    (``"labelling (3 of 16)"``: blocks labelled) as it goes, so that it can be stopped."""
    from .blockwise import (
        Foreground,
        blocks,
        iter_label_with_halo,
        label_components,
        local_map,
        semantic_labels,
    )

    group = None if mapper else 1  # blocks run in parallel elsewhere report once
    mapper = mapper or local_map
    chunks = getattr(out, "chunks", None)
    block = tuple(chunks[-2:]) if chunks else 2048
    threshold = ckpt.threshold if config.threshold is None else config.threshold
    yield "labelling"
    if ckpt.mode == "semantic":
        mapper(semantic_labels, blocks(out.shape, block), probabilities=prob, out=out,
               threshold=threshold)
        return
    three = ckpt.target == "three_class"
    min_size = min_object_size(config, ckpt)
    if config.instance_method == "components":  # exact, whatever the halo; fast
        label_components(Foreground(prob, three_class=three, threshold=threshold), out,
                         block=block, grow=2 if three else 1, min_size=min_size,
                         mapper=mapper)
        return
    # as an image in memory is labelled; 'auto' sizes are decided on the joined objects
    labeller = functools.partial(_labels, _to_labels(ckpt, config),
                                 min_size=MIN_SIZE_FLOOR if callable(min_size) else min_size,
                                 pixel_size=1.0)
    for done, total in iter_label_with_halo(labeller, prob, out, block=block,
                                            halo=labelling_halo(ckpt), min_size=min_size,
                                            mapper=mapper, group=group):
        yield f"labelling ({done} of {total})"


def labelling_halo(ckpt: Checkpoint) -> int:
    """The context, in pixels, with which a block of an image larger than memory is
    labelled: three of the model's typical cell diameters (at least 64 px), so that the
    objects of a block's core are seen whole; 128 px for a model that records no size."""
    if not ckpt.object_diameter:
        return 128
    return max(64, int(np.ceil(3 * ckpt.object_diameter)))


def min_object_size(config: PredictConfig, ckpt: Checkpoint, factor: float = 1.0):
    """``config.min_size`` in pixels of the image, or for 'auto' a function of the image's
    object sizes (:func:`napari_unet.instances.auto_min_size`) with the model's cell size,
    which spans ``1 / factor`` as many pixels of an image that was resized by ``factor``."""
    if config.min_size != "auto":
        return config.min_size
    if ckpt.mode == "semantic" or not ckpt.object_diameter:
        return MIN_SIZE_FLOOR
    return functools.partial(auto_min_size, diameter=ckpt.object_diameter / factor)


def _labels(to_labels, prob, min_size, **kw) -> np.ndarray:
    """Labels of ``prob`` without objects under ``min_size`` (pixels, or a function of
    the objects' sizes)."""
    if not callable(min_size):
        return to_labels(prob, min_size=min_size, **kw)
    return remove_small_objects(to_labels(prob, min_size=MIN_SIZE_FLOOR, **kw), min_size)


def predict(model, image, config: PredictConfig | None = None, *, out_probabilities=None,
            out_labels=None, labels: bool = True, name: str = "image"
            ) -> Generator[PredictEvent, None, PredictResult]:
    """Predict an image or a stack; see the module docstring.

    Parameters
    ----------
    model : Checkpoint, str or Path
        A loaded model or a model file.
    image : array-like
        ``(H, W)``, ``(H, W, C)``, ``(N, H, W)`` or ``(N, H, W, C)``; numpy, memmap, zarr
        or Dask (read tile by tile). More stack axes, as a time-lapse of z-stacks
        ``(T, Z, H, W[, C])``, are predicted plane by plane too: labels ``(T, Z, H, W)``,
        probabilities ``(T, Z, C, H, W)``, planes linked along Z within each time point
        (and their objects followed through time with ``config.follow_time``).
    config : PredictConfig
        Tile and batch size, device, precision, thresholds.
    out_probabilities : array-like, optional
        Where to write the float32 probabilities (``(C, H, W)`` or ``(N, C, H, W)``);
        a numpy array is allocated if not given (a temporary zarr on disk with
        ``out_labels``).
    out_labels : array-like, optional
        Integer ``(H, W)`` / ``(N, H, W)`` array (memmap, zarr) to write the labels into,
        block by block: memory then grows with the tile batch and the block, not with the
        image. Without it labels are computed in memory.
    labels : bool
        Also compute labels (instances or classes).
    name : str
        How the image is called in error messages.
    """

    from .device import (
        auto_batch_size,
        auto_tile_size,
        describe_device,
        resolve_device,
        resolve_precision,
    )

    config = config or PredictConfig()
    ckpt = as_checkpoint(model)
    channels = ckpt.config.in_channels
    image = as_array(image, name, hint="predict one image (or a stack of one size) at a time, "
                     "e.g. [run(predict(model, im)).labels for im in images]")
    read_as = []
    if channels == 1:
        image = drop_unit_channel(image, channels)
        image, read_as = grey_for_grey_model(image)
    outer = outer_axes(image, channels)
    if outer:
        return (yield from _predict_stacks(ckpt, image, outer, config, read_as, name=name,
                                           labels=labels,
                                           outputs=(out_probabilities, out_labels)))
    stack, n = split_planes(image, channels, name)
    spatial = tuple(image.shape[1:3] if stack else image.shape[:2])
    channels_out = ckpt.config.out_channels
    prob_shape = (n, channels_out, *spatial) if stack else (channels_out, *spatial)
    label_shape = (n, *spatial) if stack else spatial
    if out_labels is not None and tuple(out_labels.shape) != label_shape:
        raise InputError(f"the labels output has shape {tuple(out_labels.shape)}; "
                         f"expected {label_shape}.")
    if out_probabilities is not None and tuple(out_probabilities.shape) != prob_shape:
        raise InputError(f"the output array has shape {tuple(out_probabilities.shape)}; "
                         f"expected {prob_shape}.")
    auto = config.diameter == "auto"
    if auto and not ckpt.object_diameter:
        raise InputError(NO_CELL_SIZE)
    factor = 1.0 if auto else scale_factor(ckpt.object_diameter, config.diameter)
    if (auto or factor != 1.0) and out_labels is not None:
        raise InputError(BLOCKWISE_DIAMETER)
    if out_labels is None:  # a sentence, not the kill (memory.beyond_memory avoids it)
        check_prediction_fits(image.shape, ckpt.config, factor)
    link = config.link_planes if stack and labels else 0.0
    if link and ckpt.mode == "semantic":
        raise InputError(SEMANTIC_LINK)
    # The image is checked against the model: the Predict widget asks for this first event
    # on napari's GUI thread, so that a bad image is refused at once; torch's first import,
    # a GPU's start and the network's weights come after it, in the worker thread.
    yield PredictEvent(0, 0, 0, n, "")
    device = resolve_device(config.device)
    precision = resolve_precision(device, config.precision)
    net = _network(ckpt, device)
    tile_size = config.tile_size or auto_tile_size(ckpt.config, device, precision)
    plan = plan_tiles(scaled_shape(spatial, factor), ckpt.config, tile_size, config.halo,
                      shift_margin(ckpt.label_offset, factor))
    batch_size = config.batch_size or auto_batch_size(ckpt.config, plan.input_shape, device,
                                                      precision)
    scratch = None
    if out_probabilities is None and out_labels is not None:
        import zarr

        scratch = scratch_beside(out_labels, ".napari-unet-prob-")
        out_probabilities = zarr.create_array(  # uncompressed: written and read once
            store=scratch.name, shape=prob_shape, dtype="float32", compressors=None,
            chunks=(1,) * stack + (channels_out, *plan.stride))
    elif out_probabilities is None:
        out_probabilities = _resident.host_output(prob_shape, device)
    start = time.perf_counter()
    label_out = out_labels
    if labels and out_labels is None:
        label_out = np.zeros(label_shape, _label_dtype(ckpt.mode))
    resized = (", the cell size estimated first" if auto else
               f", resized by {factor:.2f} to cells of {ckpt.object_diameter:.0f} px"
               if factor != 1.0 else "")
    yield PredictEvent(0, len(plan) * n, 0, n, f"predicting on {describe_device(device)} "
                       f"({precision}, {batch_size} tile(s) of {plan.input_shape[0]} px a "
                       f"batch{resized})")
    notes: list[str] = read_as
    run_plane = functools.partial(_infer_resized, net, batch_size=batch_size, device=device,
                                  tta=config.tta, notes=notes, precision=precision,
                                  vectors=ckpt.config.offsets, name=name,
                                  label_offset=ckpt.label_offset)
    to_labels = _to_labels(ckpt, config)
    first = None  # plane 0 at the image's own size, when it was predicted to estimate
    try:
        if auto:
            raw = _lazy_channels_last(image[0] if stack else image, name, channels)
            first = np.zeros((channels_out, *spatial), np.float32)
            for done in run_plane(raw, plan, first, 1.0):
                yield PredictEvent(done, len(plan), 0, n, "estimating the cell size")
            found = median_diameter([to_labels(first, min_size=(  # cells of any size count
                MIN_SIZE_FLOOR if config.min_size == "auto" else config.min_size))])
            factor = scale_factor(ckpt.object_diameter, found) if found else 1.0
            notes.append(_estimate_note(found, factor, ckpt.object_diameter))
            yield PredictEvent(0, len(plan) * n, 0, n, notes[-1])
            if factor != 1.0:
                plan = plan_tiles(scaled_shape(spatial, factor), ckpt.config, tile_size,
                                  config.halo, shift_margin(ckpt.label_offset, factor))
                first = None
        total = len(plan) * n
        label_plane = _labeller(ckpt, config, factor)
        for k in range(n):
            out = plane(out_probabilities, k) if stack else out_probabilities
            if k == 0 and first is not None:  # the estimate's pass was at this size
                out[...] = first
                yield PredictEvent(len(plan), total, k, n)
            else:
                raw = _lazy_channels_last(image[k] if stack else image, name, channels)
                seen = len(notes)
                for done in run_plane(raw, plan, out, factor):
                    message = notes[-1] if len(notes) > seen else ""
                    seen = len(notes)
                    yield PredictEvent(k * len(plan) + done, total, k, n, message)
            if out_labels is not None:
                for doing in stream_labels(ckpt, out, plane(out_labels, k) if stack
                                           else out_labels, config):
                    yield PredictEvent((k + 1) * len(plan), total, k, n, doing)
            elif labels:
                lab = label_plane(out)
                if stack:
                    label_out[k] = lab
                else:
                    label_out = lab
        if link:
            done_tiles = len(plan) * n
            for k in iter_link_planes(out_labels if out_labels is not None else label_out,
                                      link):
                yield PredictEvent(done_tiles, done_tiles, k - 1, n,
                                   f"linking objects across planes ({k} of {n})")
    finally:
        if scratch is not None:
            out_probabilities = None
            scratch.cleanup()
    if out_labels is None and label_out is not None:
        label_out = _compact(label_out, ckpt.mode)
    return PredictResult(labels=label_out, probabilities=out_probabilities,
                         device=describe_device(device), seconds=time.perf_counter() - start,
                         mode=ckpt.mode, target=ckpt.target, notes=notes, factor=factor)


def _predict_stacks(ckpt: Checkpoint, image, outer: tuple[int, ...], config: PredictConfig,
                    read_as: list[str], *, name: str, labels: bool, outputs
                    ) -> Generator[PredictEvent, None, PredictResult]:
    """:func:`predict` of an image of more than one stack axis (a time-lapse of z-stacks
    ``(T, Z, H, W)``, :func:`~napari_unet.stacks.outer_axes`): every plane, as one stack;
    labels ``(T, Z, H, W)``, probabilities ``(T, Z, C, H, W)`` (in memory, or written into
    ``outputs``, ``(probabilities, labels)`` arrays of those shapes, block by block); planes
    linked along the stack axis (Z), within each time point, and with
    ``config.follow_time`` their objects followed through the time points."""
    prob_out, labels_out = outputs
    if config.link_planes and ckpt.mode == "semantic":
        raise InputError(SEMANTIC_LINK)
    if config.follow_time and len(outer) != 1:
        raise InputError(f"objects are followed through the time points of a time-lapse of "
                         f"z-stacks (T, Z, Y, X); {name} has {len(outer) + 3} axes: leave "
                         "following through time (follow_time, --follow-time, 'and through "
                         "time') out.")
    flat = one_stack(image, outer)
    result = yield from predict(
        ckpt, flat, config.replace(link_planes=0.0, follow_time=False), labels=labels, name=name,
        out_probabilities=None if prob_out is None else flat_stack(prob_out, outer),
        out_labels=None if labels_out is None else flat_stack(labels_out, outer))
    lead = (*outer, image.shape[len(outer)])

    def unflat(array, given):  # an output given was written in place
        return given if given is not None or array is None else array.reshape(
            *lead, *array.shape[1:])

    result.notes[:0] = read_as
    result.probabilities = unflat(result.probabilities, prob_out)
    result.labels = unflat(result.labels, labels_out)
    if result.labels is not None and config.link_planes:
        if labels_out is None:
            result.labels = result.labels.astype(_label_dtype(ckpt.mode))
        yield from link_objects(result.labels, config)
        if labels_out is None:
            result.labels = _compact(result.labels, ckpt.mode)
    return result


def _to_labels(ckpt: Checkpoint, config: PredictConfig):
    """``labels_from_probabilities`` with the model's and ``config``'s settings."""
    threshold = ckpt.threshold if config.threshold is None else config.threshold
    return functools.partial(labels_from_probabilities, mode=ckpt.mode, target=ckpt.target,
                             threshold=threshold, method=config.instance_method,
                             cut_necks=config.cut_necks)


def _labeller(ckpt: Checkpoint, config: PredictConfig, factor: float):
    """The labels of one plane's probabilities ``(C, H, W)``, with the model's and
    ``config``'s settings, for an image magnified by ``factor`` for the network."""
    to_labels = _to_labels(ckpt, config)
    min_size = min_object_size(config, ckpt, factor)
    return lambda prob: _labels(to_labels, np.asarray(prob), min_size,
                                pixel_size=1.0 / factor)


def _label_dtype(mode: str):
    """The labels of a stack while they are made (and linked): room for every object."""
    return np.int32 if mode == "semantic" else np.uint32


def _compact(labels: np.ndarray, mode: str) -> np.ndarray:
    """Instance labels as uint16, or uint32 beyond 65,535 objects; class maps as they are."""
    if mode == "semantic":
        return labels
    return labels.astype(np.uint16 if int(labels.max(initial=0)) < 2**16 else np.uint32)


#: The settings that only turn probabilities into labels, which :func:`relabel` redoes.
LABEL_SETTINGS = ("threshold", "instance_method", "cut_necks", "min_size", "link_planes",
                  "follow_time")


def link_objects(labels, config: PredictConfig) -> Generator[PredictEvent, None, None]:
    """Link the objects of a stack's labels (changed in place) along its planes, each
    z-stack of a time-lapse on its own, then with ``config.follow_time`` through the time
    points; an event a plane, then a time point."""
    n = int(np.prod(labels.shape[:-2]))
    for k in iter_link_stacks(labels, config.link_planes):
        yield PredictEvent(n, n, k - 1, n, f"linking objects across planes ({k} of {n})")
    if config.follow_time and labels.ndim == 4:
        times = labels.shape[0]
        for t in iter_follow_time(labels, config.link_planes):
            yield PredictEvent(n, n, n - 1, n,
                               f"following objects through time ({t} of {times})")


def relabel(model, result: PredictResult, config: PredictConfig
            ) -> Generator[PredictEvent, None, PredictResult]:
    """Labels again from the probabilities of ``result`` (a prediction by ``model``), with
    ``config``'s threshold, separation, minimum size and plane linking; the network is not
    run again, so trying those settings takes a fraction of a second. The other settings
    of ``config`` (tiles, device, test-time augmentation, diameter) change probabilities,
    which only :func:`predict` computes. Yields an event per plane; returns a new
    :class:`PredictResult` with the same probabilities."""
    ckpt = as_checkpoint(model)
    prob = result.probabilities
    if not isinstance(prob, np.ndarray):
        raise InputError("the probabilities of that prediction were kept on disk and are "
                         "gone; predict again.")
    stack = prob.ndim >= 4
    lead = prob.shape[:-3]  # (N,), or (T, Z) for a time-lapse of z-stacks
    flat = prob.reshape(-1, *prob.shape[-3:]) if stack else prob
    n = len(flat) if stack else 1
    link = config.link_planes if stack else 0.0
    if link and ckpt.mode == "semantic":
        raise InputError(SEMANTIC_LINK)
    start = time.perf_counter()
    label_plane = _labeller(ckpt, config, result.factor)
    yield PredictEvent(0, n, 0, n, "labelling")  # the settings checked (see predict)
    planes = []
    for k in range(n):
        planes.append(label_plane(flat[k] if stack else prob))
        yield PredictEvent(k + 1, n, k, n, "labelling")
    labels = (np.stack(planes).astype(_label_dtype(ckpt.mode), copy=False)
              .reshape(*lead, *planes[0].shape) if stack else planes[0])
    if link:
        yield from link_objects(labels, config)
    return PredictResult(labels=_compact(labels, ckpt.mode), probabilities=prob,
                         device=result.device, seconds=time.perf_counter() - start,
                         mode=ckpt.mode, target=ckpt.target, notes=list(result.notes),
                         factor=result.factor)
