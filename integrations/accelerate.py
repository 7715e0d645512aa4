"""Accelerate integration: track the right module, once per optimizer step.

Usage, in a loop over ``accelerator.prepare``-d objects (every rank calls it; the probes are
sharded across the ranks and only rank 0 writes)::

    from concept_tracker.integrations.accelerate import track_step

    for x, y in loader:
        with accelerator.accumulate(model):
            ...  # forward, accelerator.backward, optimizer step
        if accelerator.sync_gradients:
            step += 1
        track_step(tracker, accelerator, model, step)
    tracker.step(tracked_module(accelerator, model), step, last=True)  # the final step
    tracker.close()

The loop, not Accelerate, knows the run's length: pass it to the tracker as
``ConceptTracker(..., budget=BudgetConfig(max_overhead=0.05, total_steps=num_training_steps))``,
so that ``max_overhead`` can plan the tracked steps (first, last, the rest log-spaced).
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from concept_tracker.summary import StepSummary
from concept_tracker.tracker import ConceptTracker


def tracked_module(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The module the probes run through: without the DDP and ``torch.compile`` wrappers, so
    tracking adds no gradient-sync hooks or recompilations; an FSDP model stays wrapped, since
    its forward gathers the parameter shards (the tracker runs equal chunks on every rank)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return model
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def track_step(tracker: ConceptTracker, accelerator: Accelerator, model: nn.Module, step: int) -> StepSummary | None:
    """``tracker.step`` on :func:`tracked_module`, skipped on gradient-accumulation micro-steps.

    ``track_step(tracker, accelerator, model, step)``; call it on every rank.

    Returns:
        The step's summary (see ``ConceptTracker.step``), or None when ``step`` was not tracked.
    """
    if not accelerator.sync_gradients:
        return None
    return tracker.step(tracked_module(accelerator, model), step)
