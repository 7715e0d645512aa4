"""Two-phase learning dynamics: where complex concepts stop being suppressed.

Zhang et al. (arXiv 2405.10262) describe two phases: first the network removes medium- and
high-order interactions, then it learns interactions of gradually increasing order, and the
second phase lines up with a growing gap between training and test loss. Their plots compare
*normalized* per-order strength, so the boundary is read off the share of salient strength
above the simple band,

    share_H(t) = sum_{m > simple_max} A(t, m) / sum_{m >= 1} A(t, m),

where ``A(t, m)`` is the salient strength ``sum |I(S)|`` of order ``m`` at step ``t``. The
absolute high-order strength scales with the model's output, which grows through training,
so it is not used for the boundary.

Operational rule (ours, not from the paper), shared by :func:`phase_boundary` and the
loss-gap step of :mod:`concept_tracker.metrics.dynamics`:

1. Smoothing: a centred moving average of ``window`` points (default 3); near the ends the
   window shrinks to the points available (:func:`smooth`).
2. Sustained rise from index ``i``: at least ``min_rises`` (default 2) consecutive strict
   increases of the smoothed series starting at ``i``, totalling more than ``rise_fraction``
   (default 0.1) times a scale. For the phase boundary the scale is the drop
   ``max(s[:i+1]) - s[i]`` before ``i``, which must be positive: the share has to fall first.
3. The boundary is the step of the lowest such ``i`` (the earliest on ties); None when there
   is none, for example for a monotone series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def high_order_share(strength_by_order: Tensor, simple_max: int) -> Tensor:
    """Share of salient strength in the orders above the simple band.

    Args:
        strength_by_order: [..., n + 1] salient strength per order (index 0, the empty set,
            is ignored); typically [T, n + 1], one row per tracked step.
        simple_max: last order of the simple band, in [0, n].
    Returns:
        [...] float64 ``sum_{m > simple_max} A(m) / sum_{m >= 1} A(m)``; NaN where there is no
        salient strength at all (a step without concepts has no order distribution).

    Example:
        >>> high_order_share(torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]]), simple_max=1)
        tensor([0.2500,    nan], dtype=torch.float64)
    """
    if not isinstance(strength_by_order, Tensor) or strength_by_order.dim() < 1:
        raise ValueError(
            f"strength_by_order is a {type(strength_by_order).__name__}; pass a tensor "
            "[..., n + 1] of salient strength per order."
        )
    n = strength_by_order.shape[-1] - 1
    if isinstance(simple_max, bool) or not isinstance(simple_max, int) or not 0 <= simple_max <= n:
        raise ValueError(
            f"simple_max={simple_max!r} must be an order in [0, n={n}]; simple orders are "
            "1..simple_max (the default band is n // 3)."
        )
    strength = strength_by_order.to(torch.float64)
    total = strength[..., 1:].sum(-1)
    high = strength[..., simple_max + 1 :].sum(-1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, high / safe, torch.full_like(total, math.nan))


def smooth(values: Tensor, window: int = 3) -> Tensor:
    """Centred moving average; near the ends the window shrinks to the points available.

    Args:
        values: [T] series.
        window: odd number of points averaged.
    Returns:
        [T] float64.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window={window!r} must be a positive odd number of points, such as 3.")
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    half = window // 2
    padded = torch.nn.functional.pad(values[None, None], (half, half))[0, 0]
    present = torch.nn.functional.pad(torch.ones_like(values)[None, None], (half, half))[0, 0]
    sums = padded.unfold(0, window, 1).sum(-1)
    counts = present.unfold(0, window, 1).sum(-1)
    return sums / counts


def valley_before_rise(
    values: Tensor, min_rises: int = 2, rise_fraction: float = 0.1, *, need_drop: bool = True
) -> int | None:
    """Index of the lowest point of a series that starts a sustained rise, or None.

    A sustained rise from index ``i``: at least ``min_rises`` consecutive strict increases whose
    total exceeds ``rise_fraction`` times a scale: the drop ``max(values[:i+1]) - values[i]``
    before ``i`` when ``need_drop`` (which must then be positive), else the range of the series.

    Args:
        values: [T] series (already smoothed).
        min_rises: consecutive strict increases required.
        rise_fraction: size of the rise relative to the scale.
        need_drop: require a fall before the valley and measure the rise against it.
    Returns:
        The index (earliest on ties), or None.
    """
    if isinstance(min_rises, bool) or not isinstance(min_rises, int) or min_rises < 1:
        raise ValueError(f"min_rises={min_rises!r} must be a positive number of consecutive rises.")
    if not rise_fraction >= 0:
        raise ValueError(f"rise_fraction={rise_fraction!r} must be >= 0, such as 0.1.")
    series = values.tolist()
    size = len(series)
    run = [0] * size
    for i in range(size - 2, -1, -1):
        run[i] = run[i + 1] + 1 if series[i + 1] > series[i] else 0
    span = max(series) - min(series) if series else 0.0
    best: int | None = None
    peak = -math.inf
    for i, value in enumerate(series):
        peak = max(peak, value)
        scale = peak - value if need_drop else span
        if need_drop and scale <= 0:
            continue
        rise = series[i + run[i]] - value
        if run[i] >= min_rises and rise > rise_fraction * scale:
            if best is None or value < series[best]:
                best = i
    return best


def phase_boundary(
    steps: Sequence[int],
    high_share: Tensor | Sequence[float],
    *,
    window: int = 3,
    min_rises: int = 2,
    rise_fraction: float = 0.1,
) -> int | None:
    """Step of the two-phase boundary: smoothed share_H lowest before a sustained rise.

    Steps where the share is NaN (no salient concept at all) are left out before smoothing.
    The rule is in the module docstring: smooth with a centred moving average of ``window``
    points; a candidate has a positive drop ``max(s[:i+1]) - s[i]`` before it and starts at
    least ``min_rises`` consecutive strict rises totalling more than ``rise_fraction`` times
    that drop; the boundary is the lowest candidate (earliest on ties).

    Args:
        steps: [T] step numbers.
        high_share: [T] share_H(t) at those steps (see :func:`high_order_share`).
        window, min_rises, rise_fraction: the rule's parameters.
    Returns:
        The step, or None when the share never falls and then rises in a sustained way.

    Example:
        >>> phase_boundary([0, 1, 2, 3, 4, 5, 6], [0.5, 0.4, 0.3, 0.2, 0.3, 0.4, 0.5])
        3
    """
    share = torch.as_tensor(high_share, dtype=torch.float64).reshape(-1)
    if len(steps) != share.shape[0]:
        raise ValueError(f"steps has {len(steps)} entries but high_share has {share.shape[0]}; pass one per step.")
    if torch.isinf(share).any():
        raise ValueError("high_share contains inf; a share lies in [0, 1] (NaN marks a step without concepts).")
    kept = (~torch.isnan(share)).nonzero().flatten().tolist()
    if not kept:
        return None
    index = valley_before_rise(smooth(share[kept], window), min_rises, rise_fraction, need_drop=True)
    return None if index is None else int(steps[kept[index]])
