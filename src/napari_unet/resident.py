"""Device-resident prediction: an image in memory goes to the GPU once, is mirrored,
normalised and cut into tiles there, and its probabilities come back in one copy, into
page-locked memory (used by :func:`napari_unet.predict.infer_plane` on a CUDA GPU).
Measured on an H200: the host's work per tile had been most of a large image's time
(benchmarks/RESULTS.md)."""

from __future__ import annotations

import numpy as np

from .data import offset_and_scale
from .device import freed_after_out_of_memory
from .tiling import TilePlan, mirror_index


def fits(image, out, plan: TilePlan, device) -> bool:
    """Whether to predict ``image`` device-resident (see
    :func:`napari_unet.predict.infer_plane`): on a CUDA GPU,
    for an image and output in memory (not memmaps, zarr or Dask, which are streamed so
    that host memory stays small) whose region, padded input and output take at most an
    eighth of the free device memory."""
    if device.type != "cuda" or not (in_memory(image) and in_memory(out)):
        return False
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return region_bytes(image, out, plan) <= free // 8


def in_memory(array) -> bool:
    return isinstance(array, np.ndarray) and not isinstance(array, np.memmap)


def region_bytes(image, out, plan: TilePlan) -> int:
    """Device bytes of the resident way, generously: the raw region and the copies made
    while it is mirrored and normalised (four padded float32 planes), and the float32
    probabilities."""
    (h, w), halo = plan.shape, plan.geometry.halo
    channels = image.shape[-1]
    padded = channels * (h + plan.input_shape[0] + 2 * halo) * (w + plan.input_shape[1]
                                                                + 2 * halo) * 4
    return padded * 4 + int(np.prod(out.shape)) * 4


def device_region(image, plan: TilePlan, tiles, origin, lo, hi, device):
    """The mirrored, normalised input of every tile of ``plan`` as one ``(C, H', W')``
    float32 tensor on ``device``, and the image position ``(top, left)`` of its first pixel
    relative to ``origin``; None when the device has no memory for it."""
    import torch

    oy, ox = origin
    ih, iw = plan.input_shape
    top, left = min(t.top for t in tiles), min(t.left for t in tiles)
    rows = mirror_index(np.arange(top + oy, max(t.top for t in tiles) + ih + oy),
                        image.shape[0])
    cols = mirror_index(np.arange(left + ox, max(t.left for t in tiles) + iw + ox),
                        image.shape[1])
    r0, c0 = int(rows.min()), int(cols.min())
    raw = image[r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1]
    try:
        x = upload(raw, device)
        x = x.index_select(0, torch.as_tensor(rows - r0, device=device))
        x = x.index_select(1, torch.as_tensor(cols - c0, device=device))
        x = x.permute(2, 0, 1).to(torch.float32)
        if lo is not None:  # as normalize_channels_first, in the same float32 steps
            lo32, scale = offset_and_scale(lo, hi, (-1, 1, 1))
            x = (x - torch.from_numpy(lo32).to(device)) / torch.from_numpy(scale).to(device)
        return x.contiguous(), (top, left)
    except (RuntimeError, MemoryError) as err:
        if not freed_after_out_of_memory(err, device):
            raise
        return None


def upload(array: np.ndarray, device):
    """A numpy array on ``device`` in a dtype torch computes with: unsigned 16- and 32-bit
    integers travel as their signed twins and are widened there."""
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return torch.from_numpy(array.view(np.int16)).to(device).to(torch.int32) & 0xFFFF
    if array.dtype == np.uint32:
        return torch.from_numpy(array.view(np.int32)).to(device).to(torch.int64) & 0xFFFFFFFF
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    return torch.from_numpy(array).to(device)


#: Largest probabilities output (bytes) that :func:`predict` allocates in page-locked memory
#: on a CUDA GPU: locked memory cannot be swapped out, so larger outputs stay ordinary.
PINNED_MAX = 4 * 2**30


def host_output(shape, device) -> np.ndarray:
    """The float32 probabilities array :func:`predict` allocates (every pixel is written).
    On a CUDA GPU, up to :data:`PINNED_MAX`, in page-locked memory, which the device copies
    into directly (:func:`copy_to_host`); elsewhere, or when none is to be had, ordinary."""
    if device.type == "cuda" and 4 * int(np.prod(shape)) <= PINNED_MAX:
        import torch

        try:
            return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
        except RuntimeError:  # no page-locked memory to be had
            pass
    return np.zeros(shape, np.float32)


def copy_to_host(result, out) -> None:
    """The device-resident probabilities into ``out``. From a GPU through page-locked
    memory: straight into ``out`` when it is page-locked (:func:`host_output`), else
    through a page-locked staging buffer (torch's host allocator keeps it for the next
    plane). A copy from the device into ordinary memory went at 1.6 GB/s on an H200
    machine, half of a large image's time (benchmarks/RESULTS.md)."""
    import torch

    direct = out.flags.writeable and out.flags.c_contiguous and out.dtype == np.float32
    if result.device.type == "cuda" and not (direct and torch.from_numpy(out).is_pinned()):
        try:
            staging = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
        except RuntimeError:  # no page-locked memory to be had: the ordinary way
            staging = None
        if staging is not None:
            staging.copy_(result)
            np.copyto(out, staging.numpy())
            return
    if direct:
        torch.from_numpy(out).copy_(result)
    else:
        out[...] = result.cpu().numpy()
