"""Exact AND-OR decomposition by linear programming (test and benchmark oracle only).

Solves SPEC §4 with SciPy's HiGHS on one sample:

    minimise   sum_S |I_and(S)| + sum_S |I_or(S)|      (the empty set included)
    over       v_and, v_or in R^(2**n)
    subject to |v_and(T) + v_or(T) - v(T)| <= bound    for every coalition T,

with I_and = and_transform(v_and) and I_or = or_transform(v_or). Epigraph variables
t_and >= |I_and|, t_or >= |I_or| make it an LP. The transform matrices come from applying the
library transforms to the identity, which is fine for the n <= 10 used in tests.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse as sp
import torch
from torch import Tensor

from concept_tracker.transforms import and_transform, num_players, or_transform


def _transform_matrix(transform, n: int) -> sp.csr_matrix:
    # Column T of the matrix is the transform of the indicator of T; the transforms act on rows.
    eye = torch.eye(1 << n, dtype=torch.float64)
    return sp.csr_matrix(transform(eye).T.numpy())


def lp_and_or(values: Tensor, bound_ratio: float = 0.02) -> tuple[float, Tensor, Tensor]:
    """Optimal AND-OR decomposition of one sample.

    Args:
        values: [2**n] v(S) of one sample.
        bound_ratio: |q(S)| <= bound_ratio * |v(N) - v(empty)|.
    Returns:
        (optimal objective, [2**n] v_and, [2**n] v_or), float64.
    """
    res, m = _solve(values, bound_ratio)
    x = torch.from_numpy(res.x)
    return float(res.fun), x[:m], x[m : 2 * m]


def lp_and_or_dual(values: Tensor, bound_ratio: float = 0.02) -> tuple[float, Tensor]:
    """Optimal objective and optimal dual ``g`` of one sample.

    ``g(T)`` is the multiplier of ``v_and(T) + v_or(T) = v(T) + q(T)``, the derivative of the
    optimum with respect to ``v(T)``; the dual value ``<g, v> - bound * ||g||_1`` equals the
    optimum.

    Returns:
        (optimal objective, [2**n] g), float64.
    """
    res, m = _solve(values, bound_ratio)
    marginals = torch.from_numpy(res.ineqlin.marginals)
    upper, lower = marginals[4 * m : 5 * m], marginals[5 * m :]
    return float(res.fun), upper - lower


def _solve(values: Tensor, bound_ratio: float):
    v = values.detach().to(torch.float64).cpu().numpy()
    n = num_players(values)
    m = 1 << n
    bound = bound_ratio * abs(v[-1] - v[0])
    a_mat = _transform_matrix(and_transform, n)
    o_mat = _transform_matrix(or_transform, n)
    eye = sp.identity(m, format="csr")
    zero = sp.csr_matrix((m, m))
    # Variable order: v_and, v_or, t_and, t_or.
    upper = sp.vstack(
        [
            sp.hstack([a_mat, zero, -eye, zero]),
            sp.hstack([-a_mat, zero, -eye, zero]),
            sp.hstack([zero, o_mat, zero, -eye]),
            sp.hstack([zero, -o_mat, zero, -eye]),
        ]
    ).tocsr()
    box = sp.hstack([eye, eye, zero, zero]).tocsr()
    a_ub = sp.vstack([upper, box, -box]).tocsr()
    b_ub = np.concatenate([np.zeros(4 * m), v + bound, -(v - bound)])
    cost = np.concatenate([np.zeros(2 * m), np.ones(2 * m)])
    bounds = [(None, None)] * (2 * m) + [(0, None)] * (2 * m)
    res = scipy.optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"HiGHS failed: {res.message}")
    return res, m
