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

from .interactions import Interactions
from .metrics.dynamics import Trajectory
from .metrics.profile import OrderProfile, band_orders, band_summary, order_profile, stack_effects
from .metrics.similarity import train_test_similarity
from .transforms import orders as coalition_orders
from .writers import tags
from .writers.figures import concept_label

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
    ratio: float = 0.05,
    simple_max: int | None = None,
    complex_min: int | None = None,
    ids: Sequence[Any] | None = None,
) -> StepSummary:
    """The readings of tracked step ``step``.

    Args:
        step: the training step; ``trajectory`` must already hold it as its last step.
        res: the probe interactions at ``step`` (on the CPU).
        trajectory: the dynamics of the probe effects up to and including ``step``.
        held: held-out interactions at ``step`` (aligned players), or None.
        ratio: salience threshold ratio.
        simple_max, complex_min: band cut-offs (None: ``n // 3`` and ``n // 2 + 1``).
        ids: B ids of the probe samples for the table (None: positions).
    Returns:
        :class:`StepSummary`.
    """
    if not trajectory.steps or trajectory.steps[-1] != step:
        raise ValueError(
            f"step={step} is not the trajectory's last step ({trajectory.steps[-1:] or 'none'}); "
            "append the step's effects to the trajectory before summarizing it."
        )
    profile = order_profile(res, ratio)
    kind_profiles = {kind: order_profile(res, ratio, kind=kind) for kind in res.effect_kinds}
    scalars = concept_scalars(profile, kind_profiles, simple_max, complex_min)
    if held is not None:
        similarity = train_test_similarity(res, res.targets, held, held.targets)
        scalars.update({tags.train_test_similarity(m): float(similarity[m]) for m in range(1, res.n + 1)})
    scalars.update(dynamics_scalars(trajectory))
    return StepSummary(
        step=step,
        scalars=scalars,
        histograms=effect_histograms(res),
        top_concepts=top_concepts_table(res, step, trajectory.emergence_steps(), ids),
        profile=profile,
        kind_profiles=kind_profiles,
    )


def concept_scalars(
    profile: OrderProfile,
    kind_profiles: Mapping[str, OrderProfile],
    simple_max: int | None = None,
    complex_min: int | None = None,
) -> dict[str, float]:
    """Per-kind, per-order counts (``concepts/{kind}/order_{m}/...``) and the band summary
    (``concepts/summary/*``, medium strength) of one step's order profiles."""
    orders = range(1, profile.n + 1)
    out: dict[str, float] = {}
    for kind, kind_profile in kind_profiles.items():
        for stat in tags.ORDER_STATS:
            values = getattr(kind_profile, stat)
            out.update({tags.concept_order(kind, m, stat): float(values[m]) for m in orders})
    summary = band_summary(profile, simple_max, complex_min)
    out.update({tags.summary(stat): getattr(summary, stat) for stat in tags.SUMMARY_STATS})
    out[tags.MEDIUM_STRENGTH] = summary.medium_strength
    return out


def dynamics_scalars(trajectory: Trajectory) -> dict[str, float]:
    """Detour ratios, sign flips, forgotten concepts, emergence steps, H(t) and the phase
    boundary, as of the trajectory's last step."""
    n = trajectory.n
    if n is None:
        raise ValueError("the trajectory is empty; append a step's effects first.")
    orders = range(1, n + 1)
    detour = cast(Tensor, trajectory.detour_ratio())  # [n + 1] without a set of orders
    out = {tags.detour_ratio(m): float(detour[m]) for m in orders}
    bands = band_orders(n, trajectory.simple_max, trajectory.complex_min)
    for band in tags.DETOUR_BANDS:
        chosen = getattr(bands, band)
        out[tags.band_detour_ratio(band)] = float(trajectory.detour_ratio(chosen)) if chosen else math.nan
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
    out[tags.HIGH_ORDER_STRENGTH] = float(trajectory.high_order_strength()[1][-1])
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
