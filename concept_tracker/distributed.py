"""``torch.distributed`` primitives: process rank, broadcast from rank 0, all-gather.

The bottom floor of the multi-process support: it imports nothing of the library. Only the main
process writes logs and files; the sharded valuation built on these primitives is
:func:`concept_tracker.engine.sharded_coalition_values`.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.distributed as dist
from torch import Tensor


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """Number of processes; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """True on global rank 0 (and in every single-process run)."""
    return rank() == 0


def collective_device(preferred: torch.device | None = None) -> torch.device:
    """Where tensors for a collective live: the ``preferred`` (model's) accelerator device unless
    the backend is gloo alone; CPU for a CPU model; without a preference, the current CUDA
    device for nccl alone, else CPU."""
    backend = str(dist.get_backend())
    if preferred is not None:
        return torch.device("cpu") if preferred.type == "cpu" or backend == "gloo" else preferred
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


@overload
def broadcast_from_main(tensor: Tensor) -> Tensor: ...


@overload
def broadcast_from_main(tensor: None) -> None: ...


def broadcast_from_main(tensor: Tensor | None) -> Tensor | None:
    """Rank 0's ``tensor`` on every rank (same device and dtype as the local one).

    A collective: every rank calls it, all with a tensor of one shape or all with None.
    Returns the input unchanged outside a multi-process run.
    """
    if tensor is None or world_size() == 1:
        return tensor
    buffer = tensor.to(collective_device(tensor.device), copy=True).contiguous()
    dist.broadcast(buffer, src=0)
    return buffer.to(tensor.device)


def main_process_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank, so that a decision taken on the main process (which
    alone holds the tracker's dynamics) is taken by all. A collective outside single-process runs."""
    if world_size() == 1:
        return flag
    return bool(broadcast_from_main(torch.tensor([int(flag)], device=collective_device())).item())


def all_gather(tensor: Tensor) -> list[Tensor]:
    """Every rank's ``tensor`` (one shape on all ranks), in rank order. A collective."""
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts
