"""The figures of tracked steps: which steps get them, handing their inputs to the tracker's
background worker (:mod:`concept_tracker.worker`), and logging the PNG images it returns.

A figure costs the worker a few tenths of a second of CPU. Drawing at the 1st, 2nd,
4th, 8th, ... tracked step (and, for the last tracked step, at close) is O(log T) renders over
T tracked steps; the scalars keep every step.

Under an overhead budget the figures are optional work: a due set is drawn only when the budget
affords its cost (:meth:`~concept_tracker.budget.OverheadBudget.affords`; the CPU time of the
last set drawn, :data:`FIRST_DRAW_SECONDS` before any), else it is skipped, with one warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from ..interactions import Interactions
from ..metrics.profile import Bands, OrderProfile
from ..worker import Answer
from . import tags
from .tensorboard import TensorBoardWriter

TRAJECTORY_CONCEPTS = 3
"""Concepts per band drawn in the trajectory figure."""

FIRST_DRAW_SECONDS = 3.0
"""CPU seconds a budget expects of the first set of figures: importing matplotlib (0.6 s) and
four figures (0.5 s each), measured on the 2-core VM of BENCHMARKS.md; later sets are charged
what the last one measured."""


class StepFigures:
    """Order profiles, the order x step heat map and the trajectory figure of tracked steps.

    Args:
        writer: where the PNG images go.
        bands: the band cut-offs (the heat map marks the simple band, the trajectory figure
            picks the strongest simple and complex concepts).
        strict: a figure that fails to draw raises instead of warning.
        warn_once: ``warn_once(message, key=...)``, the tracker's one-warning-per-message rule.
        submit: ``submit("figure", name, *args) -> job id``, the worker's :meth:`~concept_tracker.worker.Worker.submit`.
        affords: ``affords(cpu_seconds) -> bool``, whether the overhead budget has room for a set
            of figures (None: no budget).
    """

    def __init__(
        self,
        writer: TensorBoardWriter,
        bands: Bands,
        strict: bool,
        warn_once: Callable[..., None],
        submit: Callable[..., int],
        affords: Callable[[float], bool] | None = None,
    ) -> None:
        self.writer, self.bands, self.strict, self._warn_once, self._submit = writer, bands, strict, warn_once, submit
        self._affords = affords
        self._jobs: dict[int, tuple[str, int]] = {}  # job id -> (tag, step) of the figures owed
        self._undrawn: tuple[Any, ...] | None = None  # the last tracked step's figures, due at close
        self.cost = FIRST_DRAW_SECONDS  # CPU seconds of the last set drawn whole
        self._drawing: tuple[int, float] | None = None  # the step of the set being measured, its seconds so far

    def tracked(self, count: int, *figure: Any) -> None:
        """After the ``count``-th tracked step: draw its figures (arguments of :meth:`draw`) now
        when ``count`` is a power of two and the budget affords them, else keep them for
        :meth:`close`."""
        if count & (count - 1) == 0 and self._afforded(figure[0]):
            self.draw(*figure)
            self._undrawn = None
        else:
            self._undrawn = figure

    def _afforded(self, step: int) -> bool:
        if self._affords is None or self._affords(self.cost):
            return True
        self._warn_once(
            f"ConceptTracker: the figures of step {step} were not drawn: they would cost about {self.cost:.1f} s "
            "of CPU, more than max_overhead leaves beside the planned steps. Figures are drawn when the budget "
            "has room; the scalars are logged at every tracked step (OutputConfig(figures=False) turns figures off).",
            key="figures under the budget",
        )
        return False

    def draw(
        self,
        step: int,
        res: Interactions,
        kind_profiles: dict[str, OrderProfile],
        boundary: float | None,
        steps: Sequence[int],
        shares: Tensor,
        history: Tensor,
        sample: Any,
    ) -> None:
        """Hand the figures of tracked step ``step`` to the worker.

        Args:
            kind_profiles: the step's order profile per kind; boundary: the phase boundary step
                (None until found); steps: the T tracked steps so far; shares: [T, n + 1]
                salient-strength shares per order; history: [T, K, 2**n] effects of probe sample
                0, whose id is ``sample``.
        """
        # Imported here: matplotlib takes about a second to load, and a run may draw no figure.
        from .figures import trajectory_series

        def submit(tag: str, name: str, *args: Any) -> None:
            self._jobs[self._submit("figure", name, *args)] = (tag, step)

        self._drawing = (step, 0.0)

        for kind, profile in kind_profiles.items():
            submit(
                tags.order_profile_figure(kind),
                "order_profile_figure",
                profile,
                f"{kind.upper()} concepts by order, step {step}",
            )
        simple_max = self.bands.simple[-1] if self.bands.simple else 0
        submit(tags.HEATMAP_FIGURE, "order_heatmap_figure", steps, shares, simple_max, boundary)
        series = trajectory_series(history, res, self.bands, sample, TRAJECTORY_CONCEPTS)
        submit(tags.TRAJECTORY_FIGURE, "trajectory_figure", steps, *series)

    def received(self, answer: Answer) -> bool:
        """Log ``answer`` if it is one of the figures owed (False if not). A figure function's
        error warns once per message (the step itself was tracked), or raises under ``strict``."""
        if answer.job not in self._jobs:
            return False
        tag, step = self._jobs.pop(answer.job)
        if self._drawing is not None and step == self._drawing[0]:
            self._drawing = (step, self._drawing[1] + answer.cpu + answer.overhead)
            if all(owed != step for _, owed in self._jobs.values()):
                self.cost, self._drawing = self._drawing[1], None
        if answer.error is None:
            self.writer.png(tag, answer.value, step)
        elif self.strict:
            raise answer.error
        else:
            err = answer.error
            self._warn_once(f"ConceptTracker could not draw {tag!r} of step {step}: {err}", key=str(err))
        return True

    def forget(self) -> None:
        """Drop the figures kept for :meth:`close` (a resumed run draws from its own steps)."""
        self._undrawn = None

    def close(self, draw_last: bool) -> None:
        """Hand the kept figures of the last tracked step to the worker when ``draw_last``."""
        if self._undrawn is not None and draw_last:
            self.draw(*self._undrawn)
        self._undrawn = None
