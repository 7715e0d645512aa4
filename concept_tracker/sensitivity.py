"""Sensitivity of concepts to input noise and to an adversarial step.

Both functions call :func:`~concept_tracker.compute_interactions` on perturbed copies of the
inputs; the model, its training flags, grad mode and the global RNG states are left as they
were (noise comes from a local ``torch.Generator``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .checks import check_ratio
from .engine import compute_interactions, model_device, preserved_state
from .metrics.profile import salient_mask, stack_effects, sum_by_order
from .players import Players
from .values import ValueFn, needs_target, resolve_value

# Orders whose variance is below this fraction of the largest are numerically zero (float
# round-off of exactly cancelling sums) and are left out of the log-variance fit.
_VARIANCE_FLOOR = 1e-12


def _check_float_inputs(inputs: Any, param: str, value: float, fix: str) -> None:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        kind = f"{inputs.dtype} tensor" if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(
            f"{param}={value!r} perturbs the input values, but inputs is a {kind}; pass a floating "
            f"point Tensor [B, ...] (token ids cannot be perturbed){fix}."
        )


def _fixed_target(
    model: nn.Module, inputs: Any, players: Players, target: Any, value: str | ValueFn, **kwargs: Any
) -> Any:
    """The targets to use on every perturbed copy: ``target`` itself, or when it is None the
    prediction on the clean inputs, so that a perturbation never changes the class read."""
    if target is not None or not needs_target(value):
        return target
    return compute_interactions(model, inputs, players, value=value, **kwargs).targets


def _fit_slope(variance: Tensor) -> float:
    """Least-squares slope of ``log variance`` against order over the orders not numerically 0."""
    floor = _VARIANCE_FLOOR * float(variance.max())
    keep = [m for m, v in enumerate(variance.tolist()) if v > floor]
    if len(keep) < 2:
        return math.nan
    x = torch.tensor(keep, dtype=torch.float64)
    y = variance[keep].log()
    x_c = x - x.mean()
    return float((x_c * (y - y.mean())).sum() / (x_c * x_c).sum())


@dataclass
class NoiseSensitivity:
    """Variance of the interactions under input noise.

    Attributes:
        variance: [n + 1] float64; entry ``m`` is the mean over samples, kinds and coalitions of
            order ``m`` of the unbiased variance of ``I(S)`` over the draws.
        slope: least-squares slope of ``log variance[m]`` against ``m`` over the orders whose
            variance is not numerically zero (> 1e-12 of the largest); ``log 2`` for
            independent output noise; NaN with fewer than two such orders.
        sigma: std of the Gaussian input noise.
        draws: number of noisy draws ``K``.
        kinds: the kinds of effects pooled ("and", "or").
    """

    variance: Tensor
    slope: float
    sigma: float
    draws: int
    kinds: list[str]


def noise_sensitivity(
    model: nn.Module,
    inputs: Any,
    players: Players,
    sigma: float,
    draws: int,
    *,
    kind: str = "and",
    value: str | ValueFn = "log_odds",
    target: int | Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    and_or: Any = None,
) -> NoiseSensitivity:
    """Per-order variance of the interactions when the input is perturbed with Gaussian noise.

    Each draw adds ``sigma * N(0, 1)`` noise to every element of ``inputs`` (players and
    background; masked players still take their baseline, so the noise reaches ``v(S)`` through
    the kept players) and recomputes the interactions. The noise comes from a
    ``torch.Generator`` seeded with ``seed`` on the CPU, so results repeat on any device and the
    global RNG is untouched. With ``sigma = 0`` the draws measure the model's own randomness.

    Cost: ``draws * B * 2**n`` masked forwards (plus ``B * 2**n`` on the clean inputs when
    ``target`` is None, to fix each sample's target class). "mean" baselines are fitted on the
    clean inputs.

    Args:
        model, players, kind, value, batch_size, and_or: as in ``compute_interactions``.
        inputs: Tensor [B, ...] of floating point values (any input when ``sigma = 0``).
        sigma: std of the input noise, >= 0.
        draws: number of noisy draws ``K`` >= 2.
        target: [B] or one int; None = the prediction on the clean inputs.
        seed: seed of the local noise generator.
    Returns:
        :class:`NoiseSensitivity` with the [n + 1] variance per order and the log-variance slope.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"draws={draws!r} must be an int >= 2 to estimate a variance.")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma={sigma!r} must be a finite std >= 0.")
    if sigma > 0:
        _check_float_inputs(inputs, "sigma", sigma, ", or sigma=0 for a model that is noisy itself")
    players.prepare(inputs)
    common = dict(kind=kind, batch_size=batch_size, and_or=and_or)
    target = _fixed_target(model, inputs, players, target, value, **common)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    # Welford running mean and sum of squared deviations: no need to keep all K draws.
    mean = squares = torch.empty(0)  # [B, K, 2**n], set at the first draw
    kinds: list[str] = []
    n = 0
    for k in range(draws):
        noisy = inputs
        if sigma > 0:
            noise = torch.randn(inputs.shape, generator=generator, dtype=torch.float64)
            noisy = inputs + (sigma * noise).to(inputs.device, inputs.dtype)
        res = compute_interactions(model, noisy, players, target=target, value=value, **common)
        effects = stack_effects(res).detach().to("cpu", torch.float64)
        if k == 0:
            mean, squares = torch.zeros_like(effects), torch.zeros_like(effects)
            kinds, n = res.effect_kinds, res.n
        delta = effects - mean
        mean += delta / (k + 1)
        squares += delta * (effects - mean)
    variance = squares / (draws - 1)
    coalitions_per_order = sum_by_order(torch.ones(1 << n, dtype=torch.float64), n)
    per_order = sum_by_order(variance, n).reshape(-1, n + 1).mean(0) / coalitions_per_order
    return NoiseSensitivity(
        variance=per_order, slope=_fit_slope(per_order), sigma=float(sigma), draws=draws, kinds=kinds
    )


@dataclass
class AdversarialInconsistency:
    """How much the interactions change after an adversarial step on the input.

    Every field is [n + 1] and indexed by order ``m``; sums run over samples, kinds and the
    coalitions of order ``m``.

    Attributes:
        relative_change: ``R(m) = sum |I(S|x') - I(S|x)| / sum |I(S|x)|`` (NaN where the
            denominator is 0).
        salient: int64 number of salient concepts on the clean inputs.
        flipped: int64 of those, how many have the opposite sign after the step.
        dropped: int64 of those, how many are not salient after the step (a concept can be both
            flipped and dropped).
        epsilon: L-infinity budget of the step.
        steps: number of signed-gradient steps (1 = FGSM).
    """

    relative_change: Tensor
    salient: Tensor
    flipped: Tensor
    dropped: Tensor
    epsilon: float
    steps: int

    @property
    def sign_flip_share(self) -> Tensor:
        """[n + 1] float64 ``flipped / salient`` per order (NaN without salient concepts)."""
        return _share(self.flipped, self.salient)

    @property
    def dropped_share(self) -> Tensor:
        """[n + 1] float64 ``dropped / salient`` per order (NaN without salient concepts)."""
        return _share(self.dropped, self.salient)


def _share(part: Tensor, whole: Tensor) -> Tensor:
    whole = whole.to(torch.float64)
    safe = torch.where(whole > 0, whole, torch.ones_like(whole))
    return torch.where(whole > 0, part.to(torch.float64) / safe, torch.full_like(whole, math.nan))


def _attack(
    model: nn.Module,
    inputs: Tensor,
    players: Players,
    targets: Tensor | None,
    value_fn: ValueFn,
    epsilon: float,
    steps: int,
    step_size: float,
) -> Tensor:
    """Signed-gradient steps that decrease v(N), projected onto the L-infinity ball of radius
    ``epsilon`` around ``inputs``. Runs in eval mode; grad mode, flags and RNG are restored."""
    device = model_device(model)
    clean = inputs.detach().to(device)
    full = torch.ones(1, players.n, dtype=torch.bool, device=device)
    if targets is not None:
        targets = targets.to(device)
    x = clean.clone()
    with preserved_state(model), torch.enable_grad():
        for _ in range(steps):
            x.requires_grad_(True)
            rows = torch.cat([players.mask(sample, full) for sample in x.unbind(0)])
            v_full = value_fn(model(rows), targets).reshape(-1)
            # autograd.grad w.r.t. x only: parameters' .grad stay untouched.
            (grad,) = torch.autograd.grad(v_full.sum(), x)
            with torch.no_grad():
                x = x - step_size * grad.sign()
                x = torch.maximum(torch.minimum(x, clean + epsilon), clean - epsilon)
    return x.detach().to(inputs.device)


def adversarial_inconsistency(
    model: nn.Module,
    inputs: Tensor,
    players: Players,
    epsilon: float,
    *,
    steps: int = 1,
    step_size: float | None = None,
    kind: str = "and",
    value: str | ValueFn = "log_odds",
    target: int | Tensor | None = None,
    ratio: float = 0.05,
    batch_size: int | None = None,
    and_or: Any = None,
) -> AdversarialInconsistency:
    """Change of the interactions after an FGSM / PGD step that decreases ``v(N)``.

    ``x' = x - step_size * sign(grad_x v(N | x))``, repeated ``steps`` times and projected onto
    ``|x' - x|_inf <= epsilon`` (no random start; no clipping to a data range). ``v(N)`` is the
    value of the unmasked input (all players kept) for the target class on the clean input.
    The gradient is taken on a copy of the inputs with the model in eval mode; parameters get
    no ``.grad`` and training flags, grad mode and RNG states are restored.

    Args:
        model, players, kind, value, batch_size, and_or: as in ``compute_interactions``.
        inputs: floating point Tensor [B, ...].
        epsilon: L-infinity budget, >= 0.
        steps: signed-gradient steps; 1 is FGSM.
        step_size: per-step size; default ``epsilon`` for one step, else ``2.5 * epsilon / steps``.
        target: [B] or one int; None = the prediction on the clean inputs (kept for ``x'``).
        ratio: salience threshold ratio, AND and OR pooled.
    Returns:
        :class:`AdversarialInconsistency` with [n + 1] tensors per order.
    """
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon={epsilon!r} must be a finite L-infinity budget >= 0.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int (1 = FGSM).")
    if step_size is None:
        step_size = epsilon if steps == 1 else 2.5 * epsilon / steps
    ratio = check_ratio(ratio)
    _check_float_inputs(inputs, "epsilon", epsilon, "")
    value_fn = resolve_value(value)
    common = dict(value=value, kind=kind, batch_size=batch_size, and_or=and_or)
    clean = compute_interactions(model, inputs, players, target=target, **common)
    adversarial = _attack(model, inputs, players, clean.targets, value_fn, float(epsilon), steps, float(step_size))
    moved = compute_interactions(model, adversarial, players, target=clean.targets, **common)

    before = stack_effects(clean).detach().to("cpu", torch.float64)
    after = stack_effects(moved).detach().to("cpu", torch.float64)
    n = clean.n

    def totals(per_coalition: Tensor) -> Tensor:
        return sum_by_order(per_coalition, n).reshape(-1, n + 1).sum(0)

    change, base = totals((after - before).abs()), totals(before.abs())
    safe = torch.where(base > 0, base, torch.ones_like(base))
    relative = torch.where(base > 0, change / safe, torch.full_like(base, math.nan))
    was = salient_mask(before, ratio, pool_kinds=True)
    now = salient_mask(after, ratio, pool_kinds=True)

    def counts(mask: Tensor) -> Tensor:
        return totals(mask.to(torch.float64)).round().to(torch.int64)

    return AdversarialInconsistency(
        relative_change=relative,
        salient=counts(was),
        flipped=counts(was & (before * after < 0)),
        dropped=counts(was & ~now),
        epsilon=float(epsilon),
        steps=steps,
    )
