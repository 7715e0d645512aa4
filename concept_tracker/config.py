"""Settings that travel together, as frozen dataclasses (as ``TrainingArguments`` groups the
Trainer's): how interactions become readings, what a tracker writes, and what tracking may cost.

:class:`ReadingsConfig` is the one place the salience ratio, the band cut-offs and the bootstrap
settings live: the tracker, :class:`~concept_tracker.metrics.Trajectory`,
:func:`~concept_tracker.summary.summarize_step` and ``report`` all read the same object.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from .and_or import AndOrConfig
from .checks import check_band_cutoffs, check_fraction, check_int, check_ratio, check_type


@dataclass(frozen=True)
class ReadingsConfig:
    """How interactions become the logged readings.

    Attributes:
        ratio: salience threshold ratio; a concept is salient when ``|I(S)| > ratio * max |I|``.
        simple_max: highest order of a simple concept (None: ``n // 3``).
        complex_min: lowest order of a complex concept (None: ``n // 2 + 1``).
        resamples: bootstrap resamples of the 95% intervals.
        seed: seed of the bootstrap's private generator (the same seed, the same bounds).
        spectrum: masked forwards per probe sample of the sampled order spectrum
            (:func:`~concept_tracker.order_spectrum`) read at every tracked step beside the
            exact readings, under its own ``spectrum/*`` tags and files; None reads it only
            where the exact readings cannot run (more than ``spectrum_readings.SAMPLED_ABOVE`` players),
            then with ``spectrum_readings.SPECTRUM_FORWARDS`` forwards.
    """

    ratio: float = 0.05
    simple_max: int | None = None
    complex_min: int | None = None
    resamples: int = 1000
    seed: int = 0
    spectrum: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio))
        check_band_cutoffs(self.simple_max, self.complex_min)
        check_int("resamples", self.resamples, 1, unit="bootstrap resamples, such as 1000")
        check_int("seed", self.seed, None)
        check_int("spectrum", self.spectrum, 4, optional=True, unit="masked forwards per probe sample, such as 1000")

    @property
    def stored(self) -> dict[str, Any]:
        """The settings each stored step records (``store.SETTINGS``)."""
        return {"ratio": self.ratio, "simple_max": self.simple_max, "complex_min": self.complex_min}


@dataclass(frozen=True)
class OutputConfig:
    """What a tracker writes besides the scalars.

    Attributes:
        store: write the raw interactions of every tracked step (safetensors).
        figures: draw the matplotlib figures at the 1st, 2nd, 4th, 8th, ... tracked step and,
            for the last one, at ``close()``; one takes a few tenths of a second of CPU.
        writer: an open ``SummaryWriter`` to log into (e.g. Lightning's); None opens one in
            ``log_dir`` on the first write.
    """

    store: bool = True
    figures: bool = True
    writer: SummaryWriter | None = None

    def __post_init__(self) -> None:
        check_type("writer", self.writer, SummaryWriter, "a torch SummaryWriter or None")


@dataclass(frozen=True)
class BudgetConfig:
    """What tracking may cost the training run.

    Attributes:
        max_overhead: None, or the largest fraction (0 < f < 1) of wall time that tracking may
            cost training (its stalls plus what the background work takes from training steps).
            With a horizon (``total_steps``, or the last step of a finite schedule), the steps to
            track are planned (first, last, the rest log-spaced; :mod:`concept_tracker.budget`);
            else a step is skipped when it would exceed the budget.
        total_steps: the run's last step, when known (the integrations pass it).
        batch_size: rows per forward, the memory a tracked step may take (None: automatic).
        sync: finish each tracked step inside ``step()``, with no background work (debugging).
    """

    max_overhead: float | None = None
    total_steps: int | None = None
    batch_size: int | None = None
    sync: bool = False

    def __post_init__(self) -> None:
        check_fraction("max_overhead", self.max_overhead)
        check_int("total_steps", self.total_steps, 0, optional=True, unit="the run's last step")
        check_int("batch_size", self.batch_size, optional=True, unit="rows per forward")


CONFIGS = {"readings": ReadingsConfig, "output": OutputConfig, "budget": BudgetConfig}
LEGACY_FIELDS = {
    "readings": ("ratio", "simple_max", "complex_min"),
    "output": ("store", "figures", "writer"),
    "budget": ("max_overhead", "total_steps", "batch_size", "sync"),
}
"""The loose keywords of earlier releases, by the config that now holds them."""


def configs(given: Mapping[str, Any], legacy: dict[str, Any], owner: str) -> tuple[dict[str, Any], list[str]]:
    """The configs named in ``given`` (``{"readings": ReadingsConfig | None, ...}``), with the
    loose keywords of earlier releases (``ratio=``, ``figures=``, ...) popped from ``legacy``
    and folded in; and the notes for :func:`warn_legacy` saying where each moved. A ``kind``
    in ``given`` passes through, or becomes the old ``and_or=AndOrConfig(...)`` with
    ``kind="and_or"``.

    Raises:
        ValueError: if a config has the wrong type, or a loose keyword repeats a given config.
    """
    out: dict[str, Any] = {}
    moved = []
    if "kind" in given:
        solver = check_type("and_or", legacy.pop("and_or", None), AndOrConfig, "an AndOrConfig or None")
        out["kind"] = solver if solver is not None and given["kind"] == "and_or" else given["kind"]
        moved += ["and_or= -> kind=AndOrConfig(...)"] if solver is not None else []
    for name, config in given.items():
        if name == "kind":
            continue
        cls = CONFIGS[name]
        check_type(name, config, cls, f"a {cls.__name__} or None")
        loose = {key: legacy.pop(key) for key in LEGACY_FIELDS[name] if key in legacy}
        if loose and config is not None:
            raise ValueError(f"{owner} got {name}= and {sorted(loose)}; put {sorted(loose)} into {name}= only.")
        moved += [f"{key}= -> {name}={cls.__name__}({key}=...)" for key in loose]
        out[name] = config if config is not None else cls(**loose)
    return out, moved


def warn_legacy(owner: str, moved: list[str], legacy: Mapping[str, Any], stacklevel: int = 3) -> None:
    """One ``FutureWarning`` naming the keywords of earlier releases that were used and where
    they moved; a ``TypeError``, as Python gives, for keywords that never existed."""
    if legacy:
        raise TypeError(f"{owner} got unexpected keyword argument(s) {sorted(legacy)}.")
    if moved:
        warnings.warn(
            f"{owner}: {'; '.join(moved)}. The old keywords work for this release only.",
            FutureWarning,
            stacklevel=stacklevel,
        )


TRACKER_OPTIONS = ("kind", "value", "strict", "readings", "output", "budget")
"""The ConceptTracker keywords a framework callback passes on; it fills in the rest itself."""


def tracker_options(options: dict[str, Any], owner: str) -> dict[str, Any]:
    """A callback's ConceptTracker keywords, checked at its construction rather than when
    training starts: every config built, the loose keywords of earlier releases folded in
    (one ``FutureWarning``).

    Raises:
        ValueError: for keywords ConceptTracker does not take or that the callback fills in
            (``log_dir``, ``schedule``, the probes, ``writer``, ``total_steps``).
    """
    loose = {key for keys in LEGACY_FIELDS.values() for key in keys} - {"writer", "total_steps"} | {"and_or"}
    unknown = sorted(set(options) - set(TRACKER_OPTIONS) - loose)
    if unknown:
        raise ValueError(f"{owner} got unknown tracker option(s) {unknown}; tracker options are {TRACKER_OPTIONS}.")
    passed_on = ("value", "strict")  # taken as they are, like ConceptTracker's own keywords
    legacy = {key: value for key, value in options.items() if key not in passed_on}
    given = {"kind": legacy.pop("kind", "and"), **{name: legacy.pop(name, None) for name in CONFIGS}}
    found, moved = configs(given, legacy, owner)
    warn_legacy(owner, moved, legacy, stacklevel=4)
    return {**{key: options[key] for key in passed_on if key in options}, **found}
