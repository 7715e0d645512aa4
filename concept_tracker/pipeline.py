"""The AND-OR step of a tracked step: probe and held-out values split in one solver call.

Pure apart from the warm starts it is given and returns; the tracker's background worker
(:mod:`concept_tracker.worker`) runs it after the masked forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from . import store as storage
from .and_or import AndOrConfig, AndOrResult, decompose
from .interactions import Interactions


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
        solve: :func:`~concept_tracker.and_or.decompose` or a stand-in with its signature
            (the tracker's :class:`~concept_tracker.solver_process.SolverProcess`).
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


def warm_state(warm: Mapping[str, Interactions | None]) -> dict[str, Any]:
    """The warm starts as saved state (tensors and JSON)."""
    return {split: None if res is None else storage.interactions_state(res.to("cpu")) for split, res in warm.items()}


def warm_from_state(state: Mapping[str, Any]) -> dict[str, Interactions | None]:
    """The inverse of :func:`warm_state`."""
    return {split: None if s is None else storage.interactions_from_state(s) for split, s in state.items()}
