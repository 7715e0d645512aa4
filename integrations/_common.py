"""What the framework integrations share: the default schedule, model unwrapping, the last step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from concept_tracker.config import CONFIGS, LEGACY_FIELDS, configs, warn_legacy
from concept_tracker.engine import preserved_state
from concept_tracker.players import Players, fit_mean_baseline, mean_unfitted
from concept_tracker.schedules import Schedule, at_steps, every, log_spaced
from concept_tracker.summary import StepSummary
from concept_tracker.tracker import DEFAULT_SCHEDULE, ConceptTracker

DEFAULT_NUM_STEPS = 20
"""Log-spaced tracked steps over a run of known length (dense early, when concepts change fastest)."""

LEGACY_OPTIONS = {key for keys in LEGACY_FIELDS.values() for key in keys} - {"writer", "total_steps"} | {"and_or"}
"""Loose tracker keywords of earlier releases, still accepted for this release."""

BASELINE_SAMPLES = 1024
"""Training items a "mean" baseline is fitted on when the players are not fitted yet."""


def fit_baseline_on_dataset(
    players: Players,
    dataset: Any,
    collate: Callable[[list], Any] | None,
    inputs_of: Callable[[Any], Any],
    like: Any,
    seed: int = 0,
) -> bool:
    """Fit the players' unfitted "mean" baseline on up to ``BASELINE_SAMPLES`` training items.

    The items are drawn with a private generator and the RNG states are restored afterwards
    (reading an item may draw a random augmentation), so training is unchanged. Nothing is
    fitted (the probe inputs then give the mean) when the players need no fit, the dataset is
    not map-style, or its inputs do not have the probes' sample shape.

    Args:
        players: the tracked players.
        dataset: the training dataset (map-style: ``len()`` and ``[i]``).
        collate: the training loader's collate function (None: ``default_collate``).
        inputs_of: maps a collated batch to the players' inputs [N, ...] (or None).
        like: the probe inputs [B, ...], whose sample shape the fit must match.
        seed: seed of the draw.
    Returns:
        True when the baseline was fitted on the training items.
    """
    if not mean_unfitted(players) or not isinstance(like, Tensor):
        return False
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or len(dataset) < 2:
        return False
    with preserved_state(nn.Identity()):
        picked = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:BASELINE_SAMPLES]
        inputs = inputs_of((collate or default_collate)([dataset[int(i)] for i in picked]))
    if not isinstance(inputs, Tensor) or inputs.shape[1:] != like.shape[1:]:
        return False
    return fit_mean_baseline(players, inputs)


TRACKER_OPTIONS = ("kind", "value", "strict", "readings", "output", "budget")
"""The ConceptTracker keywords a callback passes on; it fills in the rest itself."""


def checked_tracker_options(options: dict[str, Any], owner: str) -> dict[str, Any]:
    """The ConceptTracker keywords of a callback, checked at construction, not mid-training:
    every config built (loose keywords of earlier releases folded in, one ``FutureWarning``).

    Raises:
        ValueError: for keywords ConceptTracker does not take or that the callback fills in.
    """
    unknown = sorted(set(options) - set(TRACKER_OPTIONS) - LEGACY_OPTIONS)
    if unknown:
        raise ValueError(f"{owner} got unknown tracker option(s) {unknown}; tracker options are {TRACKER_OPTIONS}.")
    legacy = dict(options)
    given = {"kind": legacy.pop("kind", "and"), **{name: legacy.pop(name, None) for name in CONFIGS}}
    found, moved = configs(given, legacy, owner)
    warn_legacy(owner, moved, legacy, stacklevel=4)
    return {**{k: options[k] for k in ("value", "strict") if k in options}, **found}


def run_schedule(schedule: Schedule | None, last_step: int | None, period: int | None = None) -> Schedule:
    """The schedule of a run whose last optimizer step is ``last_step`` (None: unknown).

    ``schedule`` as given, or by default ``log_spaced(0, last_step, 20)`` plus ``every(period)``
    when a period such as the evaluation interval is given (the tracker's own default when the
    length is unknown); always with step 0 and the last step.
    """
    if last_step is None:
        return (schedule or DEFAULT_SCHEDULE) | at_steps([0])
    if schedule is None:
        schedule = log_spaced(0, last_step, DEFAULT_NUM_STEPS)
        if period:
            schedule = schedule | every(period)
    return schedule | at_steps([0, last_step])


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper: it shares the parameters and its forward
    runs eagerly, so tracking's odd batch shapes trigger no recompilation."""
    return getattr(model, "_orig_mod", model)


def track_last_step(tracker: ConceptTracker, model: nn.Module, step: int) -> StepSummary | None:
    """Track ``step`` even when the schedule (or the budget's plan) skips it, if ``max_overhead``
    allows: a run that stopped early still gets its final state recorded."""
    return tracker.step(model, step, last=True)
