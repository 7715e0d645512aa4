"""Order profiles, salience and bands on planted effects with known answers."""

import pytest
import torch

from concept_tracker.interactions import Interactions
from concept_tracker.metrics import band_orders, band_summary, order_profile, salient_mask
from concept_tracker.transforms import and_inverse, or_inverse


def planted(n: int, effects: dict[int, float], empty: float = 0.0) -> torch.Tensor:
    """[2**n] effects with the given coalition bitmasks set."""
    out = torch.zeros(1 << n, dtype=torch.float64)
    out[0] = empty
    for s, value in effects.items():
        out[s] = value
    return out


def and_result(effects: torch.Tensor) -> Interactions:
    n = effects.shape[-1].bit_length() - 1
    return Interactions(outputs=and_inverse(effects), and_effects=effects, or_effects=None, n=n, kind="and")


# Players {0,1}: 3, {2}: 2, {3}: 2, {2,3}: -2, {4,5}: -1 at n = 6 (bitmasks 3, 4, 8, 12, 48).
PLANTED = {0b11: 3.0, 0b100: 2.0, 0b1000: 2.0, 0b1100: -2.0, 0b110000: -1.0}


def test_planted_and_profile():
    # A large v(empty) must neither count as a concept nor set the threshold.
    res = and_result(planted(6, PLANTED, empty=100.0)[None])
    prof = order_profile(res)
    expected_count = torch.tensor([0, 2, 3, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(prof.count, expected_count)
    torch.testing.assert_close(prof.positive, torch.tensor([0, 4, 3, 0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(prof.negative, torch.tensor([0, 0, -3, 0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(prof.share, torch.tensor([0, 0.4, 0.6, 0, 0, 0, 0], dtype=torch.float64))
    assert prof.n == 6 and prof.kind == "and" and prof.num_samples == 1


def test_profile_averages_over_samples():
    one = planted(6, PLANTED)
    prof = order_profile(and_result(torch.stack([one, 2 * one])))
    assert prof.count[1] == 2 and prof.count[2] == 3
    assert prof.positive[1] == pytest.approx((4 + 8) / 2)
    assert prof.negative[2] == pytest.approx((-3 - 6) / 2)
    # Shares are a ratio of mean strengths; scaling a sample does not move them here.
    torch.testing.assert_close(prof.share[1:3], torch.tensor([0.4, 0.6], dtype=torch.float64))


def test_salient_mask_threshold_is_relative_to_largest_non_empty_effect():
    # max |I| = 3, tau = 0.15: 0.2 is salient, 0.1 and exactly 0.15 are not.
    effects = planted(3, {0b001: 3.0, 0b010: 0.2, 0b100: 0.1, 0b011: -0.15}, empty=50.0)
    mask = salient_mask(effects)
    assert mask.nonzero().flatten().tolist() == [1, 2]
    assert not salient_mask(torch.zeros(2, 8)).any()
    assert salient_mask(effects, ratio=0.0).nonzero().flatten().tolist() == [1, 2, 3, 4]


def test_salient_mask_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        salient_mask(torch.zeros(4), ratio=1.5)
    with pytest.raises(ValueError, match="ratio"):
        order_profile(and_result(torch.zeros(1, 4, dtype=torch.float64)), ratio=float("nan"))


def test_and_or_threshold_is_pooled_and_kinds_partition_the_profile():
    n = 3
    and_effects = planted(n, {0b001: 0.3, 0b011: 2.0})[None]
    or_effects = planted(n, {0b010: 10.0, 0b111: -1.0})[None]
    res = Interactions(
        outputs=and_inverse(and_effects), and_effects=and_effects, or_effects=or_effects, n=n, kind="and_or"
    )
    pooled = order_profile(res)
    only_and = order_profile(res, kind="and")
    only_or = order_profile(res, kind="or")
    # Pooled threshold 0.05 * 10 = 0.5 drops the AND effect 0.3 even in the AND-only profile.
    assert only_and.count.tolist() == [0, 0, 1, 0]
    assert only_or.count.tolist() == [0, 1, 0, 1]
    for field in ("count", "positive", "negative"):
        torch.testing.assert_close(getattr(only_and, field) + getattr(only_or, field), getattr(pooled, field))
    torch.testing.assert_close(pooled.share, torch.tensor([0, 10, 2, 1], dtype=torch.float64) / 13)
    assert pooled.kind == "and_or" and only_or.kind == "or"


def test_or_only_result_and_wrong_kind():
    n = 2
    or_effects = planted(n, {0b11: -4.0, 0b01: 1.0})[None]
    res = Interactions(
        outputs=or_inverse(or_effects), and_effects=None, or_effects=or_effects, n=n, kind="or"
    )
    assert order_profile(res).negative.tolist() == [0, 0, -4]
    with pytest.raises(ValueError, match="kind='and'"):
        order_profile(res, kind="and")


def test_band_orders_defaults_and_errors():
    bands = band_orders(10)
    assert bands.simple == (1, 2, 3) and bands.medium == (4, 5) and bands.complex == (6, 7, 8, 9, 10)
    assert bands.high == (4, 5, 6, 7, 8, 9, 10)
    custom = band_orders(6, simple_max=1, complex_min=5)
    assert custom.simple == (1,) and custom.medium == (2, 3, 4) and custom.complex == (5, 6)
    with pytest.raises(ValueError, match="complex_min"):
        band_orders(10, simple_max=4, complex_min=3)
    with pytest.raises(ValueError, match="simple_max"):
        band_orders(10, simple_max=11)


def test_band_summary_on_planted_profile():
    # n = 6: simple 1-2, medium 3, complex 4-6. Add a complex concept of order 5 with |I| = 1.
    effects = planted(6, {**PLANTED, 0b11111: 1.0})[None]
    summary = band_summary(order_profile(and_result(effects)))
    assert summary.simple_strength == pytest.approx(10.0)
    assert summary.medium_strength == 0.0
    assert summary.complex_strength == pytest.approx(1.0)
    assert summary.complex_ratio == pytest.approx(1 / 11)
    assert summary.num_concepts == pytest.approx(6.0)
    moved = band_summary(order_profile(and_result(effects)), simple_max=1, complex_min=2)
    assert moved.simple_strength == pytest.approx(4.0) and moved.complex_strength == pytest.approx(7.0)


def test_band_summary_without_concepts():
    summary = band_summary(order_profile(and_result(torch.zeros(2, 16, dtype=torch.float64))))
    assert summary.complex_ratio == 0.0 and summary.num_concepts == 0.0
