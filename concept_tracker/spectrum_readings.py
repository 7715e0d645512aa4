"""The tracker's sampled order spectrum: when it is read, and reading and writing it at a tracked step.

It is written under its own tags and file: an estimate never fills an exact tag or field.

Above :data:`SAMPLED_ABOVE` players it replaces the exact readings; at or below, it is read beside
them when ``ReadingsConfig.spectrum`` asks for it. The estimator is
:func:`concept_tracker.spectrum.order_spectrum`.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from . import store as storage
from .config import ReadingsConfig
from .players import Players
from .probes import ProbeSet
from .spectrum import OrderSpectrum, order_spectrum, spectrum_scalars
from .writers import tags
from .writers.tensorboard import TensorBoardWriter

SAMPLED_ABOVE = 16
"""Players above which the tracker reads the sampled order spectrum instead of the exact
readings (``2**n`` forwards per probe sample: 131,072 at n = 17; the exact path stops at 20)."""
SPECTRUM_FORWARDS = 4096
"""Forwards per probe sample of the sampled order spectrum when ``ReadingsConfig.spectrum`` is None."""


class SpectrumReadings:
    """The sampled order spectrum of a tracker's probes, read and written at tracked steps.

    Args:
        forwards: masked forwards per probe sample.
        only: True when it replaces the exact readings (more than :data:`SAMPLED_ABOVE` players).
        readings: the band cut-offs, salience ratio and seed it reads with.
    """

    def __init__(self, forwards: int, only: bool, readings: ReadingsConfig) -> None:
        self.forwards, self.only, self.readings = forwards, only, readings

    @classmethod
    def choose(cls, n: int, readings: ReadingsConfig, kind: str) -> SpectrumReadings | None:
        """The spectrum a tracker of ``n`` players reads (None: exact readings only); replacing
        the exact readings is said once, here, with what is not tracked then."""
        only = n > SAMPLED_ABOVE
        forwards = readings.spectrum or (SPECTRUM_FORWARDS if only else None)
        if forwards is None:
            return None
        if only:
            warnings.warn(
                f"ConceptTracker: n={n} players, above {SAMPLED_ABOVE}: the tracker reads the sampled order "
                f"spectrum (spectrum/* tags, {forwards} forwards per probe sample; set "
                f"readings=ReadingsConfig(spectrum=...) to change it) instead of the exact readings (2**{n} "
                "forwards per probe sample). Per-coalition readings (dynamics, held-out similarity, figures, "
                f"kind={kind!r}) need the exact ones and are not tracked.",
                stacklevel=3,  # the tracker's caller
            )
        return cls(forwards, only, readings)

    def read(
        self, model: nn.Module, probes: ProbeSet, players: Players, value: Any, batch_size: int | None
    ) -> OrderSpectrum:
        """The spectrum of the probes (the same seed at every step: the same random masks, so
        steps differ by the model only)."""
        readings = self.readings
        return order_spectrum(
            model,
            probes.inputs,
            players,
            probes.labels,
            value=value,
            forwards_per_probe=self.forwards,
            simple_max=readings.simple_max,
            complex_min=readings.complex_min,
            seed=readings.seed,
            ratio=readings.ratio,
            batch_size=batch_size,
        )

    def write(
        self, step: int, spectrum: OrderSpectrum, writer: TensorBoardWriter, store: bool, run: str | None
    ) -> dict[str, float]:
        """Its scalars (returned too), layout and, with ``store``, file in the writer's folder."""
        scalars = spectrum_scalars(spectrum)
        if self.only:  # else the exact readings' layout holds its category too
            writer.layout(tags.spectrum_layout())
        writer.scalars(scalars, step)
        if store:
            storage.save_spectrum(writer.log_dir, step, spectrum, run=run)
        return scalars
