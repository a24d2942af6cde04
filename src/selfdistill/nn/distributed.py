"""torchrun / DistributedDataParallel glue (and nothing else).

Launch a chain on several processes with PyTorch's own launcher::

    torchrun --nproc_per_node 4 -m selfdistill train cifar10_resnet50_l2 --out results/c10

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed`
then starts a process group (NCCL on CUDA, Gloo on the CPU). The training loop draws every GLOBAL batch
from the same seeded generator on all ranks and each rank keeps the slice ``batch[rank::world_size]``; DDP
averages the gradients of the per-rank mean losses, which equals the gradient of the global batch mean when
all slices have the same size (the batch size must be divisible by the world size). The result therefore
matches one process with the same global batch up to the order of floating-point reductions. Exceptions:
BatchNorm statistics are per rank (converted to SyncBatchNorm on CUDA), and models with dropout draw
different masks. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and prints progress."""
        return self.rank == 0


SINGLE_PROCESS = DistContext()


DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(preference: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda`` as asked (error if CUDA is missing).
    The one place where a configured device name becomes a ``torch.device`` (train and distill)."""
    if preference not in DEVICE_NAMES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_NAMES)}; got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device: cuda was requested but no CUDA device is available; use device: auto or cpu"
        )
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Start the process group when launched by torchrun; otherwise return a single-process context."""
    device = resolve_device(device_preference)
    if not launched_by_torchrun():
        return DistContext(device=device)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_available():
        raise ValueError("launched by torchrun but torch.distributed is not available in this PyTorch build")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) in DistributedDataParallel when running distributed."""
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[ctx.device.index])
    return DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (the one to evaluate and to save)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def shard_indices(batch_indices: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's slice ``batch[rank::world_size]`` of a global batch (equal sizes required)."""
    if not ctx.is_distributed:
        return batch_indices
    if batch_indices.numel() % ctx.world_size:
        raise ValueError(
            f"batch size {batch_indices.numel()} is not divisible by the world size {ctx.world_size}; "
            "set optimizer.batch_size to a multiple of the number of processes"
        )
    return batch_indices[ctx.rank :: ctx.world_size]


def share_from_main(value: Any, ctx: DistContext) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank; every rank waits until rank 0 sends it.
    Single process: ``value`` itself."""
    if not ctx.is_distributed:
        return value
    box = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's decision, shared by every rank (e.g. an early-stop decision)."""
    if not ctx.is_distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
