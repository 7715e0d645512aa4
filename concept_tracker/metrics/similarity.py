"""Similarity of interaction sets: generalization, reference agreement, stability.

The similarity of two effect vectors ``a`` and ``b`` over a set of coalitions is the Jaccard
index of their positive and negative parts:

    J(a, b) = sum [min(a+, b+) + min(a-, b-)] / sum [max(a+, b+) + max(a-, b-)]

with ``a+ = max(a, 0)`` and ``a- = max(-a, 0)``. ``J = 1`` for identical vectors and ``0`` for
vectors with no overlap (for example ``b = -a``). Two all-zero vectors give ``0 / 0``, which we
define as 1.0: they are identical.

Results holding both AND and OR effects ("and_or") are compared as the concatenation of their
AND and OR vectors: the sums above run over the coalitions of both kinds, so the per-order
similarity pools ``I_and(S)`` and ``I_or(S)`` for every ``|S| = m``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..interactions import Interactions
from ..transforms import num_players
from .profile import stack_effects, sum_by_order

ALIGNED_HINT = (
    "train–test similarity needs aligned players (tabular features, fixed image patches, "
    "feature masks); TokenPlayers chosen per sample are not aligned"
)


def _overlap_terms(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coalition numerator and denominator terms of the Jaccard index, float64."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    a_pos, a_neg = a.clamp(min=0), (-a).clamp(min=0)
    b_pos, b_neg = b.clamp(min=0), (-b).clamp(min=0)
    return (
        torch.minimum(a_pos, b_pos) + torch.minimum(a_neg, b_neg),
        torch.maximum(a_pos, b_pos) + torch.maximum(a_neg, b_neg),
    )


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with ``0 / 0 = 1`` (both sides empty: identical)."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.ones_like(den))


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"a has last dimension {a.shape[-1]} but b has {b.shape[-1]}; compare effects over the same coalitions."
        )


def similarity(a: Tensor, b: Tensor) -> Tensor:
    """Jaccard similarity of positive and negative parts over the last dimension.

    Args:
        a, b: [..., K] effects; leading dimensions broadcast.
    Returns:
        [...] float64 in [0, 1]; 1.0 where both are all zero.

    Example:
        >>> similarity(torch.tensor([1.0, -2.0, 0.0]), torch.tensor([2.0, -1.0, 1.0]))
        tensor(0.4000, dtype=torch.float64)
    """
    _check_pair(a, b)
    num, den = _overlap_terms(a, b)
    return _safe_ratio(num.sum(-1), den.sum(-1))


def similarity_by_order(a: Tensor, b: Tensor) -> Tensor:
    """Jaccard similarity over the coalitions of each order separately.

    Args:
        a, b: [..., 2**n] effects indexed by coalition bitmask; leading dimensions broadcast.
    Returns:
        [..., n + 1] float64; entry ``m`` compares the coalitions with ``|S| = m`` (entry 0 is the
        empty set alone).
    """
    _check_pair(a, b)
    n = num_players(a, "a")
    num, den = _overlap_terms(a, b)
    return _safe_ratio(sum_by_order(num, n), sum_by_order(den, n))


def _pooled_by_order(a: Tensor, b: Tensor) -> Tensor:
    """[..., K, 2**n] pairs -> [..., n + 1] similarity with the ``K`` kinds concatenated."""
    n = num_players(a, "a")
    num, den = _overlap_terms(a, b)
    return _safe_ratio(sum_by_order(num, n).sum(-2), sum_by_order(den, n).sum(-2))


def _as_stack(x: Tensor | Interactions, name: str) -> Tensor:
    """Interactions -> [B, K, 2**n]; a Tensor [..., 2**n] -> [..., 1, 2**n]."""
    if isinstance(x, Interactions):
        return stack_effects(x)
    if isinstance(x, Tensor):
        num_players(x, name)
        return x.unsqueeze(-2)
    raise ValueError(f"{name} is a {type(x).__name__}; pass Interactions or a Tensor [B, 2**n].")


def _per_sample_mean(a: Tensor | Interactions, b: Tensor | Interactions, names: tuple[str, str]) -> Tensor:
    sa, sb = _as_stack(a, names[0]), _as_stack(b, names[1])
    if sa.shape != sb.shape:
        raise ValueError(
            f"{names[0]} has effects of shape {tuple(sa.shape)} but {names[1]} has "
            f"{tuple(sb.shape)}; pass the same samples, players and kind."
        )
    per_sample = _pooled_by_order(sa, sb)
    return per_sample.reshape(-1, per_sample.shape[-1]).mean(0)


def reference_similarity(res_a: Tensor | Interactions, res_b: Tensor | Interactions) -> Tensor:
    """Per-order similarity of the same samples under two models, averaged over samples.

    Args:
        res_a: interactions of the tracked model (or effects [B, 2**n]).
        res_b: interactions of the reference model on the same samples and players.
    Returns:
        [n + 1] float64 mean over samples of the per-sample, per-order Jaccard similarity.
    """
    return _per_sample_mean(res_a, res_b, ("res_a", "res_b"))


def stability(prev_effects: Tensor | Interactions, effects: Tensor | Interactions) -> Tensor:
    """Per-order similarity between two tracked steps on the same samples.

    Args:
        prev_effects: effects at the earlier step, [B, 2**n] (or Interactions).
        effects: effects at the later step, same shape.
    Returns:
        [n + 1] float64 mean over samples of the per-sample, per-order Jaccard similarity.
    """
    return _per_sample_mean(prev_effects, effects, ("prev_effects", "effects"))


def _class_labels(res: Interactions, targets: Tensor | None, name: str) -> Tensor:
    """[B] int64 class per sample: ``targets``, else the interaction targets, else one class."""
    if targets is None:
        targets = res.targets
    if targets is None:
        return torch.zeros(res.num_samples, dtype=torch.int64)
    targets = torch.as_tensor(targets).to("cpu")
    if targets.shape != (res.num_samples,):
        raise ValueError(
            f"{name} has shape {tuple(targets.shape)} but the interactions hold {res.num_samples} "
            f"samples; pass one class label per sample, shape [{res.num_samples}]."
        )
    return targets.long()


def check_train_test_pair(train_res: Interactions, test_res: Interactions) -> None:
    """Raise ``ValueError`` unless both are Interactions of aligned players with the same ``n``
    and kind (the train and held-out sets of one cross-sample comparison)."""
    for name, res in (("train_res", train_res), ("test_res", test_res)):
        if not isinstance(res, Interactions):
            raise ValueError(f"{name} is a {type(res).__name__}; pass the Interactions of the probe samples.")
        if not res.aligned:
            raise ValueError(f"{name}.aligned is False: {ALIGNED_HINT}.")
    if train_res.n != test_res.n or train_res.effect_kinds != test_res.effect_kinds:
        raise ValueError(
            f"train_res (n={train_res.n}, kind={train_res.kind!r}) and test_res (n={test_res.n}, "
            f"kind={test_res.kind!r}) differ; compute both with the same players and kind."
        )


def train_test_similarity(
    train_res: Interactions,
    train_targets: Tensor | None,
    test_res: Interactions,
    test_targets: Tensor | None,
) -> Tensor:
    """Per-order similarity of the concepts on training and held-out samples.

    For every class ``c`` present in both sets: the mean effect vector over the training samples
    of class ``c`` is compared with the mean over the held-out samples of class ``c``, order by
    order (:func:`similarity_by_order`). The per-class results are averaged with weights
    ``n_train(c) + n_test(c)``, the number of samples of that class in both sets together (so
    the result does not depend on which set is called train). Classes present in only one set
    are left out.

    Args:
        train_res: interactions of the training probe samples (aligned players).
        train_targets: [B_train] class labels; None uses ``train_res.targets`` (the targets the
            interactions were computed for), or one class when those are None too.
        test_res: interactions of the held-out probe samples, same players and kind.
        test_targets: [B_test] class labels, as ``train_targets``.
    Returns:
        [n + 1] float64; entry ``m`` compares orders ``|S| = m`` (entry 0: the empty set).
    Raises:
        ValueError: if either result has unaligned players, the results differ in ``n`` or
            kind, the labels have the wrong shape, or no class appears in both sets.
    """
    check_train_test_pair(train_res, test_res)
    train_labels = _class_labels(train_res, train_targets, "train_targets")
    test_labels = _class_labels(test_res, test_targets, "test_targets")
    train_effects, test_effects = stack_effects(train_res).cpu(), stack_effects(test_res).cpu()

    total = torch.zeros(train_res.n + 1, dtype=torch.float64)
    weight = 0
    shared = sorted(set(train_labels.tolist()) & set(test_labels.tolist()))
    for c in shared:
        in_train, in_test = train_labels == c, test_labels == c
        mean_train = train_effects[in_train].to(torch.float64).mean(0)
        mean_test = test_effects[in_test].to(torch.float64).mean(0)
        count = int(in_train.sum()) + int(in_test.sum())
        total += count * _pooled_by_order(mean_train, mean_test)
        weight += count
    if weight == 0:
        raise ValueError(
            f"train_targets (classes {sorted(set(train_labels.tolist()))}) and test_targets "
            f"(classes {sorted(set(test_labels.tolist()))}) share no class; probe held-out "
            "samples of the classes seen in training."
        )
    return total / weight


def calibrated_train_test_similarity(
    train_res: Interactions,
    train_targets: Tensor | None,
    test_res: Interactions,
    test_targets: Tensor | None,
    *,
    splits: int = 20,
    seed: int = 0,
) -> Tensor:
    """Train–held-out similarity divided by the similarity of two halves of the training probes.

    The class means of a few probes differ by sampling noise alone, and how much depends on the
    model (how spread its effects are across samples). The noise floor is measured on the
    training probes themselves: for every class ``c`` present in both sets, with
    ``h = min(n_train(c) // 2, n_test(c))``, each split draws two disjoint halves ``A`` and ``B``
    of ``h`` training probes and ``h`` held-out probes ``T``; per order,

        numerator   = (J(mean A, mean T) + J(mean B, mean T)) / 2
        denominator = J(mean A, mean B)

    (:func:`similarity_by_order` of the class means). Both terms compare means over the same
    counts, so when the held-out probes come from the same distribution as the training probes
    their expectations agree and the ratio is about 1; below 1, the held-out concepts differ
    from the training ones by more than the training probes differ among themselves. Each term
    is averaged over classes (weights ``h``) and over the splits before the ratio is taken.

    Args:
        train_res: interactions of the training probe samples (aligned players), at least two
            samples in some class that the held-out probes share.
        train_targets: [B_train] class labels; None as in :func:`train_test_similarity`.
        test_res: interactions of the held-out probe samples, same players and kind.
        test_targets: [B_test] class labels.
        splits: random splits to average, >= 1.
        seed: seed of the splits (a private generator; the global RNG is untouched).
    Returns:
        [n + 1] float64 ratio per order (entry 0: the empty set); NaN where the halves share
        nothing at that order (denominator 0).
    Raises:
        ValueError: as :func:`train_test_similarity`, if ``splits`` < 1, or if no shared class
            has two training probes.
    """
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits={splits!r} must be a positive integer; the default is 20.")
    check_train_test_pair(train_res, test_res)
    train_labels = _class_labels(train_res, train_targets, "train_targets")
    test_labels = _class_labels(test_res, test_targets, "test_targets")
    train_effects = stack_effects(train_res).cpu().to(torch.float64)
    test_effects = stack_effects(test_res).cpu().to(torch.float64)

    gen = torch.Generator().manual_seed(seed)
    numerator = torch.zeros(train_res.n + 1, dtype=torch.float64)
    denominator = torch.zeros(train_res.n + 1, dtype=torch.float64)
    weight = 0
    for c in sorted(set(train_labels.tolist()) & set(test_labels.tolist())):
        in_train = torch.nonzero(train_labels == c).squeeze(1)
        in_test = torch.nonzero(test_labels == c).squeeze(1)
        half = min(len(in_train) // 2, len(in_test))
        if half == 0:
            continue
        # [splits, len] random orders; every split's halves and held-out draw at once
        train_order = torch.argsort(torch.rand(splits, len(in_train), generator=gen), dim=1)
        test_order = torch.argsort(torch.rand(splits, len(in_test), generator=gen), dim=1)
        mean_a = train_effects[in_train[train_order[:, :half]]].mean(1)
        mean_b = train_effects[in_train[train_order[:, half : 2 * half]]].mean(1)
        mean_t = test_effects[in_test[test_order[:, :half]]].mean(1)
        numerator += half * (_pooled_by_order(mean_a, mean_t) + _pooled_by_order(mean_b, mean_t)).sum(0) / 2
        denominator += half * _pooled_by_order(mean_a, mean_b).sum(0)
        weight += half
    if weight == 0:
        raise ValueError(
            f"train_targets (classes {sorted(set(train_labels.tolist()))}) and test_targets "
            f"(classes {sorted(set(test_labels.tolist()))}) share no class with two training "
            "probes; probe at least two training samples of each held-out class."
        )
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.full_like(denominator, float("nan")))
