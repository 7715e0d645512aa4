"""The overhead budget: which scheduled steps a run can afford to track within ``max_overhead``.

The tracker tells :class:`OverheadBudget` what happened, through its methods, all on the training
thread (:meth:`~OverheadBudget.call_began` / :meth:`~OverheadBudget.call_ended` around each
``tracker.step`` call, :meth:`~OverheadBudget.tracked` with a tracked step's stall,
:meth:`~OverheadBudget.finished` with its background work's cost, :meth:`~OverheadBudget.worked`
with the background process's other CPU time), and asks one question,
:meth:`~OverheadBudget.allows`: may this scheduled step be tracked? (and, for work it may leave
out, :meth:`~OverheadBudget.affords`: is there room for these seconds?) The planner behind the
answer, :func:`plan_steps`, is pure.

Background work is charged by the CPU time it takes, not by its wall time: a child process at a
lower priority on a busy machine may take a minute of wall time for a second of CPU, and only
what it runs takes anything from training.
"""

from __future__ import annotations

import bisect
import math
import statistics
import time
import warnings
from collections import deque
from collections.abc import Iterable
from typing import Any

from .schedules import Schedule

PLAN_MIN_STEPS = 10
"""Training steps, timed while no background work ran, before the planner estimates the step time."""

IDLE_WINDOW = 4096
"""Latest idle training steps whose median is the step time."""


def plan_steps(
    candidates: Iterable[int], after: int, last: int, count: int, origin: int = 0, min_gap: int = 1
) -> list[int]:
    """At most ``count`` tracked steps in ``(after, last]``: ``last`` and the rest log-spaced.

    The targets are spaced geometrically in their distance from ``origin`` (the run's first
    tracked step), from ``after`` to ``last``, so that the plan is dense early like
    :class:`~concept_tracker.schedules.log_spaced`; each target is moved to the nearest unused
    candidate (a step the schedule fires at) at least ``min_gap`` steps after the previous pick
    and before ``last``. Pure.

    Args:
        candidates: steps the schedule fires at; those outside ``(after, last)`` are ignored.
        after: the current step (already decided); the plan starts after it.
        last: the run's last step, always in the plan when ``count >= 1``.
        count: largest number of steps to return.
        origin: the step the log spacing is measured from (``origin <= after``).
        min_gap: fewest steps between two planned steps (e.g. so that the background work of
            one tracked step is done before the next).
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


class OverheadBudget:
    """Whether a scheduled step may be tracked: tracking must stay within a fraction of wall time.

    What tracking costs training: the time spent inside the tracker's calls (:attr:`spent`: the
    masked forwards, the writes, the microseconds of every untracked call), plus the time the
    background work takes from training while both run (:attr:`interference`). The latter is
    measured: the training steps between two calls are timed, and those that ran beside
    background work are compared with those that ran without; its ratio to the background
    process's CPU seconds (its start-up, steps and figures) is the :attr:`contention`. Until it is
    measured, the background work is assumed to take ``contention`` of its CPU time from training
    (the tracker assumes 0: it starts a background process only where one pays, see
    :func:`~concept_tracker.worker.child_pays`).

    The horizon is ``total_steps`` when given, else the last step of a finite schedule
    (:meth:`~concept_tracker.schedules.Schedule.last_step`). With a horizon, once the first tracked
    step and :data:`PLAN_MIN_STEPS` training steps after it are measured, a plan fixes which of
    the remaining scheduled steps are tracked: the allowance ``f / (1 - f)`` of the estimated
    untracked training time, less the cost so far and the final wait for the background work,
    divided by the cost of one tracked step; :func:`plan_steps` picks them, the horizon always
    among them when the allowance covers one step. After each planned step, once no background
    work runs, the rest is planned again from the costs measured so far (a busier machine drops
    steps, a quieter one may add some; the promised last step stays). One warning at the first
    plan says what it cuts, or that the budget cannot be kept, with the figures. Past the horizon,
    or without one, a step is refused when its expected cost would push the cost past
    ``max_overhead`` of the wall time (without a horizon, one warning at the first skip). With
    ``max_overhead=None`` every step is allowed; time is still counted.

    Args:
        max_overhead: None, or the largest fraction of wall time (0 < f < 1) tracking may take.
        total_steps: the run's last step, when known.
        schedule: the tracker's schedule (its steps are the plan's candidates).
        contention: share of the background work's CPU time assumed to slow training until
            measured, in [0, 1].
    """

    def __init__(
        self,
        max_overhead: float | None = None,
        total_steps: int | None = None,
        schedule: Schedule | None = None,
        contention: float = 1.0,
    ) -> None:
        self.max_overhead, self.total_steps, self.schedule = max_overhead, total_steps, schedule
        self.prior_contention = contention
        self.spent = 0.0  # seconds inside the tracker's calls (the training thread's stall)
        self.elapsed_before = 0.0  # wall seconds of earlier sessions (before a resume)
        self.origin: float | None = None  # perf_counter() of this session's first call
        self.last_cost: float | None = None  # stall seconds of the last tracked step
        self.worker_cost: float | None = None  # background wall seconds of the last finished step
        self.worker_cpu: float | None = None  # its background CPU seconds
        self.background = 0.0  # background CPU seconds so far (steps, figures, start-up)
        self.skipped = 0
        self.first: int | None = None  # the first tracked step
        self.plan: list[int] | None = None  # steps tracked from the plan on, first tracked included
        self.scheduled: int | None = None  # scheduled steps the plan had to choose from
        self.idle_steps = 0  # training steps timed while no background work ran
        self._recent_idle: deque[float] = deque(maxlen=IDLE_WINDOW)  # their latest durations
        self.busy = [0, 0.0]  # training steps timed beside background work: count, seconds
        self._replan_due = False  # a planned step was tracked since the plan was last made
        self._last: int | None = None  # the last tracked step
        self._call: float | None = None  # start of the current call
        self._left: tuple[float, bool] | None = None  # end of the last call: time, background busy
        self._background_busy = False  # background work ran as the last call ended
        self._candidates: list[int] | None = None  # the scheduled steps from the first plan on
        self._news: str | None = None  # the plan text, when the plan changed

    # ------------------------------------------------------------------------------- events

    def call_began(self, now: float) -> None:
        """At the start of a tracker call: start the wall clock (first call), and time the
        training step since the end of the last call."""
        if self.origin is None:
            self.origin = now
        self._call = now
        if self._left is not None:
            left, busy = self._left
            if busy:
                self.busy[0] += 1
                self.busy[1] += now - left
            else:
                self.idle_steps += 1
                self._recent_idle.append(now - left)
            self._left = None

    def call_ended(self, now: float, busy: bool) -> None:
        """At the end of a tracker call: its time is a stall; ``busy``: background work runs
        as training resumes."""
        if self._call is not None:
            self.spent += now - self._call
        self._call = None
        self._left = (now, busy)
        self._background_busy = busy

    def tracked(self, step: int, stall: float) -> None:
        """``step`` was tracked; its call stalled training ``stall`` seconds so far."""
        self.last_cost, self._last = stall, step
        if self.first is None:
            self.first = step
        self._replan_due = self.plan is not None

    def finished(self, seconds: float, cpu: float | None = None) -> None:
        """A tracked step's background work is done; it took ``seconds`` of wall time and ``cpu``
        seconds of the background process's CPU (default ``seconds``); both 0 when it ran inside
        a call, whose time is a stall already."""
        self.worker_cost, self.worker_cpu = seconds, seconds if cpu is None else cpu
        self.worked(self.worker_cpu)

    def worked(self, cpu: float) -> None:
        """The background process spent ``cpu`` seconds of CPU (a step, a figure, its start-up)."""
        self.background += cpu

    # ----------------------------------------------------------------------------- readings

    @property
    def horizon(self) -> int | None:
        """The run's last step: ``total_steps``, else the last step of a finite schedule."""
        if self.total_steps is not None or self.schedule is None:
            return self.total_steps
        return self.schedule.last_step()

    def elapsed(self, now: float) -> float:
        """Wall seconds since the run started, earlier sessions included."""
        return self.elapsed_before + (0.0 if self.origin is None else now - self.origin)

    @property
    def step_seconds(self) -> float | None:
        """Median seconds of the latest training steps run without background work (None before
        :data:`PLAN_MIN_STEPS`). The median: a slow spell that is not the tracker's (a collection,
        another process) must not pass for the training's speed; it errs towards charging more."""
        if self.idle_steps < PLAN_MIN_STEPS:
            return None
        return statistics.median(self._recent_idle)

    @property
    def interference(self) -> float:
        """Seconds the background work took from training: how much longer the steps run beside
        it took than :attr:`step_seconds` each (0 until both are measured), at most the CPU
        seconds the background process used: on a shared machine, steps that ran beside it are
        also slowed by other jobs, which is not tracking's cost."""
        mean = self.step_seconds
        if mean is None or not self.busy[0]:
            return 0.0
        return min(self.background, max(0.0, self.busy[1] - self.busy[0] * mean))

    @property
    def contention(self) -> float:
        """Measured share of the background work's CPU time that slows training, in [0, 1] (the
        assumed one before any is measured)."""
        if self.background <= 0.0 or self.step_seconds is None or self.busy[0] < 3:
            return self.prior_contention
        return self.interference / self.background

    @property
    def cost(self) -> float:
        """Seconds tracking has cost training so far: stalls plus measured interference."""
        return self.spent + self.interference

    def step_cost(self) -> float:
        """Expected cost of one more tracked step: its stall and its share of the background work."""
        return (self.last_cost or 0.0) + self.contention * (self.worker_cpu or 0.0)

    def affords(self, now: float, cpu: float, background: bool) -> bool:
        """Whether ``cpu`` more seconds of optional work (figures) fit the budget. Run in the
        ``background`` process, the work is charged at the :attr:`contention`, unless no planned
        step follows (``close()`` then waits for it); inline, in full. With a plan: the cost so
        far, the planned steps still to come, the final wait and this work stay within the
        allowance of the run. Without one (no horizon, or not yet measured), as a step without a
        plan: the cost with this work stays within ``max_overhead`` of the wall time."""
        if self.max_overhead is None:
            return True
        f, last, step_seconds = self.max_overhead, self._last, self.step_seconds
        if self.plan is None or last is None or step_seconds is None:
            charge = cpu * (self.contention if background else 1.0)
            return self.cost + charge <= f * (self.elapsed(now) + charge)
        ahead = [s for s in self.plan if s > last]
        charge = cpu * (self.contention if background and ahead else 1.0)
        untracked = self.elapsed(now) - self.cost + max(0, (self.horizon or last) - last) * step_seconds
        planned = len(ahead) * self.step_cost() + (self.worker_cost or 0.0)
        return self.cost + planned + charge <= f / (1 - f) * untracked

    # ----------------------------------------------------------------------------- decision

    def allows(self, step: int, now: float, last: bool = False) -> bool:
        """Whether scheduled ``step`` may be tracked (``last``: the run's final step); plans first
        when a plan is due. A refusal counts as a skip."""
        if self.max_overhead is None:
            return True
        if self._plan_due(step):
            self._make_plan(step, now)
        if self._refuses(step, now, last):
            self.skipped += 1
            if self.skipped == 1 and self.horizon is None:  # else the plan's warning says it
                warnings.warn(
                    f"ConceptTracker skipped step {step}: tracking it (about {self.step_cost():.2f} s) would exceed "
                    f"max_overhead={self.max_overhead} of the wall time. Further skips are counted in the "
                    "'perf/skipped_steps' scalar.",
                    stacklevel=4,  # the caller of tracker.step
                )
            return False
        return True

    def news(self) -> str | None:
        """The budget text (:func:`budget_text`) when the plan changed since the last call, else None."""
        news, self._news = self._news, None
        return news

    def _refuses(self, step: int, now: float, last: bool) -> bool:
        if self.max_overhead is None or self.last_cost is None:
            return False
        if self.plan is not None and step <= max(self.plan[-1], self.horizon or 0):
            if step in self.plan:
                return False
            if not last:
                return True
        cost = self.step_cost() + ((self.worker_cost or 0.0) if last else 0.0)
        return self.cost + cost > self.max_overhead * (self.elapsed(now) + cost)

    def _plan_due(self, step: int) -> bool:
        if self.plan is not None and not (self._replan_due and not self._background_busy):
            return False  # the common case, at every training step: answered first
        horizon = self.horizon
        return (
            horizon is not None
            and step < horizon
            and self.first is not None
            and self.worker_cost is not None
            and self.step_seconds is not None
        )

    def _make_plan(self, step: int, now: float) -> None:
        f, worker, horizon, first = (
            self.max_overhead or 0.0,
            self.worker_cost or 0.0,  # wall: close() waits for the last step's background work
            self.horizon or 0,
            self.first or 0,
        )
        step_seconds = self.step_seconds or 0.0
        untracked = self.elapsed(now) - self.cost + (horizon - step) * step_seconds
        allowance = f / (1 - f) * untracked - self.cost - worker
        per_step = self.step_cost()
        count = int(allowance // per_step) if per_step > 0 else horizon
        first_plan = self.plan is None
        if not first_plan and horizon in (self.plan or []):
            count = max(count, 1)  # a replan trims the steps between, never the promised last one
        # One tracked step's background work should be done before the next starts.
        gap = max(1, math.ceil(worker / step_seconds)) if step_seconds > 0 else 1
        if self._candidates is None:  # read once: a replan must not walk the schedule again
            fires = self.schedule or (lambda s: True)
            self._candidates = [s for s in range(step, horizon) if fires(s)]
        pool = self._candidates[bisect.bisect_left(self._candidates, step) :]
        done = [s for s in (self.plan or [first]) if s < step]
        if self.scheduled is None:
            self.scheduled = len(pool) + 1
        self.plan = [*done, *plan_steps(pool, step - 1, horizon, max(count, 0), first, gap)]
        self._replan_due = False
        self._news = budget_text(self, now)
        if first_plan and count < 1:
            warnings.warn(
                f"ConceptTracker: max_overhead={f} cannot be kept: by step {step} tracking cost "
                f"{self.cost:.2f} s of {self.elapsed(now):.2f} s; one more tracked step costs about {per_step:.2f} s "
                f"and its background work {worker:.2f} s, more than the {max(allowance, 0.0):.2f} s left "
                f"for the run's {horizon - step} remaining steps of about {step_seconds * 1e3:.1f} ms. Only step "
                f"{self.first} is tracked (see the 'text/overhead_budget' text).",
                stacklevel=5,  # the caller of tracker.step
            )
        elif first_plan and self.cut:
            warnings.warn(f"ConceptTracker: {self.cut} (see the 'text/overhead_budget' text).", stacklevel=5)

    @property
    def cut(self) -> str:
        """What the plan leaves out of the schedule, in words; "" when it leaves out nothing."""
        if self.plan is None or self.scheduled is None or len(self.plan) - 1 >= self.scheduled:
            return ""
        return (
            f"max_overhead={self.max_overhead} affords {len(self.plan) - 1} of the {self.scheduled} "
            f"scheduled steps after step {self.first}; tracked steps planned: {self.plan}"
        )

    # -------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able timing: seconds spent and elapsed, the last costs, the skip count and the plan."""
        return {
            "spent": self.spent,
            "elapsed": self.elapsed(time.perf_counter()),
            "last_cost": self.last_cost,
            "worker_cost": self.worker_cost,
            "worker_cpu": self.worker_cpu,
            "skipped": self.skipped,
            "first": self.first,
            "plan": self.plan,
            "scheduled": self.scheduled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the wall clock restarts at the next call and the
        step times are measured afresh. A run resumed before its plan was made plans from the
        resumed steps."""
        self.spent, self.elapsed_before = state["spent"], state["elapsed"]
        self.last_cost, self.skipped, self.origin = state["last_cost"], state["skipped"], None
        self.worker_cost, self.first = state.get("worker_cost"), state.get("first")
        self.worker_cpu = state.get("worker_cpu", self.worker_cost)
        self.plan, self.scheduled = state.get("plan"), state.get("scheduled")


def budget_text(budget: OverheadBudget, now: float | None = None) -> str:
    """Markdown for the TensorBoard text tab: the plan (when made) and what the budget did so far."""
    elapsed = budget.elapsed(time.perf_counter() if now is None else now)
    share = budget.cost / elapsed if elapsed > 0 else 0.0
    lines = [f"max_overhead={budget.max_overhead}, horizon={budget.horizon}", ""]
    if budget.plan is None:
        lines.append("No plan (no horizon, or not yet measured): a step is skipped when it would exceed the budget.")
    else:
        scheduled = "" if budget.scheduled is None else f" of {budget.scheduled + 1} scheduled"
        lines.append(f"Planned tracked steps{scheduled}: {budget.plan}")
    cost = "n/a" if budget.last_cost is None else f"{budget.last_cost:.3f} s"
    worker = (
        "n/a" if budget.worker_cost is None else f"{budget.worker_cost:.3f} s ({budget.worker_cpu or 0.0:.3f} s of CPU)"
    )
    lines += [
        "",
        f"Training stall of the last tracked step: {cost}; its background work: {worker}. The background "
        f"process used {budget.background:.2f} s of CPU in all (start-up and figures included), of which "
        f"{budget.contention:.0%} is counted as slowing training.",
        f"Tracking cost training {budget.cost:.2f} s of {elapsed:.2f} s ({share:.1%}): {budget.spent:.2f} s of "
        f"stalls and {budget.interference:.2f} s measured while the background work ran; "
        f"{budget.skipped} scheduled steps skipped.",
    ]
    return "\n".join(lines)
