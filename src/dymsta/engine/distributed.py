"""torchrun / DistributedDataParallel helpers: one process per device, rank 0 logs and saves.

Launch: ``torchrun --nproc_per_node N -m dymsta train --config ...``. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK;
without them everything here degrades to a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "init_distributed",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "barrier",
    "all_gather_objects",
    "all_reduce_sum",
    "shard",
    "cleanup",
]


def init_distributed(device: torch.device) -> bool:
    """Start the process group when launched by torchrun (gloo on CPU, NCCL on CUDA). Returns True if distributed."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-item list without DDP)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over ranks (float64)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard(items: list[Any]) -> list[Any]:
    """This rank's strided share of ``items`` (rank r takes r, r + W, r + 2W, ...)."""
    return items[rank() :: world_size()]


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
