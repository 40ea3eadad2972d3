"""torchrun support: one process per device, DistributedDataParallel, rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """The rank layout torchrun sets in the environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> bool:
    """Join the process group if needed; True when this call created it (and must destroy it)."""
    if not info.enabled or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world)
    return True


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def allreduce_mean(t: torch.Tensor | None, info: DistInfo) -> None:
    if info.enabled and t is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(info.world)


def wrap(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # Every parameter gets a gradient each step (a prior head drawn by index still gives its
    # whole ensemble tensor a, partly zero, gradient), so no unused-parameter search is needed.
    return DDP(module, device_ids=ids)
