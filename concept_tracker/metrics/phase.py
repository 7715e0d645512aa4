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
   The rise of the share must also reach ``min_rise`` (default :data:`MIN_RISE`, in share
   units): a wiggle of a few thousandths after a fall of a few thousandths is noise, not a
   phase.
3. The boundary is the step of the lowest such ``i`` (the earliest on ties); None when there
   is none, for example for a monotone series.

The over-fitting stop (:func:`overfit_stop_step`) reads the boundary the way a training run
sees it: on each prefix of the tracked steps, and only once it has been found on
``patience + 1`` consecutive prefixes. The Hugging Face callback calls that function, and
``benchmarks/early_warning.py`` replays it, so both run the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

MIN_RISE = 0.01
"""Smallest rise of the smoothed high-order share (in share units, 0..1) that can mark a phase
boundary. Chosen on the tuning half of the runs of ``benchmarks/early_warning.py`` (see
docs/evidence.md, "The early warning, tested online")."""


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
    values: Tensor,
    min_rises: int = 2,
    rise_fraction: float = 0.1,
    *,
    need_drop: bool = True,
    min_rise: float = 0.0,
) -> int | None:
    """Index of the lowest point of a series that starts a sustained rise, or None.

    A sustained rise from index ``i``: at least ``min_rises`` consecutive strict increases whose
    total exceeds ``rise_fraction`` times a scale (the drop ``max(values[:i+1]) - values[i]``
    before ``i`` when ``need_drop``, which must then be positive, else the range of the series)
    and is at least ``min_rise``.

    Args:
        values: [T] series (already smoothed).
        min_rises: consecutive strict increases required.
        rise_fraction: size of the rise relative to the scale.
        need_drop: require a fall before the valley and measure the rise against it.
        min_rise: smallest total rise, in the units of the series.
    Returns:
        The index (earliest on ties), or None.
    """
    if isinstance(min_rises, bool) or not isinstance(min_rises, int) or min_rises < 1:
        raise ValueError(f"min_rises={min_rises!r} must be a positive number of consecutive rises.")
    if not rise_fraction >= 0:
        raise ValueError(f"rise_fraction={rise_fraction!r} must be >= 0, such as 0.1.")
    if not (isinstance(min_rise, (int, float)) and 0 <= min_rise < math.inf):
        raise ValueError(f"min_rise={min_rise!r} must be a finite number >= 0, such as {MIN_RISE}.")
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
        if run[i] >= min_rises and rise > rise_fraction * scale and rise >= min_rise:
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
    min_rise: float = MIN_RISE,
) -> int | None:
    """Step of the two-phase boundary: smoothed share_H lowest before a sustained rise.

    Steps where the share is NaN (no salient concept at all) are left out before smoothing.
    The rule is in the module docstring: smooth with a centred moving average of ``window``
    points; a candidate has a positive drop ``max(s[:i+1]) - s[i]`` before it and starts at
    least ``min_rises`` consecutive strict rises totalling more than ``rise_fraction`` times
    that drop and at least ``min_rise``; the boundary is the lowest candidate (earliest on
    ties).

    Args:
        steps: [T] step numbers.
        high_share: [T] share_H(t) at those steps (see :func:`high_order_share`).
        window, min_rises, rise_fraction, min_rise: the rule's parameters.
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
    smoothed = smooth(share[kept], window)
    index = valley_before_rise(smoothed, min_rises, rise_fraction, need_drop=True, min_rise=min_rise)
    return None if index is None else int(steps[kept[index]])


def overfit_stop_step(
    steps: Sequence[int],
    high_share: Tensor | Sequence[float],
    *,
    patience: int = 2,
    min_rise: float = MIN_RISE,
) -> int | None:
    """First tracked step at which the over-fitting rule fires, read online.

    At each tracked step ``t_k`` the rule sees only the prefix ``t_0..t_k`` (as a training run
    does): :func:`phase_boundary` on that prefix either reports a boundary or not. The rule
    fires at the first step where a boundary has been reported on ``patience + 1``
    consecutive prefixes (the boundary itself may move between prefixes). This is what
    ``ConceptTrackerCallback(stop_on_overfit=...)`` decides at every tracked step.

    Args:
        steps: [T] tracked steps, increasing.
        high_share: [T] share_H(t) at those steps (NaN at a step without concepts).
        patience: further tracked steps to wait once the boundary first shows.
        min_rise: smallest rise of the smoothed share that counts (see :data:`MIN_RISE`).
    Returns:
        The step at which training would stop, or None when the rule never fires.

    Example:
        >>> share = [0.5, 0.4, 0.3, 0.2, 0.3, 0.4, 0.5, 0.6]
        >>> overfit_stop_step(list(range(8)), share, patience=1, min_rise=0.05)
        6
    """
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ValueError(f"patience={patience!r} must be an int >= 0 (tracked steps to wait).")
    share = torch.as_tensor(high_share, dtype=torch.float64).reshape(-1)
    if len(steps) != share.shape[0]:
        raise ValueError(f"steps has {len(steps)} entries but high_share has {share.shape[0]}; pass one per step.")
    run = 0
    for k in range(len(steps)):
        found = phase_boundary(steps[: k + 1], share[: k + 1], min_rise=min_rise) is not None
        run = run + 1 if found else 0
        if run > patience:
            return int(steps[k])
    return None
