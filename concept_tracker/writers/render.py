"""Figures of :mod:`.figures` rendered to PNG bytes: what the tracker's background worker
(:mod:`concept_tracker.worker`) runs for each figure, and what the report embeds.

PNG, not pixels, crosses the worker's pipe: it is a tenth of the size, and the training process
neither encodes it nor spends long reading it.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import figures


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (RGBA), rendered off-screen with Agg."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def render(name: str, *args: Any) -> bytes:
    """Build figure ``name`` of :mod:`.figures` from its arguments and render it to PNG bytes."""
    return figure_png(getattr(figures, name)(*args))
