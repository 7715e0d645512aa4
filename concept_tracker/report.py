"""Summaries, figures and an HTML report of finished runs, read back from disk.

A run is a tracker's ``log_dir``. The interaction metrics are recomputed from the raw
interactions stored there (``interactions/step_*.safetensors`` and ``interactions/heldout/``),
with the same pure functions the tracker logs with, so a report needs no TensorBoard events.
The TensorBoard scalars of the same directory add what interactions cannot give: losses and
accuracy (for the loss-gap step of SPEC §8) and the tracker's own timing.

The sampled order spectrum a run stored (``spectrum/step_*.safetensors``: read beside the exact
readings with ``ReadingsConfig(spectrum=...)``, or instead of them above ``tracker.SAMPLED_ABOVE``
players) is read back as :class:`SampledSummary`: estimates with their intervals, shown in their
own table and figure and never mixed into the exact readings. A run with only the spectrum
reports it alone.

    >>> runs = [summarize_run("runs/demo/clean"), summarize_run("runs/demo/noisy")]
    >>> print(summary_table(runs))
    >>> write_html(runs, "report.html")
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from . import store
from .config import ReadingsConfig
from .interactions import Interactions
from .metrics.dynamics import Trajectory, loss_gap_step
from .metrics.profile import Bands, OrderProfile, band_orders, stack_effects
from .metrics.similarity import train_test_similarity
from .spectrum import overall_scalars
from .summary import summarize_step
from .writers import tags
from .writers.render import figure_png

DEFAULT_RATIO = 0.05
"""Salience threshold ratio of runs whose stored interactions do not record theirs."""

EARLY_FRACTION = 0.05
""""Early in training" means the first tracked step at or after this fraction of the last one."""

LOSS_TAGS = (
    ("loss/eval", "loss/train"),  # the demo and plain loops that follow it
    ("eval/loss", "train/loss"),  # Hugging Face Trainer's TensorBoard callback
    ("val_loss", "train_loss"),  # common Lightning names
)
"""(eval, train) loss tag pairs searched, in this order, for the loss-gap step."""

ACCURACY_TAGS = ("accuracy/test", "eval/accuracy", "val_acc")
"""Test accuracy tags searched, in this order."""


@dataclass
class RunSummary:
    """Everything the report shows about one run, per tracked step and at the last one.

    Per-step lists have one entry per tracked step in ``steps``.

    Attributes:
        name: label of the run (its directory name unless given).
        log_dir: the run directory.
        n: number of players.
        kind: "and", "or" or "and_or".
        ratio: salience threshold ratio the metrics were recomputed with.
        bands: orders of the simple, medium and complex bands.
        defaulted: the settings among "ratio", "simple_max", "complex_min" that were neither
            given nor recorded in the run's stored interactions (files written before the
            settings were stored), so the defaults were used; see :attr:`settings_note`.
        steps: tracked steps with stored interactions.
        simple_strength, medium_strength, complex_strength: salient strength of each band.
        complex_ratio: complex strength over total salient strength.
        num_concepts: mean salient concepts per probe sample.
        final_profile: order profile at the last step (kinds pooled).
        train_test: [n + 1] train-test similarity per order at the last step, or None without
            held-out interactions.
        detour_by_order: [n + 1] detour ratio per order over all tracked steps (NaN where a
            concept set did not move).
        detour_simple, detour_complex: detour ratio of the simple and complex bands.
        sign_flips: sign flips of salient concepts over the run.
        high_order_strength: H(t), medium + complex salient strength (absolute; shown for
            reference, it grows with the model's output scale).
        high_order_share: share_H(t), H(t) / salient strength of all orders (NaN at a step
            without concepts).
        phase_boundary: step where the smoothed share_H(t) is lowest before a sustained rise,
            or None (as logged under ``dynamics/phase_boundary_step``).
        baseline: what masked players became, as the stored interactions record it (None when
            they do not).
        loss_gap_step: step where the eval-train loss gap starts to grow, or None (no losses
            logged, or no sustained growth).
        scalars: every TensorBoard scalar of the run, ``{tag: [(step, value), ...]}``.
        readings: ``{step: {tag: value}}``, the concept scalars of every tracked step,
            recomputed by :func:`~concept_tracker.summary.summarize_step` exactly as the tracker
            logged them (the series above are read from it).
        sampled: the run's stored sampled order spectrum, or None when it stored none.

    A run with only the sampled spectrum (more players than the exact readings allow) has no
    exact readings: ``steps`` and the series are empty, ``final_profile`` is None, the detour
    ratios are NaN, ``sign_flips`` is None, ``kind`` is "and" (the spectrum estimates Harsanyi
    AND strength), and ``n``, ``ratio`` and ``bands`` are the spectrum's.
    """

    name: str
    log_dir: str
    n: int
    kind: str
    ratio: float
    bands: Bands
    steps: list[int]
    simple_strength: list[float]
    medium_strength: list[float]
    complex_strength: list[float]
    complex_ratio: list[float]
    num_concepts: list[float]
    final_profile: OrderProfile | None
    train_test: Tensor | None
    detour_by_order: Tensor
    detour_simple: float
    detour_complex: float
    sign_flips: int | None
    high_order_strength: list[float]
    high_order_share: list[float]
    phase_boundary: int | None
    loss_gap_step: int | None
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    defaulted: tuple[str, ...] = ()
    readings: dict[int, dict[str, float]] = field(default_factory=dict)
    baseline: str | None = None
    sampled: SampledSummary | None = None

    @property
    def settings_note(self) -> str | None:
        """One sentence naming the default settings used because the run did not record its
        own, or None when every setting was recorded or given."""
        if not self.defaulted:
            return None
        defaults = {
            "ratio": f"ratio={self.ratio:g}",
            "simple_max": f"simple_max=n//3={self.n // 3}",
            "complex_min": f"complex_min=n//2+1={self.n // 2 + 1}",
        }
        return (
            f"{self.name}: its stored interactions do not record {', '.join(self.defaulted)}; "
            f"the report used the default {', '.join(defaults[k] for k in self.defaulted)}."
        )

    @property
    def sampled_note(self) -> str | None:
        """One sentence when the sampled spectrum was read with another ratio or other bands than
        the exact readings are reported with (its shares cannot be recomputed), else None."""
        s = self.sampled
        if s is None or (s.ratio, s.bands) == (self.ratio, self.bands):
            return None
        return (
            f"{self.name}: the sampled order spectrum keeps the ratio={s.ratio:g}, simple orders "
            f"{_span(s.bands.simple)} and complex orders {_span(s.bands.complex)} it was tracked with; the "
            "ratio and band options apply to the exact readings only."
        )

    def reading(self, tag: str, step: int | None = None) -> float:
        """The value of ``tag`` at ``step`` (default the last tracked step); NaN when absent
        (always, for a run without exact readings)."""
        if not self.steps:
            return math.nan
        return self.readings[self.steps[-1] if step is None else step].get(tag, math.nan)

    def interval(self, tag: str, step: int | None = None) -> tuple[float, float]:
        """The 95% bootstrap interval ``(low, high)`` of ``tag`` at ``step`` (default the last
        tracked step), as logged beside it; NaN bounds when it has none."""
        return self.reading(tags.ci_low(tag), step), self.reading(tags.ci_high(tag), step)

    @property
    def early_step(self) -> int:
        """The first tracked step at or after ``EARLY_FRACTION`` of the last tracked step."""
        bound = EARLY_FRACTION * self.steps[-1]
        return next(s for s in self.steps if s >= bound)

    @property
    def early_simple_strength(self) -> float:
        """Simple-band strength at :attr:`early_step`."""
        return self.simple_strength[self.steps.index(self.early_step)]

    @property
    def test_accuracy(self) -> float | None:
        """The last logged test accuracy, or None when the run logged none."""
        for tag in ACCURACY_TAGS:
            if self.scalars.get(tag):
                return self.scalars[tag][-1][1]
        return None

    @property
    def eval_loss(self) -> float | None:
        """The last logged evaluation loss, or None when the run logged none."""
        for eval_tag, _ in LOSS_TAGS:
            if self.scalars.get(eval_tag):
                return self.scalars[eval_tag][-1][1]
        return None

    def band_similarity(self, band: str) -> float:
        """Mean train-test similarity over the orders of a band at the last step (NaN without
        held-out interactions)."""
        orders = list(getattr(self.bands, band))
        if self.train_test is None or not orders:
            return math.nan
        return float(self.train_test[orders].mean())


@dataclass
class SampledSummary:
    """The sampled order spectrum of a run, read back from ``<log_dir>/spectrum/`` as stored.

    Estimates from random masks (:func:`~concept_tracker.order_spectrum`), kept apart from the
    exact readings: their own steps, tags and intervals (which include the sampling error).

    Attributes:
        steps: tracked steps with a stored spectrum.
        n: number of players.
        forwards_per_probe: masked forwards per probe sample the run asked for.
        forwards: per step, the masked forwards run (all probe samples together).
        ratio: salience threshold ratio the spectrum was read with.
        bands: its simple, medium and complex orders (as stored: they cannot be changed afterwards).
        run: the run id its files record (None when they record none).
        readings: ``{step: {tag: value}}``: the ``spectrum/*`` scalars, each share with its
            ``_ci_low`` / ``_ci_high``, exactly as the tracker logged them.
    """

    steps: list[int]
    n: int
    forwards_per_probe: int
    forwards: list[int]
    ratio: float
    bands: Bands
    run: str | None
    readings: dict[int, dict[str, float]]

    def share(self, band: str, step: int | None = None) -> tuple[float, float, float]:
        """``(value, low, high)``: the share of salient strength in ``band`` ("simple", "medium"
        or "complex") at ``step`` (default the last), with its 95% interval."""
        tag = tags.SPECTRUM_SHARES[tags.BANDS.index(band)]
        at = self.readings[self.steps[-1] if step is None else step]
        return at[tag], at[tags.ci_low(tag)], at[tags.ci_high(tag)]


def summarize_spectrum(log_dir: str | os.PathLike) -> SampledSummary | None:
    """Read the sampled order spectrum files of a run (each checked: see :func:`store.load_spectrum`).

    Returns:
        :class:`SampledSummary`, or None when the run stored no spectrum.
    Raises:
        ValueError: if a file is damaged, copied, or disagrees with the first on the run id, the
            number of players, the forwards per probe, the ratio or the bands (the message names
            both files).
    """
    steps = store.list_spectra(log_dir)
    if not steps:
        return None
    keys = ("run", "n", "forwards_per_probe", "ratio", "simple_max", "complex_min")
    readings, forwards = {}, []
    first_path = store.spectrum_path(log_dir, steps[0])
    first = store.load_spectrum(first_path)[1]
    for step in steps:
        path = store.spectrum_path(log_dir, step)
        meta = first if step == steps[0] else store.load_spectrum(path)[1]
        differ = [k for k in keys if meta[k] != first[k]]
        if differ:
            what = "; ".join(f"{k}={meta[k]!r} there, {first[k]!r} in {first_path.name}" for k in differ)
            hint = (
                " (written by different trackers: give each run its own folder, concept_tracker.new_run_dir())"
                if "run" in differ
                else ""
            )
            raise ValueError(
                f"{path} does not belong with {first_path}: {what}; one run directory must hold one tracked "
                f"run{hint}. Delete the file that does not belong, or report the runs from separate folders."
            )
        readings[step] = overall_scalars(meta["overall"], meta["forwards"])
        forwards.append(meta["forwards"])
    return SampledSummary(
        steps=steps,
        n=first["n"],
        forwards_per_probe=first["forwards_per_probe"],
        forwards=forwards,
        ratio=first["ratio"],
        bands=band_orders(first["n"], first["simple_max"], first["complex_min"]),
        run=first["run"],
        readings=readings,
    )


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files directly under ``log_dir``.

    Returns:
        ``{tag: [(step, value), ...]}`` sorted by step; for a step written more than once the
        last value wins. Empty when there are no event files.
    """
    from tensorboard.backend.event_processing.event_accumulator import (
        HISTOGRAMS,
        IMAGES,
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    if not any(p.name.startswith("events.out.tfevents") for p in Path(log_dir).iterdir()):
        return {}
    # Keep every scalar; skip loading images and histograms, which a summary never reads.
    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0, IMAGES: 1, HISTOGRAMS: 1, TENSORS: 1})
    accumulator.Reload()
    out = {}
    for tag in accumulator.Tags()["scalars"]:
        by_step = {e.step: e.value for e in accumulator.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out


def stored_settings(log_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The settings a run was tracked with, as its stored interactions record them.

    Every interactions file of the run (probe and held-out) is read, header only. Files that
    do not record settings (written before they were stored) make no claim.

    Returns:
        ``{"ratio", "simple_max", "complex_min"}`` (see :func:`store.tracked_settings`), or None
        when no file records them.
    Raises:
        ValueError: if two files record different settings, baselines or runs (interleaved
            runs, or a run resumed with another baseline: the message names both files).
    """
    found = first = None
    runs: dict[str | None, Path] = {}  # run id -> its first file
    baselines: dict[str, Path] = {}  # baseline -> its first file
    for split in store.SPLITS:
        for step in store.list_steps(log_dir, split):
            path = store.step_path(log_dir, step, split)
            meta = store.load_step_metadata(path)
            runs.setdefault(meta.get("run"), path)
            named = [first_file for run, first_file in runs.items() if run is not None]
            if len(named) > 1:
                a, b = named[:2]
                raise ValueError(
                    f"{log_dir} holds interleaved runs: {a} and {b} were written by different trackers. "
                    "Give each run its own folder (concept_tracker.new_run_dir()) and report them side by side."
                )
            baseline = store.stored_baseline(meta)
            if baseline is not None:
                baselines.setdefault(baseline, path)
                if len(baselines) > 1:
                    (old, old_path), (new, new_path) = list(baselines.items())[:2]
                    raise ValueError(
                        f"{new_path} was tracked with baseline {new!r} but {old_path} with baseline {old!r}; one "
                        "run directory must hold one tracked run (a resume with another baseline?)."
                    )
            settings = store.tracked_settings(meta)
            if settings is None:
                continue
            if found is None:
                found, first = settings, path
            elif settings != found:
                raise ValueError(
                    f"{path} was tracked with {_settings_text(settings)} but {first} with "
                    f"{_settings_text(found)}; one run directory must hold one tracked run."
                )
    return found


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in settings.items())


def summarize_run(
    log_dir: str | os.PathLike, name: str | None = None, readings: ReadingsConfig | Mapping[str, Any] | None = None
) -> RunSummary:
    """Recompute the concept metrics of a run from its stored interactions, and read its stored
    sampled order spectrum (:func:`summarize_spectrum`, :attr:`RunSummary.sampled`).

    The salience ratio and band cut-offs default to those the run was tracked with, as its
    stored interactions record them (:func:`stored_settings`); ``readings`` overrides them.
    Runs stored before the settings were recorded fall back to ``DEFAULT_RATIO`` and the
    default bands, and the summary says so (:attr:`RunSummary.settings_note`).

    Args:
        log_dir: a tracker's ``log_dir`` (holding ``interactions/step_*.safetensors``).
        name: label of the run; default the directory name.
        readings: a :class:`~concept_tracker.config.ReadingsConfig` used as is, or a mapping of
            some of its fields (``{"simple_max": 2}``; a field missing or None: the stored
            setting, else the default). Resamples and seed are not stored: pass the run's own
            when it changed them.
    Returns:
        :class:`RunSummary`.
    Raises:
        FileNotFoundError: if ``log_dir`` does not exist.
        ValueError: if it holds neither interactions nor a sampled spectrum, or a stored file is
            truncated, corrupt, copied, or inconsistent with the others, settings and run id
            included (the message names the file).
    """
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"{log_dir} is not a directory; pass a tracker's log_dir.")
    steps = store.list_steps(log_dir)
    sampled = summarize_spectrum(log_dir)
    if not steps and sampled is None:
        raise ValueError(
            f"{log_dir} holds no stored interactions ({store.step_path(log_dir, 0).parent}/step_*.safetensors) "
            f"and no sampled order spectrum ({store.spectrum_path(log_dir, 0).parent}/step_*.safetensors); "
            "pass the log_dir of a run tracked with store=True."
        )
    if not steps:
        return _sampled_only(log_dir, name or log_dir.name, cast(SampledSummary, sampled), readings)
    heldout_steps = set(store.list_steps(log_dir, "heldout"))
    stored = stored_settings(log_dir)
    defaulted: tuple[str, ...] = ()
    if isinstance(readings, ReadingsConfig):
        config = readings
    else:
        given = {k: v for k, v in (readings or {}).items() if v is not None}
        # None cut-offs already mean the default bands; only the note needs to know.
        defaulted = tuple(k for k in store.SETTINGS if k not in given) if stored is None else ()
        settings = {"ratio": DEFAULT_RATIO, **(stored or {}), **given}
        config = ReadingsConfig(**settings)
    trajectory = Trajectory(config)
    per_step: dict[int, dict[str, float]] = {}
    for step in steps:
        path = store.step_path(log_dir, step)
        res, meta = store.load_step(path)
        if step == steps[0]:
            first, baseline = res, store.stored_baseline(meta)
            _check_same_run(log_dir, sampled, path, res.n, meta.get("run"))
        elif (res.n, res.kind, res.num_samples) != (first.n, first.kind, first.num_samples):
            raise ValueError(
                f"{path} holds n={res.n}, kind={res.kind!r}, {res.num_samples} samples but the "
                f"first step has n={first.n}, kind={first.kind!r}, {first.num_samples}; one run "
                "directory must hold one tracked run."
            )
        held: Interactions | None = None
        if step in heldout_steps and res.aligned:
            held = store.load_step(store.step_path(log_dir, step, "heldout"))[0]
        trajectory.append(step, stack_effects(res))
        summary = summarize_step(step, res, trajectory, held=held)
        per_step[step] = summary.scalars
        profile = cast(OrderProfile, summary.profile)
    # Per order at the last step, with the empty set as entry 0 (the readings hold orders >= 1).
    train_test = None if held is None else train_test_similarity(res, res.targets, held, held.targets)
    bands = band_orders(first.n, config.simple_max, config.complex_min)
    scalars = read_scalars(log_dir)
    series = {tag: [per_step[step].get(tag, math.nan) for step in steps] for tag in per_step[steps[-1]]}
    last = per_step[steps[-1]]
    simple, medium, complex_ = (series[tag] for tag in tags.band_strength_tags())
    return RunSummary(
        name=name or log_dir.name,
        log_dir=str(log_dir),
        n=first.n,
        kind=first.kind,
        ratio=config.ratio,
        bands=bands,
        steps=steps,
        simple_strength=simple,
        medium_strength=medium,
        complex_strength=complex_,
        complex_ratio=series[tags.summary("complex_ratio")],
        num_concepts=series[tags.summary("num_concepts")],
        final_profile=profile,
        train_test=train_test,
        detour_by_order=cast(Tensor, trajectory.detour_ratio()),
        detour_simple=last[tags.band_detour_ratio("simple")],
        detour_complex=last[tags.band_detour_ratio("complex")],
        sign_flips=int(last[tags.SIGN_FLIPS]),
        high_order_strength=series[tags.HIGH_ORDER_STRENGTH],
        high_order_share=series[tags.HIGH_ORDER_SHARE],
        phase_boundary=None if tags.PHASE_BOUNDARY not in last else int(last[tags.PHASE_BOUNDARY]),
        loss_gap_step=_loss_gap(scalars),
        scalars=scalars,
        defaulted=defaulted,
        readings=per_step,
        baseline=baseline,
        sampled=sampled,
    )


def _check_same_run(log_dir: Path, sampled: SampledSummary | None, path: Path, n: int, run: str | None) -> None:
    """Refuse a spectrum that is not of the run of the exact step file ``path`` (``n`` players,
    run id ``run``; None: the file records none and makes no claim)."""
    if sampled is None:
        return
    other_run = None not in (run, sampled.run) and run != sampled.run
    if other_run or sampled.n != n:
        raise ValueError(
            f"{store.spectrum_path(log_dir, sampled.steps[0])} holds the sampled spectrum of run {sampled.run} "
            f"with n={sampled.n}, but {path} is of run {run} with n={n}; one run directory must hold one "
            "tracked run. Delete the files that do not belong, or report the runs from separate folders."
        )


def _loss_gap(scalars: dict[str, list[tuple[int, float]]]) -> int | None:
    """The step where the eval-train loss gap starts to grow, from the first loss pair logged."""
    for eval_tag, train_tag in LOSS_TAGS:
        if scalars.get(eval_tag) and scalars.get(train_tag):
            return loss_gap_step(scalars[eval_tag], scalars[train_tag])
    return None


def _sampled_only(
    log_dir: Path, name: str, sampled: SampledSummary, readings: ReadingsConfig | Mapping[str, Any] | None
) -> RunSummary:
    """The summary of a run that stored only the sampled spectrum: no exact readings. Ratio and
    band options, which the stored spectrum cannot follow, are kept so that its note says so."""
    given = (
        readings
        if isinstance(readings, ReadingsConfig)
        else ReadingsConfig(**{"ratio": sampled.ratio, **{k: v for k, v in (readings or {}).items() if v is not None}})
    )
    bands = sampled.bands
    if (given.simple_max, given.complex_min) != (None, None):
        bands = band_orders(
            sampled.n, given.simple_max or len(bands.simple), given.complex_min or sampled.n + 1 - len(bands.complex)
        )
    scalars = read_scalars(log_dir)
    return RunSummary(
        name=name,
        log_dir=str(log_dir),
        n=sampled.n,
        kind="and",
        ratio=given.ratio,
        bands=bands,
        steps=[],
        simple_strength=[],
        medium_strength=[],
        complex_strength=[],
        complex_ratio=[],
        num_concepts=[],
        final_profile=None,
        train_test=None,
        detour_by_order=torch.full((sampled.n + 1,), math.nan),
        detour_simple=math.nan,
        detour_complex=math.nan,
        sign_flips=None,
        high_order_strength=[],
        high_order_share=[],
        phase_boundary=None,
        loss_gap_step=_loss_gap(scalars),
        scalars=scalars,
        sampled=sampled,
    )


# ---------------------------------------------------------------------------------- tables


def _fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def _fmt_interval(value: float, interval: tuple[float, float]) -> str:
    """``value [low, high]``, or the value alone when the interval is undefined."""
    low, high = interval
    if math.isnan(value) or math.isnan(low) or math.isnan(high):
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"


def intervals_overlap(a: RunSummary, b: RunSummary, tag: str) -> bool | None:
    """Whether the 95% intervals of ``tag`` at the last steps of two runs overlap (None when
    either is undefined). Overlapping intervals do not show the runs differ on that reading."""
    (low_a, high_a), (low_b, high_b) = a.interval(tag), b.interval(tag)
    if any(math.isnan(x) for x in (low_a, high_a, low_b, high_b)):
        return None
    return low_a <= high_b and low_b <= high_a


def _span(orders: Sequence[int]) -> str:
    """Orders as ``"1-3"``, ``"4"`` or ``"none"``."""
    if not orders:
        return "none"
    return str(orders[0]) if len(orders) == 1 else f"{orders[0]}-{orders[-1]}"


def _shared_orders(runs: Sequence[RunSummary], band: str) -> tuple[int, ...] | None:
    """The orders of ``band`` when every run has the same, else None (runs with another n or
    other stored cut-offs)."""
    orders = {tuple(getattr(r.bands, band)) for r in runs}
    return orders.pop() if len(orders) == 1 else None


def summary_rows(runs: Sequence[RunSummary]) -> list[tuple[str, list[str]]]:
    """The summary as ``(row label, [cell per run])`` rows: per band, then dynamics and
    generalization, each value at the last tracked step unless the label says otherwise."""

    def row(label: str, values: list) -> tuple[str, list[str]]:
        return label, [_fmt(v) for v in values]

    def with_interval(label: str, tag: str) -> tuple[str, list[str]]:
        """The reading at the last step with its 95% bootstrap interval ("-" without exact readings)."""
        return label, [_fmt_interval(r.reading(tag), r.interval(tag)) if r.steps else "-" for r in runs]

    def band_label(band: str) -> str:
        orders = _shared_orders(runs, band)
        if orders is None:
            return f"{band} (orders differ per run)"
        if not orders:
            return f"{band} (no orders)"
        return f"{band} (order {orders[0]})" if len(orders) == 1 else f"{band} (orders {orders[0]}-{orders[-1]})"

    rows = [
        ("last tracked step", [str(r.steps[-1]) if r.steps else "-" for r in runs]),
        ("baseline", [r.baseline or "unknown" for r in runs]),
        row("test accuracy", [r.test_accuracy for r in runs]),
        row("eval loss", [r.eval_loss for r in runs]),
    ]
    for band, tag in zip(tags.BANDS, tags.band_strength_tags()):
        rows.append(with_interval(f"{band_label(band)} strength", tag))
    rows += [
        with_interval("simple share", tags.share("simple_share")),
        with_interval("medium share", tags.share("medium_share")),
        with_interval("complex ratio (complex share)", tags.summary("complex_ratio")),
        with_interval("high-order share (medium + complex)", tags.HIGH_ORDER_SHARE),
        with_interval("concepts per sample", tags.summary("num_concepts")),
        (
            "simple strength early (step)",
            [f"{_fmt(r.early_simple_strength)} ({r.early_step})" if r.steps else "-" for r in runs],
        ),
    ]
    for band in tags.BANDS:
        rows.append(with_interval(f"train-test similarity, {band}", tags.band_train_test_similarity(band)))
    rows += [
        with_interval("detour ratio, simple", tags.band_detour_ratio("simple")),
        with_interval("detour ratio, complex", tags.band_detour_ratio("complex")),
        row("sign flips", [r.sign_flips for r in runs]),
        row("phase boundary step (high-order share valley)", [r.phase_boundary for r in runs]),
        row("loss gap starts growing (step)", [r.loss_gap_step for r in runs]),
    ]
    return rows


def summary_table(runs: Sequence[RunSummary]) -> str:
    """A plain-text table, one column per run (see :func:`summary_rows`; averaged readings as
    ``value [95% interval]``), followed by the :attr:`RunSummary.settings_note` of each run
    that used default settings."""
    if not runs:
        raise ValueError("runs is empty; pass at least one RunSummary.")
    rows = [("", [r.name for r in runs]), *summary_rows(runs)]
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(runs))]
    lines = []
    for label, cells in rows:
        lines.append("  ".join([label.ljust(label_width), *(c.rjust(w) for c, w in zip(cells, widths))]))
    notes = [note for r in runs for note in (r.settings_note, _sampled_only_note(r), r.sampled_note) if note]
    return "\n".join(lines + (["", *notes] if notes else []))


def _sampled_only_note(run: RunSummary) -> str | None:
    if run.steps:
        return None
    return (
        f"{run.name}: no exact readings (n={run.n} players: the tracker read only the sampled order "
        "spectrum); its estimates are in the sampled order spectrum table."
    )


SAMPLED_HEADING = (
    "Sampled order spectrum: estimates from random masks, not the exact readings "
    "[95% interval, sampling error included]"
)
"""The heading of the sampled spectrum's table, in the text and the HTML report."""


def sampled_rows(run: RunSummary) -> list[list[str]]:
    """The stored sampled spectrum of ``run`` as rows: a header, then one row per step with the
    sampled simple, medium and complex shares (``value [low, high]``) and the forwards run.
    Empty when the run stored no spectrum."""
    s = run.sampled
    if s is None:
        return []
    header = ["step"] + [f"{band} share (sampled, orders {_span(getattr(s.bands, band))})" for band in tags.BANDS]
    rows = [header + ["forwards"]]
    for step, forwards in zip(s.steps, s.forwards):
        shares = [s.share(band, step) for band in tags.BANDS]
        rows.append([str(step), *(_fmt_interval(v, (lo, hi)) for v, lo, hi in shares), str(forwards)])
    return rows


def sampled_caption(run: RunSummary) -> str:
    """What a run's sampled table shows: its size, forwards per probe and ratio."""
    s = cast(SampledSummary, run.sampled)
    return (
        f"{run.name}: n={s.n}, {s.forwards_per_probe} masked forwards per probe sample, ratio={s.ratio:g}, "
        f"{len(s.steps)} steps"
    )


def sampled_table(runs: Sequence[RunSummary]) -> str:
    """The sampled spectrum of every run that stored one (:func:`sampled_rows`) under
    :data:`SAMPLED_HEADING`, as plain text; empty when no run stored one."""
    blocks = []
    for r in runs:
        rows = sampled_rows(r)
        if not rows:
            continue
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        body = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
        blocks.append("\n".join([sampled_caption(r), *body]))
    return "\n\n".join([SAMPLED_HEADING, *blocks]) if blocks else ""


BASELINE_DIR_PREFIX = "baseline-"
"""``analyze --baselines`` writes one run per baseline into ``<log_dir>/baseline-<name>``."""

ORDERING_READINGS = (
    ("complex ratio", tags.summary("complex_ratio")),
    ("high-order share", tags.HIGH_ORDER_SHARE),
    ("simple share", tags.share("simple_share")),
    ("train-test similarity, simple", tags.band_train_test_similarity("simple")),
)
"""Readings whose ordering of runs (clean vs noisy, ...) is compared across baselines."""


def baseline_runs(log_dir: str | os.PathLike) -> dict[str, Path]:
    """``{baseline: run directory}`` of the per-baseline runs under ``log_dir`` (empty when
    it holds none)."""
    found = sorted(p for p in Path(log_dir).glob(f"{BASELINE_DIR_PREFIX}*") if p.is_dir())
    return {p.name[len(BASELINE_DIR_PREFIX) :]: p for p in found}


def _ordering(names: Sequence[str], values: Sequence[float]) -> str:
    """``"a > b > c"`` by decreasing value (no NaN); ties joined with ``=``."""
    ranked = sorted(zip(values, names), key=lambda vn: -vn[0])
    text = ranked[0][1]
    for (before, _), (value, name) in zip(ranked, ranked[1:]):
        text += f" {'=' if value == before else '>'} {name}"
    return text


def baseline_agreement(runs_by_baseline: Mapping[str, Sequence[RunSummary]]) -> list[str]:
    """Whether the conclusions hold across baselines, one line each.

    For every run: is the ordering of the simple, medium and complex bands by salient strength
    at the last step the same under every baseline? With two runs or more (a clean and a noisy
    run, say, in the same order under every baseline): is the ordering of the runs by each of
    :data:`ORDERING_READINGS` the same under every baseline?

    Args:
        runs_by_baseline: ``{baseline: [RunSummary, ...]}``, the same runs in the same order
            under each baseline.
    Returns:
        Lines of text, each saying "agrees" or "differs" and giving the orderings.
    """
    if len(runs_by_baseline) < 1 or len({len(runs) for runs in runs_by_baseline.values()}) != 1:
        raise ValueError("runs_by_baseline must hold the same number of runs (at least one) under every baseline.")
    lines = []

    def verdict(what: str, orderings: dict[str, str]) -> str:
        agree = len(set(orderings.values())) == 1
        detail = next(iter(orderings.values())) if agree else "; ".join(f"{b}: {o}" for b, o in orderings.items())
        return f"{what} {'agrees' if agree else 'differs'} across baselines ({detail})"

    first = next(iter(runs_by_baseline.values()))
    for i, run in enumerate(first):
        orderings = {
            b: _ordering(tags.BANDS, [runs[i].reading(t) for t in tags.band_strength_tags()])
            for b, runs in runs_by_baseline.items()
        }
        lines.append(verdict(f"{run.name}: band ordering by salient strength", orderings))
    if len(first) > 1:
        names = [r.name for r in first]
        for label, tag in ORDERING_READINGS:
            values = {b: [r.reading(tag) for r in runs] for b, runs in runs_by_baseline.items()}
            if not any(math.isnan(v) for vs in values.values() for v in vs):  # e.g. no held-out probes
                lines.append(verdict(f"run ordering by {label}", {b: _ordering(names, vs) for b, vs in values.items()}))
    return lines


def similarity_table(runs: Sequence[RunSummary]) -> str:
    """Train-test similarity per order at the last step, one row per run ("-" without held-out
    interactions)."""
    n = max(r.n for r in runs)
    header = ["order"] + [str(m) for m in range(1, n + 1)]
    lines = [header]
    for r in runs:
        values = r.train_test.tolist()[1:] if r.train_test is not None else []
        lines.append([r.name] + [f"{v:.2f}" for v in values] + ["-"] * (n - len(values)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    )


# --------------------------------------------------------------------------------- figures


_MARGINS = {"left": 0.12, "right": 0.97, "bottom": 0.15, "top": 0.9}


def _figure(width: float, panels: int = 1, height: float = 3.6, **margins: float) -> tuple[Figure, list[Axes]]:
    """An off-screen figure of ``panels`` axes side by side; ``margins`` override the report's
    default ``subplots_adjust`` margins."""
    fig = Figure(figsize=(width, height), dpi=100)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    fig.subplots_adjust(**{**_MARGINS, **margins})
    return fig, axes


def _label(
    ax: Axes, title: str, xlabel: str | None = None, ylabel: str | None = None, legend: str | None = "small"
) -> None:
    """Call after plotting: title, axis labels and a legend of the given font size (None: no
    legend). Without ``xlabel`` the x axis holds tracked steps (see :func:`_step_axis`)."""
    if xlabel is None:
        _step_axis(ax)
    else:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend is not None:
        ax.legend(fontsize=legend)


def _step_axis(ax: Axes) -> None:
    """Call after plotting: tracked steps are usually log-spaced, and symlog keeps step 0 and
    the early steps apart; steps are never negative."""
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("step")


def band_strength_figure(runs: Sequence[RunSummary]) -> Figure:
    """Salient strength of the simple, medium and complex bands over the tracked steps."""
    fig, axes = _figure(12, panels=3, left=0.06, right=0.99, top=0.88, wspace=0.25)
    for ax, band in zip(axes, ("simple", "medium", "complex")):
        for r in runs:
            ax.plot(r.steps, getattr(r, f"{band}_strength"), marker="o", markersize=3, label=r.name)
        orders = _shared_orders(runs, band)
        span = (
            "orders differ per run" if orders is None else f"orders {orders[0]}-{orders[-1]}" if orders else "no orders"
        )
        first = ax is axes[0]
        _label(
            ax,
            f"{band} concepts ({span})",
            ylabel="salient strength per sample" if first else None,
            legend="small" if first else None,
        )
    return fig


def complex_ratio_figure(runs: Sequence[RunSummary]) -> Figure:
    """Complex ratio (complex strength / total salient strength) over the tracked steps."""
    fig, (ax,) = _figure(6)
    for r in runs:
        ax.plot(r.steps, r.complex_ratio, marker="o", markersize=3, label=r.name)
    _label(ax, "share of salient strength in complex concepts", ylabel="complex ratio")
    return fig


def order_profile_figure(runs: Sequence[RunSummary]) -> Figure:
    """Salient strength per order at the last tracked step, runs side by side."""
    fig, (ax,) = _figure(7)
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        orders = torch.arange(1, r.n + 1)
        ax.bar(
            (orders + (i - (len(runs) - 1) / 2) * width).numpy(),
            cast(OrderProfile, r.final_profile).strength[1:].numpy(),
            width=width,
            label=f"{r.name} (step {r.steps[-1]})",
        )
    ax.set_xticks(range(1, runs[0].n + 1))
    _label(ax, "concepts by order at the last tracked step", "order m = |S|", "salient strength per sample")
    return fig


def train_test_figure(runs: Sequence[RunSummary]) -> Figure | None:
    """Train-test similarity per order at the last step (None when no run has held-out data)."""
    with_heldout = [(r, r.train_test) for r in runs if r.train_test is not None]
    if not with_heldout:
        return None
    fig, (ax,) = _figure(6)
    for r, train_test in with_heldout:
        ax.plot(range(1, r.n + 1), train_test[1:].numpy(), marker="o", label=r.name)
    ax.set_xticks(range(1, with_heldout[0][0].n + 1))
    ax.set_ylim(0, 1)
    _label(ax, "train-test similarity of concepts by order", "order m = |S|", "Jaccard similarity")
    return fig


def detour_figure(runs: Sequence[RunSummary]) -> Figure:
    """Detour ratio (path length / displacement) per order over the whole run."""
    fig, (ax,) = _figure(6)
    for r in runs:
        ax.plot(range(1, r.n + 1), r.detour_by_order[1:].numpy(), marker="o", label=r.name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(1, runs[0].n + 1))
    _label(ax, "how far concepts detour while they are learned", "order m = |S|", "detour ratio P / D")
    return fig


def phase_figure(runs: Sequence[RunSummary]) -> Figure:
    """Two-phase dynamics, one panel per run: the high-order share share_H(t) with its 95%
    interval and the phase boundary read off it (dashed), the step where the loss gap starts
    growing (dotted), and absolute H(t) on a log-scaled right axis for reference (it grows with
    the output scale and does not locate the boundary)."""
    fig, axes = _figure(5.5 * len(runs), panels=len(runs), height=3.8, left=0.07, right=0.92, wspace=0.35)
    for ax, r in zip(axes, runs):
        ax.plot(r.steps, r.high_order_share, marker="o", markersize=3, color="tab:green", label="share_H(t)")
        low, high = zip(*(r.interval(tags.HIGH_ORDER_SHARE, step) for step in r.steps))
        ax.fill_between(r.steps, low, high, color="tab:green", alpha=0.2, label="95% interval")
        ax.set_ylim(0, 1)
        absolute = ax.twinx()
        absolute.plot(r.steps, r.high_order_strength, color="tab:gray", linewidth=0.8, label="H(t), absolute")
        if min(r.high_order_strength) > 0:
            absolute.set_yscale("log")
        marks = [
            (r.phase_boundary, "tab:green", "--", "phase boundary"),
            (r.loss_gap_step, "tab:red", ":", "loss gap grows"),
        ]
        for step, color, style, label in marks:
            if step is not None:
                ax.axvline(step, color=color, linestyle=style, label=f"{label} {step}")
        _label(ax, f"{r.name}: share of medium + complex concepts", legend=None)
        # One legend for both y axes: the twin's lines are not among ax's handles.
        lines = ax.get_legend_handles_labels()
        more = absolute.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize="x-small", loc="upper left")
    axes[0].set_ylabel("share of salient strength")
    absolute.set_ylabel("H(t), salient strength")
    return fig


def loss_figure(runs: Sequence[RunSummary]) -> Figure | None:
    """Train and eval losses as logged (None when no run logged a known loss pair)."""
    pairs = []
    for r in runs:
        for eval_tag, train_tag in LOSS_TAGS:
            if r.scalars.get(eval_tag) and r.scalars.get(train_tag):
                pairs.append((r, eval_tag, train_tag))
                break
    if not pairs:
        return None
    fig, (ax,) = _figure(6)
    for i, (r, eval_tag, train_tag) in enumerate(pairs):
        color = f"C{i}"
        for tag, style in ((train_tag, "-"), (eval_tag, "--")):
            steps, values = zip(*r.scalars[tag])
            ax.plot(steps, values, style, color=color, label=f"{r.name} {tag}")
    ax.set_yscale("log")
    _label(ax, "train (solid) and eval (dashed) loss", "step", "loss", legend="x-small")
    return fig


def sampled_figure(runs: Sequence[RunSummary]) -> Figure | None:
    """The sampled spectrum's simple and complex shares over its steps with their 95% intervals,
    one panel per run that stored one (None when none did)."""
    sampled = [(r, r.sampled) for r in runs if r.sampled is not None]
    if not sampled:
        return None
    fig, axes = _figure(5.5 * len(sampled), panels=len(sampled), height=3.8, left=0.08, wspace=0.3)
    for ax, (r, s) in zip(axes, sampled):
        for band, color in (("simple", "tab:blue"), ("complex", "tab:red")):
            value, low, high = zip(*(s.share(band, step) for step in s.steps))
            orders = _span(getattr(s.bands, band))
            ax.plot(s.steps, value, marker="o", markersize=3, color=color, label=f"{band} share (orders {orders})")
            ax.fill_between(s.steps, low, high, color=color, alpha=0.2)
        ax.set_ylim(-0.02, 1.02)  # shares of 0 and 1 stay visible
        _label(ax, f"{r.name}: sampled order spectrum (estimate)", legend="x-small")
    axes[0].set_ylabel("share of salient strength")
    return fig


def report_figures(runs: Sequence[RunSummary]) -> dict[str, Figure]:
    """The report's figures by file stem, in display order (figures without data left out; the
    exact readings' figures show the runs that have them)."""
    exact = [r for r in runs if r.steps]
    figures: dict[str, Figure | None] = {}
    if exact:
        figures = {
            "band_strength": band_strength_figure(exact),
            "complex_ratio": complex_ratio_figure(exact),
            "order_profile": order_profile_figure(exact),
            "train_test_similarity": train_test_figure(exact),
            "detour_ratio": detour_figure(exact),
            "phase_boundary": phase_figure(exact),
        }
    figures["sampled_spectrum"] = sampled_figure(runs)
    figures["loss"] = loss_figure(runs)
    return {name: fig for name, fig in figures.items() if fig is not None}


def report_pngs(runs: Sequence[RunSummary]) -> dict[str, bytes]:
    """:func:`report_figures` rendered to PNG bytes, by file stem."""
    return {name: figure_png(fig) for name, fig in report_figures(runs).items()}


def save_figures(pngs: dict[str, bytes], directory: str | os.PathLike) -> list[Path]:
    """Write :func:`report_pngs` as ``<directory>/<name>.png``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in pngs.items():
        path = directory / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------ HTML


def render_html(
    runs: Sequence[RunSummary], title: str = "concept-tracker report", pngs: dict[str, bytes] | None = None
) -> str:
    """A self-contained HTML page: the summary tables and every figure as an embedded PNG.

    Args:
        runs: the runs, one table column each.
        title: page title.
        pngs: :func:`report_pngs` of ``runs`` when already rendered (None renders them).
    """
    if not runs:
        raise ValueError("runs is empty; pass at least one RunSummary.")
    esc = html.escape
    head = "".join(f"<th>{esc(r.name)}</th>" for r in runs)
    body = "".join(
        f"<tr><th>{esc(label)}</th>{''.join(f'<td>{esc(c)}</td>' for c in cells)}</tr>"
        for label, cells in summary_rows(runs)
    )
    n = max(r.n for r in runs)
    sim_head = "".join(f"<th>{m}</th>" for m in range(1, n + 1))
    sim_body = "".join(
        f"<tr><th>{esc(r.name)}</th>"
        + "".join(f"<td>{v:.2f}</td>" for v in (r.train_test.tolist()[1:] if r.train_test is not None else []))
        + "</tr>"
        for r in runs
    )

    def source(r: RunSummary) -> str:
        exact = (
            f"kind={esc(r.kind)}, {len(r.steps)} tracked steps ({r.steps[0]}-{r.steps[-1]}), ratio={r.ratio}, "
            f"baseline {esc(r.baseline or 'unknown')}"
            if r.steps
            else "no exact readings"
        )
        sampled = "" if r.sampled is None else f"; sampled order spectrum at {len(r.sampled.steps)} steps"
        notes = "".join(f". {esc(note)}" for note in (r.settings_note, _sampled_only_note(r), r.sampled_note) if note)
        return f"<li>{esc(r.name)}: <code>{esc(r.log_dir)}</code>, n={r.n}, {exact}{sampled}{notes}</li>"

    sources = "".join(source(r) for r in runs)

    def sampled_html(r: RunSummary) -> str:
        head, *rows = sampled_rows(r)
        cells = "".join(f"<tr>{''.join(f'<td>{esc(c)}</td>' for c in row)}</tr>" for row in rows)
        return (
            f"<p>{esc(sampled_caption(r))}</p><table><tr>{''.join(f'<th>{esc(c)}</th>' for c in head)}</tr>"
            f"{cells}</table>"
        )

    sampled = "".join(sampled_html(r) for r in runs if r.sampled is not None)
    sampled = f"<h2>{esc(SAMPLED_HEADING)}</h2>{sampled}" if sampled else ""

    def band_text(r: RunSummary) -> str:
        return ", ".join(f"{band} {list(getattr(r.bands, band))}" for band in ("simple", "medium", "complex"))

    shared = {band_text(r) for r in runs}
    bands = esc(shared.pop() if len(shared) == 1 else "; ".join(f"{r.name}: {band_text(r)}" for r in runs))
    images = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{esc(name.replace('_', ' '))}</figcaption></figure>"
        for name, png in (report_pngs(runs) if pngs is None else pngs).items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1300px; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
tr th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<ul>{sources}</ul>
<h2>Summary (last tracked step unless stated; [95% bootstrap interval over probe samples])</h2>
<table><tr><th></th>{head}</tr>{body}</table>
<h2>Train-test similarity by order (last tracked step)</h2>
<table><tr><th>order</th>{sim_head}</tr>{sim_body}</table>
{sampled}
<h2>Figures</h2>
{images}
<p>Metric definitions: docs/metrics.md of concept-tracker. Bands (orders): {bands}.</p>
</body></html>
"""


def write_html(
    runs: Sequence[RunSummary],
    path: str | os.PathLike,
    title: str = "concept-tracker report",
    pngs: dict[str, bytes] | None = None,
) -> Path:
    """Write :func:`render_html` to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(runs, title, pngs), encoding="utf-8")
    return path
