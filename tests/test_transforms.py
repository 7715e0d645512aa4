"""AND / OR transforms against the brute-force, dense-matrix and shapiq references."""

from __future__ import annotations

import pytest
import torch
from models import mlp
from oracles import (
    brute_and,
    brute_and_matching,
    brute_or,
    brute_or_matching,
    dense_and,
    popcount,
    shapiq_and,
)

import concept_tracker as ct
from concept_tracker.transforms import coalition_matrix

SIZES = range(0, 9)


def random_values(n: int, *lead: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * n + seed)
    return torch.randn(*lead, 1 << n, generator=g, dtype=torch.float64)


def mlp_values(n: int) -> torch.Tensor:
    """v(S) of a real model: the MLP's first logit on 3 samples with the masked columns zeroed."""
    model = mlp(d_in=n, classes=2, seed=n)
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=g)
    keep = coalition_matrix(n)
    with torch.no_grad():
        rows = torch.where(keep[None], x[:, None, :], 0.0)
        return model(rows.reshape(-1, n))[:, 0].reshape(3, 1 << n).double()


@pytest.mark.parametrize("n", SIZES)
def test_and_matches_brute_force(n):
    v = random_values(n, 3)
    torch.testing.assert_close(ct.and_transform(v), brute_and(v), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", SIZES)
def test_or_matches_brute_force(n):
    v = random_values(n, 3)
    torch.testing.assert_close(ct.or_transform(v), brute_or(v), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_transforms_match_brute_force_on_model_outputs(n):
    v = mlp_values(n)
    torch.testing.assert_close(ct.and_transform(v), brute_and(v), rtol=0, atol=1e-10)
    torch.testing.assert_close(ct.or_transform(v), brute_or(v), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [1, 4, 8])
def test_and_matches_dense_matrix(n):
    v = random_values(n, 4)
    torch.testing.assert_close(ct.and_transform(v), dense_and(v), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_and_matches_shapiq_moebius(n):
    v = random_values(n, 2)
    torch.testing.assert_close(ct.and_transform(v), shapiq_and(v), rtol=0, atol=1e-10)


def test_and_matches_shapiq_on_model_outputs():
    v = mlp_values(5)
    torch.testing.assert_close(ct.and_transform(v), shapiq_and(v), rtol=0, atol=1e-10)


# Hand-computed 3-player game. Index = bitmask: [∅, {0}, {1}, {0,1}, {2}, {0,2}, {1,2}, N].
V3 = [1.0, 3.0, 2.0, 7.0, 1.0, 3.0, 4.0, 10.0]
# I_and({0,1}) = 7 - 3 - 2 + 1 = 3;  I_and(N) = 10 - (7 + 3 + 4) + (3 + 2 + 1) - 1 = 1.
AND3 = [1.0, 2.0, 1.0, 3.0, 0.0, 0.0, 2.0, 1.0]
# With u(T) = v(N \ T) = [10, 4, 3, 1, 7, 2, 3, 1]: I_or({0}) = -(4 - 10) = 6,
# I_or({0,1}) = -(1 - 4 - 3 + 10) = -4, I_or(N) = -(1 - 6 + 14 - 10) = 1, I_or(∅) = v(∅) = 1.
OR3 = [1.0, 6.0, 7.0, -4.0, 3.0, -1.0, -3.0, 1.0]


def test_hand_computed_three_players():
    v = torch.tensor(V3)
    assert ct.and_transform(v).tolist() == AND3
    assert ct.or_transform(v).tolist() == OR3
    assert ct.and_inverse(torch.tensor(AND3)).tolist() == V3
    assert ct.or_inverse(torch.tensor(OR3)).tolist() == V3


@pytest.mark.parametrize("n", SIZES)
def test_and_universal_matching(n):
    v = random_values(n, 3)
    effects = ct.and_transform(v)
    torch.testing.assert_close(ct.and_inverse(effects), v, rtol=0, atol=1e-10)
    # The subset-sum form, summed term by term, not through the library's inverse.
    torch.testing.assert_close(brute_and_matching(effects), v, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", SIZES)
def test_or_matching(n):
    v = random_values(n, 3)
    effects = ct.or_transform(v)
    torch.testing.assert_close(ct.or_inverse(effects), v, rtol=0, atol=1e-10)
    torch.testing.assert_close(brute_or_matching(effects), v, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [3, 8])
def test_inverses_match_brute_force_on_arbitrary_effects(n):
    # The inverses are transforms in their own right: check them on effects that did not come
    # from the forward transform.
    e = random_values(n, 2, seed=1)
    torch.testing.assert_close(ct.and_inverse(e), brute_and_matching(e), rtol=0, atol=1e-10)
    torch.testing.assert_close(ct.or_inverse(e), brute_or_matching(e), rtol=0, atol=1e-10)


def relabel(n: int, perm: list[int]) -> torch.Tensor:
    """``index[s]`` = bitmask of coalition ``s`` after old player ``i`` becomes player ``perm[i]``."""
    return torch.tensor([sum(1 << perm[i] for i in range(n) if s >> i & 1) for s in range(1 << n)])


@pytest.mark.parametrize("transform", [ct.and_transform, ct.or_transform], ids=["and", "or"])
def test_relabelling_players_permutes_effects(transform):
    n = 6
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()
    assert perm != list(range(n))
    index = relabel(n, perm)
    v = random_values(n, 2)
    v_relabelled = torch.empty_like(v)
    v_relabelled[:, index] = v  # v'(perm(S)) = v(S)
    effects, effects_relabelled = transform(v), transform(v_relabelled)
    torch.testing.assert_close(effects_relabelled[:, index], effects, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "transform", [ct.and_transform, ct.or_transform, ct.and_inverse, ct.or_inverse], ids=["and", "or", "and_inv", "or_inv"]
)
def test_leading_dims_are_batched(transform):
    v = random_values(5, 2, 3, 4)
    out = transform(v)
    assert out.shape == v.shape
    expected = torch.stack([transform(row) for row in v.reshape(-1, 32)]).reshape(v.shape)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("transform", [ct.and_transform, ct.or_transform, ct.and_inverse, ct.or_inverse])
def test_float32_input_gives_float64_and_is_not_modified(transform):
    v = random_values(4, 3).float()
    before = v.clone()
    out = transform(v)
    assert out.dtype == torch.float64
    assert torch.equal(v, before)
    torch.testing.assert_close(out, transform(v.double()), rtol=0, atol=0)


def test_orders_are_popcounts():
    for n in (0, 1, 5, 10):
        assert ct.orders(n).tolist() == [popcount(s) for s in range(1 << n)]


@pytest.mark.parametrize("transform", [ct.and_transform, ct.or_transform, ct.and_inverse, ct.or_inverse])
def test_last_dim_not_power_of_two_is_rejected(transform):
    with pytest.raises(ValueError, match=r"last dimension 6, which is not 2\*\*n"):
        transform(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="scalar"):
        transform(torch.tensor(1.0))


def test_more_than_twenty_players_is_rejected():
    with pytest.raises(ValueError, match=r"n=21 players; at most 20"):
        ct.and_transform(torch.zeros(1 << 21, dtype=torch.float32))


def test_twenty_players_work():
    # A planted game: v(S) = 1 iff S is the full set, so I_and is 1 on N alone.
    v = torch.zeros(1 << 20)
    v[-1] = 1.0
    effects = ct.and_transform(v)
    assert effects[-1].item() == 1.0
    assert effects.abs().sum().item() == 1.0
