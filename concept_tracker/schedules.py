"""When to track: schedules that say at which training steps interactions are computed (the
overhead budget that may skip a scheduled step is :mod:`concept_tracker.budget`).

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

import math
import operator
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

    def last_step(self) -> int | None:
        """The last step the schedule fires at; None when it fires forever."""
        return None

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

    def last_step(self) -> int | None:
        return self.steps[-1] if self.steps else None

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

    def last_step(self) -> int | None:
        ends = [part.last_step() for part in self.parts]
        return None if None in ends else max(e for e in ends if e is not None)

    def __repr__(self) -> str:
        return " | ".join(repr(part) for part in self.parts)
