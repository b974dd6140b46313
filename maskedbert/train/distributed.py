"""Data parallelism under torchrun: process-group setup from the environment and small helpers.

`torchrun --nproc_per_node=8 -m maskedbert.cli finetune ...` sets RANK/WORLD_SIZE/LOCAL_RANK; the
Trainer calls `init_distributed()`, wraps the model in DistributedDataParallel and gives each rank
every world_size-th example of the epoch's permutation. Rank 0 logs, evaluates and saves.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_distributed", "rank", "world_size", "is_main_process", "barrier",
           "broadcast_object", "all_gather_object"]


def init_distributed(backend: str | None = None) -> bool:
    """Start the process group when launched with WORLD_SIZE > 1 (idempotent); True when distributed."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
