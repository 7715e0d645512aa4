"""What the framework integrations share: the default schedule, model unwrapping, the last step."""

from __future__ import annotations

from torch import nn

from concept_tracker import DEFAULT_SCHEDULE, ConceptTracker, Schedule, StepSummary, at_steps, every, log_spaced

DEFAULT_NUM_STEPS = 20
"""Log-spaced tracked steps over a run of known length (dense early, when concepts change fastest)."""


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
