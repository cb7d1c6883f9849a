"""Images in, network inputs out: layout checks, normalisation and random training patches.

Images are channels-last, as napari and scikit-image hold them: ``(H, W)`` grey or
``(H, W, C)``. Labels are ``(H, W)`` integers.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .memory import check_training_fits
from .tiling import read_window

#: Percentiles mapped to 0 and 1 by :func:`normalize`.
NORM_LOW, NORM_HIGH = 1.0, 99.8
_MAX_SAMPLE = 4_000_000  # pixels looked at for the percentiles of a large image


def as_array(image, name: str = "image", hint: str = ""):
    """``image`` as an array (array-likes kept as they are: Dask, zarr, memmap; a PyTorch
    tensor as numpy), or refused in a sentence where it is none: ``None``, a file name,
    arrays of different shapes in one list (``hint``: what to do instead)."""
    import os

    if type(image).__module__.partition(".")[0] == "torch" and hasattr(image, "detach"):
        tensor = image.detach().cpu()  # a PyTorch tensor, on a GPU too
        return (tensor.float() if str(tensor.dtype) == "torch.bfloat16" else tensor).numpy()
    if hasattr(image, "shape"):
        return image
    if image is None:
        raise InputError(f"{name} is None; expected an image (a numpy, Dask or zarr array).")
    if isinstance(image, (str, bytes, os.PathLike)):
        raise InputError(f"{name} is a file name ({os.fsdecode(image)}), not an image: read "
                         "it first, e.g. with napari_unet.io.read_image(path).")
    try:
        return np.asarray(image)
    except ValueError:  # numpy: "inhomogeneous shape"
        raise InputError(f"{name} is a list of arrays of different shapes, not one image"
                         f"{'; ' + hint if hint else ''}.") from None


def as_channels_last(image, name: str = "image", channels: int | None = None) -> np.ndarray:
    """Check a 2D image and return it as ``(H, W, C)`` (a view where possible).

    ``channels`` is the channel count a model expects; an RGBA image given to a 3-channel
    model loses its alpha channel, anything else that does not match is refused.
    """
    arr = as_array(image, name)
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim != 3:
        raise InputError(
            f"{name} has shape {tuple(arr.shape)}; expected a 2D image (H, W) or (H, W, C)."
        )
    if arr.dtype == bool:
        arr = np.asarray(arr).astype(np.uint8)
    elif not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name} has data type {arr.dtype}; expected numbers.")
    if channels is not None and arr.shape[-1] != channels:
        if channels == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        else:
            raise InputError(
                f"{name} has {arr.shape[-1]} channel(s) but the model expects {channels}."
            )
    if min(arr.shape[:2]) < 1:
        raise InputError(f"{name} is empty (shape {tuple(arr.shape)}).")
    return arr


COLOURS = ("red", "green", "blue")


def grey_of_colour(image) -> tuple[np.ndarray | None, str]:
    """The grey image that an RGB(A) array ``(..., 3|4)`` holds, if it holds one.

    A grey image saved as RGB has three equal colour channels; one fluorescence channel
    shown in its colour (DAPI in blue) has one colour channel that varies and two that are
    constant. Either is that one channel (alpha is ignored). Returns ``(grey, why)``, or
    ``(None, "")`` for a real colour image or one that is not in memory (lazy arrays are
    not read whole to find out).
    """
    if not isinstance(image, np.ndarray) or image.ndim < 3 or image.shape[-1] not in (3, 4):
        return None, ""
    red = image[..., 0]
    if np.array_equal(red, image[..., 1]) and np.array_equal(red, image[..., 2]):
        return red, "its three colour channels are equal"
    varying = [c for c in range(3) if image[..., c].size and np.ptp(image[..., c]) > 0]
    if len(varying) == 1:
        return image[..., varying[0]], f"only its {COLOURS[varying[0]]} channel holds signal"
    return None, ""


def match_channels(images: list, names: list, channels: int | None = None
                   ) -> tuple[list, list[str]]:
    """Channels-last training images brought to one channel count; ``(images, notes)``.

    ``channels``: what the model to fine-tune reads, if any. RGB images that hold a grey
    image (:func:`grey_of_colour`) are read as grey where the model reads one channel, or
    where no image of the set has real colour; grey images join a set of colour images
    as three equal channels, and colour images lose their alpha channel. Anything else is
    left for the caller to refuse.
    """
    if {a.shape[-1] for a in images} <= {1}:
        return images, []
    greys = [grey_of_colour(a) for a in images]
    colour = [a.shape[-1] in (3, 4) and g is None for a, (g, _) in zip(images, greys)]
    out, done = list(images), {}
    if channels == 1 or (channels is None and not any(colour)):
        for k, (grey, why) in enumerate(greys):
            if grey is not None:
                out[k] = grey[..., None]
                done.setdefault(f"read as grey ({why})", []).append(names[k])
    elif channels in (None, 3) and any(colour):
        for k, a in enumerate(images):
            if a.shape[-1] == 1:
                out[k] = np.repeat(a, 3, axis=-1)
                done.setdefault("grey: used as three equal colour channels", []).append(names[k])
            elif a.shape[-1] == 4:
                out[k] = a[..., :3]
    return out, [f"{_some(which)} {what}" for what, which in done.items()]


def _some(names: list) -> str:
    """Names in a sentence: one or two by name, more by count."""
    unique = list(dict.fromkeys(names))
    return " and ".join(unique) if len(unique) <= 2 else f"{len(names)} images"


def percentiles(image: np.ndarray, low: float = NORM_LOW, high: float = NORM_HIGH,
                name: str = "the image"):
    """Per-channel low/high percentiles of a ``(H, W, C)`` image (subsampled if large)."""
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / _MAX_SAMPLE)))
    sample = np.asarray(image[::step, ::step])
    if sample.dtype.kind in "ub" and sample.dtype.itemsize <= 2:  # 8- and 16-bit images
        flat = sample.reshape(-1, sample.shape[-1])
        lo, hi = np.array([_counted_percentiles(flat[:, c], (low, high))
                           for c in range(flat.shape[1])]).T
        return lo.astype(np.float32), hi.astype(np.float32)
    sample = sample.astype(np.float32, copy=False)
    if not np.all(np.isfinite(sample)):
        raise InputError(f"{name} contains NaN or infinite values; replace them first.")
    flat = sample.reshape(-1, sample.shape[-1])
    lo, hi = np.percentile(flat, [low, high], axis=0)
    return lo.astype(np.float32), hi.astype(np.float32)


def _counted_percentiles(values: np.ndarray, qs) -> list[float]:
    """``np.percentile(values, qs)`` (linear interpolation) of unsigned 8- or 16-bit
    values, from their counts: a tenth of the time of sorting (a 4096 px image's percentiles
    took 60 ms, as long as the GPU's whole prediction of it took beyond the network)."""
    cum = np.cumsum(np.bincount(values.ravel().astype(np.intp, copy=False)))
    n = int(cum[-1])
    out = []
    for q in qs:
        h = (n - 1) * q / 100.0
        k = int(np.floor(h))
        below, above = np.searchsorted(cum, [k, min(k + 1, n - 1)], side="right")
        out.append(below + (h - k) * (above - below))
    return out


def offset_and_scale(lo, hi, shape=(-1,)) -> tuple[np.ndarray, np.ndarray]:
    """The float32 per-channel ``lo`` and ``hi - lo`` (1 for a flat channel) that
    normalisation subtracts and divides by, reshaped to ``shape`` to broadcast."""
    lo = np.asarray(lo, np.float32).reshape(shape)
    hi = np.asarray(hi, np.float32).reshape(shape)
    return lo, np.where(hi - lo > 1e-6, hi - lo, 1.0).astype(np.float32)


def normalize(image: np.ndarray, lo=None, hi=None, name: str = "the image") -> np.ndarray:
    """Map each channel's 1st..99.8th percentile to 0..1 (float32, ``(H, W, C)``)."""
    if lo is None or hi is None:
        lo, hi = percentiles(image, name=name)
    lo, scale = offset_and_scale(lo, hi, np.shape(lo))
    out = np.asarray(image, dtype=np.float32) - lo
    out /= scale
    return out


def normalize_channels_first(batch: np.ndarray, lo, hi) -> np.ndarray:
    """:func:`normalize` with given ``lo``/``hi`` for a float32 ``(N, C, H, W)`` batch of
    tiles, in place."""
    lo, scale = offset_and_scale(lo, hi, (1, -1, 1, 1))
    batch -= lo
    batch /= scale
    return batch


def check_pair(image: np.ndarray, labels: np.ndarray, name: str) -> None:
    """Refuse an image/labels pair that cannot be trained on."""
    if labels.ndim != 2:
        raise InputError(f"labels of {name} have shape {tuple(labels.shape)}; expected (H, W).")
    if (image.ndim == 3 and tuple(image.shape[1:]) == tuple(labels.shape)
            and image.shape[0] != labels.shape[0]):
        raise InputError(
            f"{name} has shape {tuple(image.shape)}: a stack of {image.shape[0]} planes (or "
            "channels first) where one 2D image was expected; give each plane as an image "
            "of its own, or channels last (H, W, C)."
        )
    if tuple(image.shape[:2]) != tuple(labels.shape):
        raise InputError(
            f"{name}: image shape {tuple(image.shape[:2])} and labels shape "
            f"{tuple(labels.shape)} differ."
        )
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        lab = np.asarray(labels)
        if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
            raise InputError(f"labels of {name} are not whole numbers.")
    if np.any(np.asarray(labels) < 0):
        raise InputError(f"labels of {name} contain negative values.")


class PatchSampler:
    """Random training patches from normalised images, their targets and weights.

    Each patch's labelled (output) region is ``out_size`` square; its input carries the
    network's context around it, mirrored beyond the image. A ``valid`` mask marks real
    pixels so that mirrored or deformed-in pixels carry no loss. With probability
    ``foreground_bias`` a patch is centred on a random labelled object pixel, otherwise on
    any pixel that carries weight (pixels outside an annotated region carry none). Every
    image is drawn equally often, whatever its size (as nnU-Net, StarDist and Cellpose
    do), so a few large images do not drown the small ones among ~30 annotated examples.
    """

    def __init__(self, images, targets, weights, *, in_size: int, out_size: int,
                 foreground_bias: float, augment, rng: np.random.Generator) -> None:
        self.images, self.targets, self.weights = images, targets, weights
        self.in_size, self.out_size = in_size, out_size
        self.foreground_bias = foreground_bias
        self.augment = augment
        self.rng = rng
        # pixels without weight lie outside an annotated region: no patch is centred there
        self._fg = [np.flatnonzero((t.ravel() > 0) & (w.ravel() > 0))
                    for t, w in zip(targets, weights)]
        self._inside = [None if np.all(w > 0) else np.flatnonzero(w.ravel() > 0)
                        for w in weights]

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One patch: image ``(C, in, in)``, target ``(out, out)``, weights ``(out, out)``."""
        rng = self.rng
        i = int(rng.integers(len(self.images)))
        img, tgt, wts = self.images[i], self.targets[i], self.weights[i]
        h, w = tgt.shape
        half = self.out_size // 2
        if self._fg[i].size and rng.random() < self.foreground_bias:
            cy, cx = np.unravel_index(rng.choice(self._fg[i]), (h, w))
        elif self._inside[i] is not None and self._inside[i].size:
            cy, cx = np.unravel_index(rng.choice(self._inside[i]), (h, w))
        else:
            cy, cx = rng.integers(0, h), rng.integers(0, w)
        # keep the output window inside the image where it fits
        y0 = int(np.clip(cy - half, 0, max(h - self.out_size, 0)))
        x0 = int(np.clip(cx - half, 0, max(w - self.out_size, 0)))
        m = (self.in_size - self.out_size) // 2
        top, left = y0 - m, x0 - m
        size = self.in_size
        x = read_window(img, top, left, size, size)
        t = read_window(tgt, top, left, size, size)
        wt = read_window(wts, top, left, size, size)
        rows = np.arange(top, top + size)[:, None]
        cols = np.arange(left, left + size)[None, :]
        valid = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).astype(np.float32)
        if self.augment is not None:
            x, t, wt, valid = self.augment(x, t, wt, valid, rng)
        crop = slice(m, m + self.out_size)
        t = t[crop, crop]
        wt = wt[crop, crop] * valid[crop, crop]
        return (np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32),
                np.ascontiguousarray(t, dtype=np.int64),
                np.ascontiguousarray(wt, dtype=np.float32))

    def batch(self, n: int):
        xs, ts, ws = zip(*(self.sample() for _ in range(n)))
        return np.stack(xs), np.stack(ts), np.stack(ws)


def plane_name(k: int, labels_shape) -> str:
    """How plane ``k`` of :func:`training_planes` is called: ``plane 3`` of a stack,
    ``time 2, plane 3`` of a time-lapse of z-stacks (counted from 1)."""
    outer, depth = tuple(labels_shape[:-3]), labels_shape[-3]
    if not outer:
        return f"plane {k + 1}"
    time = "/".join(str(i + 1) for i in np.unravel_index(k // depth, outer))
    return f"time {time}, plane {k % depth + 1}"


def training_planes(image, labels, *, rgb: bool = False, name: str = "image", region=None):
    """Split a layer's data into 2D training pairs, skipping planes without any label.

    ``image`` may be ``(H, W)``, RGB ``(H, W, 3|4)`` (``rgb=True``), channels-first
    ``(C, H, W)`` with ``(H, W)`` labels, or a stack of any of these with a labels stack of
    the same plane count, or a time-lapse of z-stacks ``(T, Z, H, W[, C])`` with labels
    ``(T, Z, H, W)`` (its planes numbered ``t * Z + z``). ``region``: a boolean array of
    the labels' shape, where the labels are complete (a plane with a region but no label is
    kept: its region has no object).
    Returns ``(images, labels, regions, kept)`` with channels-last images (regions are
    None without ``region``, and for planes it does not touch) and the indices of the
    planes kept (``[0]`` for 2D labels). Images and labels are copies of the planes kept,
    cropped to the region's box (:func:`region_box`) where there is a region; a lazy
    ``image`` or ``labels`` (Dask, zarr: labels predicted on disk, then corrected) is read
    only there (the labels of a plane without a region a chunk at a time to find whether
    it is labelled). Planes that could not be prepared for training in the memory free are
    refused in a sentence before anything is copied.
    """
    img, lab = image, _lazy_or_array(labels)
    ishape, lshape = tuple(img.shape), tuple(lab.shape)
    if lab.ndim > 3 and ishape[: lab.ndim] == lshape:  # a time-lapse of z-stacks: its planes
        from .stacks import one_stack

        img, lab = one_stack(img, lshape[:-3]), lab.reshape(-1, *lshape[-2:])
        if region is not None and np.shape(region) == lshape:
            region = np.reshape(region, lab.shape)
        ishape, lshape = tuple(img.shape), tuple(lab.shape)
    if rgb and ishape[:-1] != lshape:
        raise InputError(f"{name}: image shape {ishape[:-1]} and labels shape {lshape} differ.")
    first = False  # channels first, moved last as each kept plane is read
    if rgb or ishape == lshape:
        planes = [img] if lab.ndim == 2 else [img[k] for k in range(lshape[0])]
    elif lab.ndim == 2 and img.ndim == 3 and ishape[1:] == lshape:
        planes, first = [img], True
    elif img.ndim == 4 and lab.ndim == 3 and ishape[0] == lshape[0] and ishape[2:] == lshape[1:]:
        planes, first = [img[k] for k in range(lshape[0])], True
    else:
        raise InputError(f"{name}: image shape {ishape} and labels shape {lshape} do not match.")
    if lab.ndim not in (2, 3):
        raise InputError(f"{name}: labels must be 2D or a stack of 2D planes, not {lab.ndim}D.")
    lab_planes = [lab] if lab.ndim == 2 else [lab[k] for k in range(lshape[0])]
    reg_planes = [None] * len(lab_planes)
    if region is not None:
        if np.shape(region) != lshape:
            raise InputError(f"{name}: the annotated region has shape {np.shape(region)}, "
                             f"the labels {lshape}.")
        region = np.asarray(region, bool)
        reg_planes = [r if r.any() else None for r in ([region] if lab.ndim == 2 else region)]
    keep = [k for k, p in enumerate(lab_planes) if reg_planes[k] is not None or np.any(p)]
    boxes = {k: region_box(reg_planes[k]) if reg_planes[k] is not None else
             (slice(None), slice(None)) for k in keep}
    channels = ishape[-1] if rgb else (ishape[0] if img.ndim == 3 else ishape[1]) if first else 1
    check_training_fits(sum(lab_planes[k][boxes[k]].size for k in keep), channels)

    def read(plane, box):  # only the region's box (and its margin) is copied
        plane = np.asarray(plane[(slice(None), *box)] if first else plane[box])
        return np.array(np.moveaxis(plane, 0, -1) if first else plane, order="C")

    return ([read(planes[k], boxes[k]) for k in keep],
            [np.array(lab_planes[k][boxes[k]]) for k in keep],
            [None if reg_planes[k] is None else reg_planes[k][boxes[k]] for k in keep], keep)


def _lazy_or_array(array):
    """``array`` as numpy, or a lazy one (zarr, Dask) as a Dask array: read where indexed."""
    if isinstance(array, np.ndarray) or not hasattr(array, "chunks"):
        return np.asarray(array)
    import dask.array as da

    return da.asarray(array)


#: Image kept around an annotated region's bounding box as real context for the network
#: (px); it carries no loss.
REGION_MARGIN = 64


def region_box(region) -> tuple[slice, slice] | None:
    """The bounding box of a 2D boolean ``region`` plus :data:`REGION_MARGIN` on every side
    (within the image), or None where it is empty."""
    rows = np.flatnonzero(np.any(region, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(region, axis=0))
    m = REGION_MARGIN
    return (slice(max(rows[0] - m, 0), rows[-1] + 1 + m),
            slice(max(cols[0] - m, 0), cols[-1] + 1 + m))


def image_for_model(image, *, rgb: bool, channels: int):
    """A layer's data laid out for :func:`napari_unet.predict.predict` (channels last).

    Channels-first data ``(C, H, W)`` / ``(N, C, H, W)`` with ``C`` equal to the model's
    channel count is moved to channels-last; everything else passes through.
    """
    if rgb or channels == 1:
        return image
    axis = {3: 0, 4: 1}.get(image.ndim)
    if axis is None or image.shape[axis] != channels or image.shape[-1] == channels:
        return image
    if not isinstance(image, np.ndarray):  # lazy data stays lazy
        import dask.array as da

        return da.moveaxis(da.asarray(image), axis, -1)
    return np.moveaxis(image, axis, -1)


class BatchPrefetcher:
    """Prepare training batches in a background thread while the device computes.

    scipy's resampling and torch release the GIL, so on a CPU the augmentation of the next
    batch overlaps with the current step. ``get()`` returns the next batch (re-raising an
    error of the thread); ``close()`` stops the thread.
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, depth: int = 2) -> None:
        import queue
        import threading

        self._sampler, self._batch_size = sampler, batch_size
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="napari-unet-batches",
                                        daemon=True)
        self._thread.start()

    def _work(self) -> None:
        import queue

        try:
            while not self._stop.is_set():
                batch = self._sampler.batch(self._batch_size)
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.05)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # handed to the consumer
            self._error = err

    def get(self):
        import queue

        while True:
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._error is not None:
                    raise self._error from None
                if not self._thread.is_alive():
                    raise RuntimeError("the batch thread stopped") from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
