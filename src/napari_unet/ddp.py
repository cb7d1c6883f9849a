"""Training on several GPUs (or CPU processes) with torch's DistributedDataParallel.

``torchrun --nproc_per_node=N -m napari_unet.cli train ...`` starts N processes with
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set; :func:`train` then joins the process group
(NCCL on GPUs, gloo on the CPU), takes GPU ``LOCAL_RANK``, wraps the network in
DistributedDataParallel (gradients averaged every step) and draws patches with a seed per
rank. Only rank 0 validates, saves the model and reports. Without torchrun (or with one
process) nothing here is used and training runs as it always does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """This process's place in the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # this module started the process group and ends it

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def join(device_name: str) -> tuple[Group, str]:
    """Join the process group torchrun describes; returns it and the device to use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(), device_name
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    gpu = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if gpu:
        device_name = f"cuda:{local}"
        torch.cuda.set_device(local)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if gpu else "gloo")
    return Group(rank, world, local, owned), device_name


def wrap(net, group: Group, device):
    """``net`` in DistributedDataParallel when several processes train."""
    if not group.active:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def share(value: float, group: Group, device) -> float:
    """Rank 0's ``value`` on every process."""
    if not group.active:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def leave(group: Group) -> None:
    """End the process group if :func:`join` started it."""
    if group.owned:
        import torch.distributed as dist

        dist.destroy_process_group()
