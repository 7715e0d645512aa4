"""Noise and adversarial sensitivity through compute_interactions, on models with known answers."""

import math

import pytest
import torch
from torch import nn

from concept_tracker.players import TabularPlayers
from concept_tracker.sensitivity import adversarial_inconsistency, noise_sensitivity

N = 4


class IidNoise(nn.Module):
    """Returns ``sigma * N(0, 1)`` per row from its own generator: v(S) are iid, so
    Var[I_and(S)] = 2**|S| * sigma**2."""

    def __init__(self, sigma: float, seed: int = 123):
        super().__init__()
        self.sigma = sigma
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.randn(x.shape[0], generator=self.generator, dtype=torch.float64)


def linear(weights, bias: float = 0.5) -> nn.Linear:
    """``v(x) = w . x + bias`` in float64: I({i}) = w_i (x_i - b_i), nothing above order 1."""
    model = nn.Linear(len(weights), 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights], dtype=torch.float64))
        model.bias.fill_(bias)
    return model


def inputs(batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, N, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def test_iid_output_noise_gives_variance_two_to_the_order():
    sigma = 0.5
    result = noise_sensitivity(
        IidNoise(sigma), inputs(), TabularPlayers(baselines="zero"), sigma=0.0, draws=200, value="output"
    )
    expected = torch.tensor([2.0**m * sigma**2 for m in range(N + 1)], dtype=torch.float64)
    # Mean of >= 8 variances from 200 draws each: a few percent of statistical error.
    torch.testing.assert_close(result.variance, expected, rtol=0.15, atol=0)
    assert result.slope == pytest.approx(math.log(2), abs=0.05)
    assert result.draws == 200 and result.kinds == ["and"]


def test_linear_model_has_no_variance_above_order_one():
    weights, sigma = [1.0, -2.0, 0.5, 3.0], 0.3
    result = noise_sensitivity(
        linear(weights), inputs(), TabularPlayers(baselines="zero"), sigma=sigma, draws=400, value="output"
    )
    # Var[w_i (x_i + noise)] = w_i**2 sigma**2, averaged over the players.
    expected_first = sum(w * w for w in weights) / N * sigma**2
    assert result.variance[1].item() == pytest.approx(expected_first, rel=0.15)
    assert result.variance[0].item() < 1e-20
    assert (result.variance[2:] < 1e-20).all()
    # Only order 1 is above the numerical floor: no slope can be fitted.
    assert math.isnan(result.slope)


def test_noise_leaves_global_rng_alone_and_repeats_with_seed():
    model, x = linear([1.0, 1.0, 1.0, 1.0]), inputs(2)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    run = dict(sigma=0.1, draws=3, value="output", seed=5)
    first = noise_sensitivity(model, x, TabularPlayers(baselines="zero"), **run)
    assert torch.equal(torch.get_rng_state(), before)
    again = noise_sensitivity(model, x, TabularPlayers(baselines="zero"), **run)
    torch.testing.assert_close(first.variance, again.variance)
    other = noise_sensitivity(model, x, TabularPlayers(baselines="zero"), **{**run, "seed": 6})
    assert not torch.equal(first.variance, other.variance)


def test_noise_rejects_bad_arguments():
    players = TabularPlayers(baselines="zero")
    with pytest.raises(ValueError, match="draws"):
        noise_sensitivity(linear([1.0] * N), inputs(), players, sigma=0.1, draws=1, value="output")
    with pytest.raises(ValueError, match="sigma"):
        noise_sensitivity(linear([1.0] * N), inputs().long(), players, sigma=0.1, draws=2, value="output")


def test_fgsm_on_linear_model_known_answer():
    weights = [1.0, 1.0, -2.0, 0.5]
    model = linear(weights)
    # |I({i})| before: [0.08, 1, 2, 0.5]; max 2, tau 0.1, so player 0 is not a concept. The
    # step x' = x - eps * sign(w) turns I({0}) from 0.08 to -0.02: not counted as a flip.
    x = torch.tensor([[0.08, 1.0, -1.0, 1.0]], dtype=torch.float64)
    eps = 0.1
    model.train()
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    result = adversarial_inconsistency(model, x, TabularPlayers(baselines="zero"), eps, value="output")
    # Each I({i}) = w_i x_i moves by eps * |w_i|; v(empty) = bias does not move.
    expected_r1 = eps * sum(abs(w) for w in weights) / (0.08 + 1 + 2 + 0.5)
    assert result.relative_change[0].item() == 0.0
    assert result.relative_change[1].item() == pytest.approx(expected_r1)
    assert result.salient[1].item() == 3 and result.salient[2:].sum() == 0
    assert result.flipped.sum().item() == 0 and result.dropped.sum().item() == 0
    # Observer effects: flags, grad mode, RNG and parameter grads untouched.
    assert model.training and torch.is_grad_enabled()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None and not x.requires_grad


def test_adversarial_sign_flip_and_drop_shares():
    # |I| before: [4, 1, 2, 0.3]; tau = 0.2. The step of eps = 0.35 moves player 3 from 0.3 to
    # -0.05: a flip that is also a drop. Others keep their sign and salience.
    model = linear([1.0, 1.0, 1.0, 1.0])
    x = torch.tensor([[4.0, 1.0, 2.0, 0.3]], dtype=torch.float64)
    result = adversarial_inconsistency(model, x, TabularPlayers(baselines="zero"), 0.35, value="output")
    assert result.salient[1].item() == 4
    assert result.flipped[1].item() == 1 and result.dropped[1].item() == 1
    assert result.sign_flip_share[1].item() == pytest.approx(0.25)
    assert result.dropped_share[1].item() == pytest.approx(0.25)
    assert math.isnan(result.sign_flip_share[2].item())
    # PGD on a linear model reaches the same corner of the box as FGSM.
    pgd = adversarial_inconsistency(model, x, TabularPlayers(baselines="zero"), 0.35, steps=3, value="output")
    torch.testing.assert_close(pgd.relative_change[:2], result.relative_change[:2])
    assert pgd.steps == 3


def test_adversarial_with_log_odds_decreases_value():
    # Two classes, logits z = x @ W.T; prediction class 0 on x; the step lowers its log-odds.
    model = nn.Linear(N, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64))
    x = torch.tensor([[2.0, 0.5, 1.0, 0.2]], dtype=torch.float64)
    result = adversarial_inconsistency(model, x, TabularPlayers(baselines="zero"), 0.1)
    # log-odds = (x0 + x2) - (x1 + x3): singletons +2, -0.5, +1, -0.2, each moved by 0.1.
    assert result.relative_change[1].item() == pytest.approx(0.4 / 3.7)
    with pytest.raises(ValueError, match="epsilon"):
        adversarial_inconsistency(model, x, TabularPlayers(baselines="zero"), -1.0)
