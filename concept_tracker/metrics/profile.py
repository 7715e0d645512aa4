"""Salient concepts and their statistics per order and per band.

Every coalition tensor has its last dimension of size ``2**n``, indexed by the bitmask ``s`` of
the coalition (bit ``i`` set iff player ``i`` is in ``S``). Results per order are ``[n + 1]``
tensors indexed by the order ``m = |S|``; index 0 (the empty set) is never a concept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..checks import check_ratio
from ..interactions import Interactions
from ..transforms import num_players
from ..transforms import orders as coalition_orders


def stack_effects(res: Interactions, kind: str | None = None) -> Tensor:
    """The effects of a result as one tensor with a kind dimension.

    Args:
        res: interactions of ``B`` samples.
        kind: "and" or "or" for one kind; None for every kind present (AND first).
    Returns:
        [B, K, 2**n] effects, ``K`` = number of kinds selected.
    """
    kinds = res.effect_kinds if kind is None else [kind]
    return torch.stack([res.effects(k) for k in kinds], dim=-2)


def salient_mask(effects: Tensor, ratio: float = 0.05, *, pool_kinds: bool = False) -> Tensor:
    """Which coalitions are salient concepts.

    ``S`` is salient iff ``S`` is not empty and ``|I(S)| > tau`` with
    ``tau = ratio * max_{S' non-empty} |I(S')|`` per sample. A sample whose effects are all zero
    has no concepts.

    Args:
        effects: [..., 2**n] I(S), or [..., K, 2**n] with ``pool_kinds=True``.
        ratio: threshold as a fraction of the sample's largest non-empty effect.
        pool_kinds: take one threshold per sample over the ``K`` kinds together (AND and OR
            pooled) instead of one per row of the last dimension.
    Returns:
        bool tensor of the shape of ``effects``.
    """
    ratio = check_ratio(ratio)
    num_players(effects, "effects")
    if pool_kinds and effects.dim() < 2:
        raise ValueError(f"pool_kinds=True needs effects of shape [..., K, 2**n]; got {tuple(effects.shape)}.")
    if effects.shape[-1] == 1:  # n = 0: the empty set alone, never a concept
        return torch.zeros_like(effects, dtype=torch.bool)
    magnitude = effects.abs()
    # The empty set is v(empty), a constant offset, not an interaction: it sets no threshold.
    largest = magnitude[..., 1:].amax(dim=-1, keepdim=True)
    if pool_kinds:
        largest = largest.amax(dim=-2, keepdim=True)
    mask = magnitude > ratio * largest
    mask[..., 0] = False
    return mask


def sum_by_order(values: Tensor, n: int | None = None) -> Tensor:
    """Sum a coalition tensor over the coalitions of each order.

    Args:
        values: [..., 2**n] per-coalition values.
        n: number of players (read from the last dimension when None).
    Returns:
        [..., n + 1] float64; entry ``m`` is the sum over ``|S| = m``.
    """
    n = num_players(values, "values") if n is None else n
    idx = coalition_orders(n, values.device)
    out = torch.zeros(*values.shape[:-1], n + 1, dtype=torch.float64, device=values.device)
    return out.index_add_(-1, idx, values.to(torch.float64))


@dataclass
class OrderProfile:
    """Salient concepts per order, averaged over samples.

    Each field is a [n + 1] float64 tensor indexed by order ``m``; index 0 is always 0.

    Attributes:
        count: mean number of salient concepts of order ``m`` per sample.
        positive: mean of ``A+(m) = sum max(I(S), 0)`` over salient ``S`` with ``|S| = m``.
        negative: mean of ``A-(m) = sum min(I(S), 0)`` over the same ``S`` (<= 0).
        share: ``(positive - negative)[m] / sum_m (positive - negative)[m]``: the order's share
            of the mean total salient strength (all zeros when there is no concept).
        kind: the effects counted: "and", "or", or "and_or" (both pooled).
        num_samples: number of samples averaged.
    """

    count: Tensor
    positive: Tensor
    negative: Tensor
    share: Tensor
    kind: str
    num_samples: int

    @property
    def n(self) -> int:
        """Number of players."""
        return self.count.shape[0] - 1

    @property
    def strength(self) -> Tensor:
        """[n + 1] mean salient strength ``sum |I(S)|`` per order (``positive - negative``)."""
        return self.positive - self.negative


def order_profile(res: Interactions, ratio: float = 0.05, kind: str | None = None) -> OrderProfile:
    """Per-order counts and strengths of the salient concepts of a result.

    The salience threshold is always taken over every kind of effect in ``res`` (for an
    "and_or" result, AND and OR pooled), so the "and" and "or" profiles of one result
    add up to its pooled profile in ``count``, ``positive`` and ``negative``.

    Args:
        res: interactions of ``B`` samples over ``n`` players.
        ratio: salience threshold as a fraction of each sample's largest non-empty effect.
        kind: None pools every kind present; "and" or "or" counts that kind only.
    Returns:
        :class:`OrderProfile` with [n + 1] tensors averaged over the ``B`` samples. ``share`` is
        a ratio of the averaged strengths (samples with strong concepts weigh more).
    """
    if kind not in (None, "and", "or"):
        raise ValueError(f"kind={kind!r}; use None (every kind present), 'and' or 'or'.")
    kinds = res.effect_kinds
    if kind is not None and kind not in kinds:
        raise ValueError(
            f"kind={kind!r} but these interactions (kind={res.kind!r}) hold only {kinds}; pass "
            f"kind=None or one of {kinds}."
        )
    effects = stack_effects(res).to(torch.float64)
    mask = salient_mask(effects, ratio, pool_kinds=True)
    if kind is not None:
        row = kinds.index(kind)
        effects, mask = effects[:, row : row + 1], mask[:, row : row + 1]
    salient = torch.where(mask, effects, torch.zeros_like(effects))
    samples = max(effects.shape[0], 1)

    def mean_by_order(per_coalition: Tensor) -> Tensor:
        return sum_by_order(per_coalition, res.n).sum(dim=(0, 1)) / samples

    count = mean_by_order(mask.to(torch.float64))
    positive = mean_by_order(salient.clamp(min=0))
    negative = mean_by_order(salient.clamp(max=0))
    strength = positive - negative
    total = strength.sum()
    share = strength / total if total > 0 else torch.zeros_like(strength)
    return OrderProfile(
        count=count,
        positive=positive,
        negative=negative,
        share=share,
        kind=res.kind if kind is None else kind,
        num_samples=effects.shape[0],
    )


@dataclass(frozen=True)
class Bands:
    """Orders of the simple, medium and complex bands.

    Attributes:
        n: number of players.
        simple: orders ``1..simple_max``.
        medium: orders ``simple_max + 1..complex_min - 1``.
        complex: orders ``complex_min..n``.
    """

    n: int
    simple: tuple[int, ...]
    medium: tuple[int, ...]
    complex: tuple[int, ...]

    @property
    def high(self) -> tuple[int, ...]:
        """Medium and complex orders together (the high-order strength H)."""
        return self.medium + self.complex


def band_orders(n: int, simple_max: int | None = None, complex_min: int | None = None) -> Bands:
    """Split the orders ``1..n`` into simple, medium and complex bands.

    Args:
        n: number of players.
        simple_max: last simple order; default ``n // 3``.
        complex_min: first complex order; default ``n // 2 + 1``.
    Returns:
        :class:`Bands`; for ``n = 10`` the defaults give simple 1-3, medium 4-5, complex 6-10.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive number of players.")
    simple_max = n // 3 if simple_max is None else simple_max
    complex_min = n // 2 + 1 if complex_min is None else complex_min
    if not 0 <= simple_max <= n:
        raise ValueError(f"simple_max={simple_max!r} must lie in [0, n={n}]; simple orders are 1..simple_max.")
    if not simple_max < complex_min <= n + 1:
        raise ValueError(
            f"complex_min={complex_min!r} must lie in [simple_max + 1 = {simple_max + 1}, n + 1 = "
            f"{n + 1}]; complex orders are complex_min..n."
        )
    return Bands(
        n=n,
        simple=tuple(range(1, simple_max + 1)),
        medium=tuple(range(simple_max + 1, complex_min)),
        complex=tuple(range(complex_min, n + 1)),
    )


@dataclass
class BandSummary:
    """Salient strength per band, as logged under ``concepts/summary/*``.

    Strength is the mean over samples of ``sum |I(S)|`` over the salient concepts whose order
    lies in the band.

    Attributes:
        simple_strength: strength of the simple band.
        medium_strength: strength of the medium band.
        complex_strength: strength of the complex band.
        complex_ratio: ``complex_strength / total salient strength`` (0.0 without concepts).
        num_concepts: mean number of salient concepts per sample (all orders).
    """

    simple_strength: float
    medium_strength: float
    complex_strength: float
    complex_ratio: float
    num_concepts: float


def band_summary(profile: OrderProfile, simple_max: int | None = None, complex_min: int | None = None) -> BandSummary:
    """Band strengths and complex ratio of an order profile.

    Args:
        profile: the result of :func:`order_profile`.
        simple_max, complex_min: band cut-offs, see :func:`band_orders`.
    Returns:
        :class:`BandSummary` of Python floats.
    """
    bands = band_orders(profile.n, simple_max, complex_min)
    strength = profile.strength

    def band_strength(band: tuple[int, ...]) -> float:
        return float(strength[list(band)].sum()) if band else 0.0

    total = float(strength.sum())
    complex_strength = band_strength(bands.complex)
    return BandSummary(
        simple_strength=band_strength(bands.simple),
        medium_strength=band_strength(bands.medium),
        complex_strength=complex_strength,
        complex_ratio=complex_strength / total if total > 0 else 0.0,
        num_concepts=float(profile.count.sum()),
    )
