"""Sparse AND-OR decomposition of coalition values (``kind="and_or"``).

For one sample with values ``v`` on all ``2**n`` coalitions, the decomposition splits ``v`` into
an AND part and an OR part, up to a small bounded noise ``q``::

    v_and = (v + q) / 2 + gamma        I_and = and_transform(v_and)
    v_or  = (v + q) / 2 - gamma        I_or  = or_transform(v_or)

    minimise  sum_S |I_and(S)| + sum_S |I_or(S)|      subject to  |q(S)| <= bound

with ``bound = bound_ratio * |v(N) - v(empty)|``. Following SPEC §4 literally, both sums run over
*every* coalition, the empty set included (``I_and(empty) = v_and(empty)``,
``I_or(empty) = v_or(empty)``). Matching then holds exactly for every coalition ``T``::

    v(T) + q(T) = sum_{S subset of T} I_and(S) + I_or(empty) + sum_{S non-empty, S meets T} I_or(S)

**Solver.** Written in the split itself, ``a = v_and`` and ``o = v_or``, the problem is the linear
programme ``min ||A a||_1 + ||O o||_1`` subject to ``|a + o - v| <= bound``, where ``A`` and ``O``
are the AND and OR transforms. The published method runs momentum SGD on ``(gamma, q)`` for
20,000-50,000 iterations. Diagonally preconditioned primal-dual methods (PDHG / PDLP) stall here
because ``A`` is badly conditioned: it is the ``n``-fold Kronecker power of a 2 x 2 matrix, with
singular values from ``phi**-n`` to ``phi**n``. This module runs ADMM (alternating direction
method of multipliers) with *exact* linear solves instead:

- variables ``x = (a, o)``, copies ``z_c = (A a, O o)`` (the L1 terms: soft thresholding) and
  ``z_s = x`` (the bound on ``q``: an exact projection, coalition by coalition);
- the ``x`` step solves ``(K^T K + theta I) x = r`` with ``K = diag(A, O)``. ``A^T A`` is the
  Kronecker power of ``[[2, -1], [-1, 1]]``, so its eigenbasis is a Kronecker power too and the
  solve costs four butterfly passes per player. Written on complemented coalitions, ``O^T O`` is
  the same matrix plus a rank-2 term (Woodbury);
- the penalty ``rho`` grows geometrically from ``rho_start`` to ``rho_end`` (continuation);
  over-relaxation ``relaxation``;
- every ``check_every`` iterations, the dual variables of the L1 terms (the current ones and
  their average since the last doubling of the iteration count) yield a certified lower bound
  on the optimum by weak duality (see :func:`_lower_bound`); a sample stops once
  ``(objective - lower bound) / objective <= tol`` and leaves the batch. The stopping rule is
  thus proven: a stopped sample is within ``tol`` of the LP optimum.

The iterates are float32 and coalition-major, ``[2, 2**n, B]``: every butterfly pass is then one
elementwise op over long contiguous runs, and float32 halves the memory traffic of these
memory-bound passes (together about 2x faster per iteration than float64 in the sample-major
layout). The x-step's system has a condition number of about 1.5e4 at n = 10, so float32 blurs
objectives by up to about 1e-4 relative, far below ``tol``; certificates, the answer and its gap
are computed in float64.

The problem is solved on ``v / s`` with ``s = max_T |v(T) - v(empty)|``, so results are
scale-invariant. The answer is the best point found among the iterates and their running
averages since the last doubling of the iteration count (both feasible, both compared every
``_EVAL_EVERY`` iterations; on the demo's tracked run at n = 10 and 300 iterations, adding the
averages more than halved the median distance to the optimum). Its ``q`` is clipped into the box and the split
recomputed, so matching holds to float64 rounding. A warm start from an earlier
``(gamma, q)`` competes in float64, so it never comes back worse. All work is batched over
samples and runs on the device of ``values``; on a CPU, on a thread count chosen from the batch
size (one thread below 2**22 coalition values, e.g. 64 samples up to n = 15; see
:mod:`concept_tracker.threads`).

On 2**n-coalition MLP outputs the defaults land within 1% of the exact LP optimum (certified)
at n <= 8 and within about 0.5% at n = 10 (see ``benchmarks/and_or.py`` and
``benchmarks/and_or_tracked.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .checks import check_int, check_number
from .threads import threads_for
from .transforms import and_inverse, and_transform, num_players, or_inverse, or_transform

__all__ = ["AndOrConfig", "AndOrResult", "and_or_objective", "decompose", "matching_error"]

_EVAL_EVERY = 10
"""Iterations between objective evaluations of the current iterate (to keep the best one)."""

_ITERATE_DTYPE = torch.float32
"""dtype of the ADMM iterates (see the module docstring for why float32 is enough)."""


@dataclass(frozen=True)
class AndOrConfig:
    """Settings of the AND-OR decomposition solver.

    Attributes:
        bound_ratio: ``|q(S)| <= bound_ratio * |v(N) - v(empty)|`` (SPEC §4: 0.02). Must be >= 0.
        max_iter: most ADMM iterations per call. Each costs about six butterfly transforms of
            the batch. With the defaults, on MLP outputs, n = 5-7 samples certify ``tol``
            after 150-200 iterations and n = 8 after about 300; a warm start from a converged
            result stops at the first or second certificate. At n = 10 the certificate is
            looser and many samples run all ``max_iter`` iterations, ending within about 0.5%
            of the optimum (checked against the exact LP).
        tol: stop a sample once its certified relative gap
            ``(objective - lower bound) / objective`` is at most ``tol``. The lower bound is
            proven (weak duality), so a stopped sample is within ``tol`` of the LP optimum;
            at n <= 8 the certified gap is close to the true one. 0 skips the certificates
            until the last iteration.
        check_every: iterations between gap certificates (each, in float64, costs about as
            much as 15 of the float32 iterations at n = 10).
        rho_start, rho_end: ADMM penalty at the first iteration and after ``rho_ramp``
            iterations, for values normalised to ``max_T |v(T) - v(empty)| = 1``. Starting low
            lets the split move freely; ending high settles it.
        rho_ramp: iterations over which ``rho`` grows geometrically. A warm start begins at
            ``sqrt(rho_start * rho_end)`` and ramps over ``rho_ramp // 2`` iterations.
        relaxation: ADMM over-relaxation, in (0, 2).
    """

    bound_ratio: float = 0.02
    max_iter: int = 1000
    tol: float = 0.01
    check_every: int = 50
    rho_start: float = 3.0
    rho_end: float = 300.0
    rho_ramp: int = 300
    relaxation: float = 1.8

    def __post_init__(self) -> None:
        check_number("bound_ratio", self.bound_ratio, 0.0)
        check_int("max_iter", self.max_iter, 1)
        check_number("tol", self.tol, 0.0)
        check_int("check_every", self.check_every, 1)
        check_number("rho_start", self.rho_start, 0.0, strict=True)
        check_number("rho_end", self.rho_end, 0.0, strict=True)
        check_int("rho_ramp", self.rho_ramp, 0)
        check_number("relaxation", self.relaxation, 0.0, strict=True)
        if self.relaxation >= 2.0:
            raise ValueError(f"relaxation={self.relaxation!r}; ADMM needs 0 < relaxation < 2 (1.6 is typical).")


@dataclass
class AndOrResult:
    """Output of :func:`decompose` for ``B`` samples over ``n`` players.

    Coalition tensors are ``[B, 2**n]`` float64 on the device of the values, indexed by bitmask.

    Attributes:
        and_effects: I_and(S), with ``I_and(empty) = v_and(empty)``.
        or_effects: I_or(S), with ``I_or(empty) = v_or(empty)``.
        gamma: the learned split; ``v_and = (v + q) / 2 + gamma``, ``v_or = (v + q) / 2 - gamma``.
        q: the learned noise, ``|q| <= bound_ratio * |v(N) - v(empty)|``.
        iterations: ADMM iterations run (the most any sample needed).
        gap: [B] certified upper bound on ``(objective - optimum) / objective`` (0 where the
            objective is 0), from the last certificate computed for that sample.
    """

    and_effects: Tensor
    or_effects: Tensor
    gamma: Tensor
    q: Tensor
    iterations: int
    gap: Tensor | None = None


def and_or_objective(and_effects: Tensor, or_effects: Tensor) -> Tensor:
    """The L1 objective of SPEC §4, empty set included.

    Args:
        and_effects: [B, 2**n] I_and(S).
        or_effects: [B, 2**n] I_or(S).
    Returns:
        [B] ``sum_S |I_and(S)| + sum_S |I_or(S)|`` in float64.
    """
    if and_effects.shape != or_effects.shape:
        raise ValueError(
            f"and_effects has shape {tuple(and_effects.shape)} but or_effects has "
            f"{tuple(or_effects.shape)}; pass both effects of the same samples."
        )
    return and_effects.double().abs().sum(-1) + or_effects.double().abs().sum(-1)


def matching_error(values: Tensor, and_effects: Tensor, or_effects: Tensor, q: Tensor) -> Tensor:
    """How far AND-OR effects are from reproducing ``v + q`` on every coalition.

    Args:
        values: [B, 2**n] v(T).
        and_effects: [B, 2**n] I_and(S).
        or_effects: [B, 2**n] I_or(S).
        q: [B, 2**n] the noise term of the decomposition.
    Returns:
        [B] ``max_T |v(T) + q(T) - sum_{S subset of T} I_and(S) - I_or(empty)
        - sum_{S non-empty, S meets T} I_or(S)|`` in float64.
    """
    shape = values.shape
    for name, t in (("and_effects", and_effects), ("or_effects", or_effects), ("q", q)):
        if t.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but values has {tuple(shape)}; pass tensors of the same samples."
            )
    recon = and_inverse(and_effects) + or_inverse(or_effects)
    return (values.double() + q.double() - recon).abs().amax(-1)


def decompose(
    values: Tensor,
    config: AndOrConfig | None = None,
    warm_start: tuple[Tensor, Tensor] | None = None,
) -> AndOrResult:
    """Sparse AND-OR decomposition of coalition values (see the module docstring).

    Args:
        values: [B, 2**n] v(S) per sample, any real dtype (computed in float64), on any device;
            bit i of the index set iff player i is in S.
        config: solver settings; None uses ``AndOrConfig()``.
        warm_start: ``(gamma, q)``, each [B, 2**n], from an earlier result on the same samples
            (for example the previous tracked training step). ``q`` is clipped into the current
            bound. The solver starts from that split, halfway along the ``rho`` continuation,
            and never returns a worse objective than the start's.
    Returns:
        :class:`AndOrResult` with [B, 2**n] float64 effects, gamma and q on the device of
        ``values``.
    Raises:
        ValueError: for values that are not [B, 2**n] real and finite, or a warm start of the
            wrong shape or with non-finite entries.
    """
    config = AndOrConfig() if config is None else config
    if not isinstance(config, AndOrConfig):
        raise ValueError(f"config must be an AndOrConfig or None; got {type(config).__name__}.")
    v = _check_values(values)
    start = None if warm_start is None else _check_warm_start(warm_start, v)
    num, m = v.shape
    bound = config.bound_ratio * (v[:, -1] - v[:, 0]).abs()
    if num == 0:
        empty = v.new_zeros(0, m)
        return AndOrResult(empty, empty.clone(), empty.clone(), empty.clone(), 0, v.new_zeros(0))

    # Not |v(N) - v(empty)|: that can be hundreds of times smaller than the spread of v, and the
    # penalty rho is tuned for values of unit spread. A constant v has no spread; its magnitude
    # (or 1) keeps the division harmless.
    scale = (v - v[:, :1]).abs().amax(-1)
    fallback = v[:, 0].abs().where(v[:, 0] != 0, torch.ones_like(scale))
    scale = scale.where(scale > 0, fallback)
    if start is None:
        split = None
    else:
        gamma, q = start
        half = 0.5 * (v + q.clamp(-bound[:, None], bound[:, None]))
        split = ((half + gamma) / scale[:, None], (half - gamma) / scale[:, None])

    # The iterations are chains of small memory-bound ops on [2, 2**n, B]: see threads.py.
    with threads_for(2 * v.numel(), v.device):
        a, o, lower, iterations = _admm(v / scale[:, None], bound / scale, config, split)
    answer = _exact_split(v, bound, a * scale[:, None], o * scale[:, None])
    if split is not None:
        # The iterates run in float32, which blurs objectives by up to 1e-4: compare the answer
        # with the warm start in float64, so that it never comes back worse than it went in.
        warm = _exact_split(v, bound, split[0] * scale[:, None], split[1] * scale[:, None])
        better = warm[-1] < answer[-1]
        answer = tuple(torch.where(better.view(-1, *([1] * (t.dim() - 1))), w, t) for w, t in zip(warm, answer))
    a, o, q, and_effects, or_effects, objective = answer
    gap = (1 - lower * scale / objective).clamp_min(0).where(objective > 0, torch.zeros_like(objective))
    return AndOrResult(
        and_effects=and_effects,
        or_effects=or_effects,
        gamma=0.5 * (a - o),
        q=q,
        iterations=iterations,
        gap=gap,
    )


def _exact_split(v: Tensor, bound: Tensor, a: Tensor, o: Tensor) -> tuple[Tensor, ...]:
    """``(v_and, v_or, q, I_and, I_or, objective)`` from an approximate split ``(a, o)`` [B, 2**n].

    ``q = a + o - v`` is clipped into its box and ``v_or`` recomputed, so matching holds to
    float64 rounding.
    """
    q = (a + o - v).clamp(-bound[:, None], bound[:, None])
    o = v + q - a
    and_effects, or_effects = and_transform(a), or_transform(o)
    return a, o, q, and_effects, or_effects, and_or_objective(and_effects, or_effects)


# ----------------------------------------------------------------------------------- checks


def _check_values(values: Tensor) -> Tensor:
    if not isinstance(values, Tensor):
        raise ValueError(f"values must be a torch.Tensor [B, 2**n]; got {type(values).__name__}.")
    if values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"values has dtype {values.dtype}; pass real coalition values (they are computed in float64).")
    if values.dim() != 2:
        raise ValueError(
            f"values has shape {tuple(values.shape)}; pass [B, 2**n] (one row per sample, "
            "e.g. values[None] for a single sample)."
        )
    num_players(values, "values")
    v = values.detach().to(torch.float64)
    bad = ~torch.isfinite(v).all(-1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"values has NaN or inf in samples {rows[:10]}; fix or drop those samples before decomposing.")
    return v


def _check_warm_start(warm_start: object, v: Tensor) -> tuple[Tensor, Tensor]:
    if not (isinstance(warm_start, (tuple, list)) and len(warm_start) == 2):
        raise ValueError("warm_start must be a pair (gamma, q) of tensors from an earlier AndOrResult, or None.")
    out = []
    for name, t in zip(("gamma", "q"), warm_start):
        if not isinstance(t, Tensor) or t.shape != v.shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"warm_start {name} has shape {got} but values has {tuple(v.shape)}; warm-start "
                "from a result on the same samples and players, or pass warm_start=None."
            )
        t = t.detach().to(device=v.device, dtype=torch.float64)
        if not torch.isfinite(t).all():
            raise ValueError(f"warm_start {name} has NaN or inf entries; pass warm_start=None to start afresh.")
        out.append(t)
    return out[0], out[1]


# ------------------------------------------------------------------------------- operators

_THETA = 1.0
"""Weight of the consensus constraint ``x = z_s`` relative to ``K x = z_c`` (fixed: the
eigen-solve depends on it and ``rho`` already sets the overall penalty)."""

_DENSE_PLAYERS_CPU = 0
"""Players handled by one dense matrix product instead of shear passes on a CPU: none. In the
coalition-major layout each pass is one elementwise op over contiguous runs of at least ``B``
values, several times cheaper than a dense product over the same players."""

_DENSE_PLAYERS_GPU = 12
"""The same on a GPU, where every pass is a kernel launch of several microseconds, far more than
its arithmetic at these sizes: one product over up to 12 players (a 4096 x 4096 matrix) replaces
a launch per player."""

_Steps = tuple[tuple[int, float], ...]
"""Shears applied per player: ``(1, alpha)`` does ``x[s with i] += alpha * x[s without i]``,
``(0, alpha)`` does ``x[s without i] += alpha * x[s with i]``."""

_SUBSET_MOEBIUS: _Steps = ((1, -1.0),)
_SUPERSET_MOEBIUS: _Steps = ((0, -1.0),)
_SUBSET_SUMS: _Steps = ((1, 1.0),)
_SUPERSET_SUMS: _Steps = ((0, 1.0),)


def _passes_(x: Tensor, n: int, steps: _Steps) -> Tensor:
    """In place, for every player: the shears ``steps``. ``x`` is contiguous, last dim ``2**n``."""
    lead = x.shape[:-1]
    for i in range(n):
        view = x.view(*lead, 1 << (n - 1 - i), 2, 1 << i)
        for target, alpha in steps:
            view[..., target, :].add_(view[..., 1 - target, :], alpha=alpha)
    return x


def _shears(matrix: Tensor) -> tuple[_Steps, tuple[float, float]]:
    """Factor a 2 x 2 matrix as ``diag(d) @ lower-shear @ upper-shear`` (``matrix[0, 0] != 0``).

    Deferring the diagonal lets the Kronecker power of ``matrix`` run as two shear passes per
    player plus one elementwise product with the Kronecker power of ``d``.
    """
    (m00, m01), (m10, m11) = matrix.tolist()
    d0 = m00
    d1 = (m00 * m11 - m01 * m10) / m00
    return ((0, m01 / m00), (1, m10 / m00 * d0 / d1)), (d0, d1)


def _kron_power(pair: tuple[float, float], n: int) -> Tensor:
    """[2**n] float64: entry ``s`` is the product over players of ``pair[bit i of s]``."""
    out = torch.ones(1, dtype=torch.float64)
    for _ in range(n):
        out = torch.cat([out * pair[0], out * pair[1]])
    return out


class _Buffer:
    """A coalition-major ``[2, 2**n, B]`` tensor with its per-player shear views cut once.

    Player ``i``'s pairs ``(s without i, s with i)`` are then runs of ``2**i * B`` contiguous
    values, so every pass is one long elementwise op (in the sample-major ``[2, B, 2**n]``
    layout the passes over the lowest players touch runs of a few values and cost several times
    more). Players from ``sheared`` up are left to a dense product.
    """

    def __init__(self, like: Tensor, sheared: int) -> None:
        self.data = torch.empty_like(like, memory_format=torch.contiguous_format)
        two, m, num = like.shape
        self.views = []
        for i in range(sheared):
            view = self.data.view(two, m >> (i + 1), 2, num << i)
            self.views.append((view[:, :, 0], view[:, :, 1]))


class _Operators:
    """The linear algebra of the ADMM for one ``n``, device and dtype.

    The primal variable is stacked coalition-major ``[2, 2**n, B]``: ``a = v_and`` on coalitions
    ``T`` and ``v_or`` on complements, ``o~(T) = v_or(N minus T)``. In those coordinates the AND
    and OR transforms share their butterflies: ``A a`` is the subset Moebius transform and
    ``O v_or = -(Moebius of o~)`` except at the empty set, where it is ``o~(N)``.

    Each Kronecker-power map (named by its shear ``_Steps``) runs in place on a :class:`_Buffer`:
    one dense product over the highest ``dense`` players, shear passes over the others.
    """

    def __init__(self, n: int, device: torch.device, dense: int, dtype: torch.dtype) -> None:
        self.n = n
        self.dense = min(n, dense)
        self.sheared = n - self.dense
        m = 1 << n
        gram = torch.tensor([[2.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)  # A^T A for one player
        eigenvalues, basis = torch.linalg.eigh(gram)
        self.to_eig, d_in = _shears(basis.T)
        self.from_eig, d_out = _shears(basis)
        lam = _kron_power((eigenvalues[0].item(), eigenvalues[1].item()), n)
        mid = _kron_power(d_in, n) / (lam + _THETA)
        out = _kron_power(d_out, n)
        self.mid = mid[:, None].to(device, dtype)
        self.out = out[:, None].to(device, dtype)
        # Row r of _passes_(eye) is the map applied to e_r, i.e. column r of the map's matrix.
        self.dense_matrix = {
            steps: _passes_(torch.eye(1 << self.dense, dtype=torch.float64), self.dense, steps).T.to(device, dtype)
            for steps in (_SUBSET_MOEBIUS, _SUPERSET_MOEBIUS, self.to_eig, self.from_eig)
        }
        # On complements, O^T O = A^T A + e_N e_N^T - e_0 e_0^T: Woodbury with U = [e_N, e_0].
        unit = torch.zeros(2, m, dtype=torch.float64)
        unit[0, m - 1] = 1.0
        unit[1, 0] = 1.0
        _passes_(unit, n, self.to_eig)
        unit.mul_(mid)
        _passes_(unit, n, self.from_eig)
        unit.mul_(out)
        self.hinv_units = unit.T.contiguous().to(device, dtype)  # [m, 2]: H^-1 e_N, H^-1 e_0, H = A^T A + theta I
        inner = torch.stack([unit[:, m - 1], unit[:, 0]])
        woodbury = torch.linalg.inv(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)) + inner.T)
        self.woodbury = woodbury.to(device, dtype)
        self.ends = torch.tensor([m - 1, 0], device=device)

    def apply_(self, steps: _Steps, x: _Buffer) -> Tensor:
        """In place ``x.data = (Kronecker power of steps) x.data``."""
        if self.dense:
            blocks = x.data.view(2, 1 << self.dense, -1)
            blocks.copy_(torch.matmul(self.dense_matrix[steps], blocks))
        for lo, hi in x.views:
            for target, alpha in steps:
                if target:
                    hi.add_(lo, alpha=alpha)
                else:
                    lo.add_(hi, alpha=alpha)
        return x.data

    def forward(self, x: Tensor, dst: _Buffer) -> Tensor:
        """``K x = (A a, O v_or)`` into ``dst``, both halves in the usual coalition order."""
        dst.data.copy_(x)
        y = self.apply_(_SUBSET_MOEBIUS, dst)
        y[1].neg_()
        y[1, 0] = x[1, -1]
        return y

    def adjoint_(self, y: _Buffer) -> Tensor:
        """In place ``K^T y = (A^T y_and, O^T y_or)``, the OR half on complements."""
        empty = y.data[1, 0].clone()
        y.data[1, 0] = 0.0
        x = self.apply_(_SUPERSET_MOEBIUS, y)
        x[1].neg_()
        x[1, -1] += empty
        return x

    def solve_(self, x: _Buffer) -> Tensor:
        """In place ``(K^T K + theta I)^-1 x`` for stacked ``x = (a, o~)``."""
        self.apply_(self.to_eig, x).mul_(self.mid)
        out = self.apply_(self.from_eig, x).mul_(self.out)
        o = out[1]
        coef = self.woodbury @ o.index_select(0, self.ends)
        o.addmm_(self.hinv_units, coef, alpha=-1.0)
        return out


@lru_cache(maxsize=32)
def _operators(n: int, device: torch.device, dtype: torch.dtype) -> _Operators:
    return _Operators(n, device, _DENSE_PLAYERS_CPU if device.type == "cpu" else _DENSE_PLAYERS_GPU, dtype)


# ------------------------------------------------------------------------------------ ADMM


def _project(w: Tensor, v: Tensor, box: Tensor, z: Tensor, u: Tensor) -> None:
    """``z`` = nearest ``(a, o~)`` to ``w`` with ``|a + v_or - v| <= box``; ``u = w - z``.

    All coalition-major: ``w, z, u`` [2, 2**n, B], ``v`` [2**n, B], ``box`` [1, B]. The excess
    of ``a + v_or`` over the box is split evenly between the two halves (the projection in the
    ADMM metric, which weighs both halves alike).
    """
    excess = (w[0] + w[1].flip(0)).sub_(v)
    torch.sub(excess, excess.clamp(-box, box), out=u[0]).mul_(0.5)
    u[1].copy_(u[0].flip(0))
    torch.sub(w, u, out=z)


def _superset_sums(g: Tensor, n: int) -> Tensor:
    """``A^-T g``: ``out(S) = sum_{T superset of S} g(T)``."""
    return _passes_(g.clone(), n, _SUPERSET_SUMS)


def _meet_sums(g: Tensor, n: int) -> Tensor:
    """``O^-T g``: ``out(S) = sum_{T meets S} g(T)``, plus ``sum(g)`` at the empty set."""
    total = g.sum(-1, keepdim=True)
    out = total - _passes_(g.clone(), n, _SUBSET_SUMS).flip(-1)
    out[..., 0] += total[..., 0]
    return out


def _and_adjoint(y: Tensor, n: int) -> Tensor:
    """``A^T y``: ``out(T) = sum_{S superset of T} (-1)**(|S|-|T|) y(S)``."""
    return _passes_(y.clone(), n, _SUPERSET_MOEBIUS)


def _or_adjoint(y: Tensor, n: int) -> Tensor:
    """``O^T y`` in the usual coalition order."""
    t = y.clone()
    t[..., 0] = 0.0
    out = _passes_(t, n, _SUPERSET_MOEBIUS).flip(-1).neg_()
    out[..., 0] += y[..., 0]
    return out


def _lower_bound(duals: Tensor, v: Tensor, bound: Tensor, rounds: int = 2) -> Tensor:
    """A certified lower bound on the optimum from estimates of the L1 dual variables.

    Weak duality: for ``|y_and|, |y_or| <= 1`` with ``A^T y_and = O^T y_or = g``, every feasible
    ``(a, o)`` has ``||A a||_1 + ||O o||_1 >= <g, a + o> >= <g, v> - bound * ||g||_1``. ADMM's
    duals satisfy the equality only in the limit, so each candidate ``g`` (``A^T y_and``,
    ``O^T y_or`` and their mean, for every estimate) is made exact by ``y_and = A^-T g``,
    ``y_or = O^-T g``, and the triple is scaled by ``1 / s`` with ``s`` the larger of
    ``||y_and||_inf`` and ``||y_or||_inf``: the dual value is positively homogeneous, so that
    scaling is the best one along ``g``. ``rounds`` of alternately clipping ``y_and`` and
    ``y_or`` into the box (and rebuilding ``g`` from the clipped one) shrink ``s`` further.

    ``A^-T`` sums ``g`` over up to ``2**n`` coalitions, so a small mismatch between
    ``A^T y_and`` and ``O^T y_or`` costs a large ``s``. The mismatch of a single ADMM iterate is
    its dual residual; averaged over iterations it largely cancels, which is why the caller
    passes an average of the iterates' duals besides the current ones.

    Args:
        duals: [K, 2, B, 2**n] estimates of ``(y_and, y_or)``, ``|duals| <= 1``, usual
            coalition order.
        v, bound: [B, 2**n] and [B] normalised values and bound.
    Returns:
        [B] float64 lower bound.
    """
    n = v.shape[-1].bit_length() - 1
    g_and, g_or = _and_adjoint(duals[:, 0], n), _or_adjoint(duals[:, 1], n)
    mean = 0.5 * (g_and + g_or)

    def bound_of(g: Tensor) -> Tensor:
        y = torch.cat([_superset_sums(g, n), _meet_sums(g, n)], -1)
        high, low = y.amax(-1), y.amin(-1)
        value = (g * v).sum(-1) - bound * g.abs().sum(-1)
        # Adding delta to g(N) adds delta to every entry of both y_and and y_or (N is a superset
        # of every coalition and meets every non-empty one; the empty-set entries are sums of
        # all of g). Centring them shrinks s to (high - low) / 2.
        delta = -0.5 * (high + low)
        g_full = g[..., -1]
        shifted = value + delta * v[:, -1] - bound * ((g_full + delta).abs() - g_full.abs())
        # g = 0 has value 0 at any scale; the floor only avoids 0 / 0.
        plain = value / torch.maximum(high.abs(), low.abs()).clamp_min(1e-300)
        centred = shifted / (0.5 * (high - low)).clamp_min(1e-300)
        return torch.maximum(plain, centred).amax(0)

    best = bound_of(torch.cat([g_and, g_or, mean]))
    g = mean
    for _ in range(rounds):
        g = _and_adjoint(_superset_sums(g, n).clamp_(-1.0, 1.0), n)
        best = torch.maximum(best, bound_of(g))
        g = _or_adjoint(_meet_sums(g, n).clamp_(-1.0, 1.0), n)
        best = torch.maximum(best, bound_of(g))
    return best


def _admm(
    v: Tensor, bound: Tensor, config: AndOrConfig, split: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Run ADMM on normalised values.

    The iterates are coalition-major ``[2, 2**n, B]`` (see :class:`_Buffer`) in ``_ITERATE_DTYPE``;
    the certificates and the returned split are float64.

    Args:
        v: [B, 2**n] float64 values scaled to ``max |v - v(empty)| = 1``.
        bound: [B] scaled bound on ``|q|``.
        split: optional warm ``(v_and, v_or)`` [B, 2**n] each, scaled alike.
    Returns:
        best ``v_and``, ``v_or`` [B, 2**n] float64, [B] certified lower bound on the optimum,
        iterations run.
    """
    num, m = v.shape
    n = m.bit_length() - 1
    dtype = _ITERATE_DTYPE
    ops = _operators(n, v.device, dtype)
    if split is None:
        a, o = 0.5 * v, 0.5 * v
        rho_start, ramp = config.rho_start, config.rho_ramp
    else:
        a, o = split
        # A warm split is already sparse: skip the loose first half of the continuation.
        rho_start, ramp = math.sqrt(config.rho_start * config.rho_end), config.rho_ramp // 2
    v_t = v.T.to(dtype).contiguous()
    box = bound.to(dtype)[None, :]
    w = torch.stack([a.T, o.flip(-1).T]).to(dtype).contiguous()
    z_s, u_s = torch.empty_like(w), torch.empty_like(w)
    _project(w, v_t, box, z_s, u_s)
    u_s.zero_()
    work, kx = _Buffer(w, ops.sheared), _Buffer(w, ops.sheared)
    z_c = ops.forward(z_s, kx).clone()
    u_c = torch.zeros_like(z_c)

    best_a, best_o = v.new_empty(num, m), v.new_empty(num, m)
    best_lower = v.new_full((num,), -math.inf)
    # The starting point competes too: a warm start never comes back worse than it went in.
    best = z_c.abs().sum((0, 1), dtype=torch.float64)
    best_z = z_s.clone()
    lower = v.new_full((num,), -math.inf)
    # Running sums of the true duals rho * u_c and of the iterates z_s since the last restart of
    # the averages. Restarts at doubling iterations keep early, far-off points out of them.
    dual_sum, dual_count, restart = torch.zeros_like(z_c), 0, config.check_every
    primal_sum = torch.zeros_like(z_s)
    active = torch.arange(num, device=v.device)
    keep_weight = 1.0 - config.relaxation
    rho = rho_start
    iterations = 0
    for it in range(1, config.max_iter + 1):
        iterations = it
        if it <= ramp + 1:
            new_rho = rho_start * (config.rho_end / rho_start) ** min(1.0, (it - 1) / max(ramp, 1))
            # Scaled duals are (true duals) / rho; keep the true duals when rho moves.
            u_c.mul_(rho / new_rho)
            u_s.mul_(rho / new_rho)
            rho = new_rho

        torch.sub(z_c, u_c, out=work.data)
        ops.adjoint_(work).add_(z_s, alpha=_THETA).sub_(u_s, alpha=_THETA)
        x = ops.solve_(work)
        ops.forward(x, kx)
        # Over-relaxation, then soft thresholding: the new scaled dual is the clipped part.
        kx.data.lerp_(z_c, keep_weight).add_(u_c)
        torch.clamp(kx.data, -1.0 / rho, 1.0 / rho, out=u_c)
        torch.sub(kx.data, u_c, out=z_c)
        x.lerp_(z_s, keep_weight).add_(u_s)
        _project(x, v_t, box, z_s, u_s)
        dual_sum.add_(u_c, alpha=rho)
        # The box is convex, so the average of the projected iterates is feasible too.
        primal_sum.add_(z_s)
        dual_count += 1

        last = it == config.max_iter
        if it % _EVAL_EVERY == 0 or last:
            for point in (z_s, primal_sum / dual_count):  # the iterate, then the running average
                objective = ops.forward(point, kx).abs().sum((0, 1), dtype=torch.float64)
                better = objective < best
                best = torch.where(better, objective, best)
                best_z = torch.where(better[None, None, :], point, best_z)
        if (config.tol > 0 and it % config.check_every == 0) or last:
            duals = torch.stack([rho * u_c, dual_sum / dual_count]).transpose(-1, -2).double().contiguous()
            lower = torch.maximum(lower, _lower_bound(duals, v, bound))
            if it >= restart:
                dual_sum.zero_()
                primal_sum.zero_()
                dual_count, restart = 0, 2 * it
            gap = ((best - lower) / best).where(best > 0, torch.zeros_like(best))
            done = torch.ones_like(gap, dtype=torch.bool) if last else gap <= config.tol
            if done.any():
                ids = active[done]
                best_a[ids] = best_z[0, :, done].T.double()
                best_o[ids] = best_z[1, :, done].flip(0).T.double()
                best_lower[ids] = lower[done]
                keep = ~done
                if not keep.any():
                    break
                active = active[keep]
                v, bound, best, lower = v[keep], bound[keep], best[keep], lower[keep]
                v_t, box = v_t[:, keep].contiguous(), box[:, keep]
                z_c, z_s, u_c, u_s, best_z, dual_sum, primal_sum = (
                    t[:, :, keep].contiguous() for t in (z_c, z_s, u_c, u_s, best_z, dual_sum, primal_sum)
                )
                work, kx = _Buffer(z_s, ops.sheared), _Buffer(z_s, ops.sheared)
    return best_a, best_o, best_lower, iterations
