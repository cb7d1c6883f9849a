"""Choosing the compute device; the choice is always reported in words."""

from __future__ import annotations

import logging
import warnings

from .errors import InputError, SetupError

log = logging.getLogger(__name__)

#: What to do where PyTorch cannot be loaded.
INSTALL_TORCH = (
    "napari-unet trains and predicts with it: install it for this computer as "
    "https://pytorch.org/get-started/locally/ says (for the CPU alone: pip install torch "
    "--index-url https://download.pytorch.org/whl/cpu), in the Python that runs napari, and "
    "start napari again; on Windows a missing DLL usually means the Microsoft Visual C++ "
    "Redistributable is missing too.")


def load_torch():
    """``torch``, imported; where it is missing or broken (a failed install, a DLL that
    will not load, a wheel for another Python), a :class:`SetupError` saying so and what to
    do, rather than a traceback from deep inside an import."""
    try:
        import torch
    except (ImportError, OSError) as err:
        raise SetupError(f"PyTorch could not be loaded ({err}); {INSTALL_TORCH}") from err
    return torch


def resolve_device(name: str = "auto"):
    """``'auto'`` picks CUDA, then Apple MPS, then the CPU; others are checked.

    Returns a ``torch.device``. Asking for a GPU that is not there (a machine without one,
    a driver gone, a laptop undocked) falls back to the CPU with a warning; an unknown
    device name is an :class:`InputError`; a PyTorch that cannot be loaded, a
    :class:`SetupError`.
    """
    torch = load_torch()
    name = (name or "auto").lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif has_mps:
            name = "mps"
        else:
            name = "cpu"
    elif name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn("CUDA was asked for, but no CUDA GPU is available to PyTorch: "
                      "using the CPU instead.", RuntimeWarning, stacklevel=2)
        name = "cpu"
    elif name == "mps" and not has_mps:
        warnings.warn("Apple MPS was asked for, but it is not available to PyTorch: "
                      "using the CPU instead.", RuntimeWarning, stacklevel=2)
        name = "cpu"
    elif not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or mps.")
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # tiles and patches have fixed sizes: autotune
    else:
        fit_threads_to_quota()
    log.info("napari-unet uses %s", describe_device(device))
    return device


def fit_threads_to_quota() -> None:
    """Run PyTorch's CPU work on as many threads as this process's control group gives it
    CPUs (:func:`napari_unet.cgroups.cpu_quota`: a container or a cluster job limited to 2
    CPUs of a 64-core node), where PyTorch would start one a core of the node and the
    kernel would stop them all for most of each period. ``OMP_NUM_THREADS`` set, or fewer
    threads already: left as they are."""
    import os

    import torch

    from .cgroups import cpu_quota

    if os.environ.get("OMP_NUM_THREADS"):
        return
    quota = cpu_quota()
    if quota is not None and torch.get_num_threads() > quota:
        log.info("%d PyTorch threads for the %d CPUs this process's control group gives it",
                 quota, quota)
        torch.set_num_threads(quota)


def describe_device(device) -> str:
    """'CUDA: NVIDIA H100 80GB HBM3', 'Apple MPS' or 'CPU (2 threads)'."""
    import torch

    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def memory_format(device):
    """``torch.channels_last`` where it is faster (CPU: 2x for prediction, 1.3x for training
    with oneDNN, measured; CUDA: tensor cores), else ``torch.contiguous_format``."""
    import torch

    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX): there bf16
    autocast makes the network about twice as fast (measured: prediction 2.0-2.2x, training
    steps 1.6x on an AMD EPYC with AVX-512 BF16); elsewhere it would be slower than fp32."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # pragma: no cover - a torch build without the probe
            continue
    return False


def resolve_precision(device, name: str = "auto") -> str:
    """'auto' is bf16 autocast on a CUDA GPU that supports it and on a CPU that computes
    bf16 natively (:func:`cpu_has_bf16`), fp32 elsewhere. bf16 kept the foreground of the
    shipped nuclei model at Dice 0.9986 against fp32 (benchmarks/RESULTS.md)."""
    import torch

    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def tile_bytes(model_config, input_shape, precision: str = "fp32") -> int:
    """Rough peak activation memory of one tile in inference: about eight feature maps of
    the first level's width at full resolution (the skip, the convolutions and the
    up-sampled concatenation), the deeper levels adding a third."""
    h, w = input_shape
    itemsize = 4 if precision == "fp32" else 2
    return int(8 * model_config.base_channels * h * w * itemsize * 4 / 3)


#: Elements one sample's tensor may hold: cuDNN and PyTorch's CUDA kernels index with 32 bits.
MAX_TENSOR_ELEMENTS = 2**31 - 1

#: The tile side of ``tile_size`` 0 on a CPU or Apple MPS. Each tile computes the network's
#: whole field of view around what it keeps (112 px a side for depth 4), so small tiles
#: compute mostly mirrored context: on the 2-core CPU a 4096² image took 1.46x as long in
#: 512 px tiles, the 48 DSB `val/` images 1.26x; 1536 px tiles gained 6 % more for 40 %
#: more memory (benchmarks/RESULTS.md, "The automatic tile on a CPU").
HOST_TILE = 1024


def auto_tile_size(model_config, device, precision: str = "fp32") -> int:
    """The input tile side for ``tile_size`` 0 ('auto').

    On a CUDA GPU, the largest square tile whose activations (:func:`tile_bytes`) take at
    most half of the free memory, and whose widest feature map (the concatenation of the
    first level, twice the base channels) stays within 32-bit indexing: a large image then
    goes through in a few big tiles, which compute less of the mirrored context twice. On
    other devices :data:`HOST_TILE`.
    """
    import math

    if device.type != "cuda":
        return HOST_TILE
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    per_pixel = tile_bytes(model_config, (64, 64), precision) / 64**2
    side = math.isqrt(int(free / 2 / per_pixel))
    side = min(side, math.isqrt(MAX_TENSOR_ELEMENTS // (2 * model_config.base_channels)))
    return max(side - 2 ** (model_config.depth + 1), 64)  # room to round up to a valid size


def auto_batch_size(model_config, input_shape, device, precision: str = "fp32") -> int:
    """Tiles per batch from the free memory: half of the free GPU memory on CUDA (at most
    64 tiles); on other devices 4 tiles (more buys nothing on a CPU), fewer when the
    available memory is short."""
    import torch

    from .memory import free_memory

    per_tile = max(tile_bytes(model_config, input_shape, precision), 1)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(max(free // 2 // per_tile, 1), 64))
    free = free_memory()
    if free is None:  # pragma: no cover - psutil comes with napari and distributed
        return 4
    return int(min(max(free // 4 // per_tile, 1), 4))


def autocast(device, precision: str):
    """The autocast context of a precision policy ('fp32', 'bf16', 'fp16').

    'fp32' on CUDA is IEEE float32: cuDNN would otherwise run the convolutions in TF32
    (a 10-bit mantissa) on Ampere and newer GPUs, and tiles would no longer add up to the
    whole-image result to float tolerance."""
    import contextlib

    import torch

    if precision == "fp32" and device.type == "cuda":
        cudnn = torch.backends.cudnn
        return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                           deterministic=cudnn.deterministic, allow_tf32=False)
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device (or the host) running out of memory."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or "out of memory" in str(err).lower()


def freed_after_out_of_memory(err: BaseException, device) -> bool:
    """Whether ``err`` is the device running out of memory; if so, the GPU's cached
    blocks are released for the retry."""
    import torch

    if not out_of_memory(err):
        return False
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return True
