"""Prediction of images larger than one machine on a Dask cluster.

``predict_distributed(model_file, image, out_labels, client=client)`` runs one task per
block of the labels output (its zarr chunks; of every plane of a stack, all at once): the
task reads the block plus the network's
context from the image (mirrored beyond the image border), runs the overlap-tile pass and
writes the block's class probabilities into a zarr array; no two tasks write the same chunk.
The model travels as its file path and is loaded once per worker process; on a machine with
GPUs each worker takes one (by its index). The instance labels are then made block by block
with :mod:`napari_unet.blockwise` on the same cluster (per-block ids offset, objects merged
across block faces), so an object cut by a block border gets one id; a stack's planes are
labelled so one by one, then linked (``config.link_planes``) as in one process.

The probabilities equal those of single-process :func:`napari_unet.predict.predict` to
float tolerance: every block starts on the network's pooling grid and is normalised with
the same percentiles, computed once for the whole image (of a stack, for each plane).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .blockwise import blocks
from .config import PredictConfig
from .errors import InputError
from .predict import (
    BLOCKWISE_DIAMETER,
    PredictEvent,
    PredictResult,
    drop_unit_channel,
    link_objects,
    scratch_beside,
    split_planes,
    stream_labels,
)
from .scale import scale_factor
from .stacks import flat_stack, plane


class SyncDask:
    """A Dask array read window by window with the synchronous scheduler, so that a task
    running on a Dask worker never submits tasks of its own."""

    def __init__(self, array):
        self.array, self.shape, self.dtype = array, tuple(array.shape), array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        return np.asarray(self.array[key].compute(scheduler="synchronous"))


def plane_views(image, channels: int, name: str = "image") -> tuple[list, tuple[int, ...]]:
    """Lazy ``(H, W, C)`` views of the planes of an image array-like (numpy, zarr, Dask): of
    a 2D image one, of a stack ``(N, H, W[, C])`` or a time-lapse of z-stacks
    ``(T, Z, H, W[, C])`` one a plane (in that order); and the axes before the planes'
    (``()``, ``(N,)``, ``(T, Z)``)."""
    import dask.array as da

    from .data import as_channels_last
    from .stacks import one_stack, outer_axes

    if image.ndim == 3 and image.shape[-1] != channels and image.shape[0] == channels:
        image = da.moveaxis(da.asarray(image), 0, -1)  # OME-Zarr stores channels first
    image = drop_unit_channel(image, channels)
    outer = outer_axes(image, channels)
    lead = (*outer, int(image.shape[len(outer)])) if outer else ()
    if outer:
        image = one_stack(da.asarray(image), outer)
    stack, n = split_planes(image, channels, name)
    if stack and not isinstance(image, np.ndarray):
        image = da.asarray(image)  # a zarr array's plane would be read whole here

    def view(plane):
        if plane.ndim == 2:
            plane = da.asarray(plane)[..., None]
        if isinstance(plane, da.Array):
            plane = SyncDask(plane)
        return as_channels_last(plane, name, channels)

    if not stack:
        return [view(image)], ()
    return [view(image[k]) for k in range(n)], lead or (n,)


@functools.lru_cache(maxsize=2)
def _worker_model(path: str, mtime: float, device_name: str):
    """The checkpoint and its network, loaded once per worker process and model file."""
    from .checkpoint import load_checkpoint
    from .device import resolve_device

    device = resolve_device(device_name)
    ckpt = load_checkpoint(path)
    return ckpt, ckpt.build(device), device


def models_loaded() -> int:
    """How many times this process loaded a model for distributed prediction."""
    return _worker_model.cache_info().misses


def _device_for_this_worker(name: str) -> str:
    """One GPU per worker: worker k of the cluster takes GPU ``k mod n``."""
    import torch

    if name not in ("auto", "cuda") or not torch.cuda.is_available():
        return name
    try:
        from distributed import get_worker

        index = int(str(get_worker().name).rsplit("-", 1)[-1])
    except (ImportError, ValueError):
        index = 0
    return f"cuda:{index % torch.cuda.device_count()}"


@dataclass(frozen=True)
class _BlockJob:
    model: str
    mtime: float
    out: object
    lo: np.ndarray
    hi: np.ndarray
    config: PredictConfig
    threads: int | None = None

    def __call__(self, sl, image) -> None:
        from .device import auto_batch_size, auto_tile_size, resolve_precision
        from .label_offset import shift_margin
        from .predict import infer_plane
        from .tiling import plan_tiles

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)  # Dask starts workers with one thread
        ckpt, net, device = _worker_model(self.model, self.mtime,
                                          _device_for_this_worker(self.config.device))
        shape = tuple(s.stop - s.start for s in sl)
        precision = resolve_precision(device, self.config.precision)
        tile_size = self.config.tile_size or auto_tile_size(ckpt.config, device, precision)
        plan = plan_tiles(shape, ckpt.config, tile_size, self.config.halo,
                          shift_margin(ckpt.label_offset))
        buf = np.zeros((ckpt.config.out_channels, *shape), np.float32)
        batch = self.config.batch_size or auto_batch_size(ckpt.config, plan.input_shape,
                                                          device, precision)
        for _ in infer_plane(net, image, plan, buf, batch_size=batch, device=device,
                             tta=self.config.tta, lo=self.lo, hi=self.hi,
                             origin=(sl[0].start, sl[1].start), precision=precision,
                             label_offset=ckpt.label_offset):
            pass
        self.out[(slice(None), *sl)] = buf


def _run_block(sl, *, job: _BlockJob, image) -> None:
    job(sl, image)


def dask_map(client):
    """A mapper for the block passes of :func:`napari_unet.predict.stream_labels` that runs
    on ``client``; numpy arguments are sent to every worker once."""

    def mapper(func, items, **kwargs):
        # not keyed by their content: an array equal to one sent before (the same table
        # for two planes) took its key, and was lost when that one was released
        sent = {k: client.scatter(v, broadcast=True, hash=False)
                if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        return client.gather(client.map(func, list(items), pure=False, **sent))

    return mapper


def _chunks_2d(array) -> tuple[int, int]:
    chunks = getattr(array, "chunks", None)
    if not chunks:
        raise InputError("the labels output must be a chunked array (zarr); its chunks are "
                         "the blocks of the distributed prediction.")
    return int(chunks[-2]), int(chunks[-1])


def predict_distributed(model, image, out_labels, *, client, config: PredictConfig | None = None,
                        out_probabilities=None, threads: int | None = None,
                        name: str = "image") -> Generator[PredictEvent, None, PredictResult]:
    """Predict a large 2D image, or a stack of them, on a Dask cluster into ``out_labels``;
    see the module text.

    Parameters
    ----------
    model : str or Path
        The model file (each worker loads it once), or a shipped model's name.
    image : array-like
        ``(H, W)``, ``(H, W, C)`` or OME-Zarr-style ``(C, H, W)``, or a stack of them
        ``(N, H, W[, C])``: a zarr array, a Dask array or a numpy array (sent to the
        workers once).
    out_labels : zarr array
        ``(H, W)`` (``(N, H, W)``) integer output; its chunks are the tasks' blocks and
        must be multiples of ``2**depth`` of the network.
    client : distributed.Client
        Where the work runs.
    out_probabilities : zarr array, optional
        ``(C, H, W)`` (``(N, C, H, W)``) float32 probabilities, chunked like the labels; a
        temporary zarr beside the labels when not given.
    threads : int, optional
        Torch threads of each worker on a CPU (Dask starts workers with
        ``OMP_NUM_THREADS=1``).
    """
    import zarr

    from .checkpoint import load_checkpoint
    from .data import percentiles
    from .pretrained import resolve_model

    config = config or PredictConfig()
    path = resolve_model(model)
    ckpt = load_checkpoint(path)
    if scale_factor(ckpt.object_diameter, config.diameter) != 1.0:
        raise InputError(BLOCKWISE_DIAMETER)
    views, lead = plane_views(image, ckpt.config.in_channels, name)
    n, stack = len(views), bool(lead)
    spatial = tuple(views[0].shape[:2])
    if tuple(out_labels.shape) != (*lead, *spatial):
        raise InputError(f"the labels output has shape {tuple(out_labels.shape)}; expected "
                         f"{(*lead, *spatial)}.")
    block = _chunks_2d(out_labels)
    align = 2**ckpt.config.depth
    if block[0] % align or block[1] % align:
        raise InputError(f"the labels output's chunks {block} must be multiples of {align} "
                         "(the network's pooling grid).")
    channels = ckpt.config.out_channels
    prob_shape = (*lead, channels, *spatial)
    scratch = None
    if out_probabilities is None:
        scratch = scratch_beside(out_labels, ".napari-unet-prob-")
        out_probabilities = zarr.create_array(store=scratch.name, dtype="float32",
                                              shape=prob_shape, compressors=None,
                                              chunks=(1,) * len(lead) + (channels, *block))
    if tuple(out_probabilities.shape) != prob_shape:
        raise InputError(f"the probabilities output has shape "
                         f"{tuple(out_probabilities.shape)}; expected {prob_shape}.")
    if stack:  # each plane's outputs (a time-lapse's planes as one stack, in place)
        prob_planes, label_planes = (flat_stack(a, lead[:-1])
                                     for a in (out_probabilities, out_labels))
        outputs = [(plane(prob_planes, k), plane(label_planes, k)) for k in range(n)]
    else:
        outputs = [(out_probabilities, out_labels)]
    mtime = os.path.getmtime(path)
    start = time.perf_counter()
    parts = blocks(spatial, block)
    total = len(parts) * n
    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    yield PredictEvent(0, total, 0, n, f"predicting {total} blocks on {n_workers} Dask "
                       "worker(s)")
    from distributed import as_completed

    futures = []
    try:
        for k, view in enumerate(views):  # each plane normalised on its own, as predict does
            lo, hi = percentiles(view, name=name)
            if isinstance(view, np.ndarray):
                view = client.scatter(view, broadcast=True, hash=False)
            job = _BlockJob(str(path), mtime, outputs[k][0], lo, hi, config, threads)
            futures += client.map(_run_block, parts, job=job, image=view, pure=False)
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            yield PredictEvent(done, total, (done - 1) // len(parts), n)
        for k, (prob, labels) in enumerate(outputs):
            for doing in stream_labels(ckpt, prob, labels, config, mapper=dask_map(client)):
                yield PredictEvent(total, total, k, n, doing)
        if stack and config.link_planes:
            yield from link_objects(out_labels, config)
    finally:
        client.cancel(futures)
        if scratch is not None:
            out_probabilities = None
            scratch.cleanup()
    return PredictResult(labels=out_labels, probabilities=out_probabilities,
                         device=f"Dask ({n_workers} worker(s))",
                         seconds=time.perf_counter() - start, mode=ckpt.mode,
                         target=ckpt.target, notes=[])
