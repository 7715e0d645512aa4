"""Learning dynamics of concepts across tracked steps: detours, flips, phases.

A *series* stacks the effects of the same probe samples at tracked steps ``t_0 < ... < t_k``:
``[T, B, 2**n]``, or ``[T, B, K, 2**n]`` to treat ``K`` kinds (AND and OR) as one concept set
with a pooled salience threshold. The last dimension is indexed by coalition bitmask.

The pure functions below take a whole series. :class:`Trajectory` gives the same answers
online, from running sums, without keeping the snapshots.

Operational choices (ours, not from the papers): the detour ratio pools samples as a ratio of
sums; a sign flip compares a concept's sign with its sign the last time it was salient; the
phase boundary is the lowest point of a moving average of the high-order *share* followed by a
sustained rise (:mod:`concept_tracker.metrics.phase`). See docs/metrics.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, overload

import torch
from torch import Tensor

from ..checks import check_ratio
from ..config import ReadingsConfig, configs, warn_legacy
from ..transforms import num_players
from .phase import high_order_share, phase_boundary, smooth, valley_before_rise
from .profile import Bands, band_orders, salient_mask, sum_by_order

LossLog = Mapping[int, float] | Sequence[tuple[int, float]]
"""Losses by step: ``{step: loss}`` or ``[(step, loss), ...]``."""


def _check_series(series: Tensor) -> Tensor:
    """``series`` as float64 ``[T, B, K, 2**n]``."""
    if not isinstance(series, Tensor) or series.dim() not in (3, 4):
        shape = tuple(series.shape) if isinstance(series, Tensor) else type(series).__name__
        raise ValueError(f"series has shape {shape}; pass effects stacked over steps, [T, B, 2**n] or [T, B, K, 2**n].")
    num_players(series, "series")
    series = series.to(torch.float64)
    return series if series.dim() == 4 else series.unsqueeze(-2)


def _salient(effects: Tensor, ratio: float) -> Tensor:
    """[B, K, 2**n] -> bool salient mask with one threshold per sample over the K kinds."""
    return salient_mask(effects, ratio, pool_kinds=True)


def _order_totals(per_coalition: Tensor, n: int) -> Tensor:
    """[..., 2**n] -> [n + 1] float64 sums over every leading dimension and each order."""
    return sum_by_order(per_coalition, n).reshape(-1, n + 1).sum(0)


def _order_counts(counts: Tensor, n: int) -> Tensor:
    """[..., 2**n] bool or integer counts -> [n + 1] int64 totals per order."""
    return _order_totals(counts.to(torch.float64), n).round().to(torch.int64)


def _orders_list(orders: Iterable[int], n: int) -> list[int]:
    chosen = sorted({int(m) for m in orders})
    if chosen and (chosen[0] < 0 or chosen[-1] > n):
        raise ValueError(f"orders={orders!r} must be orders in 0..{n}.")
    return chosen


def _detour(path: Tensor, disp: Tensor, n: int, orders: Iterable[int] | None) -> Tensor | float:
    """Detour ratio from per-coalition path lengths and displacements."""
    p, d = _order_totals(path, n), _order_totals(disp, n)
    if orders is None:
        safe = torch.where(d > 0, d, torch.ones_like(d))
        return torch.where(d > 0, p / safe, torch.full_like(d, math.nan))
    chosen = _orders_list(orders, n)
    p_sum, d_sum = float(p[chosen].sum()), float(d[chosen].sum())
    return p_sum / d_sum if d_sum > 0 else math.nan


def path_length(series: Tensor) -> Tensor:
    """Path length of every concept: ``P = sum_j |I_{t_j}(S) - I_{t_{j-1}}(S)|``.

    Args:
        series: [T, ..., 2**n] effects over steps.
    Returns:
        [..., 2**n] float64.
    """
    return series.to(torch.float64).diff(dim=0).abs().sum(0)


def displacement(series: Tensor) -> Tensor:
    """Net change of every concept: ``D = |I_{t_k}(S) - I_{t_0}(S)|``.

    Args:
        series: [T, ..., 2**n] effects over steps.
    Returns:
        [..., 2**n] float64.
    """
    series = series.to(torch.float64)
    return (series[-1] - series[0]).abs()


def detour_ratio(series: Tensor, orders: Iterable[int] | None = None) -> Tensor | float:
    """Detour ratio ``P / D`` per order, summed over samples and the coalitions of the order.

    ``P = sum_{b, |S|=m} sum_j |I_{t_j} - I_{t_{j-1}}|`` and ``D = sum_{b, |S|=m} |I_{t_k} - I_{t_0}|``.
    By the triangle inequality ``P >= D``; 1 is a straight path.

    Args:
        series: [T, B, 2**n] (or [T, B, K, 2**n]) effects over steps.
        orders: None for every order; a set or list of orders to pool them into one ratio
            ``sum P / sum D`` (a band).
    Returns:
        [n + 1] float64 (NaN where D = 0, including every order when T = 1), or a float
        (NaN when the pooled D = 0, for example for an empty band).
    """
    series = _check_series(series)
    n = num_players(series)
    return _detour(path_length(series), displacement(series), n, orders)


def unit_effects(series: Tensor) -> Tensor:
    """Effects divided, per step and sample, by their total size ``sum_{S != empty} |I(S)|``.

    The output's scale (the logits grow through training) multiplies every effect of a step
    by the same factor; on unit effects it cancels. The empty set (``I(empty) = v(empty)``, not
    a concept) is left out of the total and set to 0. A step of a sample without any effect
    stays 0.

    Args:
        series: [T, B, 2**n] (or [T, B, K, 2**n], kinds pooled in the total) effects over steps.
    Returns:
        Same shape, float64.
    """
    squeeze = series.dim() == 3
    series = _check_series(series).clone()
    series[..., 0] = 0.0
    total = series.abs().sum((-2, -1), keepdim=True)
    unit = series / torch.where(total > 0, total, torch.ones_like(total))
    return unit.squeeze(-2) if squeeze else unit


def scale_free_detour_ratio(series: Tensor, orders: Iterable[int] | None = None) -> Tensor | float:
    """Detour ratio ``P / D`` of the unit effects (:func:`unit_effects`), per order or pooled.

    Unlike :func:`detour_ratio`, it does not change when every effect of a step is multiplied
    by a positive factor of that step (a growing output scale): only how the concepts share
    the output moves the path.

    Args:
        series: [T, B, 2**n] (or [T, B, K, 2**n]) effects over steps.
        orders: None for every order; a set of orders to pool into one ratio.
    Returns:
        [n + 1] float64 (NaN where D = 0), or a float for a set of ``orders``.
    """
    return detour_ratio(unit_effects(series), orders)


def _flip_step(last_sign: Tensor, effects: Tensor, salient: Tensor) -> tuple[Tensor, Tensor]:
    """One step of sign-flip tracking.

    Returns:
        (new last salient sign, bool mask of concepts that flipped at this step).
    """
    sign = torch.where(salient, torch.sign(effects), torch.zeros_like(effects)).to(torch.int8)
    flipped = salient & (last_sign != 0) & (sign != last_sign)
    return torch.where(salient, sign, last_sign), flipped


def _emergence_step(emergence: Tensor, salient: Tensor, step: int) -> Tensor:
    """First step of the current unbroken salient run, -1 where not salient now."""
    started = torch.where(emergence >= 0, emergence, torch.full_like(emergence, step))
    return torch.where(salient, started, torch.full_like(emergence, -1))


def sign_flips(series: Tensor, ratio: float = 0.05) -> Tensor:
    """Number of sign flips of concepts, per order.

    A flip is counted at step ``t_j`` for a concept that is salient at ``t_j`` with the sign
    opposite to its sign the last time it was salient (non-salient steps in between are
    skipped, so ``+, small, -`` is one flip and jitter below the threshold is none).

    Args:
        series: [T, B, 2**n] (or [T, B, K, 2**n]) effects over steps.
        ratio: salience threshold ratio.
    Returns:
        [n + 1] int64 flips summed over samples and coalitions of each order.
    """
    series = _check_series(series)
    ratio = check_ratio(ratio)
    n = num_players(series)
    last_sign = torch.zeros(series.shape[1:], dtype=torch.int8)
    flips = torch.zeros(series.shape[1:], dtype=torch.int64)
    for effects in series:
        last_sign, flipped = _flip_step(last_sign, effects, _salient(effects, ratio))
        flips += flipped
    return _order_counts(flips, n)


def forgotten(series: Tensor, ratio: float = 0.05) -> Tensor:
    """Number of forgotten concepts per order: salient at some step, not salient at the last.

    Args:
        series: [T, B, 2**n] (or [T, B, K, 2**n]) effects over steps.
        ratio: salience threshold ratio.
    Returns:
        [n + 1] int64 counts over samples and coalitions of each order.
    """
    series = _check_series(series)
    ratio = check_ratio(ratio)
    salient = torch.stack([_salient(effects, ratio) for effects in series])
    return _order_counts(salient.any(0) & ~salient[-1], num_players(series))


def emergence_steps(series: Tensor, steps: Sequence[int], ratio: float = 0.05) -> Tensor:
    """The step from which each concept has stayed salient up to the last step.

    Args:
        series: [T, B, 2**n] (or [T, B, K, 2**n]) effects over steps.
        steps: the T step numbers.
        ratio: salience threshold ratio.
    Returns:
        [B, 2**n] (or [B, K, 2**n]) int64 step; -1 where the concept is not salient at the
        last step.
    """
    squeeze = series.dim() == 3
    series = _check_series(series)
    ratio = check_ratio(ratio)
    if len(steps) != series.shape[0]:
        raise ValueError(f"steps has {len(steps)} entries but series has {series.shape[0]} steps; pass one per step.")
    emergence = torch.full(series.shape[1:], -1, dtype=torch.int64)
    for step, effects in zip(steps, series):
        emergence = _emergence_step(emergence, _salient(effects, ratio), int(step))
    return emergence.squeeze(-2) if squeeze else emergence


def high_order_strength(
    effects: Tensor,
    ratio: float = 0.05,
    simple_max: int | None = None,
    complex_min: int | None = None,
) -> float:
    """High-order strength H: mean over samples of ``sum |I(S)|`` over the salient concepts of
    the medium and complex bands.

    Args:
        effects: [B, 2**n] (or [B, K, 2**n], kinds pooled) effects at one step.
        ratio: salience threshold ratio.
        simple_max, complex_min: band cut-offs (see :func:`~concept_tracker.metrics.band_orders`).
    Returns:
        H as a float.
    """
    n = num_players(effects, "effects")
    if effects.dim() not in (2, 3):
        raise ValueError(f"effects has shape {tuple(effects.shape)}; pass [B, 2**n] or [B, K, 2**n].")
    effects = effects.to(torch.float64)
    if effects.dim() == 2:
        effects = effects.unsqueeze(-2)
    high = list(band_orders(n, simple_max, complex_min).high)
    mask = _salient(effects, check_ratio(ratio))
    per_order = _order_totals(torch.where(mask, effects.abs(), torch.zeros_like(effects)), n)
    return float(per_order[high].sum()) / effects.shape[0] if high else 0.0


def _loss_map(losses: LossLog, name: str) -> dict[int, float]:
    pairs = losses.items() if isinstance(losses, Mapping) else losses
    try:
        return {int(step): float(loss) for step, loss in pairs}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be {{step: loss}} or [(step, loss), ...]; could not read it ({err}).") from None


def loss_gap_step(
    eval_losses: LossLog,
    train_losses: LossLog,
    *,
    window: int = 3,
    min_rises: int = 2,
    rise_fraction: float = 0.1,
) -> int | None:
    """Step where the generalization gap ``eval - train`` loss starts to grow.

    On the steps present in both logs, the gap is smoothed as in :func:`phase_boundary`; the
    result is the lowest point that starts at least ``min_rises`` consecutive strict rises
    totalling more than ``rise_fraction`` times the range of the smoothed gap. (Our operational
    rule.)

    Returns:
        The step, or None when the gap never rises in a sustained way.
    """
    eval_map, train_map = _loss_map(eval_losses, "eval_losses"), _loss_map(train_losses, "train_losses")
    steps = sorted(set(eval_map) & set(train_map))
    if not steps:
        return None
    gap = torch.tensor([eval_map[s] - train_map[s] for s in steps], dtype=torch.float64)
    index = valley_before_rise(smooth(gap, window), min_rises, rise_fraction, need_drop=False)
    return None if index is None else steps[index]


class Trajectory:
    """Online learning dynamics of the concepts of a fixed probe set.

    Keeps running state only (memory ``O(B * 2**n)`` plus one float per step): per-coalition
    path length, first and last effects, last salient sign, flip counts, whether ever salient,
    emergence steps, and the high-order strength and share series. Every query equals the pure function
    of the same name on the full series.

    Args:
        readings: the salience ratio and the band cut-offs (for the high-order strength H(t)
            and share); None: ``ReadingsConfig()``. The loose ``ratio=``, ``simple_max=`` and
            ``complex_min=`` of earlier releases still work, with a ``FutureWarning``.

    Example:
        >>> traj = Trajectory()
        >>> for step, scale in [(0, 1.0), (10, 2.0), (20, 3.0)]:
        ...     traj.append(step, scale * torch.tensor([[0.0, 1.0, -1.0, 0.5]]))
        >>> traj.detour_ratio()
        tensor([nan, 1., 1.], dtype=torch.float64)
    """

    def __init__(self, readings: ReadingsConfig | None = None, **legacy: Any):
        found, moved = configs({"readings": readings}, legacy, "Trajectory")
        warn_legacy("Trajectory", moved, legacy)
        self.readings: ReadingsConfig = found["readings"]
        self._steps: list[int] = []
        self._strength: list[float] = []
        self._share: list[float] = []
        self._state: dict[str, Tensor] = {}

    @property
    def steps(self) -> list[int]:
        """The steps appended so far."""
        return list(self._steps)

    @property
    def n(self) -> int | None:
        """Number of players, or None before the first append."""
        return num_players(self._state["last"]) if self._state else None

    @property
    def bands(self) -> Bands | None:
        """The simple / medium / complex orders for this trajectory's ``n`` (None before the
        first append); pass ``bands.simple`` or ``bands.complex`` to :meth:`detour_ratio`."""
        n = self.n
        return None if n is None else band_orders(n, self.readings.simple_max, self.readings.complex_min)

    def _require(self, what: str) -> int:
        if not self._state:
            raise ValueError(f"{what} needs at least one step; call append(step, effects) first.")
        return num_players(self._state["last"])

    def append(self, step: int, effects: Tensor) -> None:
        """Add the effects of the probe samples at a tracked step.

        Args:
            step: training step, strictly larger than the previous one.
            effects: [B, 2**n] (or [B, K, 2**n], kinds pooled) effects; the same shape every
                step. Kept on the CPU in float64.
        """
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise ValueError(f"step={step!r} must be an integer training step.")
        step = int(step)
        if self._steps and step <= self._steps[-1]:
            raise ValueError(
                f"step={step} is not after the last step {self._steps[-1]}; append steps in strictly increasing order."
            )
        if not isinstance(effects, Tensor) or effects.dim() not in (2, 3):
            shape = tuple(effects.shape) if isinstance(effects, Tensor) else type(effects).__name__
            raise ValueError(f"effects has shape {shape}; pass [B, 2**n] or [B, K, 2**n].")
        n = num_players(effects, "effects")  # raises unless the last dimension is 2**n
        current = effects.detach().to("cpu", torch.float64)
        if self._state and current.shape != self._state["last"].shape:
            raise ValueError(
                f"effects has shape {tuple(current.shape)} but earlier steps had "
                f"{tuple(self._state['last'].shape)}; track the same probe samples and players."
            )
        if not torch.isfinite(current).all():
            raise ValueError(f"effects at step={step} contain NaN or inf; check the model's outputs.")
        pooled = current if current.dim() == 3 else current.unsqueeze(-2)
        readings = self.readings
        salient = _salient(pooled, readings.ratio).reshape(current.shape)
        if not self._state:
            self._state = {
                "first": current.clone(),
                "last": current,
                "path": torch.zeros_like(current),
                "last_sign": torch.zeros(current.shape, dtype=torch.int8),
                "flips": torch.zeros(current.shape, dtype=torch.int64),
                "ever_salient": torch.zeros(current.shape, dtype=torch.bool),
                "salient": salient,
                "emergence": torch.full(current.shape, -1, dtype=torch.int64),
            }
        s = self._state
        unit = unit_effects(current[None])[0]
        if "unit_last" not in s:
            s.update(unit_first=unit.clone(), unit_last=unit, unit_path=torch.zeros_like(unit))
        s["path"] += (current - s["last"]).abs()
        s["last"] = current
        s["unit_path"] += (unit - s["unit_last"]).abs()
        s["unit_last"] = unit
        s["last_sign"], flipped = _flip_step(s["last_sign"], current, salient)
        s["flips"] += flipped
        s["ever_salient"] |= salient
        s["salient"] = salient
        s["emergence"] = _emergence_step(s["emergence"], salient, step)
        self._steps.append(step)
        self._strength.append(high_order_strength(current, readings.ratio, readings.simple_max, readings.complex_min))
        by_order = _order_totals(torch.where(salient, current.abs(), torch.zeros_like(current)), n)
        self._share.append(float(high_order_share(by_order, len(self.bands.simple))))

    def detour_ratio(self, orders: Iterable[int] | None = None) -> Tensor | float:
        """Detour ratio ``P / D`` as of the latest step; see :func:`detour_ratio`.

        Returns:
            [n + 1] float64 per order (NaN where D = 0), or one float for a set of ``orders``.
        """
        n = self._require("detour_ratio()")
        s = self._state
        return _detour(s["path"], (s["last"] - s["first"]).abs(), n, orders)

    def scale_free_detour_ratio(self, orders: Iterable[int] | None = None) -> Tensor | float:
        """Detour ratio of the unit effects as of the latest step; see
        :func:`scale_free_detour_ratio` (NaN for a trajectory restored from a state saved
        before it was kept).

        Returns:
            [n + 1] float64 per order, or one float for a set of ``orders``.
        """
        n = self._require("scale_free_detour_ratio()")
        s = self._state
        return _detour(s["unit_path"], (s["unit_last"] - s["unit_first"]).abs(), n, orders)

    def detour_terms(self) -> tuple[Tensor, Tensor]:
        """Per-sample path length and displacement as of the latest step, for intervals
        (:func:`~concept_tracker.metrics.bootstrap.detour_intervals`).

        Returns:
            ([B, 2**n] (or [B, K, 2**n]) float64 path length, same-shape displacement).
        """
        self._require("detour_terms()")
        s = self._state
        return s["path"].clone(), (s["last"] - s["first"]).abs()

    def sign_flips(self) -> Tensor:
        """[n + 1] int64 sign flips so far per order; see :func:`sign_flips`."""
        n = self._require("sign_flips()")
        return _order_counts(self._state["flips"], n)

    def forgotten(self) -> Tensor:
        """[n + 1] int64 concepts salient at some step but not at the latest; see :func:`forgotten`."""
        n = self._require("forgotten()")
        return _order_counts(self._state["ever_salient"] & ~self._state["salient"], n)

    def emergence_steps(self) -> Tensor:
        """[B, 2**n] (or [B, K, 2**n]) int64 first step of the current salient run, -1 if not
        salient now; see :func:`emergence_steps`."""
        self._require("emergence_steps()")
        return self._state["emergence"].clone()

    def high_order_strength(self) -> tuple[Tensor, Tensor]:
        """The high-order strength series.

        Returns:
            ([T] int64 steps, [T] float64 H(t)); see :func:`high_order_strength`.
        """
        return (
            torch.tensor(self._steps, dtype=torch.int64),
            torch.tensor(self._strength, dtype=torch.float64),
        )

    def high_order_share(self) -> tuple[Tensor, Tensor]:
        """The share of salient strength above the simple band, which locates the phase boundary.

        Returns:
            ([T] int64 steps, [T] float64 share_H(t), NaN at steps without concepts or restored
            from a state saved before the share was kept); see
            :func:`~concept_tracker.metrics.phase.high_order_share`.
        """
        return (
            torch.tensor(self._steps, dtype=torch.int64),
            torch.tensor(self._share, dtype=torch.float64),
        )

    @overload
    def phase_boundary(self, eval_losses: None = None, train_losses: None = None) -> int | None: ...

    @overload
    def phase_boundary(self, eval_losses: LossLog, train_losses: LossLog) -> tuple[int | None, int | None]: ...

    def phase_boundary(
        self, eval_losses: LossLog | None = None, train_losses: LossLog | None = None
    ) -> int | None | tuple[int | None, int | None]:
        """Two-phase boundary from the high-order share; see :func:`phase_boundary`.

        Args:
            eval_losses, train_losses: optional loss logs (both or neither).
        Returns:
            The step (or None); with both loss logs, ``(step, loss_gap_step)`` side by side,
            the second from :func:`loss_gap_step`.
        """
        if (eval_losses is None) != (train_losses is None):
            missing = "train_losses" if train_losses is None else "eval_losses"
            raise ValueError(f"{missing} is None; pass both eval_losses and train_losses, or neither.")
        step = phase_boundary(self._steps, self._share)
        if eval_losses is None or train_losses is None:
            return step
        return step, loss_gap_step(eval_losses, train_losses)

    def state_dict(self) -> dict[str, Tensor | int | float | list | None]:
        """Everything needed to continue: tensors plus JSON-able scalars and lists (no pickle).

        Returns:
            dict with "ratio", "simple_max", "complex_min", "steps", "high_order_strength",
            "high_order_share" and,
            after the first step, the running tensors ("first", "last", "path", "last_sign",
            "flips", "ever_salient", "salient", "emergence", and "unit_first", "unit_last",
            "unit_path" for the scale-free detour ratio).
        """
        state: dict[str, Tensor | int | float | list | None] = {
            **self.readings.stored,
            "steps": list(self._steps),
            "high_order_strength": list(self._strength),
            "high_order_share": list(self._share),
        }
        state.update({name: t.clone() for name, t in self._state.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the saved ratio and band cut-offs win)."""
        missing = [k for k in ("ratio", "steps", "high_order_strength") if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing}; pass the dict returned by Trajectory.state_dict().")
        steps = [int(s) for s in state["steps"]]
        strength = [float(h) for h in state["high_order_strength"]]
        if len(steps) != len(strength):
            raise ValueError(
                f"state has {len(steps)} steps but {len(strength)} high_order_strength values; "
                "pass an unmodified Trajectory.state_dict()."
            )
        dtypes = {
            "first": torch.float64,
            "last": torch.float64,
            "path": torch.float64,
            "last_sign": torch.int8,
            "flips": torch.int64,
            "ever_salient": torch.bool,
            "salient": torch.bool,
            "emergence": torch.int64,
        }
        tensors: dict[str, Tensor] = {}
        if steps:
            absent = [k for k in dtypes if not isinstance(state.get(k), Tensor)]
            if absent:
                raise ValueError(
                    f"state has steps but no tensors {absent}; pass an unmodified Trajectory.state_dict()."
                )
            tensors = {k: state[k].detach().to("cpu", dtype).clone() for k, dtype in dtypes.items()}
            # States saved before the unit effects were kept: their path is unknown (NaN).
            for k in ("unit_first", "unit_last", "unit_path"):
                kept = state.get(k)
                lost = torch.full_like(tensors["last"], math.nan)
                tensors[k] = kept.detach().to("cpu", torch.float64).clone() if isinstance(kept, Tensor) else lost
        self.readings = replace(
            self.readings,
            ratio=float(state["ratio"]),
            simple_max=state.get("simple_max"),
            complex_min=state.get("complex_min"),
        )
        # States saved before the share was kept: those steps have no share (the rule skips NaN).
        share = [float(x) for x in state.get("high_order_share", [math.nan] * len(steps))]
        if len(share) != len(steps):
            raise ValueError(
                f"state has {len(steps)} steps but {len(share)} high_order_share values; "
                "pass an unmodified Trajectory.state_dict()."
            )
        self._steps, self._strength, self._share, self._state = steps, strength, share, tensors
