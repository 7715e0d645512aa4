"""``torch.distributed`` support: process rank, and interaction computation sharded across ranks.

Only the main process writes logs and files. Under an initialised process group with more than
one process, :func:`sharded_coalition_values` splits the probe samples across the ranks, runs
the same number of equal chunks on every rank and all-gathers the values, so the result equals
a single-process run on every rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from .players import Players
    from .values import ValueFn


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


def _collective_device(preferred: torch.device | None = None) -> torch.device:
    """Where tensors for a collective live: the ``preferred`` (model's) accelerator device unless
    the backend is gloo alone; CPU for a CPU model; without a preference, the current CUDA
    device for nccl alone, else CPU."""
    backend = str(dist.get_backend())
    if preferred is not None:
        return torch.device("cpu") if preferred.type == "cpu" or backend == "gloo" else preferred
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def broadcast_from_main(tensor: Tensor | None) -> Tensor | None:
    """Rank 0's ``tensor`` on every rank (same device and dtype as the local one).

    A collective: every rank calls it, all with a tensor of one shape or all with None.
    Returns the input unchanged outside a multi-process run.
    """
    if tensor is None or world_size() == 1:
        return tensor
    buffer = tensor.to(_collective_device(tensor.device), copy=True).contiguous()
    dist.broadcast(buffer, src=0)
    return buffer.to(tensor.device)


def main_process_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank, so that a decision taken on the main process (which
    alone holds the tracker's dynamics) is taken by all. A collective outside single-process runs."""
    if world_size() == 1:
        return flag
    return bool(broadcast_from_main(torch.tensor([int(flag)], device=_collective_device())).item())


def _fingerprint(samples: list[Any]) -> float:
    """A cheap checksum of the probe samples, to catch ranks that were given different probes."""
    total = 0.0
    for i, sample in enumerate(samples):
        parts = sample.values() if isinstance(sample, Mapping) else [sample]
        total += (i + 1) * sum(float(t.double().sum()) for t in parts if isinstance(t, Tensor))
    return total


def sharded_coalition_values(
    model: nn.Module,
    samples: list[Any],
    players: Players,
    targets: Tensor | None,
    value_fn: ValueFn,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> Tensor:
    """:func:`~concept_tracker.engine.coalition_values` with the samples split across ranks.

    Every rank must pass the same ``samples`` and ``targets``. Rank ``r`` values the ``r``-th
    contiguous block of ``ceil(B / world_size)`` samples (the last block padded by repeating the
    last sample), in chunks of the same number of rows on every rank, so every rank runs the
    same number of forwards: models whose forward is a collective (FSDP, DeepSpeed ZeRO-3) stay
    in step. The blocks are all-gathered (equal-size tensors, gloo and nccl alike) and the
    padding trimmed. Call inside :func:`~concept_tracker.engine.preserved_state` on every rank.

    Rows per chunk: ``batch_size``, or the smallest automatic size over the ranks. A CUDA
    out-of-memory retry halves the chunk on one rank only, which desynchronises collective
    forwards: pass a fixed ``batch_size`` for FSDP / ZeRO-3 models.

    Args:
        samples: B samples (no batch dimension) on the model's device, identical on every rank.
        targets: [B] int64 target per sample (identical on every rank), or None.
        value_fn, batch_size, show_progress: as for ``coalition_values`` (progress on rank 0).
    Returns:
        [B, 2**n] float64 values on the model's device, on every rank.
    Raises:
        ValueError: on every rank, when the ranks hold different probe samples.
        RuntimeError: on every rank, when valuing failed on some rank (that rank re-raises
            its own error).
    """
    # engine imports this module, so it is imported here, at call time.
    from .engine import _auto_rows, coalition_values, model_device

    num, size, me = len(samples), world_size(), rank()
    device = model_device(model)
    per_rank = -(-num // size)
    block = [min(i, num - 1) for i in range(me * per_rank, (me + 1) * per_rank)]
    mine = [samples[i] for i in block]
    rows = batch_size or _auto_rows(model, mine[0], device, per_rank << players.n)

    # One small gather checks that the ranks agree on the probes and picks a common chunk size.
    local = torch.tensor([num, rows, _fingerprint(samples)], dtype=torch.float64, device=_collective_device(device))
    everyone = torch.stack(_all_gather(local))
    same_probes = (everyone[:, 0] == num).all() and torch.allclose(
        everyone[:, 2], everyone[0, 2], rtol=1e-9, atol=0.0, equal_nan=True
    )
    if not same_probes:
        raise ValueError(
            f"the ranks hold different probe samples (sample counts {everyone[:, 0].long().tolist()}); "
            "compute_interactions shards the samples across ranks, so every rank must pass the same "
            "inputs: pick probes with the same seed from the full dataset, not from a rank's shard."
        )
    rows = int(everyone[:, 1].min())

    error: Exception | None = None
    try:
        values = coalition_values(
            model, mine, players, None if targets is None else targets[block], value_fn, rows, show_progress and me == 0
        )
    except Exception as err:  # re-raised below, once the other ranks have heard of it
        error = err
        values = torch.zeros(per_rank, 1 << players.n, dtype=torch.float64, device=device)
    # Tell every rank about a failure before the gather, so that no rank waits for a dead one.
    failed = torch.stack(_all_gather(torch.tensor([int(error is not None)], device=local.device)))
    if failed.any():
        if isinstance(error, ValueError):
            # The engine numbers the samples within this rank's block.
            raise ValueError(
                f"rank {me} values samples {block} of the batch (sample i below is the i-th of these): {error}"
            ) from error
        if error is not None:
            raise error
        bad = failed.reshape(-1).nonzero().reshape(-1).tolist()
        raise RuntimeError(f"compute_interactions failed on rank(s) {bad}; see their error.")
    return torch.cat(_all_gather(values.to(local.device)))[:num].to(device)


def _all_gather(tensor: Tensor) -> list[Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts
