"""Prediction with the overlap-tile strategy: a generator of progress events.

``predict(model, image)`` accepts a 2D image ``(H, W)`` / ``(H, W, C)`` or a stack of them
``(N, H, W)`` / ``(N, H, W, C)`` (the model's channel count decides which), runs the network
over mirrored overlapping tiles in batches, writes class probabilities tile by tile into any
array-like (numpy, memmap, zarr) and turns them into labels. It yields a
:class:`PredictEvent` after every batch of tiles and returns a :class:`PredictResult`::

    gen = predict("model.safetensors", image)
    for event in gen: ...   # or: result = napari_unet.progress.run(predict(...))
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint
from .config import PredictConfig
from .data import as_channels_last, normalize
from .errors import InputError
from .instances import labels_from_probabilities
from .tiling import TilePlan, plan_tiles


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
    """Labels ``(H, W)`` / ``(N, H, W)`` and probabilities ``(C, H, W)`` / ``(N, C, H, W)``."""

    labels: np.ndarray | None
    probabilities: object
    device: str
    seconds: float
    mode: str
    target: str
    notes: list[str] = field(default_factory=list)


def as_checkpoint(model) -> Checkpoint:
    """A :class:`Checkpoint` from a checkpoint or a model file path."""
    if isinstance(model, Checkpoint):
        return model
    if isinstance(model, (str, Path)):
        return load_checkpoint(model)
    raise InputError(f"expected a model file or a loaded model, not {type(model).__name__}.")


def split_planes(image, channels: int, name: str = "image") -> tuple[bool, int]:
    """Decide whether ``image`` is one 2D image or a stack, given the model's channels.

    Returns ``(is_stack, n_planes)``.
    """
    nd = image.ndim
    rgb_like = nd >= 3 and image.shape[-1] in (3, 4)
    if nd == 2:
        stack = False
    elif nd == 3 and channels > 1:
        stack = image.shape[-1] not in (channels, 4 if channels == 3 else channels)
        if stack:
            raise InputError(f"{name} has shape {tuple(image.shape)}; a model for {channels} "
                             "channels expects (H, W, C) or (N, H, W, C).")
    elif nd == 3:
        if rgb_like and image.shape[0] > 4 and image.shape[1] > 4:
            raise InputError(f"{name} looks like an RGB image {tuple(image.shape)}, but the "
                             "model was trained on single-channel images.")
        stack = True
    elif nd == 4 and channels > 1:
        stack = True
    else:
        raise InputError(f"{name} has shape {tuple(image.shape)}, which this model "
                         f"({channels} channel(s)) cannot read as 2D images or a stack.")
    return stack, (int(image.shape[0]) if stack else 1)


def forward(net, x, tta: bool = False):
    """Softmax probabilities of a batch; with ``tta``, averaged over the 8 rotations and
    flips of the input (the paper averages rotated versions for ISBI 2012).

    Every max pooling of an accepted tile sees an even size, so a flipped or rotated tile is
    pooled on the same pixel pairs and the tiling stays exact.
    """
    import torch

    if not tta:
        return net(x).float().softmax(1)
    total = None
    for k in range(4):
        for flip in (False, True):
            y = torch.rot90(x, k, (2, 3))
            y = y.flip(3) if flip else y
            p = net(y).float().softmax(1)
            p = torch.rot90(p.flip(3) if flip else p, -k, (2, 3))
            total = p if total is None else total + p
    return total / 8


def _out_of_memory(err: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or "out of memory" in str(err).lower()


def infer_plane(net, image: np.ndarray, plan: TilePlan, out, *, batch_size: int,
                device, tta: bool = False, notes: list[str] | None = None) -> Iterator[int]:
    """Run ``net`` over the tiles of one normalised ``(H, W, C)`` image.

    Writes softmax probabilities into ``out`` (``(C, H, W)`` array-like) and yields the
    number of tiles done after each batch. When the device runs out of memory, the batch
    is halved and retried (saying so in ``notes``); with one tile per batch it gives up
    with a sentence that says what to change.
    """
    import torch

    from .device import memory_format

    tiles = list(plan)
    done = 0
    with torch.inference_mode():
        i = 0
        while i < len(tiles):
            chunk = tiles[i : i + batch_size]
            batch = np.stack([np.moveaxis(plan.read(image, t), -1, 0) for t in chunk])
            try:
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(
                    device, memory_format=memory_format(device))
                prob = forward(net, x, tta).cpu().numpy()
            except (RuntimeError, MemoryError) as err:
                if not _out_of_memory(err):
                    raise
                del err
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch_size == 1:
                    raise InputError(
                        f"the {device.type.upper()} device ran out of memory for a single tile "
                        f"of {plan.input_shape[0]} px; choose a smaller tile size or the CPU."
                    ) from None
                batch_size = max(1, batch_size // 2)
                if notes is not None:
                    notes.append(f"out of memory on {device.type.upper()}: continuing with "
                                 f"batches of {batch_size} tile(s)")
                continue
            for t, p in zip(chunk, prob):
                out[(slice(None), *t.out)] = p[(slice(None), *t.crop)]
            done += len(chunk)
            i += len(chunk)
            yield done


def predict(model, image, config: PredictConfig | None = None, *, out_probabilities=None,
            labels: bool = True, name: str = "image"
            ) -> Generator[PredictEvent, None, PredictResult]:
    """Predict an image or a stack; see the module docstring.

    Parameters
    ----------
    model : Checkpoint, str or Path
        A loaded model or a model file.
    image : array-like
        ``(H, W)``, ``(H, W, C)``, ``(N, H, W)`` or ``(N, H, W, C)``; numpy, memmap, zarr
        or Dask (read tile by tile).
    config : PredictConfig
        Tile and batch size, device, thresholds.
    out_probabilities : array-like, optional
        Where to write the float32 probabilities (``(C, H, W)`` or ``(N, C, H, W)``);
        a numpy array is allocated if not given.
    labels : bool
        Also compute labels (instances or classes) in memory.
    name : str
        How the image is called in error messages.
    """
    from .device import describe_device, resolve_device

    config = config or PredictConfig()
    ckpt = as_checkpoint(model)
    channels = ckpt.config.in_channels
    if not hasattr(image, "shape"):
        image = np.asarray(image)
    stack, n = split_planes(image, channels, name)
    spatial = tuple(image.shape[1:3] if stack else image.shape[:2])
    n_classes = ckpt.config.n_classes
    prob_shape = (n, n_classes, *spatial) if stack else (n_classes, *spatial)
    if out_probabilities is None:
        out_probabilities = np.zeros(prob_shape, np.float32)
    elif tuple(out_probabilities.shape) != prob_shape:
        raise InputError(f"the output array has shape {tuple(out_probabilities.shape)}; "
                         f"expected {prob_shape}.")
    device = resolve_device(config.device)
    net = ckpt.build(device)
    plan = plan_tiles(spatial, ckpt.config, config.tile_size)
    total = len(plan) * n
    start = time.perf_counter()
    label_out = None
    if labels:
        dtype = np.int32 if ckpt.mode == "semantic" else np.uint32
        label_out = np.zeros((n, *spatial) if stack else spatial, dtype)
    yield PredictEvent(0, total, 0, n, f"predicting on {describe_device(device)}")
    notes: list[str] = []
    for k in range(n):
        plane = as_channels_last(image[k] if stack else image, name, channels)
        norm = normalize(plane, name=name)
        out = out_probabilities[k] if stack else out_probabilities
        seen = len(notes)
        for done in infer_plane(net, norm, plan, out, batch_size=config.batch_size,
                                device=device, tta=config.tta, notes=notes):
            message = notes[-1] if len(notes) > seen else ""
            seen = len(notes)
            yield PredictEvent(k * len(plan) + done, total, k, n, message)
        if labels:
            lab = labels_from_probabilities(
                np.asarray(out), mode=ckpt.mode, target=ckpt.target,
                threshold=ckpt.threshold if config.threshold is None else config.threshold,
                method=config.instance_method, min_size=config.min_size)
            if stack:
                label_out[k] = lab
            else:
                label_out = lab
    if label_out is not None and ckpt.mode != "semantic":
        top = int(label_out.max(initial=0))
        label_out = label_out.astype(np.uint16 if top < 2**16 else np.uint32)
    return PredictResult(labels=label_out, probabilities=out_probabilities,
                         device=describe_device(device), seconds=time.perf_counter() - start,
                         mode=ckpt.mode, target=ckpt.target, notes=notes)

