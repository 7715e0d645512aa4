"""Jaccard similarity of interaction sets: hand-computed cases (SPEC §6)."""

import pytest
import torch

from concept_tracker.interactions import Interactions
from concept_tracker.metrics import (
    reference_similarity,
    similarity,
    similarity_by_order,
    stability,
    train_test_similarity,
)
from concept_tracker.metrics.similarity import calibrated_train_test_similarity
from concept_tracker.transforms import and_inverse


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def and_result(effects: torch.Tensor, aligned: bool = True, targets=None) -> Interactions:
    n = effects.shape[-1].bit_length() - 1
    return Interactions(
        outputs=and_inverse(effects),
        and_effects=effects,
        or_effects=None,
        n=n,
        kind="and",
        targets=targets,
        aligned=aligned,
    )


def test_similarity_hand_cases():
    a, b = f64([1, -2, 0]), f64([2, -1, 1])
    # min: 1 (positive) + 1 (negative) = 2; max: 2 + 1 (positive) + 2 (negative) = 5.
    assert similarity(a, b).item() == pytest.approx(0.4)
    assert similarity(b, a).item() == pytest.approx(0.4)
    assert similarity(a, a).item() == 1.0
    assert similarity(a, -a).item() == 0.0
    assert similarity(torch.zeros(3), torch.zeros(3)).item() == 1.0
    assert similarity(a, torch.zeros(3)).item() == 0.0


def test_similarity_broadcasts_leading_dims():
    a = torch.stack([f64([1, -2, 0]), f64([1, 1, 1])])
    out = similarity(a, f64([2, -1, 1]))
    assert out.shape == (2,)
    # Row 1: min 1 + 1 = 2; max 2 + 1 + 1 (positive) + 1 (negative) = 5.
    torch.testing.assert_close(out, f64([0.4, 2 / 5]))
    with pytest.raises(ValueError, match="last dimension"):
        similarity(torch.zeros(3), torch.zeros(4))


def test_similarity_by_order_separates_orders():
    # n = 2, order 0 = {empty}, order 1 = {0}, {1}, order 2 = {0, 1}.
    a = f64([5, 1, -2, 3])
    b = f64([0, 1, -2, -3])
    out = similarity_by_order(a, b)
    torch.testing.assert_close(out, f64([0, 1, 0]))
    # Orders do not leak: changing order 1 moves only entry 1.
    c = f64([5, 2, -1, 3])
    torch.testing.assert_close(similarity_by_order(a, c), f64([1, 0.5, 1]))
    batched = similarity_by_order(torch.stack([a, a]), torch.stack([b, a]))
    torch.testing.assert_close(batched, f64([[0, 1, 0], [1, 1, 1]]))


def test_train_test_similarity_hand_computed():
    # Class 0: train mean [0, 2, 0, 1] vs test [0, 1, 1, -1] -> order 1: 1/3, order 2: 0.
    # Class 1: identical -> 1 everywhere. Class 2 appears only in training and is left out.
    train = and_result(f64([[0, 1, 0, 2], [0, 3, 0, 0], [0, 1, 1, 1], [0, 9, 9, 9]]))
    test = and_result(f64([[0, 1, 1, -1], [0, 1, 1, 1], [0, 1, 1, 1]]))
    train_y, test_y = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1])
    out = train_test_similarity(train, train_y, test, test_y)
    # Weights n_train + n_test: class 0 -> 2 + 1 = 3, class 1 -> 1 + 2 = 3.
    torch.testing.assert_close(out, f64([1, (1 / 3 + 1) / 2, 0.5]))
    swapped = train_test_similarity(test, test_y, train, train_y)
    torch.testing.assert_close(swapped, out)


def test_train_test_similarity_uses_interaction_targets_when_labels_missing():
    train = and_result(f64([[0, 1, 0, 2], [0, 3, 0, 0]]), targets=torch.tensor([0, 0]))
    test = and_result(f64([[0, 1, 1, -1]]), targets=torch.tensor([0]))
    torch.testing.assert_close(train_test_similarity(train, None, test, None), f64([1, 1 / 3, 0]))


def test_train_test_similarity_needs_aligned_players():
    ok = and_result(f64([[0, 1, 0, 2]]))
    tokens = and_result(f64([[0, 1, 0, 2]]), aligned=False)
    with pytest.raises(ValueError, match="aligned"):
        train_test_similarity(ok, None, tokens, None)
    with pytest.raises(ValueError, match="train_res"):
        train_test_similarity(tokens, None, ok, None)


def test_train_test_similarity_errors():
    a = and_result(f64([[0, 1, 0, 2]]))
    with pytest.raises(ValueError, match="share no class"):
        train_test_similarity(a, torch.tensor([0]), a, torch.tensor([1]))
    with pytest.raises(ValueError, match="train_targets"):
        train_test_similarity(a, torch.tensor([0, 1]), a, torch.tensor([0]))
    with pytest.raises(ValueError, match="differ"):
        train_test_similarity(a, None, and_result(torch.zeros(1, 8, dtype=torch.float64)), None)


def test_reference_similarity_averages_per_sample():
    base = f64([[0, 1, -2, 3], [0, 2, 1, -1]])
    other = torch.stack([base[0], -base[1]])
    # Sample 0 identical (1), sample 1 negated (0 on orders 1, 2; order 0 is 0 vs 0 -> 1).
    out = reference_similarity(and_result(base), and_result(other))
    torch.testing.assert_close(out, f64([1, 0.5, 0.5]))
    torch.testing.assert_close(stability(base, other), out)
    with pytest.raises(ValueError, match="res_b"):
        reference_similarity(and_result(base), and_result(base[:1]))


def test_and_or_results_concatenate_kinds_per_order():
    and_a, or_a = f64([[0, 1, 1, 2]]), f64([[0, 0, 1, -1]])
    and_b, or_b = f64([[0, 1, 0, 2]]), f64([[0, 1, 1, 1]])
    res_a = Interactions(outputs=and_inverse(and_a), and_effects=and_a, or_effects=or_a, n=2, kind="and_or")
    res_b = Interactions(outputs=and_inverse(and_b), and_effects=and_b, or_effects=or_b, n=2, kind="and_or")
    # Order 1 over [AND {0}, AND {1}, OR {0}, OR {1}]: a = [1, 1, 0, 1], b = [1, 0, 1, 1] -> 2/4.
    # Order 2 over [AND, OR]: a = [2, -1], b = [2, 1] -> 2 / (2 + 1 + 1) = 0.5.
    expected = f64([1, 0.5, 0.5])
    torch.testing.assert_close(reference_similarity(res_a, res_b), expected)
    torch.testing.assert_close(train_test_similarity(res_a, None, res_b, None), expected)


def test_calibrated_similarity_two_training_probes_is_the_hand_ratio():
    # One class, training probes a and b (halves of one), held-out t: every split gives
    # numerator (J(a, t) + J(b, t)) / 2 and denominator J(a, b), per order. Order 1 (coalitions
    # {0}, {1}): J(a, b) = (1 + 1) / (2 + 2) = 1/2, J(a, t) = 1/3, J(b, t) = 1/3: ratio 2/3.
    # Order 2: neither training probe has an effect (J(a, b) = 1, both empty) but t has: ratio 0.
    a, b, t = f64([0, 1, 2, 0]), f64([0, 2, 1, 0]), f64([0, 1, 0, 3])
    train = and_result(torch.stack([a, b]), targets=torch.tensor([0, 0]))
    test = and_result(t[None], targets=torch.tensor([0]))
    out = calibrated_train_test_similarity(train, None, test, None, splits=5)
    assert out[1].item() == pytest.approx(2 / 3)
    assert out[2].item() == pytest.approx(0.0)


def test_calibrated_similarity_is_one_when_held_out_comes_from_the_training_distribution():
    # Effects of two classes drawn from one distribution per class for both sets: the held-out
    # means differ from a training half's exactly as much as the two halves differ, in
    # expectation, so the ratio is about 1 at every order; the uncalibrated similarity is not.
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(2, 1, 32, generator=gen, dtype=torch.float64)
    labels = torch.arange(2).repeat_interleave(40)

    def draw() -> torch.Tensor:
        return (centre + 1.5 * torch.randn(2, 40, 32, generator=gen, dtype=torch.float64)).reshape(80, 32)

    ratios, plain = [], []
    for _ in range(30):  # the expectation over data sets, not one draw
        train, test = and_result(draw(), targets=labels), and_result(draw(), targets=labels)
        ratios.append(calibrated_train_test_similarity(train, None, test, None, splits=10))
        plain.append(train_test_similarity(train, None, test, None))
    # orders 1-4 (5 to 10 coalitions each; order 5 is a single coalition, too noisy to pin)
    assert torch.allclose(torch.stack(ratios).mean(0)[1:5], torch.ones(4, dtype=torch.float64), atol=0.03)
    assert (torch.stack(plain).mean(0)[1:5] < 0.97).all()


def test_calibrated_similarity_falls_when_held_out_concepts_differ():
    # Held-out effects of the opposite sign at every coalition: far below the halves' agreement.
    gen = torch.Generator().manual_seed(1)
    effects = 1.0 + 0.3 * torch.randn(40, 8, generator=gen, dtype=torch.float64)
    labels = torch.zeros(40, dtype=torch.long)
    out = calibrated_train_test_similarity(
        and_result(effects, targets=labels), None, and_result(-effects, targets=labels), None
    )
    assert (out[1:] < 0.05).all()


def test_calibrated_similarity_is_seeded_and_checks_its_input():
    effects = torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1] * 6)
    res = and_result(effects, targets=labels)
    first = calibrated_train_test_similarity(res, None, res, None, seed=3)
    assert torch.equal(first, calibrated_train_test_similarity(res, None, res, None, seed=3))
    with pytest.raises(ValueError, match="splits"):
        calibrated_train_test_similarity(res, None, res, None, splits=0)
    with pytest.raises(ValueError, match="aligned"):
        calibrated_train_test_similarity(and_result(effects, aligned=False, targets=labels), None, res, None)
    with pytest.raises(ValueError, match="two training"):
        calibrated_train_test_similarity(res[:1], None, res, None)
