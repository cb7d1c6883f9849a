"""Training batches made in worker processes, so that a GPU never waits for augmentation.

One elastic deformation of a 256 px patch costs milliseconds of CPU time; a GPU trains on
hundreds of patches a second. :class:`ProcessBatches` runs the patch sampler in torch
``DataLoader`` worker processes (started with 'spawn', safe inside napari's Qt process),
each with its own seed, and hands over pinned tensors for non-blocking copies. On a CPU the
worker processes would take cores from the training itself, so there the thread of
:class:`napari_unet.data.BatchPrefetcher` is used instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class _Stream(IterableDataset):
    def __init__(self, sampler, batch_size: int, seed: int) -> None:
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def __iter__(self):
        info = get_worker_info()
        self.sampler.rng = np.random.default_rng([self.seed, 1 + (info.id if info else 0)])
        while True:
            yield self.sampler.batch(self.batch_size)


def _init_worker(worker_id: int) -> None:
    """A worker that dies of a signal (an abort in native code) prints the Python stacks of
    its threads to its stderr first, so that the parent's "worker killed by signal" error
    comes with a place to look.

    A stopped worker leaves at its first exit handler, skipping the interpreter's and
    libtorch's teardown: that teardown occasionally aborted ("terminate called without an
    active exception", seen under heavy CPU load), and a worker has nothing to save."""
    import atexit
    import faulthandler
    import os

    faulthandler.enable(all_threads=True)
    # exit handlers run last registered first: those registered from here on still run
    atexit.register(os._exit, 0)


class ProcessBatches:
    """``get()`` returns the next ``(image, target, weights)`` batch as tensors."""

    def __init__(self, sampler, batch_size: int, *, workers: int, seed: int,
                 pin_memory: bool = False) -> None:
        self._loader = DataLoader(_Stream(sampler, batch_size, seed), batch_size=None,
                                  num_workers=workers, pin_memory=pin_memory,
                                  prefetch_factor=4, multiprocessing_context="spawn",
                                  worker_init_fn=_init_worker)
        self._it = iter(self._loader)

    def get(self):
        return next(self._it)

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            try:
                it._shutdown_workers()
            except RuntimeError as e:
                # torch's SIGCHLD handler reports a worker that died while being stopped;
                # its batches are no longer wanted, so a training that ended well stays so
                if "DataLoader worker" not in str(e):
                    raise


def default_workers(device) -> int:
    """Worker processes for ``'auto'``: up to 6 on a GPU (leaving a core for the training
    loop), none elsewhere."""
    from .cgroups import usable_cpus

    if device.type != "cuda":
        return 0
    return max(1, min(6, usable_cpus() - 1))


def as_tensor(a, device):
    """A batch array (numpy or a pinned tensor) on ``device``."""
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(a)
    return t.to(device, non_blocking=t.is_pinned())
