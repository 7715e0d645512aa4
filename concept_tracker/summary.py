"""One tracked step's readings: scalars, histograms and the top-concepts table.

The only place where interactions become the logged readings. The tracker calls
:func:`summarize_step` live; ``report`` calls it on the interactions stored on disk, so both
give the same numbers by construction. Pure: no I/O; the trajectory is read, not changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from torch import Tensor

from .config import ReadingsConfig
from .interactions import Interactions, concept_label
from .metrics.bootstrap import Interval, band_intervals, detour_intervals, train_test_similarity_intervals
from .metrics.dynamics import Trajectory
from .metrics.profile import OrderProfile, band_orders, band_summary, order_profile, stack_effects
from .metrics.similarity import train_test_similarity
from .threads import threads_for
from .transforms import orders as coalition_orders
from .writers import tags

TOP_CONCEPTS = 10
"""Rows of the markdown table of the strongest concepts."""


@dataclass(frozen=True, eq=False)
class StepSummary(Mapping[str, float]):
    """What one tracked step logged; a read-only mapping ``{tag: value}`` of its scalars.

    ``ConceptTracker.step`` returns it (on ranks other than 0 of a multi-process run, with no
    scalars: only rank 0 computes the readings). Timing scalars (``perf/*``) are not in it.

    Attributes:
        step: the training step.
        scalars: ``{tag: float}``, the tags of :mod:`concept_tracker.writers.tags`; NaN where a
            reading is undefined (a detour ratio before a concept moved, an empty band).
        histograms: ``{tag: [B, C_m] |I(S)|}`` per kind and order m.
        top_concepts: markdown table of the strongest concepts.
        profile: order profile with the kinds pooled (None off rank 0).
        kind_profiles: order profile per effect kind.
    """

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict, repr=False)
    top_concepts: str = field(default="", repr=False)
    profile: OrderProfile | None = field(default=None, repr=False)
    kind_profiles: dict[str, OrderProfile] = field(default_factory=dict, repr=False)

    def __getitem__(self, tag: str) -> float:
        return self.scalars[tag]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scalars)

    def __len__(self) -> int:
        return len(self.scalars)


def summarize_step(
    step: int,
    res: Interactions,
    trajectory: Trajectory,
    *,
    held: Interactions | None = None,
    ids: Sequence[Any] | None = None,
) -> StepSummary:
    """The readings of tracked step ``step``, with the settings of ``trajectory.readings``
    (:class:`~concept_tracker.config.ReadingsConfig`: salience ratio, band cut-offs, bootstrap).

    Every averaged reading (:func:`~concept_tracker.writers.tags.interval_tags`) comes with its
    95% percentile bootstrap interval over the probe samples, ``{tag}_ci_low`` /
    ``{tag}_ci_high`` (see :func:`interval_scalars`).

    Args:
        step: the training step; ``trajectory`` must already hold it as its last step.
        res: the probe interactions at ``step`` (on the CPU).
        trajectory: the dynamics of the probe effects up to and including ``step``.
        held: held-out interactions at ``step`` (aligned players), or None.
        ids: B ids of the probe samples for the table (None: positions).
    Returns:
        :class:`StepSummary`.
    """
    if not trajectory.steps or trajectory.steps[-1] != step:
        raise ValueError(
            f"step={step} is not the trajectory's last step ({trajectory.steps[-1:] or 'none'}); "
            "append the step's effects to the trajectory before summarizing it."
        )
    # Chains of small tensor ops: on the few threads their size merits (see threads.py).
    with threads_for(2 * res.outputs.numel() * (2 if held is not None else 1), res.outputs.device):
        readings = trajectory.readings
        profile = order_profile(res, readings.ratio)
        kind_profiles = {kind: order_profile(res, readings.ratio, kind=kind) for kind in res.effect_kinds}
        scalars = concept_scalars(profile, kind_profiles, readings)
        if held is not None:
            similarity = train_test_similarity(res, res.targets, held, held.targets)
            scalars.update({tags.train_test_similarity(m): float(similarity[m]) for m in range(1, res.n + 1)})
            bands = band_orders(res.n, readings.simple_max, readings.complex_min)
            for band in tags.BANDS:
                orders = list(getattr(bands, band))
                value = float(similarity[orders].mean()) if orders else math.nan
                scalars[tags.band_train_test_similarity(band)] = value
        scalars.update(dynamics_scalars(trajectory))
        scalars.update(interval_scalars(res, trajectory, held))
        return StepSummary(
            step=step,
            scalars=scalars,
            histograms=effect_histograms(res),
            top_concepts=top_concepts_table(res, step, trajectory.emergence_steps(), ids),
            profile=profile,
            kind_profiles=kind_profiles,
        )


def concept_scalars(
    profile: OrderProfile, kind_profiles: Mapping[str, OrderProfile], readings: ReadingsConfig | None = None
) -> dict[str, float]:
    """Per-kind, per-order counts (``concepts/{kind}/order_{m}/...``) and the band summary
    (``concepts/summary/*``, medium strength) of one step's order profiles, in the bands of
    ``readings``."""
    orders = range(1, profile.n + 1)
    out: dict[str, float] = {}
    for kind, kind_profile in kind_profiles.items():
        for stat in tags.ORDER_STATS:
            values = getattr(kind_profile, stat)
            out.update({tags.concept_order(kind, m, stat): float(values[m]) for m in orders})
    readings = readings or ReadingsConfig()
    summary = band_summary(profile, readings.simple_max, readings.complex_min)
    out.update({tags.summary(stat): getattr(summary, stat) for stat in tags.SUMMARY_STATS})
    out[tags.MEDIUM_STRENGTH] = summary.medium_strength
    # Every order >= 1 lies in exactly one band, so the three strengths sum to the total.
    total = summary.simple_strength + summary.medium_strength + summary.complex_strength
    for stat, part in zip(tags.SHARE_STATS, (summary.simple_strength, summary.medium_strength)):
        out[tags.share(stat)] = part / total if total > 0 else 0.0
    return out


def _bounds(tag: str, interval: Interval) -> dict[str, float]:
    return {tags.ci_low(tag): float(interval.low), tags.ci_high(tag): float(interval.high)}


def interval_scalars(res: Interactions, trajectory: Trajectory, held: Interactions | None = None) -> dict[str, float]:
    """``{tag}_ci_low`` / ``{tag}_ci_high`` for every tag of
    :func:`~concept_tracker.writers.tags.interval_tags`: 95% percentile bootstrap intervals
    over the probe samples (:mod:`concept_tracker.metrics.bootstrap`).

    Band readings resample the probe samples; the train-test similarity resamples training
    and held-out probes within each class; the detour ratio resamples the probe samples'
    paths through the trajectory. NaN bounds where the reading is undefined on every resample
    (a detour ratio before any concept moved, an empty band) or with fewer than 2 samples.

    Args:
        res: probe interactions of the step (effects [B, 2**n] per kind).
        trajectory: the probe effects' trajectory up to this step.
        held: held-out interactions (aligned players), or None.

    The settings (salience ratio, band cut-offs, resamples, seed) are ``trajectory.readings``.
    """
    readings = trajectory.readings
    ratio, simple_max, complex_min = readings.ratio, readings.simple_max, readings.complex_min
    options: dict[str, Any] = {"resamples": readings.resamples, "level": tags.INTERVAL_LEVEL, "seed": readings.seed}
    names = {
        "simple_strength": tags.summary("simple_strength"),
        "medium_strength": tags.MEDIUM_STRENGTH,
        "complex_strength": tags.summary("complex_strength"),
        "complex_ratio": tags.summary("complex_ratio"),
        "num_concepts": tags.summary("num_concepts"),
        "simple_share": tags.share("simple_share"),
        "medium_share": tags.share("medium_share"),
        "high_share": tags.HIGH_ORDER_SHARE,
    }
    out: dict[str, float] = {}
    for name, interval in band_intervals(res, ratio, simple_max, complex_min, **options).items():
        out.update(_bounds(names[name], interval))
    if held is not None:
        similarity = train_test_similarity_intervals(
            res, held, res.targets, held.targets, simple_max, complex_min, **options
        )
        for band in tags.BANDS:
            out.update(_bounds(tags.band_train_test_similarity(band), similarity[band]))
    path, displacement = trajectory.detour_terms()
    detour = detour_intervals(path, displacement, simple_max, complex_min, **options)
    for band in tags.DETOUR_BANDS:
        out.update(_bounds(tags.band_detour_ratio(band), detour[band]))
    return out


def dynamics_scalars(trajectory: Trajectory) -> dict[str, float]:
    """Detour ratios, sign flips, forgotten concepts, emergence steps, H(t), the high-order
    share share_H(t) and the phase boundary (on the share), as of the trajectory's last step."""
    n = trajectory.n
    if n is None:
        raise ValueError("the trajectory is empty; append a step's effects first.")
    orders = range(1, n + 1)
    detour = cast(Tensor, trajectory.detour_ratio())  # [n + 1] without a set of orders
    out = {tags.detour_ratio(m): float(detour[m]) for m in orders}
    bands = band_orders(n, trajectory.readings.simple_max, trajectory.readings.complex_min)
    for band in tags.DETOUR_BANDS:
        chosen = getattr(bands, band)
        out[tags.band_detour_ratio(band)] = float(trajectory.detour_ratio(chosen)) if chosen else math.nan
        scale_free = float(trajectory.scale_free_detour_ratio(chosen)) if chosen else math.nan
        out[tags.band_scale_free_detour_ratio(band)] = scale_free
    out[tags.SIGN_FLIPS] = float(trajectory.sign_flips().sum())
    forgotten = trajectory.forgotten()
    out.update({tags.forgotten(m): float(forgotten[m]) for m in orders})
    out[tags.FORGOTTEN] = float(forgotten.sum())
    emergence = trajectory.emergence_steps()
    order = coalition_orders(n).expand_as(emergence)
    salient = emergence >= 0
    for m in orders:
        # Mean emergence step over the concepts of order m salient now (NaN when there are none).
        chosen_steps = emergence[salient & (order == m)]
        out[tags.emergence_step(m)] = float(chosen_steps.double().mean()) if chosen_steps.numel() else math.nan
    # Absolute H(t) is logged for reference only: it scales with the model's output, so the
    # phase boundary is read off the share.
    out[tags.HIGH_ORDER_STRENGTH] = float(trajectory.high_order_strength()[1][-1])
    out[tags.HIGH_ORDER_SHARE] = float(trajectory.high_order_share()[1][-1])
    boundary = trajectory.phase_boundary()
    if boundary is not None:
        out[tags.PHASE_BOUNDARY] = float(boundary)
    return out


def effect_histograms(res: Interactions) -> dict[str, Tensor]:
    """``{tags.abs_effect_histogram(kind, m): [B, C_m] |I(S)|}`` over the coalitions of order m."""
    orders = res.orders
    out = {}
    for kind in res.effect_kinds:
        magnitude = res.effects(kind).abs()
        for m in range(1, res.n + 1):
            out[tags.abs_effect_histogram(kind, m)] = magnitude[:, orders == m]
    return out


def top_concepts_table(res: Interactions, step: int, emergence: Tensor, ids: Sequence[Any] | None = None) -> str:
    """Markdown table of the ``TOP_CONCEPTS`` strongest concepts over every sample and kind.

    Args:
        emergence: [B, K, 2**n] first step of each concept's current salient run (-1: not
            salient), as ``Trajectory.emergence_steps``.
        ids: B sample ids shown in the table (None: positions).
    """
    effects = stack_effects(res)  # [B, K, 2**n]
    magnitude = effects.abs()
    magnitude[..., 0] = 0.0  # the empty set is v(empty), not a concept
    k_count, size = effects.shape[1], effects.shape[2]
    top = magnitude.reshape(-1).topk(min(TOP_CONCEPTS, magnitude.numel())).indices.tolist()
    lines = [
        f"Strongest concepts at step {step} (salient since: first step of the current salient run)",
        "",
        "| rank | sample | kind | concept | order | I(S) | salient since |",
        "|---:|---|---|---|---:|---:|---:|",
    ]
    for rank, flat in enumerate(top, 1):
        b, rest = divmod(flat, k_count * size)
        k, s = divmod(rest, size)
        since = int(emergence.reshape(effects.shape)[b, k, s])
        lines.append(
            f"| {rank} | {ids[b] if ids is not None else b} | {res.effect_kinds[k].upper()} | "
            f"{concept_label(s, res.player_names[b])} | {bin(s).count('1')} | "
            f"{float(effects[b, k, s]):+.4g} | {since if since >= 0 else '-'} |"
        )
    return "\n".join(lines)
