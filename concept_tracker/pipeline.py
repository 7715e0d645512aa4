"""A tracked step after its masked forwards: the AND-OR split of the probe and held-out values in
one solver call, the dynamics and the step summary.

Pure: the tracker's background worker (:mod:`concept_tracker.worker`) runs :func:`finish_step`
on copies of the tracker's state and hands back the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from . import store as storage
from .and_or import AndOrConfig, AndOrResult, decompose
from .interactions import Interactions
from .metrics.dynamics import Trajectory
from .metrics.profile import stack_effects
from .summary import StepSummary, summarize_step


def decompose_splits(
    results: Mapping[str, Interactions],
    warm: Mapping[str, Interactions | None],
    config: AndOrConfig | None,
    solve: Callable[..., AndOrResult] = decompose,
) -> dict[str, Interactions]:
    """The AND-OR split of the values of several probe sets in one solver call.

    Samples are independent in the solver, so one call gives the same split as one per probe
    set, while its per-iteration cost (on a GPU mostly kernel launches) is paid once.

    Args:
        results: ``{split: Interactions}`` whose ``outputs`` [B_split, 2**n] are the values.
        warm: ``{split: the split's "and_or" result at the previous tracked step, or None}``;
            the solver warm-starts from their gamma and q when every split has one.
        config: solver settings (None: the defaults).
        solve: :func:`~concept_tracker.and_or.decompose` or a stand-in with its signature.
    Returns:
        ``{split: Interactions}`` of kind "and_or" (also the next step's warm starts).
    """
    values = torch.cat([res.outputs for res in results.values()])
    previous = [warm.get(split) for split in results]
    start = None
    if all(w is not None for w in previous):
        gamma, q = (torch.cat([getattr(w, name) for w in previous]).to(values.device) for name in ("gamma", "q"))
        start = (gamma, q)
    sol = solve(values, config, warm_start=start)
    out, offset = {}, 0
    for split, res in results.items():
        part = slice(offset, offset + res.num_samples)
        offset += res.num_samples
        effects = {name: getattr(sol, name)[part] for name in ("and_effects", "or_effects", "gamma", "q")}
        out[split] = replace(res, kind="and_or", **effects)
    return out


def finish_step(
    step: int,
    results: Mapping[str, Interactions],
    warm: Mapping[str, Interactions | None] | None,
    config: AndOrConfig | None,
    trajectory: Trajectory,
    ids: Sequence[Any] | None,
) -> tuple[dict[str, Interactions], Trajectory, StepSummary]:
    """Everything of tracked step ``step`` after its masked forwards.

    Args:
        results: ``{"probe": ..., "heldout": ... (optional)}`` from the engine, on the CPU.
        warm: kind "and_or": the warm starts (see :func:`decompose_splits`), and ``results``
            hold the values only; None: ``results`` are final.
        config: the solver's settings.
        trajectory: the probe dynamics before ``step``; the step's effects are appended to it.
        ids: the probe ids, for the summary's table.
    Returns:
        The final results (kind "and_or": also the next warm starts), ``trajectory`` and the
        step's :class:`~concept_tracker.summary.StepSummary`.
    """
    final = dict(results) if warm is None else decompose_splits(results, warm, config)
    trajectory.append(step, stack_effects(final["probe"]))
    summary = summarize_step(step, final["probe"], trajectory, held=final.get("heldout"), ids=ids)
    return final, trajectory, summary


def warm_state(warm: Mapping[str, Interactions | None]) -> dict[str, Any]:
    """The warm starts as saved state (tensors and JSON)."""
    return {split: None if res is None else storage.interactions_state(res.to("cpu")) for split, res in warm.items()}


def warm_from_state(state: Mapping[str, Any]) -> dict[str, Interactions | None]:
    """The inverse of :func:`warm_state`."""
    return {split: None if s is None else storage.interactions_from_state(s) for split, s in state.items()}
