"""Independent references for the AND / OR transforms (tests and benchmarks only).

Three oracles, none sharing code with ``concept_tracker.transforms``:

- ``brute_*``: the SPEC §4 subset sums written out term by term, ``O(3**n)`` per sample;
- ``dense_and_matrix``: the ``2**n x 2**n`` Harsanyi matrix that published research code
  multiplies the value vector by;
- ``shapiq_and``: shapiq's ``ExactComputer(...).moebius_transform``, mapped from shapiq's
  tuple-keyed interaction lookup to our bitmask order.

Every function takes and returns ``[..., 2**n]`` tensors indexed by bitmask (bit ``i`` set iff
player ``i`` is in the coalition) and computes in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def players_of(size: int) -> int:
    """``n`` for a last dimension of ``2**n``."""
    n = size.bit_length() - 1
    if size < 1 or 1 << n != size:
        raise ValueError(f"an oracle needs 2**n values per sample; got {size}.")
    return n


def popcount(s: int) -> int:
    return bin(s).count("1")


def submasks(s: int) -> list[int]:
    """Every ``t`` with ``T ⊆ S``, by the standard ``(t - 1) & s`` walk."""
    out, t = [], s
    while True:
        out.append(t)
        if t == 0:
            return out
        t = (t - 1) & s


def _flat(values: Tensor) -> tuple[np.ndarray, tuple[int, ...]]:
    return values.detach().cpu().to(torch.float64).reshape(-1, values.shape[-1]).numpy(), values.shape


def _back(out: np.ndarray, shape: tuple[int, ...]) -> Tensor:
    return torch.from_numpy(out).reshape(shape)


def brute_and(values: Tensor) -> Tensor:
    """``I_and(S) = sum_{T ⊆ S} (-1)**(|S|-|T|) v(T)``."""
    v, shape = _flat(values)
    n = players_of(v.shape[1])
    out = np.zeros_like(v)
    for s in range(1 << n):
        for t in submasks(s):
            out[:, s] += (-1) ** (popcount(s) - popcount(t)) * v[:, t]
    return _back(out, shape)


def brute_or(values: Tensor) -> Tensor:
    """``I_or(S) = -sum_{T ⊆ S} (-1)**(|S|-|T|) v(N \\ T)`` for ``S ≠ ∅``; ``I_or(∅) = v(∅)``."""
    v, shape = _flat(values)
    n = players_of(v.shape[1])
    full = (1 << n) - 1
    out = np.zeros_like(v)
    out[:, 0] = v[:, 0]
    for s in range(1, 1 << n):
        for t in submasks(s):
            out[:, s] -= (-1) ** (popcount(s) - popcount(t)) * v[:, full & ~t]
    return _back(out, shape)


def brute_and_matching(effects: Tensor) -> Tensor:
    """Universal matching for AND: ``v(T) = sum_{S ⊆ T} I_and(S)``."""
    e, shape = _flat(effects)
    n = players_of(e.shape[1])
    out = np.zeros_like(e)
    for t in range(1 << n):
        for s in submasks(t):
            out[:, t] += e[:, s]
    return _back(out, shape)


def brute_or_matching(effects: Tensor) -> Tensor:
    """Matching for OR: ``v(T) = I_or(∅) + sum_{S ≠ ∅, S ∩ T ≠ ∅} I_or(S)``."""
    e, shape = _flat(effects)
    n = players_of(e.shape[1])
    out = np.repeat(e[:, :1], e.shape[1], axis=1)
    for t in range(1 << n):
        for s in range(1, 1 << n):
            if s & t:
                out[:, t] += e[:, s]
    return _back(out, shape)


def dense_and_matrix(n: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Tensor:
    """The ``[2**n, 2**n]`` matrix ``A`` with ``I_and = A @ v``.

    ``A[s, t] = (-1)**(|S|-|T|)`` when ``T ⊆ S`` (``s & t == t``), else 0; built from that
    definition by broadcasting, as research code does (``8 * 4**n`` bytes in float64; the
    temporaries are int32 / int8 so that n = 14 fits in a few GiB).
    """
    idx = torch.arange(1 << n, device=device, dtype=torch.int32)
    pop = torch.zeros(1 << n, device=device, dtype=torch.int8)
    for i in range(n):
        pop += ((idx >> i) & 1).to(torch.int8)
    subset = (idx[:, None] & idx[None, :]) == idx[None, :]
    sign = 1 - 2 * ((pop[:, None] - pop[None, :]) & 1)
    return torch.where(subset, sign, 0).to(dtype)


def dense_and(values: Tensor) -> Tensor:
    """AND interactions by one dense matrix product."""
    n = players_of(values.shape[-1])
    a = dense_and_matrix(n, device=values.device)
    return values.to(torch.float64) @ a.T


def bitmask_of(coalition: np.ndarray) -> np.ndarray:
    """Bitmask of each row of a bool coalition matrix ``[M, n]``."""
    return (coalition.astype(np.int64) << np.arange(coalition.shape[1])).sum(axis=1)


def shapiq_computer(values: Tensor):
    """shapiq's ``ExactComputer`` for the game ``v`` of one sample (``values`` [2**n]), evaluated."""
    import shapiq

    v = values.detach().cpu().to(torch.float64).numpy()
    n = players_of(v.shape[0])

    def game(coalitions: np.ndarray) -> np.ndarray:
        return v[bitmask_of(coalitions)]

    return shapiq.ExactComputer(game, n_players=n, evaluate_game=True)


def shapiq_to_bitmask(interaction_values, n: int) -> Tensor:
    """shapiq ``InteractionValues`` (keyed by sorted player tuples) as a ``[2**n]`` bitmask tensor.

    Interactions missing from the lookup (shapiq may drop exact zeros) are 0.
    """
    out = torch.zeros(1 << n, dtype=torch.float64)
    for players, pos in interaction_values.interaction_lookup.items():
        out[sum(1 << p for p in players)] = float(interaction_values.values[pos])
    return out


def shapiq_and(values: Tensor) -> Tensor:
    """AND interactions by shapiq's Möbius transform, one sample at a time."""
    flat = values.reshape(-1, values.shape[-1])
    n = players_of(flat.shape[1])
    rows = [shapiq_to_bitmask(shapiq_computer(row).moebius_transform, n) for row in flat]
    return torch.stack(rows).reshape(values.shape)
