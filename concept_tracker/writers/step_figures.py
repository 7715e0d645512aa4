"""The figures of tracked steps: which steps get them, handing their inputs to the renderer
process, and logging the PNG images it returns.

A figure costs the renderer process a few tenths of a second of CPU. Drawing at the 1st, 2nd,
4th, 8th, ... tracked step (and, for the last tracked step, at close) is O(log T) renders over
T tracked steps; the scalars keep every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..interactions import Interactions
from ..metrics.profile import Bands, OrderProfile
from . import tags
from .tensorboard import TensorBoardWriter

if TYPE_CHECKING:
    from .render import FigureRenderer

TRAJECTORY_CONCEPTS = 3
"""Concepts per band drawn in the trajectory figure."""


class StepFigures:
    """Order profiles, the order x step heat map and the trajectory figure of tracked steps.

    Args:
        writer: where the PNG images go.
        bands: the band cut-offs (the heat map marks the simple band, the trajectory figure
            picks the strongest simple and complex concepts).
        strict: a figure that fails to draw raises instead of warning.
        warn_once: ``warn_once(message, key=...)``, the tracker's one-warning-per-message rule.
    """

    def __init__(self, writer: TensorBoardWriter, bands: Bands, strict: bool, warn_once: Callable[..., None]) -> None:
        self.writer, self.bands, self.strict, self._warn_once = writer, bands, strict, warn_once
        self._renderer: FigureRenderer | None = None  # started with the first figure
        self._undrawn: tuple[Any, ...] | None = None  # the last tracked step's figures, due at close

    def tracked(self, count: int, *figure: Any) -> None:
        """After the ``count``-th tracked step: draw its figures (arguments of :meth:`draw`) now
        when ``count`` is a power of two, else keep them for :meth:`close`."""
        if count & (count - 1) == 0:
            self.draw(*figure)
            self._undrawn = None
        else:
            self._undrawn = figure

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
        """Hand the figures of tracked step ``step`` to the renderer process.

        Args:
            kind_profiles: the step's order profile per kind; boundary: the phase boundary step
                (None until found); steps: the T tracked steps so far; shares: [T, n + 1]
                salient-strength shares per order; history: [T, K, 2**n] effects of probe sample
                0, whose id is ``sample``.
        """
        # Imported here: matplotlib takes about a second to load, and a run may draw no figure.
        from .figures import trajectory_series
        from .render import FigureRenderer

        if self._renderer is None:
            self._renderer = FigureRenderer()
        submit = self._renderer.submit
        for kind, profile in kind_profiles.items():
            title = f"{kind.upper()} concepts by order, step {step}"
            submit((tags.order_profile_figure(kind), step), "order_profile_figure", profile, title)
        simple_max = self.bands.simple[-1] if self.bands.simple else 0
        submit((tags.HEATMAP_FIGURE, step), "order_heatmap_figure", steps, shares, simple_max, boundary)
        series = trajectory_series(history, res, self.bands, sample, TRAJECTORY_CONCEPTS)
        submit((tags.TRAJECTORY_FIGURE, step), "trajectory_figure", steps, *series)

    def log(self, wait: bool) -> None:
        """Log the figures rendered so far (all of them when ``wait``). A figure function's
        error warns once per message (the step itself was tracked), or raises under ``strict``."""
        if self._renderer is None:
            return
        for (tag, step), png in self._renderer.wait() if wait else self._renderer.ready():
            if not isinstance(png, Exception):
                self.writer.png(tag, png, step)
            elif self.strict:
                raise png
            else:
                self._warn_once(f"ConceptTracker could not draw {tag!r} of step {step}: {png}", key=str(png))

    def busy(self) -> bool:
        """Whether the renderer process is at work on figures (it then competes with training)."""
        return self._renderer is not None and self._renderer.busy()

    def forget(self) -> None:
        """Drop the figures kept for :meth:`close` (a resumed run draws from its own steps)."""
        self._undrawn = None

    def close(self, draw_last: bool) -> None:
        """Draw the kept figures of the last tracked step when ``draw_last``, log every figure the
        renderer still owes, and stop it."""
        try:
            if self._undrawn is not None and draw_last:
                self.draw(*self._undrawn)
            self._undrawn = None
            self.log(wait=True)
        finally:
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None
