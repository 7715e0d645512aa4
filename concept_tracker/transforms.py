"""Fast subset transforms between coalition values and AND / OR interactions.

Every tensor over coalitions has its last dimension of size ``2**n`` and is indexed by the
bitmask ``s`` of the coalition: player ``i`` is in ``S`` iff bit ``i`` of ``s`` is set, index 0
is the empty set and index ``2**n - 1`` is the full set ``N``.

The transforms are butterflies: one pass per player, each pass touching every entry once, so
``O(n * 2**n)`` time and ``O(2**n)`` memory per sample. No ``2**n x 2**n`` matrix is built.
On a CPU they run on a thread count chosen from the batch size (one thread per 2**22
elements, at least one; see :mod:`concept_tracker.threads`), and the caller's setting is
restored afterwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .threads import threads_for

MAX_PLAYERS = 20
"""Largest number of players of the exact readings (``2**20`` coalitions per sample)."""

MAX_SAMPLED_PLAYERS = 1024
"""Largest number of players a player kind accepts; above :data:`MAX_PLAYERS` only the sampled
order spectrum (:func:`concept_tracker.order_spectrum`) reads them."""


def num_players(values: Tensor, name: str = "values") -> int:
    """Number of players ``n`` implied by a last dimension of size ``2**n``.

    Raises:
        ValueError: if the last dimension is not a power of two no larger than ``2**20``.
    """
    if values.dim() == 0:
        raise ValueError(f"{name} must have a last dimension of size 2**n; got a scalar.")
    size = values.shape[-1]
    n = size.bit_length() - 1
    if size < 1 or (1 << n) != size:
        raise ValueError(
            f"{name} has last dimension {size}, which is not 2**n; pass one value per coalition "
            "(index = bitmask of the players kept)."
        )
    if n > MAX_PLAYERS:
        raise ValueError(f"{name} implies n={n} players; at most {MAX_PLAYERS} are supported.")
    return n


def orders(n: int, device: torch.device | str | None = None) -> Tensor:
    """Order ``|S|`` of every coalition.

    Returns:
        [2**n] int64 popcount of each index ``s``.
    """
    idx = torch.arange(1 << n, device=device)
    counts = torch.zeros_like(idx)
    for i in range(n):
        counts += (idx >> i) & 1
    return counts


def coalition_matrix(n: int, device: torch.device | str | None = None) -> Tensor:
    """Membership of every player in every coalition.

    Returns:
        [2**n, n] bool; row ``s`` has column ``i`` set iff bit ``i`` of ``s`` is set.
    """
    idx = torch.arange(1 << n, device=device)
    bits = torch.arange(n, device=device)
    return ((idx[:, None] >> bits[None, :]) & 1).bool()


def _butterfly_(x: Tensor, sign: float) -> Tensor:
    """In place: ``x[s] += sign * x[s without i]`` for every player ``i`` and every ``s`` holding it."""
    n = num_players(x)
    lead = x.shape[:-1]
    # Each pass is one small memory-bound op: on a shared CPU, extra threads only wait.
    with threads_for(x.numel(), x.device):
        for i in range(n):
            view = x.view(*lead, 1 << (n - 1 - i), 2, 1 << i)
            view[..., 1, :].add_(view[..., 0, :], alpha=sign)
    return x


def _prepare(values: Tensor, dtype: torch.dtype | None) -> Tensor:
    out = values.to(dtype=dtype or torch.float64, copy=True)
    return out.contiguous()


def and_transform(values: Tensor, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """AND (Harsanyi) interactions from coalition values.

    ``I_and(S) = sum_{T subset of S} (-1)**(|S|-|T|) v(T)``; ``I_and(empty) = v(empty)``.

    Args:
        values: [..., 2**n] v(S); bit i of the index set iff player i is in S.
        dtype: computation and result dtype (float64 by default: the sums cancel heavily).
    Returns:
        [..., 2**n] I_and(S) in the same order, on the device of ``values``.
    """
    return _butterfly_(_prepare(values, dtype), -1.0)


def and_inverse(effects: Tensor, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Coalition values from AND interactions (universal matching).

    ``v(T) = sum_{S subset of T} I_and(S)``.

    Args:
        effects: [..., 2**n] I_and(S).
    Returns:
        [..., 2**n] v(T) in the same order.
    """
    num_players(effects, "effects")
    return _butterfly_(_prepare(effects, dtype), 1.0)


def or_transform(values: Tensor, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """OR interactions from coalition values.

    ``I_or(S) = -sum_{T subset of S} (-1)**(|S|-|T|) v(N \\ T)`` for ``S`` non-empty and
    ``I_or(empty) = v(empty)``.

    Args:
        values: [..., 2**n] v(S); bit i of the index set iff player i is in S.
    Returns:
        [..., 2**n] I_or(S) in the same order.
    """
    # v(N \ T) is v read backwards: the complement of bitmask t is 2**n - 1 - t.
    out = _butterfly_(_prepare(values, dtype).flip(-1).contiguous(), -1.0).neg_()
    out[..., 0] = values[..., 0].to(out.dtype)
    return out


def or_inverse(effects: Tensor, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Coalition values from OR interactions.

    ``v(T) = I_or(empty) + sum_{S non-empty, S meets T} I_or(S)``.

    Args:
        effects: [..., 2**n] I_or(S).
    Returns:
        [..., 2**n] v(T) in the same order.
    """
    num_players(effects, "effects")
    m = _prepare(effects, dtype).neg_()
    # The Moebius coefficient of u(T) = v(N \ T) at the empty set is v(N) = sum of all I_or.
    m[..., 0] = effects.to(m.dtype).sum(-1)
    return _butterfly_(m, 1.0).flip(-1).contiguous()
