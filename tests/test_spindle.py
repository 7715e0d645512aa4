"""Spindle weight of an order profile (arXiv 2502.10162): templates, the exact NNLS, planted profiles."""

import math

import pytest
import torch
from scipy.optimize import nnls

import concept_tracker as ct
from concept_tracker.interactions import Interactions
from concept_tracker.metrics.spindle import nonnegative_least_squares, spindle_templates, spindle_weight
from concept_tracker.transforms import and_inverse, and_transform


def with_empty(profile: torch.Tensor) -> torch.Tensor:
    """Prepend the empty-set entry that per-order tensors carry at index 0."""
    return torch.cat([torch.zeros(*profile.shape[:-1], 1, dtype=profile.dtype), profile], -1)


def test_noise_template_is_the_binomial_spindle():
    # n = 4: C(4, m) * 2**(m/2) = 4*sqrt2, 6*2, 4*2*sqrt2, 4, normalised.
    raw = torch.tensor([4 * math.sqrt(2), 12.0, 8 * math.sqrt(2), 4.0], dtype=torch.float64)
    assert torch.allclose(spindle_templates(4)[0], raw / raw.sum())
    assert torch.allclose(spindle_templates(7).sum(-1), torch.ones(4, dtype=torch.float64))


def test_pure_and_mixed_profiles():
    templates = spindle_templates(10)
    assert spindle_weight(with_empty(templates[0])).item() == pytest.approx(1.0)
    for decay in templates[1:]:
        assert spindle_weight(with_empty(decay)).item() == pytest.approx(0.0, abs=1e-12)
    mixed = 0.3 * templates[0] + 0.5 * templates[2] + 0.2 * templates[3]
    # scale does not matter: the profile is normalised first
    assert spindle_weight(with_empty(7.0 * mixed)).item() == pytest.approx(0.3)
    batch = with_empty(torch.stack([templates[0], templates[1], mixed]))
    assert torch.allclose(spindle_weight(batch), torch.tensor([1.0, 0.0, 0.3], dtype=torch.float64))


def test_exact_nnls_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        design = torch.randn(9, 4, generator=gen, dtype=torch.float64)
        target = torch.randn(9, generator=gen, dtype=torch.float64)
        ours = nonnegative_least_squares(design, target)
        reference, _ = nnls(design.numpy(), target.numpy())
        assert torch.allclose(ours, torch.from_numpy(reference), atol=1e-8)


def result(effects: torch.Tensor) -> Interactions:
    n = effects.shape[-1].bit_length() - 1
    return Interactions(
        outputs=and_inverse(effects), and_effects=effects, or_effects=None, n=n, kind="and", targets=None, aligned=True
    )


def test_noise_values_read_as_spindle_and_planted_low_order_concepts_as_decay():
    # Independent of the template's derivation: coalition values that are pure noise, through
    # the library's transform and salience rule, end up almost entirely on the spindle.
    gen = torch.Generator().manual_seed(1)
    noise = ct.order_profile(result(and_transform(torch.randn(64, 1024, generator=gen, dtype=torch.float64))))
    assert spindle_weight(noise.strength).item() > 0.9
    # A planted model with strong singletons and weaker pairs: decay, no spindle.
    effects = torch.zeros(16, 1024, dtype=torch.float64)
    singles = [1 << i for i in range(10)]
    pairs = [(1 << i) | (1 << (i + 1)) for i in range(9)]
    effects[:, singles] = 1.0 + torch.rand(16, 10, generator=gen, dtype=torch.float64)
    effects[:, pairs] = 0.3 * torch.rand(16, 9, generator=gen, dtype=torch.float64)
    planted = ct.order_profile(result(effects))
    assert spindle_weight(planted.strength).item() < 0.05


def test_empty_profile_and_bad_input():
    assert spindle_weight(torch.zeros(6, dtype=torch.float64)).isnan()
    with pytest.raises(ValueError, match="negative"):
        spindle_weight(torch.tensor([0.0, 1.0, -0.5]))
    with pytest.raises(ValueError, match="strength_by_order"):
        spindle_weight(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="n=0"):
        spindle_templates(0)
