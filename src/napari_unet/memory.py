"""Whether a prediction or a training fits in the memory free, rather than be killed by
the operating system with whatever else was open (napari and the user's unsaved layers with
it): an image whose prediction would take more than half of it (a slide, a long z-stack) is
predicted block by block on disk instead (:func:`napari_unet.predict.zarr_outputs`), where
it takes the memory of a block; a training whose images could not be prepared is refused
in a sentence. The estimates are measured by ``benchmarks/memory_estimate.py``."""

from __future__ import annotations

import os

import numpy as np

from . import cgroups
from .errors import InputError
from .scale import scale_factor

#: Bytes one plane's prediction takes in memory per pixel, with room to spare: its
#: probabilities, labels and the watershed's arrays (2.96 GB at 8192², benchmarks/RESULTS.md).
BYTES_PER_PIXEL = 48


def free_memory() -> int | None:
    """The memory available to a new allocation now (bytes), None where it is unknown: the
    machine's, or less where a control group limits this process (a cluster job, a
    container), whose limit the kernel enforces by killing it however much the machine
    has free."""
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with napari and distributed
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    allowed = cgroups.memory_headroom()
    return free if allowed is None else min(free, allowed)


def planes_of(shape: tuple[int, ...], channels: int) -> tuple[int, int]:
    """``(planes, pixels of a plane)`` of an image of ``shape`` for a model of ``channels``
    channels, from the shape alone: a channel axis last (a grey image saved in colour
    included), the planes before the last two axes."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 3 and (channels > 1 or shape[-1] in (1, 3, 4)):
        shape = shape[:-1]
    if len(shape) < 2:
        return 1, int(np.prod(shape))
    return int(np.prod(shape[:-2])), shape[-2] * shape[-1]


def prediction_bytes(shape: tuple[int, ...], config) -> int:
    """About how many bytes :func:`napari_unet.predict.predict` takes in memory for an
    image of ``shape`` with a model of ``config`` (a :class:`~napari_unet.config.ModelConfig`):
    one plane's prediction, and the probabilities (float32) and labels of every other (as
    they are made, and their compacted copy at the end). The network's own working memory
    is left out: predicting on disk takes it too."""
    planes, pixels = planes_of(shape, config.in_channels)
    kept = 4 * config.out_channels + 8
    return pixels * BYTES_PER_PIXEL + (planes - 1) * pixels * kept


#: Bytes a pixel of a grey training image takes while its targets and weight map are
#: made, with room to spare (55 measured on DSB nuclei; benchmarks/memory_estimate.py);
#: 4 more for each further channel.
TRAIN_BYTES_PER_PIXEL = 64


def check_training_fits(pixels: int, channels: int = 1) -> None:
    """Refuse in a sentence a training whose ``pixels`` (of every image, after cropping
    to annotated regions) could not be prepared in the memory free: it would be killed,
    in napari with the labels just painted and not yet saved."""
    _refuse_beyond_free(
        pixels * (TRAIN_BYTES_PER_PIXEL + 4 * (max(channels, 1) - 1)),
        "training on these images", ": mark the part of each image whose cells are all "
        "labelled (the Train widget's 'Labelled in' Shapes layer, or --regions) and only "
        "that part is used, or train on a crop of the image.")


def check_prediction_fits(shape: tuple[int, ...], config, factor: float = 1.0) -> None:
    """Refuse in a sentence a prediction in memory of an image of ``shape`` (magnified by
    ``factor``) that could not fit in the memory free: from Python, where nothing chose
    the disk for it, it would be killed."""
    _refuse_beyond_free(
        prediction_bytes(shape, config) * max(factor, 1.0) ** 2,
        "predicting this image in memory", ": write its labels to disk block by block "
        "instead (predict(..., out_labels=...), with napari_unet.predict.zarr_outputs; the "
        "command line and the Predict widget do so by themselves).")


def beyond_memory(image, ckpt, config) -> str:
    """Why ``image`` is to be predicted on disk (in memory it would take more than half the
    memory free now), or '' where it is predicted in memory. An image to be resized to a
    cell diameter is predicted in memory (resizing is not done block by block); one that
    would not fit at all is refused in a sentence rather than risk the kill."""
    need = prediction_bytes(image.shape, ckpt.config)
    if config.diameter:
        if config.diameter != "auto":
            need *= max(scale_factor(ckpt.object_diameter, config.diameter), 1.0) ** 2
        _refuse_beyond_free(
            need, "predicting this image resized to its cell diameter", "; resizing is not "
            "done block by block on disk: leave the cell diameter empty (the image is then "
            "predicted at its own size, block by block), or resize the image first.")
        return ""
    free = free_memory()
    if free is None or need <= free / 2:
        return ""
    return f"in memory it would need about {_gb(need)}, {_gb(free)} are free"


def _refuse_beyond_free(need: float, what: str, advice: str) -> None:
    """An InputError saying that ``what`` would need ``need`` bytes, more than are free,
    and ``advice``; nothing where they are free, or where the free memory is unknown."""
    free = free_memory()
    if free is not None and need > free:
        raise InputError(f"{what} would need about {_gb(need)} of memory and {_gb(free)} "
                         f"are free{advice}")


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"
