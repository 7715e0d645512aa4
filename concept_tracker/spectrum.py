"""The sampled order spectrum: band shares of salient Harsanyi strength from a set number of forwards.

The exact readings (:func:`~concept_tracker.metrics.order_profile`) need ``v(S)`` on all ``2**n``
coalitions of a sample. This module estimates the same per-sample quantity,

    A(m) = sum over |S| = m of |I(S)| * [|I(S)| > tau],   tau = ratio * max_{S != empty} |I(S)|,

and the band shares built from it, from ``F`` masked forwards per sample, at any ``n``. A planted
AND of k players counts at order k with its full strength: every effect used is an exact
Harsanyi effect on some sub-lattice, never a Walsh or Banzhaf coefficient.

How the ``F`` forwards of one sample are spent (:func:`plan_spectrum`):

1. **Low orders, exactly.** Every coalition of size <= k (``sum_{j<=k} C(n, j)`` forwards; k the
   largest order that fits in about 70 % of ``F``). Moebius inversion over that low-order
   lattice gives the exact ``I(S)`` for ``|S| <= k``, since ``I(S)`` only involves the subsets of S.
2. **Where the high orders live.** ``pilot`` random masks keeping each player with probability
   ``keep`` (near 1, so a high-order AND is often whole). Their residual
   ``r(T) = v(T) - sum_{S subset T, |S| <= k} I(S)`` holds only orders above k; each player's
   influence on it (mean residual with the player kept minus dropped, as a z-score) ranks the
   players that take part in salient high-order concepts.
3. **Candidate concepts, exactly.** The ``c`` most influential players form a candidate set C; every
   subset of C is evaluated, so the Harsanyi effect of every coalition inside C is exact (sparse
   Moebius recovery on a support found from the residual). A sparse model's high-order concepts
   (planted ANDs, parities) are recovered whole; a dense residual (more influential players than
   a lattice holds) is left to the blocks.
4. **Everything else, without bias.** ``blocks`` uniform random sets U of ``u`` players each
   (drawn from their own stream, so the same seed draws the same blocks for two models);
   every subset of U is evaluated, so each effect inside U is exact. A coalition S of order m
   lies in a uniform u-set with probability ``C(u, m) / C(n, m)``; weighting what a block sees by
   the inverse of that probability (Horvitz-Thompson) gives an unbiased estimate of the strength
   of the coalitions that steps 1 and 3 did not cover, at every order up to u.

Uncertainty: a percentile bootstrap over the blocks of a sample (the only random part) gives each
per-sample share an interval; resampling probe samples as well gives the interval of the share
averaged over probes. Orders above ``u`` outside C are not seen by any block; the residual
energy that steps 1 and 3 leave unexplained on the pilot masks bounds their salient strength
(``sum |I| <= sum I**2 / tau`` for salient effects), and that bound widens the lower side of the
simple share's and the upper side of the complex share's interval.

Coalitions are bool ``[..., n]`` rows (column ``i`` set iff player ``i`` is kept), not bitmasks:
n may exceed 63. A set of at most k players is a row of ``k`` player ids padded with ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from torch import Tensor, nn

from .metrics.bootstrap import Interval
from .players import Players
from .transforms import and_inverse, and_transform
from .values import ValueFn

Inputs = Any
"""A batch: a Tensor [B, ...] or a mapping of tensors [B, ...] (Hugging Face style)."""

ValueOracle = Callable[[Any], Any]
"""Values of coalitions: bool [B, M, n] (M coalitions of every sample) -> [B, M] float64, or a
list of B bool [M_b, n] (a different number per sample) -> a list of B [M_b] float64."""

LOW_SHARE = 0.5
"""Largest fraction of the forwards the exact low-order lattice may take."""
PILOT_SHARE = 0.25
"""Fraction of the forwards left after the low orders that go to the pilot masks."""
CANDIDATE_SHARE = 0.15
"""Fraction of the forwards left after the pilot that the candidate groups may take."""
MIN_BLOCKS = 12
"""Random blocks the layout aims for (:func:`block_layout`): the spread of the mean square effect
over the blocks weighs the tail's fit, and a few blocks give a poor reading of it."""
MIN_Z = 4.0
"""Influence z-score above which a player is taken as part of a high-order concept."""
MAX_ROUNDS = 4
"""Rounds of candidate search: each evaluates the most influential players on what is left."""
MAX_LATTICE = 14
"""Largest candidate or block set (``2**14`` subsets)."""
TAIL_ORDERS = 8
"""Highest orders a block sees whose mean square effect is extrapolated to the orders above them."""
TAIL_FLOOR = 0.01
"""Effects below this fraction of the salience threshold are left out of the tail's energy: far
from salient, and on a near-additive model all float rounding (the energy that decides the tail
is in effects near and above the threshold)."""
ROUNDING = 1e-5
"""Effects below this fraction of the sample's largest value are left out of the tail's energy
too: float32 rounding (about 6e-8 of a value) grows as ``2**(m / 2)`` in an order-m Moebius sum,
which stays below 1e-5 up to order 14 (:data:`MAX_LATTICE`). It matters where every effect is
tiny (a model at initialization), so that the threshold itself is near the rounding."""
TAIL_FACTOR = 0.5
"""Salient strength of an order above the blocks' reach per ``sum I**2 / tau`` of its effects.

This and the shares above were chosen on the tuning split of the n = 20 zoo in
``benchmarks/spectrum.py`` and are scored there on a held-out split (docs/metrics.md, section 12)."""


@dataclass(frozen=True)
class SpectrumPlan:
    """How the forwards of one probe sample are spent before the search for candidates.

    What the candidate groups leave of the budget goes to the random blocks
    (:func:`block_layout`), so their number is known only once the pilot has been read.

    Attributes:
        n: number of players.
        k: every coalition of size <= k is evaluated (exact low orders); ``k = n`` is the exact path.
        pilot: random masks for the residual influence of each player.
        keep: keep probability of a player in a pilot mask.
    """

    n: int
    k: int
    pilot: int
    keep: float

    @property
    def exact(self) -> bool:
        """True when every coalition is evaluated."""
        return self.k >= self.n


def low_order_cost(n: int, k: int) -> int:
    """Number of coalitions of at most ``k`` of ``n`` players."""
    return sum(math.comb(n, j) for j in range(min(k, n) + 1))


def lattice_cost(u: int, k: int) -> int:
    """Forwards to evaluate every subset of a set of ``u`` players whose subsets of size <= k are known."""
    return sum(math.comb(u, j) for j in range(k + 1, u + 1))


def minimum_forwards(n: int) -> int:
    """Fewest forwards per sample :func:`plan_spectrum` accepts: the empty set and the singletons, twice."""
    return 2 * (n + 1) if n > 1 else 2**n


def plan_spectrum(n: int, forwards_per_probe: int, complex_min: int) -> SpectrumPlan:
    """The exact order and the pilot for a per-sample budget of forwards.

    Args:
        n: number of players.
        forwards_per_probe: masked forwards one sample may use.
        complex_min: first complex order; the pilot's keep probability makes an AND of this
            order (at most 8) whole in about half the masks.
    Returns:
        :class:`SpectrumPlan`; ``k`` is the largest order whose lattice fits in
        :data:`LOW_SHARE` of the budget, the pilot takes :data:`PILOT_SHARE` of the rest.
    """
    if forwards_per_probe >= 2**n:
        return SpectrumPlan(n=n, k=n, pilot=0, keep=1.0)
    k = 1
    while k + 1 < n and low_order_cost(n, k + 1) <= LOW_SHARE * forwards_per_probe:
        k += 1
    left = forwards_per_probe - low_order_cost(n, k)
    keep = 0.5 ** (1.0 / max(k + 1, min(complex_min, 8)))
    pilot = int(PILOT_SHARE * left) if n > k + 1 else 0
    return SpectrumPlan(n=n, k=k, pilot=pilot, keep=keep)


def block_layout(forwards: float, n: int, k: int) -> tuple[int, int]:
    """Size and number of random blocks that fit in ``forwards``: the largest size of which
    :data:`MIN_BLOCKS` fit, or of which two fit if that size is at most ``k + 3`` (three orders
    above the exact ones, for the tail's line, outweigh more blocks on a small budget).

    Returns:
        (u, blocks); (0, 0) when not even two blocks larger than ``k`` fit.
    """
    for size in range(min(n, MAX_LATTICE), k, -1):
        cost = lattice_cost(size, k)
        if MIN_BLOCKS * cost <= forwards or (size <= k + 3 and 2 * cost <= forwards):
            return size, int(forwards // cost)
    return 0, 0


def low_order_sets(n: int, k: int, device: torch.device | str | None = None) -> Tensor:
    """Every set of at most ``k`` of ``n`` players, as sorted player ids padded with ``n``.

    Returns:
        [L, k] int64, ``L = sum_{j<=k} C(n, j)``, sorted by :func:`set_keys`.
    """
    rows = [list(c) + [n] * (k - j) for j in range(k + 1) for c in combinations(range(n), j)]
    sets = torch.tensor(rows, dtype=torch.long, device=device).reshape(-1, k)
    return sets[torch.argsort(set_keys(sets, n))]


def set_keys(sets: Tensor, n: int) -> Tensor:
    """One int64 key per padded set: ``sum_j sets[..., j] * (n + 1)**j`` over the sorted ids.

    Args:
        sets: [..., k] player ids padded with ``n`` (any order within a row).
    Returns:
        [...] int64; equal keys iff equal sets.
    """
    ordered = torch.sort(sets, dim=-1).values
    powers = (n + 1) ** torch.arange(sets.shape[-1], device=sets.device, dtype=torch.long)
    return (ordered * powers).sum(-1)


def set_index(sets: Tensor, table: Tensor, n: int) -> Tensor:
    """Positions of padded sets in a table from :func:`low_order_sets`.

    Args:
        sets: [..., k] player ids padded with ``n``; every set must be in ``table``.
        table: [L, k] from :func:`low_order_sets`.
    Returns:
        [...] int64 row of each set in ``table``.
    """
    keys = set_keys(table, n)
    return torch.searchsorted(keys, set_keys(sets, n).contiguous())


def set_coalitions(sets: Tensor, n: int) -> Tensor:
    """Coalitions of padded sets.

    Args:
        sets: [..., k] player ids padded with ``n``.
    Returns:
        [..., n] bool, player ``i`` kept iff ``i`` is in the set.
    """
    out = torch.zeros(*sets.shape[:-1], n + 1, dtype=torch.bool, device=sets.device)
    out.scatter_(-1, sets, True)
    return out[..., :n]


def low_order_effects(values: Tensor, table: Tensor, n: int) -> Tensor:
    """Exact Harsanyi effects of every set of at most k players (Moebius over the low-order lattice).

    ``I(S) = sum_{T subset S} (-1)**(|S| - |T|) v(T)``; each S has at most ``2**k`` subsets.

    Args:
        values: [B, L] v of the sets of ``table``, in its order.
        table: [L, k] from :func:`low_order_sets`.
    Returns:
        [B, L] float64 I(S) in the order of ``table``.
    """
    k = table.shape[1]
    if k == 0:
        return values.to(torch.float64).clone()
    slots = torch.arange(1 << k, device=table.device)
    keep = ((slots[:, None] >> torch.arange(k, device=table.device)) & 1).bool()  # [2**k, k]
    present = table < n  # [L, k]
    # A padded slot counts as kept, so each subset T of S is listed exactly once.
    valid = (keep[None] | present[:, None]).all(-1)  # [L, 2**k]
    subsets = torch.where(keep[None], table[:, None], torch.full_like(table[:, None], n))  # [L, 2**k, k]
    index = set_index(torch.where(valid[..., None], subsets, n), table, n)
    dropped = (present[:, None] & ~keep[None]).sum(-1)
    sign = torch.where(valid, (1 - 2 * (dropped % 2)).to(torch.float64), torch.zeros((), dtype=torch.float64))
    return (values.to(torch.float64)[:, index] * sign).sum(-1)


def low_order_part(coalitions: Tensor, effects: Tensor, table: Tensor, n: int) -> Tensor:
    """``sum_{S subset T, |S| <= k} I(S)`` for coalitions T.

    Args:
        coalitions: [B, M, n] bool.
        effects: [B, L] from :func:`low_order_effects`.
        table: [L, k].
    Returns:
        [B, M] float64.
    """
    b, m, _ = coalitions.shape
    ext = torch.cat([coalitions, torch.ones(b, m, 1, dtype=torch.bool, device=coalitions.device)], -1)
    out = torch.empty(b, m, dtype=torch.float64, device=coalitions.device)
    # [M, L, k] gathers per chunk of masks, within about 2**24 elements.
    step = max(1, (1 << 24) // max(1, table.numel()))
    for i in range(b):
        for start in range(0, m, step):
            rows = ext[i, start : start + step]
            inside = rows[:, table].all(-1).to(torch.float64)  # [m', L]
            out[i, start : start + step] = inside @ effects[i].to(torch.float64)
    return out


def _standard_error(n1: Tensor, v1: Tensor, n0: Tensor, v0: Tensor) -> Tensor:
    """Squared standard error of a difference of two means: Welch's, but at least a quarter of
    the pooled one, so that a player dropped from a few masks that happen to agree does not look
    certain (a noiseless planted concept leaves one side with no variance at all)."""
    pooled = (n1 * v1 + n0 * v0) / (n1 + n0 - 2).clamp(min=1)
    inv = 1.0 / n1.clamp(min=1) + 1.0 / n0.clamp(min=1)
    return torch.maximum(v1 / n1.clamp(min=1) + v0 / n0.clamp(min=1), 0.25 * pooled * inv)


def player_influence(coalitions: Tensor, residual: Tensor) -> Tensor:
    """z-score of each player's influence on a residual.

    ``d_i = mean(r | i kept) - mean(r | i dropped)`` over the masks, divided by its standard error.

    Args:
        coalitions: [B, M, n] bool masks.
        residual: [B, M] float64.
    Returns:
        [B, n] float64 |z| (0 for a player never or always kept).
    """
    kept = coalitions.to(torch.float64)
    dropped = 1.0 - kept
    n1, n0 = kept.sum(1), dropped.sum(1)  # [B, n]
    r = residual[..., None]
    s1, s0 = (kept * r).sum(1), (dropped * r).sum(1)
    q1, q0 = (kept * r * r).sum(1), (dropped * r * r).sum(1)
    m1, m0 = s1 / n1.clamp(min=1), s0 / n0.clamp(min=1)
    v1 = (q1 / n1.clamp(min=1) - m1**2).clamp(min=0)
    v0 = (q0 / n0.clamp(min=1) - m0**2).clamp(min=0)
    scale = residual.abs().amax(1, keepdim=True).clamp(min=1e-300)
    se = _standard_error(n1, v1, n0, v0).sqrt()
    se = torch.maximum(se, 1e-9 * scale)
    z = (m1 - m0).abs() / se
    return torch.where((n1 > 0) & (n0 > 0), z, torch.zeros_like(z))


def lattice(universe: Tensor, n: int) -> Tensor:
    """Every subset of each set of players.

    Args:
        universe: [..., u] distinct player ids.
    Returns:
        [..., 2**u, n] bool; row ``t`` keeps the players ``universe[j]`` with bit ``j`` of ``t`` set.
    """
    u = universe.shape[-1]
    bits = (
        (torch.arange(1 << u, device=universe.device)[:, None] >> torch.arange(u, device=universe.device)) & 1
    ).bool()
    out = torch.zeros(*universe.shape[:-1], 1 << u, n, dtype=torch.bool, device=universe.device)
    index = universe[..., None, :].expand(*universe.shape[:-1], 1 << u, u)
    return out.scatter_(-1, index, bits.expand_as(index))


def lattice_low_index(universe: Tensor, table: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Which subsets of each set are low-order (size <= k) and where they sit in the table.

    Args:
        universe: [..., u] player ids.
        table: [L, k].
    Returns:
        ([2**u] bool: subset has at most k players, [..., 2**u] int64 table row (0 where not low)).
    """
    u, k = universe.shape[-1], table.shape[1]
    t = torch.arange(1 << u, device=universe.device)
    bits = ((t[:, None] >> torch.arange(u, device=universe.device)) & 1).bool()  # [2**u, u]
    low = bits.sum(-1) <= k
    # The ids of each low subset, padded with n to width k: keep the chosen ids, sort the
    # padding (n) to the end, take the first k slots.
    chosen = torch.where(bits, universe[..., None, :], torch.full_like(universe[..., None, :], n))
    ids = torch.sort(chosen, dim=-1).values[..., : max(k, 1)]
    if k == 0:
        ids = ids[..., :0]
    ids = torch.where(low[:, None], ids, torch.full_like(ids, n))
    return low, set_index(ids, table, n)


@dataclass
class SpectrumEstimate:
    """Estimated salient strength per order, per sample, with its bootstrap replicates.

    Attributes:
        strength: [B, n + 1] float64 estimated ``A(m)`` (index 0, the empty set, is 0).
        replicates: [R, B, n + 1] float64 ``A(m)`` on bootstrap resamples of the blocks
            (R = 0 when no stage was random).
        unseen: [B] float64 bound on the salient strength of the orders no stage could see
            (0 when every order was seen).
        concepts: per sample, the exactly known salient concepts above order k, strongest
            first, as (player ids, effect).
        forwards: coalitions evaluated per sample.
        candidates: size of the candidate set used (0 = none).
        block_size: size of the random blocks (0 = none).
        blocks: random blocks per sample.
        tail: [B, n + 1] float64 the part of ``strength`` extrapolated to the orders above the
            blocks' reach (:func:`tail_strength`; zero where the blocks reach order n).
    """

    strength: Tensor
    replicates: Tensor
    unseen: Tensor
    concepts: list[list[tuple[tuple[int, ...], float]]]
    forwards: int
    candidates: int
    block_size: int
    blocks: int
    tail: Tensor


def _salient(effects: Tensor, tau: Tensor) -> Tensor:
    """``|I| * [|I| > tau]``."""
    magnitude = effects.abs()
    return torch.where(magnitude > tau, magnitude, torch.zeros_like(magnitude))


def _bits(u: int, device: torch.device | str) -> Tensor:
    """[2**u, u] bool: bit j of every local bitmask."""
    return ((torch.arange(1 << u, device=device)[:, None] >> torch.arange(u, device=device)) & 1).bool()


def exact_strength(effects: Tensor, ratio: float) -> Tensor:
    """Per-sample salient strength per order from every effect (the exact readings).

    Args:
        effects: [B, 2**n] Harsanyi effects, bitmask order.
    Returns:
        [B, n + 1] float64.
    """
    n = effects.shape[-1].bit_length() - 1
    sizes = _bits(n, effects.device).sum(-1)
    nonempty = effects.to(torch.float64) * (sizes > 0)
    tau = ratio * nonempty.abs().amax(-1, keepdim=True)
    out = torch.zeros(effects.shape[0], n + 1, dtype=torch.float64, device=effects.device)
    return out.index_add_(1, sizes, _salient(nonempty, tau))


@dataclass(frozen=True)
class TailFit:
    """Energy of the effects the blocks saw at the top of their reach.

    Attributes:
        orders: [O] float64 the fit orders (up to :data:`TAIL_ORDERS` highest above k a block sees).
        energy: [B, J, O] float64 sum of ``I(S)**2`` over the coalitions of each fit order in
            each block that no earlier stage knows.
        count: [B, J, O] float64 how many such coalitions.
    """

    orders: Tensor
    energy: Tensor
    count: Tensor


def fit_tail(block: Tensor, known: Tensor, block_sizes: Tensor, k: int, floor: Tensor) -> TailFit | None:
    """Energy per order at the top of the blocks' reach, of the effects above a floor.

    Effects below ``floor`` do not count: a near-additive model's high-order effects are float
    rounding, which grows with the order of a Moebius sum, and counted they would extrapolate
    to a large tail.

    Args:
        block: [B, J, 2**u] exact effects of every subset of each block (local bitmasks).
        known: [B, J, 2**u] bool, coalitions an earlier stage knows exactly.
        block_sizes: [2**u] order of each local bitmask.
        k: highest order known exactly.
        floor: [B] smallest effect counted, per sample (:data:`TAIL_FLOOR` times the threshold,
            at least :data:`ROUNDING` times the largest value).
    Returns:
        :class:`TailFit`, or None when the blocks see fewer than two orders above k.
    """
    u = block.shape[-1].bit_length() - 1
    orders = list(range(max(k + 1, u - TAIL_ORDERS + 1), u + 1))
    if len(orders) < 2:
        return None
    unknown = ~known
    counted = block * (block.abs() > floor[:, None, None])
    energy = torch.stack([(counted.pow(2) * unknown * (block_sizes == m)).sum(-1) for m in orders], -1)
    count = torch.stack([(unknown & (block_sizes == m)).sum(-1) for m in orders], -1).to(block.dtype)
    return TailFit(torch.tensor(orders, dtype=block.dtype, device=block.device), energy, count)


def tail_strength(
    fit: TailFit, sample: int, picks: Tensor | None, tau: Tensor, n: int, u: int, exact_counts: list[int]
) -> Tensor:
    """Salient strength of the orders above the blocks' reach, extrapolated (a model, not a sample).

    The mean square effect per order, ``e(m)``, is read from the blocks at the fit orders; a
    weighted least-squares line through ``log e(m)`` (see the comment below) is carried to the
    orders ``u + 1 .. min(n, 2u)``, and their salient strength is taken as
    ``TAIL_FACTOR * (C(n, m) - known) * e(m) / tau``: ``sum I**2 / tau`` bounds the salient
    strength of effects above ``tau``, and :data:`TAIL_FACTOR` was chosen on trained MLPs (see
    docs/metrics.md, section 12). Orders above ``2u`` are left to ``unseen``.

    Args:
        fit: from :func:`fit_tail`.
        sample: which sample.
        picks: [R, J] block indices of R bootstrap resamples, or None for all blocks once.
        tau: salience threshold of the sample (0-d).
        n, u: number of players and block size.
        exact_counts: per order, coalitions above u already known exactly (inside a group).
    Returns:
        [n + 1] float64 (or [R, n + 1] with ``picks``), zero at orders <= u and above 2u.
    """
    energy, count = fit.energy[sample], fit.count[sample]  # [J, O]
    if picks is None:
        e, c = energy.sum(0)[None], count.sum(0)[None]
    else:
        e, c = energy[picks].sum(1), count[picks].sum(1)  # [R, O]
    mean = e / c.clamp(min=1)
    # No energy at a fit order (a sparse function, its concepts already found): no tail.
    valid = (mean > 0).all(-1) & (tau > 0)
    tiny = torch.finfo(mean.dtype).tiny
    y = mean.clamp(min=tiny).log()
    # Each order weighs by the inverse variance of its log mean square over the blocks (delta
    # method): the top orders are seen in few coalitions and their heavy tails make them the
    # noisiest, so weighting by the coalitions seen would trust them most. Below MIN_BLOCKS
    # blocks that variance is itself too noisy to weigh by, and the coalitions seen weigh.
    x, w = fit.orders, c
    if energy.shape[0] >= MIN_BLOCKS:
        per = energy / count.clamp(min=1)
        per = per[None] if picks is None else per[picks]  # [R, J, O]
        w = 1.0 / (per.var(1) / per.shape[1] / mean.clamp(min=tiny) ** 2).clamp(min=1e-12)
    total = w.sum(-1, keepdim=True).clamp(min=1)
    mx, my = (w * x).sum(-1, keepdim=True) / total, (w * y).sum(-1, keepdim=True) / total
    slope = (w * (x - mx) * (y - my)).sum(-1) / (w * (x - mx) ** 2).sum(-1).clamp(min=torch.finfo(x.dtype).tiny)
    intercept = my[:, 0] - slope * mx[:, 0]
    out = torch.zeros(e.shape[0], n + 1, dtype=e.dtype, device=e.device)
    for m in range(u + 1, min(n, 2 * u) + 1):
        square = (intercept + slope * m).clamp(max=600.0).exp()
        size = TAIL_FACTOR * square / tau.clamp(min=torch.finfo(e.dtype).tiny)
        out[:, m] = torch.where(valid, max(math.comb(n, m) - exact_counts[m], 0) * size, torch.zeros_like(size))
    return out[0] if picks is None else out


def estimate_spectrum(
    value_of: ValueOracle,
    num_samples: int,
    plan: SpectrumPlan,
    budget: int,
    *,
    ratio: float = 0.05,
    resamples: int = 1000,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    top_concepts: int = 10,
) -> SpectrumEstimate:
    """Run a plan against a value oracle and estimate the per-order salient strength of each sample.

    Args:
        value_of: values of coalitions, bool [B, M, n] -> [B, M] (the masked forwards).
        num_samples: B.
        plan: from :func:`plan_spectrum`.
        budget: forwards per sample; what the candidate set does not take goes to the blocks.
        ratio: salience threshold as a fraction of the sample's largest non-empty effect.
        resamples: bootstrap resamples of the blocks.
        generator: CPU generator for the pilot masks, the blocks and the bootstrap.
        top_concepts: exactly known concepts kept per sample.
    Returns:
        :class:`SpectrumEstimate`.
    """
    n, k, b = plan.n, plan.k, num_samples
    f64 = torch.float64
    empty = torch.zeros(0, b, n + 1, dtype=f64, device=device)
    if plan.exact:
        from .transforms import coalition_matrix

        effects = and_transform(value_of(coalition_matrix(n, device)[None].expand(b, -1, -1)))
        strength = exact_strength(effects, ratio)
        top: list[list[tuple[tuple[int, ...], float]]] = [
            _top(effects[i], _bits(n, device), list(range(n)), ratio, top_concepts, 0) for i in range(b)
        ]
        zero = torch.zeros(b, dtype=f64, device=device)
        return SpectrumEstimate(strength, empty, zero, top, 1 << n, 0, 0, 0, torch.zeros_like(strength))

    block_generator = torch.Generator().manual_seed(int(torch.randint(1 << 62, (1,), generator=generator)))
    # Stage 1: every coalition of at most k players, and their exact effects.
    table = low_order_sets(n, k, device)
    low_values = value_of(set_coalitions(table, n)[None].expand(b, -1, -1)).to(f64)
    low_sizes = (table < n).sum(-1)
    # v(empty) is a constant offset, not a concept: it neither counts nor sets the threshold.
    low = torch.where(low_sizes > 0, low_order_effects(low_values, table, n), torch.zeros((), dtype=f64))
    known_max = low.abs().amax(1)
    forwards = table.shape[0]

    def sub_lattice(universe: Tensor) -> Tensor:
        """[B, J, u] sets -> [B, J, 2**u] exact effects of all their subsets (local bitmasks);
        the subsets of at most k players are read from stage 1, the others evaluated."""
        coal = lattice(universe, n)
        is_low, where = lattice_low_index(universe, table, n)
        values = torch.empty(coal.shape[:-1], dtype=f64, device=device)
        values[..., is_low] = torch.gather(low_values, 1, where[..., is_low].reshape(b, -1)).reshape(
            b, universe.shape[1], -1
        )
        high = coal[..., ~is_low, :].reshape(b, -1, n)
        if high.shape[1]:
            values[..., ~is_low] = value_of(high).to(f64).reshape(b, universe.shape[1], -1)
        return and_transform(values)

    # Stages 2-3: pilot masks; the players influencing the residual above order k; every
    # subset of the most influential ones, exactly; again on what is left.
    groups: list[list[list[int]]] = [[] for _ in range(b)]
    group_effects: list[list[Tensor]] = [[] for _ in range(b)]
    pilot = residual = left = None
    if plan.pilot:
        pilot = (torch.rand(b, plan.pilot, n, generator=generator) < plan.keep).to(device)
        residual = value_of(pilot).to(f64) - low_order_part(pilot, low, table, n)
        forwards += plan.pilot
        left = residual.clone()
        room = [CANDIDATE_SHARE * (budget - forwards)] * b
        spent = [0] * b
        for _ in range(MAX_ROUNDS):
            z = player_influence(pilot, left)
            picked: list[list[int]] = []
            for i in range(b):
                g = grow_support(pilot[i], left[i], z[i])
                if len(g) <= k:  # no AND-like support (a parity, say): the influential players together
                    ranked = [p for p in torch.argsort(z[i], descending=True).tolist() if z[i, p] > MIN_Z]
                    # Only when they all fit: a residual spread over more players than one lattice
                    # holds is dense, and the blocks estimate it better than one biased group.
                    g = sorted(ranked) if len(ranked) <= max_lattice(room[i] - spent[i], len(ranked), k) else []
                fits = lattice_cost(len(g), k) <= room[i] - spent[i] and len(g) <= MAX_LATTICE
                picked.append(g if len(g) > k and fits and g not in groups[i] else [])
            if not any(picked):
                break
            rows, where = [], []
            for g in picked:
                universe = torch.tensor(g, dtype=torch.long, device=device)
                is_low, pos = lattice_low_index(universe, table, n)
                rows.append(lattice(universe, n)[~is_low] if g else torch.zeros(0, n, dtype=torch.bool, device=device))
                where.append((is_low, pos))
            values = value_of(rows)
            for i, (g, (is_low, pos)) in enumerate(zip(picked, where)):
                if not g:
                    continue
                vals = torch.empty(1 << len(g), dtype=f64, device=device)
                vals[is_low] = low_values[i, pos[is_low]]
                vals[~is_low] = values[i].to(f64)
                spent[i] += rows[i].shape[0]
                effects = and_transform(vals) * (_bits(len(g), device).sum(-1) > k)  # low orders: stage 1
                groups[i].append(g)
                group_effects[i].append(effects)
                known_max[i] = torch.maximum(known_max[i], effects.abs().max())
                left[i] -= _inside_part(pilot[i : i + 1], torch.tensor([g], device=device), effects[None])[0]
        forwards += max(spent)

    # Stage 4: uniform random blocks, every subset of each.
    u, blocks = block_layout(budget - forwards, n, k)
    block = known = fit = None
    if blocks:
        draws = torch.rand(blocks, b, n, generator=block_generator).transpose(0, 1)
        universe = torch.sort(draws.argsort(-1)[..., :u], -1).values
        universe = universe.to(device)
        block = sub_lattice(universe)
        forwards += blocks * lattice_cost(u, k)
        bits = _bits(u, device)
        block_sizes = bits.sum(-1)
        known_max = torch.maximum(known_max, (block * (block_sizes > k)).abs().flatten(1).amax(1))
        # A coalition that an earlier stage knows exactly (low order, or inside a group) is not
        # counted again by a block.
        known = torch.zeros(b, blocks, 1 << u, dtype=torch.bool, device=device)
        for i in range(b):
            for g in groups[i]:
                members = (universe[i][..., None] == torch.tensor(g, device=device)).any(-1)  # [J, u]
                known[i] |= ~(bits[None] & ~members[:, None, :]).any(-1)

    tau = (ratio * known_max)[:, None]
    if block is not None and known is not None and u < n:
        scale = low_values.abs().amax(1)
        floor = torch.maximum(TAIL_FLOOR * tau[:, 0], ROUNDING * scale)
        fit = fit_tail(block, known, block_sizes, k, floor)
    fixed = torch.zeros(b, n + 1, dtype=f64, device=device).index_add_(1, low_sizes, _salient(low, tau))
    concepts: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in range(b)]
    for i in range(b):
        found = []
        for g, effects in zip(groups[i], group_effects[i]):
            bits = _bits(len(g), device)
            fixed[i].index_add_(0, bits.sum(-1), _salient(effects, tau[i]))
            found += _top(effects, bits, g, ratio, top_concepts, float(tau[i]))
        concepts[i] = sorted(found, key=lambda item: -abs(item[1]))[:top_concepts]

    strength, replicates = fixed, empty
    tail = torch.zeros(b, n + 1, dtype=f64, device=device)
    if block is not None and known is not None:
        # S of order m lies in a uniform u-set with probability C(u, m) / C(n, m), whose inverse
        # weights what the block sees (Horvitz-Thompson): unbiased for every coalition of order
        # at most u that no earlier stage knows.
        inverse = torch.tensor(
            [math.comb(n, m) / math.comb(u, m) if m > k else 0.0 for m in range(u + 1)], dtype=f64, device=device
        )
        seen = _salient(block, tau[..., None]) * inverse[block_sizes] * ~known
        per_block = torch.zeros(b, blocks, n + 1, dtype=f64, device=device).index_add_(2, block_sizes, seen)
        picks = torch.randint(0, blocks, (resamples, b, blocks), generator=generator).to(device)
        drawn = per_block[torch.arange(b, device=device)[None, :, None], picks]  # [R, B, J, n + 1]
        tail_reps = torch.zeros(resamples, b, n + 1, dtype=f64, device=device)
        if fit is not None:
            for i in range(b):
                left_out = [sum(math.comb(len(g), m) for g in groups[i]) for m in range(n + 1)]
                tail[i] = tail_strength(fit, i, None, tau[i, 0], n, u, left_out)
                tail_reps[:, i] = tail_strength(fit, i, picks[:, i], tau[i, 0], n, u, left_out)
        strength = fixed + per_block.mean(1) + tail
        replicates = fixed[None] + drawn.mean(2) + tail_reps

    unseen = torch.zeros(b, dtype=f64, device=device)
    seen_order = max([u, k] + [len(g) for sample in groups for g in sample])
    if left is not None and pilot is not None and seen_order < n:
        # What stages 1 and 3 leave on the pilot masks holds every effect no block can see
        # (order above u, outside the groups). An effect of order m moves the residual with
        # variance about I**2 * p**m * (1 - p**m); the smallest such factor over the unseen
        # orders scales the energy back to sum I**2, and a salient effect has |I| > tau, so
        # their salient strength is about at most sum I**2 / tau. (A scale, not a bound:
        # effects that share players correlate.)
        energy = (left - left.mean(1, keepdim=True)).pow(2).mean(1)
        factor = min(plan.keep**m * (1.0 - plan.keep**m) for m in range(max(u, k) + 1, n + 1))
        unseen = energy / factor / tau[:, 0].clamp(min=torch.finfo(f64).tiny)
    found_size = max([0] + [len(g) for sample in groups for g in sample])
    return SpectrumEstimate(strength, replicates, unseen, concepts, forwards, found_size, u, blocks, tail)


def _contrast(x: Tensor, r: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Each player's influence on ``r`` over the masks ``rows``: (difference of means, its variance).

    Args:
        x: [M, n] float 0/1 masks; r: [M] residual; rows: [M] bool masks taken.
    """
    w = rows.to(r.dtype)[:, None]
    kept, dropped = x * w, (1.0 - x) * w
    n1, n0 = kept.sum(0), dropped.sum(0)
    m1 = (kept * r[:, None]).sum(0) / n1.clamp(min=1)
    m0 = (dropped * r[:, None]).sum(0) / n0.clamp(min=1)
    v1 = ((kept * r[:, None] ** 2).sum(0) / n1.clamp(min=1) - m1**2).clamp(min=0)
    v0 = ((dropped * r[:, None] ** 2).sum(0) / n0.clamp(min=1) - m0**2).clamp(min=0)
    var = _standard_error(n1, v1, n0, v0)
    var = torch.where((n1 > 0) & (n0 > 0), var, torch.full_like(var, math.inf))
    return m1 - m0, var


def grow_support(pilot: Tensor, residual: Tensor, z: Tensor) -> list[int]:
    """The support of one high-order AND concept in a residual, grown greedily from its most
    influential player (a matching pursuit over supports).

    A player ``j`` joins the support S when its influence on the residual with all of S kept
    exceeds its influence with some of S dropped (z-score above :data:`MIN_Z`): a player of the
    same AND matters only where the rest of it is present, a player of another concept matters
    as much either way.

    Args:
        pilot: [M, n] bool masks of one sample.
        residual: [M] float64 what is left above order k.
        z: [n] influence z-scores (:func:`player_influence`).
    Returns:
        Sorted player ids; ``[]`` when no player's influence reaches :data:`MIN_Z`.
    """
    if not bool((z > MIN_Z).any()):
        return []
    x = pilot.to(torch.float64)
    r = residual.to(torch.float64)
    floor = (1e-9 * r.abs().max()).clamp(min=1e-300) ** 2
    support = [int(z.argmax())]
    while len(support) < MAX_LATTICE:
        whole = pilot[:, support].all(1)
        d_in, var_in = _contrast(x, r, whole)
        d_out, var_out = _contrast(x, r, ~whole)
        score = (d_in - d_out).abs() / (var_in + var_out).clamp(min=floor).sqrt()
        score[support] = 0.0
        j = int(score.argmax())
        if not score[j] > MIN_Z:
            break
        support.append(j)
    return sorted(support)


def max_lattice(forwards: float, n: int, k: int) -> int:
    """Largest set of at most ``n`` players (and :data:`MAX_LATTICE`) whose subsets above order k
    cost at most ``forwards``."""
    c = 0
    while c + 1 <= min(n, MAX_LATTICE) and lattice_cost(c + 1, k) <= forwards:
        c += 1
    return c


def _top(
    effects: Tensor, bits: Tensor, players: list[int], ratio: float, count: int, tau: float
) -> list[tuple[tuple[int, ...], float]]:
    """The ``count`` strongest salient effects of one sample's lattice as (player ids, effect)."""
    if tau == 0.0:
        nonempty = effects * (bits.sum(-1) > 0)
        tau = ratio * float(nonempty.abs().max())
        effects = nonempty
    order = torch.argsort(effects.abs(), descending=True)[:count]
    return [
        (tuple(p for p, kept in zip(players, bits[t].tolist()) if kept), float(effects[t]))
        for t in order.tolist()
        if abs(float(effects[t])) > tau
    ]


def _inside_part(coalitions: Tensor, universe: Tensor, effects: Tensor) -> Tensor:
    """``sum_{S subset T and S subset U} I(S)`` for masks T and one set U per sample.

    Args:
        coalitions: [B, M, n] bool.
        universe: [B, u] player ids.
        effects: [B, 2**u] effects of the subsets of U (local bitmasks).
    Returns:
        [B, M] float64.
    """
    u = universe.shape[1]
    kept = torch.gather(coalitions, 2, universe[:, None, :].expand(-1, coalitions.shape[1], -1))
    local = (kept.long() << torch.arange(u, device=coalitions.device)).sum(-1)  # T within U, as a bitmask
    # The sum over the subsets of each local bitmask is the inverse (zeta) transform.
    return torch.gather(and_inverse(effects), 1, local)


@dataclass
class OrderSpectrum:
    """The sampled order spectrum of ``B`` probe samples (see :func:`order_spectrum`).

    Attributes:
        simple_share: [B] float64 share of each sample's salient Harsanyi strength in the simple band.
        complex_share: [B] float64 share in the complex band.
        medium_share: [B] float64 share in the medium band.
        simple_interval, complex_interval: :class:`~concept_tracker.metrics.bootstrap.Interval`
            of [B] bounds: the 95 % bootstrap interval over the random blocks, widened by the
            strength of the unseen orders (``unseen``).
        overall: ``{"simple_share" | "medium_share" | "complex_share": (value, low, high)}``:
            the share of the strength averaged over the probes (as the exact readings'
            ``concepts/summary`` aggregate samples), its interval resampling probes and blocks.
        strength: [B, n + 1] float64 estimated salient strength ``A(m)`` per order.
        unseen: [B] float64 scale of the salient strength of orders no stage saw.
        forwards: masked forwards run, all samples together.
        forwards_per_probe: the budget per sample.
        n: number of players.
        exact_order: every coalition of at most this many players was evaluated.
        seen_order: the highest order a random block could see (``n`` on the exact path).
        exact: True when every coalition was evaluated (then the shares equal the exact readings).
        concepts: per sample, the exactly known salient concepts above ``exact_order``
            (candidates found from the residual), strongest first, as (player ids, effect).
        simple_max, complex_min: the band cut-offs used.
        ratio: salience threshold ratio.
        targets: [B] target per sample the values read (the model's predictions when none
            was given), or None for a value function without one.
        tail: [B, n + 1] float64 the part of ``strength`` extrapolated to orders above
            ``seen_order`` (a model, not a sample: see :func:`tail_strength`); zero where the
            blocks reach order n or see no energy at the top of their reach.
    """

    simple_share: Tensor
    complex_share: Tensor
    medium_share: Tensor
    simple_interval: Interval
    complex_interval: Interval
    overall: dict[str, tuple[float, float, float]]
    strength: Tensor
    unseen: Tensor
    forwards: int
    forwards_per_probe: int
    n: int
    exact_order: int
    seen_order: int
    exact: bool
    concepts: list[list[tuple[tuple[int, ...], float]]]
    simple_max: int
    complex_min: int
    ratio: float
    targets: Tensor | None
    tail: Tensor


def spectrum_scalars(spectrum: OrderSpectrum) -> dict[str, float]:
    """The TensorBoard scalars of a sampled order spectrum (:func:`overall_scalars`)."""
    return overall_scalars(spectrum.overall, spectrum.forwards)


def overall_scalars(overall: Mapping[str, Sequence[float]], forwards: int) -> dict[str, float]:
    """``spectrum/{band}_share`` averaged over the probes with their ``_ci_low`` / ``_ci_high``,
    and ``spectrum/forwards``, from :attr:`OrderSpectrum.overall` (or the ``overall`` a stored
    spectrum file records) and the forwards run.

    Returns:
        ``{tag: value}`` (tags from :mod:`concept_tracker.writers.tags`).
    """
    from .writers import tags

    out: dict[str, float] = {}
    for tag, band in zip(tags.SPECTRUM_SHARES, tags.BANDS):
        value, low, high = overall[f"{band}_share"]
        out.update({tag: float(value), tags.ci_low(tag): float(low), tags.ci_high(tag): float(high)})
    out[tags.SPECTRUM_FORWARDS] = float(forwards)
    return out


def band_shares(strength: Tensor, simple_max: int, complex_min: int) -> Tensor:
    """Shares of salient strength per band.

    Args:
        strength: [..., n + 1] salient strength per order (index 0 ignored).
    Returns:
        [..., 3] float64 simple, medium and complex shares (0 without any strength).
    """
    total = strength[..., 1:].sum(-1)
    parts = torch.stack(
        [
            strength[..., 1 : simple_max + 1].sum(-1),
            strength[..., simple_max + 1 : complex_min].sum(-1),
            strength[..., complex_min:].sum(-1),
        ],
        -1,
    )
    safe = torch.where(total > 0, total, torch.ones_like(total))[..., None]
    return torch.where(total[..., None] > 0, parts / safe, torch.zeros_like(parts))


def spectrum_readings(
    estimate: SpectrumEstimate,
    simple_max: int,
    complex_min: int,
    *,
    level: float = 0.95,
    resamples: int = 1000,
    generator: torch.Generator,
) -> tuple[Tensor, Interval, Interval, dict[str, tuple[float, float, float]]]:
    """Band shares per sample and over probes, with intervals.

    The unseen strength goes to the complex band for the complex share's upper bound and to
    the high orders (complex band) for the simple share's lower bound.

    Returns:
        ([B, 3] shares, simple Interval of [B], complex Interval of [B], overall readings).
    """
    shares = band_shares(estimate.strength, simple_max, complex_min)
    reps = estimate.replicates if estimate.replicates.shape[0] else estimate.strength[None]
    widened = reps.clone()
    widened[..., -1] += estimate.unseen
    tail = (1.0 - level) / 2.0
    q = torch.tensor([tail, 1.0 - tail], dtype=torch.float64, device=reps.device)
    plain_shares, wide_shares = (
        band_shares(reps, simple_max, complex_min),
        band_shares(widened, simple_max, complex_min),
    )

    def interval(low_from: Tensor, high_from: Tensor, point: Tensor) -> Interval:
        low = torch.quantile(low_from, q[0], dim=0)
        high = torch.quantile(high_from, q[1], dim=0)
        return Interval(torch.minimum(low, point), torch.maximum(high, point))

    simple = interval(wide_shares[..., 0], plain_shares[..., 0], shares[:, 0])
    complex_ = interval(plain_shares[..., 2], wide_shares[..., 2], shares[:, 2])

    # Over probes: resample the probes and, for each, one bootstrap replicate of its blocks.
    b = shares.shape[0]
    picks = torch.randint(0, b, (resamples, b), generator=generator).to(reps.device)
    which = torch.randint(0, reps.shape[0], (resamples, 1), generator=generator).to(reps.device)
    mean_plain = reps[which, picks].mean(1)
    mean_wide = widened[which, picks].mean(1)
    point = band_shares(estimate.strength.mean(0), simple_max, complex_min)
    plain_o, wide_o = band_shares(mean_plain, simple_max, complex_min), band_shares(mean_wide, simple_max, complex_min)
    overall = {}
    for i, name in enumerate(("simple_share", "medium_share", "complex_share")):
        low_src = wide_o[:, i] if name == "simple_share" else plain_o[:, i]
        high_src = wide_o[:, i] if name == "complex_share" else plain_o[:, i]
        if b < 2 and not estimate.replicates.shape[0]:
            lo = hi = float(point[i])
        else:
            lo = min(float(torch.quantile(low_src, q[0])), float(point[i]))
            hi = max(float(torch.quantile(high_src, q[1])), float(point[i]))
        overall[name] = (float(point[i]), lo, hi)
    return shares, simple, complex_, overall


def order_spectrum(
    model: nn.Module,
    inputs: Inputs,
    players: Players,
    target: int | Tensor | None = None,
    *,
    value: str | ValueFn = "log_odds",
    forwards_per_probe: int = 1000,
    simple_max: int | None = None,
    complex_min: int | None = None,
    seed: int = 0,
    ratio: float = 0.05,
    batch_size: int | None = None,
) -> OrderSpectrum:
    """Band shares of salient Harsanyi strength per sample, from a set number of forwards.

    Estimates what :func:`~concept_tracker.metrics.order_profile` and
    :func:`~concept_tracker.metrics.band_summary` read from all ``2**n`` coalitions, from
    ``forwards_per_probe`` masked forwards per sample at any ``n`` (see the module docstring for
    the stages). With ``forwards_per_probe >= 2**n`` every coalition is evaluated and the shares
    are the exact ones. The model, its training flags, grad mode and every RNG are left as they
    were; the estimator draws from its own generator seeded by ``seed``.

    Args:
        model: any ``nn.Module``, called as for :func:`~concept_tracker.compute_interactions`.
        inputs: Tensor [B, ...] or a dict of tensors [B, ...].
        players: a player kind; ``n`` may exceed 20 here (the exact path stops at 20).
        target: as for ``compute_interactions`` (None: the model's prediction).
        value: as for ``compute_interactions``.
        forwards_per_probe: masked forwards per sample, at least ``2 * (n + 1)``. Cost: ``B``
            times this many rows. Guides: n = 10, 256 (a quarter of the exact 1,024); n = 64,
            5,000 (orders <= 2 exactly, 2,081 forwards, the rest for the higher orders).
        simple_max, complex_min: band cut-offs (default ``n // 3`` and ``n // 2 + 1``).
        seed: seed of the pilot masks, the blocks and the bootstrap (same seed, same result).
        ratio: salience threshold as a fraction of each sample's largest effect.
        batch_size: rows per forward; None sizes it automatically.
    Returns:
        :class:`OrderSpectrum`.
    """
    from .checks import check_band_cutoffs, check_int, check_players
    from .engine import (
        _resolve_targets,
        batch_size_of,
        default_targets,
        model_device,
        preserved_state,
        sampled_coalition_values,
        split_samples,
        to_device,
        to_model_dtype,
    )
    from .language_models import answer_labels
    from .metrics.profile import band_orders, check_ratio
    from .values import needs_target, resolve_value

    value_fn = resolve_value(value)
    check_players(players)
    check_int("batch_size", batch_size, optional=True, unit="rows per forward")
    check_band_cutoffs(simple_max, complex_min)
    ratio = check_ratio(ratio)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer.")
    num = batch_size_of(inputs)
    device = model_device(model)
    batch = to_model_dtype(to_device(inputs, device), model)
    players.prepare(batch)
    n = players.n
    fewest = minimum_forwards(n)
    if isinstance(forwards_per_probe, bool) or not isinstance(forwards_per_probe, int) or forwards_per_probe < fewest:
        raise ValueError(
            f"forwards_per_probe={forwards_per_probe!r} must be an int >= {fewest} for n={n} players "
            f"(the empty set and every single player, twice); for example {max(fewest, 256)}."
        )
    bands = band_orders(n, simple_max, complex_min)
    simple_max = len(bands.simple)
    complex_min = n + 1 - len(bands.complex)
    targets = _resolve_targets(target, num, device)
    batch, targets = answer_labels(batch, targets, value)
    samples = split_samples(batch)
    plan = plan_spectrum(n, forwards_per_probe, complex_min)
    generator = torch.Generator().manual_seed(seed)
    counted = [0]

    with preserved_state(model):
        if targets is None and needs_target(value):
            targets = default_targets(model, samples, players, batch_size)

        def value_of(coalitions: Any) -> Any:
            if isinstance(coalitions, Tensor):
                counted[0] += coalitions.shape[0] * coalitions.shape[1]
                return sampled_coalition_values(model, samples, players, targets, value_fn, coalitions, batch_size)
            counted[0] += sum(c.shape[0] for c in coalitions)
            return [
                sampled_coalition_values(
                    model, [s], players, None if targets is None else targets[i : i + 1], value_fn, c[None], batch_size
                )[0]
                for i, (s, c) in enumerate(zip(samples, coalitions))
            ]

        estimate = estimate_spectrum(
            value_of, num, plan, forwards_per_probe, ratio=ratio, generator=generator, device=device
        )
        shares, simple, complex_, overall = spectrum_readings(estimate, simple_max, complex_min, generator=generator)
    seen = n if plan.exact else max(plan.k, estimate.block_size, estimate.candidates)
    return OrderSpectrum(
        simple_share=shares[:, 0],
        complex_share=shares[:, 2],
        medium_share=shares[:, 1],
        simple_interval=simple,
        complex_interval=complex_,
        overall=overall,
        strength=estimate.strength,
        unseen=estimate.unseen,
        forwards=counted[0],
        forwards_per_probe=forwards_per_probe,
        n=n,
        exact_order=plan.k,
        seen_order=seen,
        exact=plan.exact,
        concepts=estimate.concepts,
        simple_max=simple_max,
        complex_min=complex_min,
        ratio=ratio,
        targets=targets,
        tail=estimate.tail,
    )
