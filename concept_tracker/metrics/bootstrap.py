"""Percentile bootstrap intervals over probe samples for the averaged readings.

Every summary reading (band strengths and shares, complex ratio, train-test similarity per band,
detour ratio per band) averages over a few dozen probe samples. Its uncertainty is estimated by
resampling the probe samples with replacement ``R`` times, recomputing the reading on every
resample, and taking the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ``R``
replicates (the percentile bootstrap; Efron & Tibshirani, "An Introduction to the Bootstrap",
1993, ch. 13).

Conventions (operational choices):

- Deterministic: the resamples come from a ``torch.Generator`` seeded with ``seed``; the global
  RNG is never touched, so tracking does not change training and reruns give the same bounds.
- Vectorized: all ``R`` resamples are one ``[R, B]`` index tensor; a statistic sees every
  resample at once (``[R, B, ...] -> [R, ...]``).
- Ratios (shares, complex ratio, detour ratio) are recomputed as ratios of means on every
  resample, not averaged per sample.
- Resamples on which a reading is undefined (NaN, e.g. a detour ratio with no displacement)
  are left out of the quantiles; the bounds are NaN when none is left.
- With fewer than 2 samples a resample only repeats the data, so there is no spread to read:
  the bounds are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..checks import check_fraction, check_int, check_ratio
from ..interactions import Interactions
from ..transforms import num_players
from ..transforms import orders as coalition_orders
from .phase import high_order_share
from .profile import band_orders, salient_mask, stack_effects, sum_by_order
from .similarity import _class_labels, check_train_test_pair

Statistic = Callable[[Tensor], Tensor]
"""Maps resampled data ``[R, B, ...]`` (dim 1 runs over the samples of one resample) to one
value per resample ``[R, ...]``."""

# Elements of each [chunk, F] scratch tensor of the class-mean Jaccard (float64: 2 MiB, so the
# three stay in cache; measured about 2x faster than one [R, F] block).
_CHUNK_ELEMENTS = 1 << 18


BAND_READINGS = (
    "simple_strength",
    "medium_strength",
    "complex_strength",
    "complex_ratio",
    "num_concepts",
    "simple_share",
    "medium_share",
    "high_share",
)
"""The readings :func:`band_intervals` returns, in order."""


class Interval(NamedTuple):
    """A confidence interval; each bound has the shape of the reading (0-d for a scalar)."""

    low: Tensor
    high: Tensor


def _check_options(resamples: int, level: float, seed: int) -> None:
    check_int("resamples", resamples, 1, unit="bootstrap resamples, such as 1000")
    check_fraction("level", level, 0.95, optional=False)
    check_int("seed", seed, None)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def resample_indices(num_samples: int, resamples: int = 1000, *, seed: int = 0) -> Tensor:
    """Indices of ``resamples`` bootstrap resamples of ``num_samples`` samples.

    Args:
        num_samples: ``B``, the number of samples (at least 1).
        resamples: ``R``.
        seed: seed of the private generator (the global RNG is not used).
    Returns:
        [R, B] int64 on the CPU; row ``r`` draws ``B`` sample indices with replacement.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be a positive number of samples.")
    _check_options(resamples, 0.95, seed)
    return torch.randint(0, num_samples, (resamples, num_samples), generator=_generator(seed))


def _mean_over_samples(samples: Tensor) -> Tensor:
    return samples.mean(1)


def percentile_interval(replicates: Tensor, level: float = 0.95) -> Interval:
    """Percentile interval of bootstrap replicates; NaN replicates are left out.

    Args:
        replicates: [R, ...] the reading on each resample.
        level: coverage, 0.95 for a 95% interval.
    Returns:
        :class:`Interval` of [...] float64 bounds (NaN where every replicate is NaN).
    """
    _check_options(1, level, 0)
    tail = (1.0 - level) / 2.0
    q = torch.tensor([tail, 1.0 - tail], dtype=torch.float64, device=replicates.device)
    bounds = torch.nanquantile(replicates.to(torch.float64), q, dim=0)
    return Interval(bounds[0], bounds[1])


def bootstrap_replicates(
    per_sample: Tensor,
    statistic: Statistic | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Tensor:
    """A statistic recomputed on bootstrap resamples of the samples.

    Args:
        per_sample: [B, ...] one row per probe sample.
        statistic: maps [R, B, ...] resampled rows to [R, ...]; default: the mean over the
            samples (dim 1).
        resamples: ``R``.
        seed: seed of the private generator.
    Returns:
        [R, ...] the statistic of every resample.
    """
    if not isinstance(per_sample, Tensor) or per_sample.dim() < 1 or per_sample.shape[0] < 1:
        shape = tuple(per_sample.shape) if isinstance(per_sample, Tensor) else type(per_sample).__name__
        raise ValueError(f"per_sample has shape {shape}; pass a tensor [B, ...] with at least one sample.")
    statistic = _mean_over_samples if statistic is None else statistic
    index = resample_indices(per_sample.shape[0], resamples, seed=seed).to(per_sample.device)
    return statistic(per_sample[index])


def bootstrap_interval(
    per_sample: Tensor,
    statistic: Statistic | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of a statistic over samples.

    Args:
        per_sample: [B, ...] one row per probe sample.
        statistic: maps [R, B, ...] resampled rows to [R, ...]; default: the mean over the
            samples (dim 1). The point estimate is ``statistic(per_sample[None])[0]``.
        resamples: ``R``, the number of resamples.
        level: coverage of the interval.
        seed: seed of the private generator; the same seed gives the same bounds.
    Returns:
        :class:`Interval` of [...] float64 bounds; NaN when ``B < 2``.

    Example:
        >>> low, high = bootstrap_interval(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        >>> bool(low < 2.5 < high)
        True
    """
    _check_options(resamples, level, seed)
    replicates = bootstrap_replicates(per_sample, statistic, resamples=resamples, seed=seed)
    return _interval(replicates, level, per_sample.shape[0])


def _interval(replicates: Tensor, level: float, num_samples: int) -> Interval:
    if num_samples < 2:
        nan = torch.full(replicates.shape[1:], math.nan, dtype=torch.float64, device=replicates.device)
        return Interval(nan, nan.clone())
    return percentile_interval(replicates, level)


def _effects(effects: Tensor | Interactions, name: str) -> Tensor:
    """Interactions or [B, 2**n] / [B, K, 2**n] effects -> float64 [B, K, 2**n]."""
    if isinstance(effects, Interactions):
        return stack_effects(effects).to(torch.float64)
    if not isinstance(effects, Tensor) or effects.dim() not in (2, 3):
        shape = tuple(effects.shape) if isinstance(effects, Tensor) else type(effects).__name__
        raise ValueError(f"{name} has shape {shape}; pass Interactions, [B, 2**n] or [B, K, 2**n] effects.")
    num_players(effects, name)
    effects = effects.to(torch.float64)
    return effects if effects.dim() == 3 else effects.unsqueeze(-2)


def per_sample_profile(effects: Tensor | Interactions, ratio: float = 0.05) -> tuple[Tensor, Tensor]:
    """Salient strength and count of concepts per order, for each sample separately.

    The mean over samples of these rows is :func:`~concept_tracker.metrics.order_profile`'s
    ``strength`` and ``count`` (kinds pooled, one salience threshold per sample).

    Args:
        effects: Interactions, or [B, 2**n] / [B, K, 2**n] effects (kinds pooled).
        ratio: salience threshold ratio.
    Returns:
        ([B, n + 1] float64 strength ``sum |I(S)|`` over salient ``S`` of each order,
        [B, n + 1] float64 number of salient concepts of each order).
    """
    stacked = _effects(effects, "effects")
    n = num_players(stacked)
    mask = salient_mask(stacked, check_ratio(ratio), pool_kinds=True)
    strength = torch.where(mask, stacked.abs(), torch.zeros_like(stacked))
    return sum_by_order(strength, n).sum(-2), sum_by_order(mask.to(torch.float64), n).sum(-2)


def _band_sum(by_order: Tensor, band: tuple[int, ...]) -> Tensor:
    if not band:
        return torch.zeros(by_order.shape[:-1], dtype=by_order.dtype, device=by_order.device)
    return by_order[..., list(band)].sum(-1)


def _share(part: Tensor, total: Tensor) -> Tensor:
    """``part / total`` with 0 where there is no strength, as the logged complex ratio."""
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, part / safe, torch.zeros_like(total))


def band_intervals(
    effects: Tensor | Interactions,
    ratio: float = 0.05,
    simple_max: int | None = None,
    complex_min: int | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of the band summary readings of one tracked step.

    Each resample recomputes the readings of :func:`~concept_tracker.metrics.band_summary`
    from the mean per-order strengths and counts of its samples; shares are ratios of those
    means.

    Args:
        effects: Interactions of the probe samples, or [B, 2**n] / [B, K, 2**n] effects.
        ratio: salience threshold ratio.
        simple_max, complex_min: band cut-offs (see :func:`~concept_tracker.metrics.band_orders`).
        resamples, level, seed: see :func:`bootstrap_interval`.
    Returns:
        ``{name: Interval}`` of 0-d float64 bounds for "simple_strength", "medium_strength",
        "complex_strength", "complex_ratio", "num_concepts", "simple_share", "medium_share" and
        "high_share" (medium + complex, the share that locates the phase boundary; NaN on a
        resample without concepts, where the other shares are 0 as in ``band_summary``).
    """
    _check_options(resamples, level, seed)
    strength, count = per_sample_profile(effects, ratio)
    bands = band_orders(strength.shape[-1] - 1, simple_max, complex_min)
    rows = torch.cat([strength, count.sum(-1, keepdim=True)], dim=-1)  # [B, n + 2]

    def readings(resampled: Tensor) -> Tensor:
        mean = resampled.mean(1)  # [R, n + 2]
        by_order, concepts = mean[:, :-1], mean[:, -1]
        simple, medium, complex_ = (_band_sum(by_order, b) for b in (bands.simple, bands.medium, bands.complex))
        total = by_order[:, 1:].sum(-1)
        values = {
            "simple_strength": simple,
            "medium_strength": medium,
            "complex_strength": complex_,
            "complex_ratio": _share(complex_, total),
            "num_concepts": concepts,
            "simple_share": _share(simple, total),
            "medium_share": _share(medium, total),
            "high_share": high_order_share(by_order, len(bands.simple)),
        }
        return torch.stack([values[name] for name in BAND_READINGS], dim=-1)

    replicates = bootstrap_replicates(rows, readings, resamples=resamples, seed=seed)
    low, high = _interval(replicates, level, rows.shape[0])
    return {name: Interval(low[i], high[i]) for i, name in enumerate(BAND_READINGS)}


def _segment_sums(x: Tensor, lengths: list[int]) -> Tensor:
    """[R, F] with columns grouped by order -> [R, len(lengths)] sum of each group."""
    return torch.stack([part.sum(1) for part in x.split(lengths, dim=1)], dim=1)


def _jaccard_by_order_(a: Tensor, b: Tensor, diff: Tensor, lengths: list[int]) -> Tensor:
    """[R, F] pairs of effects with columns grouped by order (``lengths[m]`` columns of order
    ``m``, kinds pooled) -> [R, n + 1] Jaccard per order.

    Same value as :func:`~concept_tracker.metrics.similarity_by_order` over the concatenated
    kinds, in fewer passes over the data: for real ``a, b``,
    ``min(a+, b+) + min(a-, b-) = (|a| + |b| - |a - b|) / 2`` and the matching max terms are
    ``(|a| + |b| + |a - b|) / 2``. Overwrites ``a``, ``b`` and the scratch buffer ``diff``
    (large tensors are reused rather than allocated: allocation dominates the cost).
    """
    apart = _segment_sums(torch.sub(a, b, out=diff).abs_(), lengths)
    both = _segment_sums(a.abs_().add_(b.abs_()), lengths)
    num, den = (both - apart) / 2, (both + apart) / 2
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.ones_like(den))


def train_test_similarity_intervals(
    train_res: Interactions,
    test_res: Interactions,
    train_targets: Tensor | None = None,
    test_targets: Tensor | None = None,
    simple_max: int | None = None,
    complex_min: int | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of the train-test similarity per order and per band.

    Each resample draws, within every class present in both sets, as many training samples
    and as many held-out samples as the class has, with replacement (a stratified bootstrap:
    the class weights of :func:`~concept_tracker.metrics.train_test_similarity` stay fixed),
    and recomputes the class-mean Jaccard similarity per order. A band's similarity is the
    mean over its orders of the per-order similarity.

    Args:
        train_res, test_res: interactions of the training and held-out probe samples
            (aligned players, same ``n`` and kind).
        train_targets, test_targets: [B] class labels; None uses the interactions' targets,
            or one class when those are None too.
        simple_max, complex_min: band cut-offs.
        resamples, level, seed: see :func:`bootstrap_interval`.
    Returns:
        ``{"by_order": Interval of [n + 1] bounds, "simple" / "medium" / "complex": Interval of
        0-d bounds}`` (NaN for an empty band, or when a set has fewer than 2 samples).
    """
    _check_options(resamples, level, seed)
    check_train_test_pair(train_res, test_res)
    n = train_res.n
    labels = (
        _class_labels(train_res, train_targets, "train_targets"),
        _class_labels(test_res, test_targets, "test_targets"),
    )
    effects = [stack_effects(r).to("cpu", torch.float64) for r in (train_res, test_res)]
    # Columns grouped by order (kinds pooled), so per-order sums are sums of contiguous blocks.
    column_orders = coalition_orders(n, torch.device("cpu")).repeat(effects[0].shape[1])
    grouped = torch.argsort(column_orders, stable=True)
    lengths = torch.bincount(column_orders, minlength=n + 1).tolist()
    flat = [e.reshape(e.shape[0], -1)[:, grouped] for e in effects]
    shared = sorted(set(labels[0].tolist()) & set(labels[1].tolist()))
    if not shared:
        raise ValueError(
            f"train_targets (classes {sorted(set(labels[0].tolist()))}) and test_targets (classes "
            f"{sorted(set(labels[1].tolist()))}) share no class; probe held-out samples of the "
            "classes seen in training."
        )
    gen = _generator(seed)
    # Per class and set: the members and, for every resample, how often each member is drawn.
    draws = []
    for c in shared:
        per_set = []
        for lab, rows in zip(labels, flat):
            members = (lab == c).nonzero().flatten()
            picks = torch.randint(0, len(members), (resamples, len(members)), generator=gen)
            weights = torch.zeros(resamples, len(members), dtype=torch.float64)
            weights.scatter_add_(1, picks, torch.ones_like(weights))
            per_set.append((rows[members], weights / len(members)))
        draws.append(per_set)

    chunk = min(resamples, max(1, _CHUNK_ELEMENTS // flat[0].shape[1]))
    buffers = [torch.empty(chunk, flat[0].shape[1], dtype=torch.float64) for _ in range(3)]
    parts = []
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        mean_train, mean_test, diff = (buf[: stop - start] for buf in buffers)
        total = torch.zeros(stop - start, n + 1, dtype=torch.float64)
        weight = 0
        for (train_rows, train_w), (test_rows, test_w) in draws:
            torch.matmul(train_w[start:stop], train_rows, out=mean_train)
            torch.matmul(test_w[start:stop], test_rows, out=mean_test)
            count = train_rows.shape[0] + test_rows.shape[0]
            total += count * _jaccard_by_order_(mean_train, mean_test, diff, lengths)
            weight += count
        parts.append(total / weight)
    replicates = torch.cat(parts)  # [R, n + 1]
    bands = band_orders(n, simple_max, complex_min)
    fewest = min(e.shape[0] for e in effects)
    out = {"by_order": _interval(replicates, level, fewest)}
    for name, orders in (("simple", bands.simple), ("medium", bands.medium), ("complex", bands.complex)):
        reps = (
            replicates[:, list(orders)].mean(-1) if orders else torch.full((resamples,), math.nan, dtype=torch.float64)
        )
        out[name] = _interval(reps, level, fewest)
    return out


def detour_intervals(
    path: Tensor,
    displacement: Tensor,
    simple_max: int | None = None,
    complex_min: int | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of the detour ratio ``P / D`` per order and per band.

    Each resample sums path lengths and displacements over its samples and the coalitions of
    an order (or band) and takes the ratio, as :func:`~concept_tracker.metrics.dynamics.detour_ratio`
    does on all samples.

    Args:
        path: [B, 2**n] (or [B, K, 2**n]) per-coalition path length of each sample
            (:func:`~concept_tracker.metrics.dynamics.path_length`, or ``Trajectory.detour_terms()``).
        displacement: same shape, ``|I_last - I_first|``.
        simple_max, complex_min: band cut-offs.
        resamples, level, seed: see :func:`bootstrap_interval`.
    Returns:
        ``{"by_order": Interval of [n + 1] bounds, "simple" / "medium" / "complex": Interval of
        0-d bounds}``; NaN where no resample has a displacement, for an empty band, or with
        fewer than 2 samples.
    """
    _check_options(resamples, level, seed)
    p, d = _effects(path, "path"), _effects(displacement, "displacement")
    if p.shape != d.shape:
        raise ValueError(
            f"path has shape {tuple(p.shape)} but displacement has {tuple(d.shape)}; pass both "
            "for the same samples and coalitions."
        )
    n = num_players(p)
    rows = torch.stack([sum_by_order(p, n).sum(-2), sum_by_order(d, n).sum(-2)], dim=1)  # [B, 2, n + 1]
    bands = band_orders(n, simple_max, complex_min)

    def ratio(sums: Tensor) -> Tensor:
        """[..., 2, m] -> [..., m] P / D, NaN where D = 0."""
        den = sums[..., 1, :]
        safe = torch.where(den > 0, den, torch.ones_like(den))
        return torch.where(den > 0, sums[..., 0, :] / safe, torch.full_like(den, math.nan))

    def readings(resampled: Tensor) -> Tensor:
        sums = resampled.sum(1)  # [R, 2, n + 1]
        # An empty band has P = D = 0, hence a NaN ratio.
        banded = [_band_sum(sums, band) for band in (bands.simple, bands.medium, bands.complex)]
        return ratio(torch.cat([sums, torch.stack(banded, dim=-1)], dim=-1))  # [R, n + 4]

    replicates = bootstrap_replicates(rows, readings, resamples=resamples, seed=seed)
    low, high = _interval(replicates, level, rows.shape[0])
    out = {"by_order": Interval(low[: n + 1], high[: n + 1])}
    for i, name in enumerate(("simple", "medium", "complex")):
        out[name] = Interval(low[n + 1 + i], high[n + 1 + i])
    return out
