"""The shape of an order profile: how much of it is spindle-shaped (noise) and how much decays.

Cheng et al. (arXiv 2502.10162) describe the interactions of a network as two parts: the
generalizable ones, whose strength decays with the order, and the non-generalizable ones, whose
strength over orders is spindle-shaped, like the interactions of noise. Here a profile is fitted
by non-negative least squares with one noise-shaped template and a few decay-shaped ones; the
spindle weight is the share of the fit carried by the noise template.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

DECAY_RATES = (0.25, 0.5, 0.75)
"""Ratios ``q`` of the decay templates ``q**(m - 1)``: fast, medium and slow decay."""


def spindle_templates(n: int) -> Tensor:
    """The templates over orders ``m = 1..n``, each summing to 1.

    Row 0 is the noise template: if the values ``v(S)`` are independent noise of variance
    ``sigma**2``, an AND effect of order ``m`` sums ``2**m`` of them with signs, so
    ``E|I(S)|`` grows as ``2**(m/2)``, and there are ``C(n, m)`` coalitions of order ``m``:
    the expected strength at order ``m`` is proportional to ``C(n, m) * 2**(m/2)``, a spindle.
    Rows 1.. are the decay templates ``q**(m - 1)`` for ``q`` in :data:`DECAY_RATES`.

    Args:
        n: number of players, >= 1.
    Returns:
        [1 + len(DECAY_RATES), n] float64.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer (the number of players).")
    m = torch.arange(1, n + 1, dtype=torch.float64)
    noise = torch.tensor([math.comb(n, k) for k in range(1, n + 1)], dtype=torch.float64) * 2.0 ** (m / 2)
    rows = [noise] + [q ** (m - 1) for q in DECAY_RATES]
    templates = torch.stack(rows)
    return templates / templates.sum(-1, keepdim=True)


def nonnegative_least_squares(design: Tensor, target: Tensor) -> Tensor:
    """Exact non-negative least squares for a few columns, by trying every set of active columns.

    ``min_w ||design @ w - target||`` subject to ``w >= 0``: the optimum is the unconstrained
    least-squares fit on some subset of columns with every coefficient non-negative, so the best
    feasible fit over all ``2**k`` subsets is the solution (``k`` <= 10 columns).

    Args:
        design: [d, k] float64 columns.
        target: [..., d] one target per leading index.
    Returns:
        [..., k] float64 non-negative coefficients.
    """
    d, k = design.shape
    if k > 10:
        raise ValueError(f"design has {k} columns; this exact search is for at most 10.")
    flat = target.reshape(-1, d).to(torch.float64)
    best_w = torch.zeros(flat.shape[0], k, dtype=torch.float64)
    best_r = flat.square().sum(-1)  # the empty subset: w = 0
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            sub = design[:, list(cols)]
            w = torch.linalg.lstsq(sub.expand(flat.shape[0], d, size), flat.unsqueeze(-1)).solution.squeeze(-1)
            resid = (flat - w @ sub.T).square().sum(-1)
            better = (w >= 0).all(-1) & (resid < best_r - 1e-15)
            full = torch.zeros_like(best_w)
            full[:, list(cols)] = w
            best_w = torch.where(better.unsqueeze(-1), full, best_w)
            best_r = torch.where(better, resid, best_r)
    return best_w.reshape(*target.shape[:-1], k)


def spindle_weight(strength_by_order: Tensor) -> Tensor:
    """Share of an order profile explained by the noise-shaped (spindle) template.

    The profile over orders ``1..n`` is normalised to sum 1 and fitted by
    :func:`nonnegative_least_squares` with :func:`spindle_templates`; the spindle weight is the
    noise template's coefficient over the sum of all coefficients (each template sums to 1, so
    the coefficients are shares of the fit). 1: a pure spindle; 0: pure decay.

    Args:
        strength_by_order: [..., n + 1] salient strength (or share) per order, index 0 (the
            empty set) ignored; for example ``order_profile(res).strength``. Non-negative.
    Returns:
        [...] float64 in [0, 1]; NaN where the profile has no strength at orders >= 1.
    """
    if strength_by_order.shape[-1] < 2:
        raise ValueError(
            f"strength_by_order has last dimension {strength_by_order.shape[-1]}; pass [..., n + 1] "
            "per-order strengths with n >= 1."
        )
    profile = strength_by_order[..., 1:].to(torch.float64)
    if (profile < 0).any():
        raise ValueError("strength_by_order has negative entries; pass strengths (sum |I|), not signed sums.")
    total = profile.sum(-1, keepdim=True)
    shape = profile / torch.where(total > 0, total, torch.ones_like(total))
    w = nonnegative_least_squares(spindle_templates(profile.shape[-1]).T, shape)
    fitted = w.sum(-1)
    weight = w[..., 0] / torch.where(fitted > 0, fitted, torch.ones_like(fitted))
    return torch.where(total.squeeze(-1) > 0, weight, torch.full_like(weight, float("nan")))
