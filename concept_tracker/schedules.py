"""When to track: schedules that say at which training steps interactions are computed, and
the overhead budget that may skip a scheduled step.

A schedule answers one question, ``schedule(step) -> bool``. Schedules combine with ``|``
(fire when any part fires)::

    >>> from concept_tracker import every, log_spaced, at_steps
    >>> s = log_spaced(0, 1000, 8) | every(500) | at_steps([7])
    >>> [t for t in range(1001) if s(t)]
    [0, 1, 3, 7, 10, 32, 100, 316, 500, 1000]

Every schedule round-trips through ``to_config()`` / ``Schedule.from_config()`` (plain JSON),
so a tracker can store the schedule it ran with next to its cursor.
"""

from __future__ import annotations

import bisect
import math
import operator
import statistics
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from .checks import check_int


class Schedule:
    """Base class: decides whether a training step is tracked.

    Subclasses implement ``fires(step)`` and ``to_config()``; ``a | b`` fires when either does.
    """

    def fires(self, step: int) -> bool:
        """True when ``step`` (a non-negative global step, any integer type) should be tracked."""
        raise NotImplementedError(f"{type(self).__name__} must implement fires(step).")

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description that ``Schedule.from_config`` turns back into this schedule."""
        raise NotImplementedError(f"{type(self).__name__} must implement to_config().")

    def __call__(self, step: int) -> bool:
        return self.fires(step)

    def __or__(self, other: Schedule) -> Schedule:
        if not isinstance(other, Schedule):
            return NotImplemented
        return _Any(self, other)

    @staticmethod
    def from_config(config: dict[str, Any]) -> Schedule:
        """The schedule described by ``config`` (the output of ``to_config()``).

        Raises:
            ValueError: if ``config`` names no known schedule type.
        """
        kind = config.get("type") if isinstance(config, dict) else None
        if kind == "every":
            return every(config["n"])
        if kind == "log_spaced":
            return log_spaced(config["start"], config["stop"], config["num"])
        if kind == "at_steps":
            return at_steps(config["steps"])
        if kind == "any":
            return _Any(*(Schedule.from_config(part) for part in config["parts"]))
        raise ValueError(
            f"config={config!r} is not a schedule config; expected a dict with 'type' in "
            "'every', 'log_spaced', 'at_steps' or 'any' (from Schedule.to_config())."
        )


class every(Schedule):
    """Fire at steps 0, n, 2n, ...

    Args:
        n: period in steps, >= 1.
    """

    def __init__(self, n: int) -> None:
        self.n = check_int("n", n, 1)

    def fires(self, step: int) -> bool:
        step = operator.index(step)
        return step >= 0 and step % self.n == 0

    def to_config(self) -> dict[str, Any]:
        return {"type": "every", "n": self.n}

    def __repr__(self) -> str:
        return f"every({self.n})"


class at_steps(Schedule):
    """Fire at exactly the given steps.

    Args:
        steps: non-negative integer steps (at least one), in any order; duplicates are dropped.
    """

    def __init__(self, steps: Iterable[int]) -> None:
        steps = [check_int(f"steps[{i}]", step, 0) for i, step in enumerate(steps)]
        if not steps:
            raise ValueError("steps=[] never fires, so nothing would be tracked; pass at least one step.")
        self.steps: tuple[int, ...] = tuple(sorted(set(steps)))
        # A set lookup: schedules are consulted at every training step.
        self._lookup = frozenset(self.steps)

    def fires(self, step: int) -> bool:
        # operator.index: a 0-dim tensor hashes by identity and would never be found.
        return operator.index(step) in self._lookup

    def to_config(self) -> dict[str, Any]:
        return {"type": "at_steps", "steps": list(self.steps)}

    def __repr__(self) -> str:
        return f"at_steps({list(self.steps)!r})"


class log_spaced(at_steps):
    """Fire at ``num`` integer steps spaced geometrically from ``start`` to ``stop``.

    Early training changes fastest, so the steps are dense at the start and sparse later. Both
    ends are included. With ``start=0``, step 0 is one of the ``num`` steps and the other
    ``num - 1`` are spaced geometrically from 1 to ``stop``. Steps are rounded to integers and
    duplicates dropped, so a short range gives fewer than ``num`` distinct steps.

    Args:
        start: first step, >= 0.
        stop: last step, >= start.
        num: number of steps before de-duplication, >= 1 (1 gives just ``start``).

    Example: ``log_spaced(0, 10000, 20)`` fires at 0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100, 167,
    278, 464, 774, 1292, 2154, 3594, 5995, 10000.
    """

    def __init__(self, start: int, stop: int, num: int) -> None:
        start = check_int("start", start, 0)
        stop = check_int("stop", stop, start)
        num = check_int("num", num, 1)
        self.start, self.stop, self.num = start, stop, num
        super().__init__(_geometric_steps(start, stop, num))

    def to_config(self) -> dict[str, Any]:
        return {"type": "log_spaced", "start": self.start, "stop": self.stop, "num": self.num}

    def __repr__(self) -> str:
        return f"log_spaced({self.start}, {self.stop}, {self.num})"


def _geometric_steps(start: int, stop: int, num: int) -> list[int]:
    if num == 1 or start == stop:
        return [start]
    if start == 0:
        if num == 2:
            return [0, stop]
        return [0, *_geometric_steps(1, stop, num - 1)]
    ratio = math.log(stop / start) / (num - 1)
    steps = {round(start * math.exp(ratio * i)) for i in range(num - 1)}
    # exp/log round-off must not move the last step off ``stop``.
    return sorted(steps | {stop})


class _Any(Schedule):
    """Fires when any of its parts fires (what ``a | b`` builds)."""

    def __init__(self, *parts: Schedule) -> None:
        flat: list[Schedule] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, _Any) else [part])
        self.parts: tuple[Schedule, ...] = tuple(flat)

    def fires(self, step: int) -> bool:
        return any(part.fires(step) for part in self.parts)

    def to_config(self) -> dict[str, Any]:
        return {"type": "any", "parts": [part.to_config() for part in self.parts]}

    def __repr__(self) -> str:
        return " | ".join(repr(part) for part in self.parts)


def plan_steps(
    candidates: Iterable[int], after: int, last: int, count: int, origin: int = 0, min_gap: int = 1
) -> list[int]:
    """At most ``count`` tracked steps in ``(after, last]``: ``last`` and the rest log-spaced.

    The targets are spaced geometrically in their distance from ``origin`` (the run's first
    tracked step), from ``after`` to ``last``, so that the plan is dense early like
    :class:`log_spaced`; each target is moved to the nearest unused candidate (a step the schedule
    fires at) at least ``min_gap`` steps after the previous pick and before ``last``. Pure.

    Args:
        candidates: steps the schedule fires at; those outside ``(after, last)`` are ignored.
        after: the current step (already decided); the plan starts after it.
        last: the run's last step, always in the plan when ``count >= 1``.
        count: largest number of steps to return.
        origin: the step the log spacing is measured from (``origin <= after``).
        min_gap: fewest steps between two planned steps (e.g. so that a background worker
            finishes one tracked step before the next).
    Returns:
        The planned steps, increasing; ``[]`` when ``count < 1`` or ``last <= after``.
    """
    if count < 1 or last <= after:
        return []
    pool = sorted({c for c in candidates if after < c < last - min_gap + 1})
    picks: list[int] = []
    offset, span = max(after - origin, 1), max(last - origin, 1)
    if count > len(pool):  # room for every candidate: keep those the gap allows
        for c in pool:
            if not picks or c >= picks[-1] + min_gap:
                picks.append(c)
        return [*picks, last]
    lo = 0  # pool[lo:] are the candidates still allowed
    for i in range(1, count):
        if lo >= len(pool):
            break
        target = origin + offset * (span / offset) ** (i / count)
        j = bisect.bisect_left(pool, target, lo)
        k = min((k for k in (j - 1, j) if lo <= k < len(pool)), key=lambda k: (abs(pool[k] - target), pool[k]))
        picks.append(pool[k])
        lo = bisect.bisect_left(pool, pool[k] + min_gap, k + 1)
    return [*picks, last]


PLAN_MIN_STEPS = 10
"""Training steps, timed while the background worker is idle, before the planner estimates the
step time."""

IDLE_WINDOW = 4096
"""Latest idle training steps whose median is the step time."""


class OverheadBudget:
    """Whether a scheduled step may run: tracking must stay within a fraction of wall time.

    What tracking costs training: the time it waits inside the tracker's calls (:attr:`spent`:
    the masked forwards, the whole step when it runs inline, and the microseconds of every
    untracked call), plus the time the background worker's post-processing takes from training
    while both run (:attr:`interference`). The latter is measured, not assumed: the training
    steps between two calls of the tracker are timed, and the steps that ran while the worker
    was busy are compared with those that ran while it was idle. Until it is measured, the
    worker is assumed to take its whole time from training when the process has no core to
    spare for it (``contention=1``) and nothing otherwise (``contention=0``).

    Without a plan (the run's length unknown, or not yet measured), a step is refused when its
    expected cost (the last tracked step's stall plus its share of the worker's time, and for
    the ``last`` step the wait for its worker) would push the cost past ``max_overhead`` of the
    wall time since :meth:`start`, earlier sessions of a resumed run included. With
    ``max_overhead=None`` nothing is refused; time is still counted.

    With ``total_steps`` known, :meth:`make_plan` (once the first tracked step and
    :data:`PLAN_MIN_STEPS` training steps after it are measured) fixes which of the remaining
    scheduled steps are tracked: the allowance ``f / (1 - f)`` of the estimated untracked
    training time, less the cost so far and the final wait for the worker, divided by the cost
    of one tracked step; those steps are picked by :func:`plan_steps`, the last step always among
    them when the allowance covers one step. After each planned step, once its worker is done,
    the rest of the plan is made again from the costs measured so far, so a machine busier than
    at the start drops steps and a quieter one may add some; the last step, once planned, stays.
    Planned steps are tracked and no others up to ``total_steps`` (a run that stops early may
    still track its last step if the rule above allows it); after it (a run longer than
    announced) the rule applies again.

    Args:
        max_overhead: None, or the largest fraction of wall time (0 < f < 1) tracking may take.
        total_steps: the run's last step, when known.
        contention: share of the worker's time assumed to slow training until measured, in [0, 1].
    """

    def __init__(
        self, max_overhead: float | None = None, total_steps: int | None = None, contention: float = 1.0
    ) -> None:
        self.max_overhead = max_overhead
        self.total_steps = total_steps
        self.prior_contention = contention
        self.spent = 0.0  # seconds inside the tracker's calls (the training thread's stall)
        self.elapsed_before = 0.0  # wall seconds of earlier sessions (before a resume)
        self.origin: float | None = None  # perf_counter() of this session's first call
        self.last_cost: float | None = None  # stall seconds of the last tracked step
        self.worker_cost: float | None = None  # post-processing seconds of the last tracked step
        self.background = 0.0  # seconds of post-processing finished on the worker (not inline)
        self.skipped = 0
        self.first: int | None = None  # the first tracked step
        self.plan: list[int] | None = None  # steps tracked from the plan on, first tracked included
        self.scheduled: int | None = None  # scheduled steps the plan had to choose from
        self.replan_due = False  # a planned step was tracked since the plan was last made
        self.idle_steps = 0  # training steps timed while the worker was idle
        self._recent_idle: deque[float] = deque(maxlen=IDLE_WINDOW)  # their latest durations
        self.busy = [0, 0.0]  # training steps timed while it was busy: count, seconds
        self._left: tuple[float, bool] | None = None  # end of the last call: time, worker busy
        self._candidates: list[int] | None = None  # the scheduled steps from the first plan on

    def start(self, now: float) -> None:
        """Start the wall clock at the first call (later calls do nothing)."""
        if self.origin is None:
            self.origin = now

    def elapsed(self, now: float) -> float:
        """Wall seconds since the run started, earlier sessions included."""
        return self.elapsed_before + (0.0 if self.origin is None else now - self.origin)

    def arrived(self, now: float) -> None:
        """At the start of a tracker call: time the training step since the end of the last one."""
        if self._left is not None:
            left, busy = self._left
            if busy:
                self.busy[0] += 1
                self.busy[1] += now - left
            else:
                self.idle_steps += 1
                self._recent_idle.append(now - left)
            self._left = None

    def left(self, now: float, busy: bool) -> None:
        """At the end of a tracker call: whether the worker is busy as training resumes."""
        self._left = (now, busy)

    @property
    def step_seconds(self) -> float | None:
        """Median seconds of the latest training steps run while the worker was idle (None
        before :data:`PLAN_MIN_STEPS`). The median, not the mean: a slow spell that is not the
        tracker's (a collection, another process) must not pass for the training's own speed,
        which would overstate both the allowance and the baseline the interference is
        measured from; the median errs towards charging tracking more."""
        if self.idle_steps < PLAN_MIN_STEPS:
            return None
        return statistics.median(self._recent_idle)

    @property
    def interference(self) -> float:
        """Seconds the worker's post-processing took from training: how much longer the training
        steps run while it was busy took than :attr:`step_seconds` each (0 until both are
        measured)."""
        mean = self.step_seconds
        if mean is None or not self.busy[0]:
            return 0.0
        return max(0.0, self.busy[1] - self.busy[0] * mean)

    @property
    def contention(self) -> float:
        """Measured share of the worker's time that slows training, in [0, 1] (the assumed one
        before any background work is measured)."""
        if self.background <= 0.0 or self.step_seconds is None or self.busy[0] < 3:
            return self.prior_contention
        return min(1.0, self.interference / self.background)

    @property
    def cost(self) -> float:
        """Seconds tracking has cost training so far: stalls plus measured interference."""
        return self.spent + self.interference

    def tracked(self, step: int) -> None:
        """Record that ``step`` was tracked (its stall is in :attr:`spent` and :attr:`last_cost`)."""
        if self.first is None:
            self.first = step
        if self.plan is not None:
            self.replan_due = True

    def step_cost(self) -> float:
        """Expected cost of one more tracked step: its stall and its share of the worker's time."""
        return (self.last_cost or 0.0) + self.contention * (self.worker_cost or 0.0)

    def refuses(self, step: int, now: float, last: bool = False) -> bool:
        """True when a plan covers ``step`` and leaves it out (the run's ``last`` step aside), or,
        else, when tracking now at :meth:`step_cost` (for the ``last`` step plus the wait for its
        background work) would exceed the budget."""
        if self.max_overhead is None or self.last_cost is None:
            return False
        if self.plan is not None and step <= max(self.plan[-1], self.total_steps or 0):
            if step in self.plan:
                return False
            if not last:
                return True
        cost = self.step_cost() + ((self.worker_cost or 0.0) if last else 0.0)
        return self.cost + cost > self.max_overhead * (self.elapsed(now) + cost)

    def skip_reason(self, tag: str) -> str:
        """Why the rule without a plan skips a step, for a warning; ``tag`` counts the skips."""
        return (
            f"tracking it (about {self.step_cost():.2f} s) would exceed max_overhead={self.max_overhead} of "
            f"the wall time. Further skips are counted in the {tag!r} scalar."
        )

    def can_plan(self, step: int, worker_idle: bool) -> bool:
        """Whether :meth:`make_plan` should run at ``step``: a run of known length, the first
        tracked step and the step time measured, and no plan yet, or a planned step tracked
        since the last plan and its background work done."""
        if self.plan is not None and not (self.replan_due and worker_idle):
            return False  # the common case, at every training step: answered first
        ready = (
            self.max_overhead is not None
            and self.total_steps is not None
            and step < self.total_steps
            and self.first is not None
            and self.last_cost is not None
            and self.worker_cost is not None
            and self.step_seconds is not None
        )
        return ready and (self.plan is None or (self.replan_due and worker_idle))

    def make_plan(self, step: int, now: float, candidates: Iterable[int]) -> list[int]:
        """Plan the tracked steps from ``step`` on (see the class docstring); returns the plan.

        Args:
            candidates: the steps the schedule fires at in ``[step, total_steps)``; read at the
                first plan only (an iterable that is not consumed later costs nothing).
        """
        step_seconds = self.step_seconds
        if self.max_overhead is None or self.total_steps is None or self.first is None or step_seconds is None:
            raise ValueError(
                "make_plan needs max_overhead, total_steps, a tracked first step and the step time; check can_plan()."
            )
        f, worker = self.max_overhead, self.worker_cost or 0.0
        untracked = self.elapsed(now) - self.cost + (self.total_steps - step) * step_seconds
        allowance = f / (1 - f) * untracked - self.cost - worker
        per_step = self.step_cost()
        count = int(allowance // per_step) if per_step > 0 else self.total_steps
        if self.plan is not None and self.total_steps in self.plan:
            count = max(count, 1)  # a replan trims the steps between, never the promised last one
        # The worker should finish a tracked step before the next one starts.
        gap = max(1, math.ceil(worker / step_seconds)) if step_seconds > 0 else 1
        if self._candidates is None:  # read once: a replan must not walk the schedule again
            self._candidates = sorted(set(candidates))
        pool = self._candidates[bisect.bisect_left(self._candidates, step) :]
        done = [s for s in (self.plan or [self.first]) if s < step]
        if self.scheduled is None:
            self.scheduled = len({c for c in pool if step <= c < self.total_steps}) + 1
        self.plan = [*done, *plan_steps(pool, step - 1, self.total_steps, max(count, 0), self.first, gap)]
        self.replan_due = False
        return self.plan

    @property
    def cut(self) -> str:
        """What the plan leaves out of the schedule, in words; "" when it leaves out nothing."""
        if self.plan is None or self.scheduled is None or len(self.plan) - 1 >= self.scheduled:
            return ""
        return (
            f"max_overhead={self.max_overhead} affords {len(self.plan) - 1} of the {self.scheduled} "
            f"scheduled steps after step {self.first}; tracked steps planned: {self.plan}"
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-able timing: seconds spent and elapsed, the last costs, the skip count and the plan."""
        return {
            "spent": self.spent,
            "elapsed": self.elapsed(time.perf_counter()),
            "last_cost": self.last_cost,
            "worker_cost": self.worker_cost,
            "skipped": self.skipped,
            "first": self.first,
            "plan": self.plan,
            "scheduled": self.scheduled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the wall clock restarts at the next :meth:`start`
        and the step times are measured afresh. A run resumed before its plan was made plans
        from the resumed steps."""
        self.spent, self.elapsed_before = state["spent"], state["elapsed"]
        self.last_cost, self.skipped, self.origin = state["last_cost"], state["skipped"], None
        self.worker_cost, self.first = state.get("worker_cost"), state.get("first")
        self.plan, self.scheduled = state.get("plan"), state.get("scheduled")


def budget_text(budget: OverheadBudget, max_overhead: float, now: float | None = None) -> str:
    """Markdown for the TensorBoard text tab: the plan (when made) and what the budget did so far."""
    elapsed = budget.elapsed(time.perf_counter() if now is None else now)
    share = budget.cost / elapsed if elapsed > 0 else 0.0
    lines = [f"max_overhead={max_overhead}, total_steps={budget.total_steps}", ""]
    if budget.plan is None:
        lines.append(
            "No plan (run length unknown or not yet measured): a step is skipped when it would exceed the budget."
        )
    else:
        scheduled = "" if budget.scheduled is None else f" of {budget.scheduled + 1} scheduled"
        lines.append(f"Planned tracked steps{scheduled}: {budget.plan}")
    cost = "n/a" if budget.last_cost is None else f"{budget.last_cost:.3f} s"
    worker = "n/a" if budget.worker_cost is None else f"{budget.worker_cost:.3f} s"
    lines += [
        "",
        f"Training stall of the last tracked step: {cost}; its background work: {worker}, of which "
        f"{budget.contention:.0%} is counted as slowing training.",
        f"Tracking cost training {budget.cost:.2f} s of {elapsed:.2f} s ({share:.1%}): {budget.spent:.2f} s of "
        f"stalls and {budget.interference:.2f} s measured while the background work ran; "
        f"{budget.skipped} scheduled steps skipped.",
    ]
    return "\n".join(lines)
