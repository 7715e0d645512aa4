"""AND-OR decomposition solver against planted logic, a hand-solved case and an exact LP."""

from __future__ import annotations

import pytest
import torch
from models import mlp
from oracles_lp import lp_and_or, lp_and_or_dual

from concept_tracker.and_or import AndOrConfig, AndOrResult, and_or_objective, decompose, matching_error
from concept_tracker.transforms import and_transform, coalition_matrix, or_transform


def masked_mlp_values(n: int, samples: int, seed: int) -> torch.Tensor:
    """[samples, 2**n] first logit of a random tanh MLP, masked players set to the zero baseline."""
    model = mlp(d_in=n, hidden=32, classes=2, seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(samples, n, generator=g, dtype=torch.float64)
    keep = coalition_matrix(n).double()
    with torch.no_grad():
        out = model((x[:, None, :] * keep[None]).reshape(-1, n))[:, 0]
    return out.reshape(samples, 1 << n)


def planted_values() -> torch.Tensor:
    """v(S) = f(1_S) for f(x) = 3 (x0 AND x1) + 2 (x2 OR x3) - (x4 AND x5), n = 6."""
    x = coalition_matrix(6).double()
    return 3 * x[:, 0] * x[:, 1] + 2 * torch.maximum(x[:, 2], x[:, 3]) - x[:, 4] * x[:, 5]


def bound_of(values: torch.Tensor, ratio: float = 0.02) -> torch.Tensor:
    return ratio * (values[:, -1] - values[:, 0]).abs()


def check_exact(values: torch.Tensor, res: AndOrResult, ratio: float = 0.02) -> None:
    """Matching to rounding, q inside its box, and gamma / q consistent with the effects."""
    scale = values.abs().amax(-1).clamp_min(1.0)
    assert (matching_error(values, res.and_effects, res.or_effects, res.q) <= 1e-9 * scale).all()
    assert (res.q.abs() <= bound_of(values, ratio)[:, None] * (1 + 1e-12)).all()
    half = 0.5 * (values + res.q)
    torch.testing.assert_close(and_transform(half + res.gamma), res.and_effects, rtol=0, atol=1e-9)
    torch.testing.assert_close(or_transform(half - res.gamma), res.or_effects, rtol=0, atol=1e-9)


def test_planted_logic_gives_its_concepts():
    res = decompose(planted_values()[None])
    effects = torch.cat([res.and_effects[0, 1:], res.or_effects[0, 1:]])
    threshold = 0.05 * effects.abs().max()
    assert (res.and_effects[0].abs() > threshold).nonzero().flatten().tolist() == [0b000011, 0b110000]
    assert (res.or_effects[0].abs() > threshold).nonzero().flatten().tolist() == [0b001100]
    # The planted terms, up to what the bounded noise q may move (|q| <= 0.02 * |v(N) - v(empty)|
    # = 0.08 per coalition, which shifts an effect by a sum of such q's).
    assert res.and_effects[0, 0b000011].item() == pytest.approx(3.0, abs=0.1)
    assert res.and_effects[0, 0b110000].item() == pytest.approx(-1.0, abs=0.1)
    assert res.or_effects[0, 0b001100].item() == pytest.approx(2.0, abs=0.1)
    # q absorbs strength: the L1 optimum is 6 - 2 * 0.08 = 5.84, and the solver must come within
    # tol of it, which the un-absorbed planted terms (L1 = 6.0 > 1.02 * 5.84) do not.
    optimum = lp_and_or(planted_values())[0]
    assert optimum == pytest.approx(5.84, abs=1e-6)
    assert 6.0 > (1 + AndOrConfig().tol) * optimum
    assert and_or_objective(res.and_effects, res.or_effects).item() <= (1 + AndOrConfig().tol) * optimum
    check_exact(planted_values()[None], res)


def test_one_player_matches_hand_optimum():
    # n = 1, d = v1 - v0, b = 0.02 |d|: the objective is at least |v0 + q0| + |d + q1 - q0|
    # (equality when a and o share signs). With v0, d of opposite signs q0 shrinks both terms:
    # |v0| - b + |d| - 2b; with equal signs the q0 terms cancel: |v0| + |d| - b.
    values = torch.tensor([[-2.0, 0.5], [1.0, 3.0]], dtype=torch.float64)
    res = decompose(values, AndOrConfig(tol=1e-3))
    d = values[:, 1] - values[:, 0]
    b = bound_of(values)
    optimum = torch.stack([values[0, 0].abs() + d[0].abs() - 3 * b[0], values[1, 0].abs() + d[1].abs() - b[1]])
    torch.testing.assert_close(and_or_objective(res.and_effects, res.or_effects), optimum, rtol=1e-3, atol=0)
    check_exact(values, res)


@pytest.mark.parametrize(("n", "samples", "seed"), [(6, 4, 0), (7, 2, 1), (8, 2, 2)])
def test_mlp_objective_near_lp_optimum(n, samples, seed):
    values = masked_mlp_values(n, samples, seed)
    res = decompose(values)
    check_exact(values, res)
    objective = and_or_objective(res.and_effects, res.or_effects)
    optimum = torch.tensor([lp_and_or(v)[0] for v in values], dtype=torch.float64)
    assert (objective >= optimum * (1 - 1e-9)).all()
    assert (objective <= 1.01 * optimum).all(), (objective / optimum - 1).tolist()
    # The certificate bounds the true gap from above, and every sample stopped on it.
    assert (res.gap >= 1 - optimum / objective - 1e-9).all()
    assert (res.gap <= AndOrConfig().tol).all() and res.iterations < AndOrConfig().max_iter
    halves = and_or_objective(and_transform(0.5 * values), or_transform(0.5 * values))
    assert (objective <= halves).all()


@pytest.mark.parametrize(("n", "seed"), [(3, 10), (5, 11), (6, 12)])
def test_certificate_never_exceeds_the_lp_optimum(n, seed):
    """The lower bound is valid for any dual estimates in the box, not only near-optimal ones:
    random ones, ADMM's after a few iterations, and ADMM's after many."""
    import concept_tracker.and_or as and_or

    values = masked_mlp_values(n, 2, seed)
    optimum = torch.tensor([lp_and_or(v)[0] for v in values], dtype=torch.float64)
    scale = (values - values[:, :1]).abs().amax(-1)
    v = values / scale[:, None]
    bound = 0.02 * (v[:, -1] - v[:, 0]).abs()
    g = torch.Generator().manual_seed(seed)
    duals = 2 * torch.rand(4, 2, 2, 1 << n, generator=g, dtype=torch.float64) - 1
    lower = and_or._lower_bound(duals, v, bound) * scale
    assert (lower <= optimum * (1 + 1e-9)).all()
    for iterations in (20, 400):
        res = decompose(values, AndOrConfig(max_iter=iterations, tol=0.0, check_every=iterations))
        objective = and_or_objective(res.and_effects, res.or_effects)
        assert (objective * (1 - res.gap) <= optimum * (1 + 1e-9)).all()
    # After 400 iterations the certificate is close to the truth, not just valid.
    assert (objective * (1 - res.gap) >= 0.99 * optimum).all()


def test_certificate_is_exact_at_the_lp_dual():
    """From the LP's optimal dual the certificate is the optimum, also when every dual entry is
    moved by the same amount (a shift of g(N)), which its centring must undo exactly."""
    import concept_tracker.and_or as and_or

    values = masked_mlp_values(5, 2, seed=11)
    for v in values:
        optimum, g = lp_and_or_dual(v)
        bound = bound_of(v[None])
        for shift in (0.0, 0.3, -0.2):
            h = g.clone()
            h[-1] += shift
            duals = torch.stack([and_or._superset_sums(h, 5), and_or._meet_sums(h, 5)])[None, :, None]
            lower = and_or._lower_bound(duals, v[None], bound).item()
            assert optimum * (1 - 1e-7) <= lower <= optimum * (1 + 1e-9)


def test_converged_warm_start_stops_at_the_first_certificate():
    values = masked_mlp_values(6, 3, seed=14)
    cold = decompose(values)
    warm = decompose(values, warm_start=(cold.gamma, cold.q))
    assert cold.iterations >= 4 * AndOrConfig().check_every
    assert warm.iterations == AndOrConfig().check_every
    assert (warm.gap <= AndOrConfig().tol).all()
    check_exact(values, warm)


def test_scale_invariance():
    values = masked_mlp_values(7, 3, seed=3)
    base = decompose(values)
    for factor in (0.01, 100.0):
        scaled = decompose(values * factor)
        assert scaled.iterations == base.iterations
        for name in ("and_effects", "or_effects", "gamma", "q"):
            got, want = getattr(scaled, name), factor * getattr(base, name)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-7 * factor * values.abs().max().item())


def test_warm_start_converges_faster_to_the_same_objective():
    values = masked_mlp_values(8, 3, seed=4)
    cold = decompose(values)
    warm = decompose(values, warm_start=(cold.gamma, cold.q))
    assert warm.iterations < cold.iterations
    check_exact(values, warm)
    cold_obj = and_or_objective(cold.and_effects, cold.or_effects)
    warm_obj = and_or_objective(warm.and_effects, warm.or_effects)
    # Never worse than where it started, and both certified within tol of the optimum.
    assert (warm_obj <= cold_obj * (1 + 1e-9)).all()
    assert (warm.gap <= AndOrConfig().tol).all()


def test_warm_start_from_the_previous_step_reaches_the_lp_optimum():
    """As at a tracked step: warm-started from the split of slightly different values (the model
    moved), the answer is exact, within tol of the LP optimum of the new values, and no worse
    than the warm start itself."""
    before = masked_mlp_values(7, 2, seed=15)
    after = before + 0.1 * masked_mlp_values(7, 2, seed=16)
    previous = decompose(before)
    warm = decompose(after, warm_start=(previous.gamma, previous.q))
    check_exact(after, warm)
    objective = and_or_objective(warm.and_effects, warm.or_effects)
    optimum = torch.tensor([lp_and_or(v)[0] for v in after], dtype=torch.float64)
    assert (objective >= optimum * (1 - 1e-9)).all()
    assert (objective <= (1 + AndOrConfig().tol) * optimum).all(), (objective / optimum - 1).tolist()
    half = 0.5 * (after + previous.q.clamp(-bound_of(after)[:, None], bound_of(after)[:, None]))
    start = and_or_objective(and_transform(half + previous.gamma), or_transform(half - previous.gamma))
    assert (objective <= start).all()


def test_batch_matches_single_samples():
    values = masked_mlp_values(6, 3, seed=5)
    batch = decompose(values)
    for i in range(3):
        single = decompose(values[i : i + 1])
        torch.testing.assert_close(
            and_or_objective(single.and_effects, single.or_effects),
            and_or_objective(batch.and_effects[i : i + 1], batch.or_effects[i : i + 1]),
            # float32 iterates: batch shapes may round differently
            rtol=1e-4,
            atol=0,
        )


def test_edge_cases():
    # Constant values: the bound is 0 and the empty-set terms carry everything.
    const = torch.full((2, 8), 1.5, dtype=torch.float64)
    res = decompose(const)
    check_exact(const, res)
    objective = and_or_objective(res.and_effects, res.or_effects)
    torch.testing.assert_close(objective, torch.full((2,), 1.5, dtype=torch.float64))
    # Zero players, zero samples, float32 input, max_iter smaller than the evaluation interval.
    res = decompose(torch.tensor([[2.0]]))
    assert res.and_effects.dtype == torch.float64
    assert (res.and_effects + res.or_effects).item() == pytest.approx(2.0)
    res = decompose(torch.zeros(0, 16))
    assert res.and_effects.shape == (0, 16) and res.iterations == 0
    values = masked_mlp_values(5, 2, seed=6).float()
    res = decompose(values, AndOrConfig(max_iter=3, tol=0.0))
    assert res.iterations == 3 and res.and_effects.dtype == torch.float64
    check_exact(values.double(), res)


def test_zero_bound_keeps_q_zero():
    values = masked_mlp_values(6, 2, seed=7)
    res = decompose(values, AndOrConfig(bound_ratio=0.0))
    assert res.q.abs().max().item() == 0.0
    check_exact(values, res, ratio=0.0)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (torch.randn(8), "values has shape"),
        (torch.randn(2, 6), "not 2\\*\\*n"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), "NaN or inf in samples \\[0\\]"),
        (torch.tensor([[0.0, 1.0], [float("inf"), 2.0]]), "NaN or inf in samples \\[1\\]"),
        (torch.ones(2, 4, dtype=torch.complex64), "real coalition values"),
    ],
)
def test_bad_values(values, match):
    with pytest.raises(ValueError, match=match):
        decompose(values)


def test_bad_warm_start_and_config():
    values = masked_mlp_values(4, 2, seed=8)
    good = torch.zeros_like(values)
    with pytest.raises(ValueError, match="warm_start gamma has shape"):
        decompose(values, warm_start=(good[:1], good))
    with pytest.raises(ValueError, match="warm_start q has NaN"):
        decompose(values, warm_start=(good, torch.full_like(values, float("nan"))))
    with pytest.raises(ValueError, match="warm_start must be a pair"):
        decompose(values, warm_start=good)
    with pytest.raises(ValueError, match="config must be an AndOrConfig"):
        decompose(values, {"tol": 0.1})
    for field, bad in [
        ("bound_ratio", -0.1),
        ("max_iter", 0),
        ("tol", float("nan")),
        ("check_every", 1.5),
        ("rho_start", 0.0),
        ("rho_end", -1.0),
        ("rho_ramp", -1),
        ("relaxation", 2.0),
    ]:
        with pytest.raises(ValueError, match=field):
            AndOrConfig(**{field: bad})


def test_helpers_check_shapes():
    values = masked_mlp_values(3, 2, seed=9)
    with pytest.raises(ValueError, match="or_effects"):
        and_or_objective(values, values[:1])
    with pytest.raises(ValueError, match="q has shape"):
        matching_error(values, values, values, values[:, :4])


def test_dense_players_give_the_same_solution(monkeypatch):
    """A GPU runs the highest 12 players as one dense product instead of shear passes; both
    layouts must give the same operators and hence the same ADMM run (checked here on CPU)."""
    import concept_tracker.and_or as and_or

    n = 7
    cpu = torch.device("cpu")
    f64 = torch.float64
    sheared, dense = and_or._Operators(n, cpu, 0, f64), and_or._Operators(n, cpu, n, f64)
    x = torch.randn(2, 1 << n, 4, dtype=f64, generator=torch.Generator().manual_seed(0))
    outs = []
    for ops in (sheared, dense):
        buf = and_or._Buffer(x, ops.sheared)
        forward = ops.forward(x, buf).clone()
        buf.data.copy_(x)
        adjoint = ops.adjoint_(buf).clone()
        buf.data.copy_(x)
        outs.append((forward, adjoint, ops.solve_(buf).clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    # The forward map is the AND transform and (on complements) the OR transform.
    forward = outs[0][0]
    torch.testing.assert_close(forward[0].T, and_transform(x[0].T), rtol=0, atol=1e-10)
    torch.testing.assert_close(forward[1].T, or_transform(x[1].T.flip(-1)), rtol=0, atol=1e-10)
    # The solve inverts K^T K + theta I: applying that matrix to the solution gives x back.
    solved = outs[0][2]
    buf = and_or._Buffer(x, sheared.sheared)
    sheared.forward(solved, buf)
    back = sheared.adjoint_(buf) + and_or._THETA * solved
    torch.testing.assert_close(back, x, rtol=0, atol=1e-9)

    values = masked_mlp_values(n, 3, seed=6)
    reference = decompose(values, AndOrConfig(max_iter=200))
    monkeypatch.setattr(and_or, "_DENSE_PLAYERS_CPU", n)
    and_or._operators.cache_clear()
    try:
        other = decompose(values, AndOrConfig(max_iter=200))
    finally:
        and_or._operators.cache_clear()
    # The iterates are float32: the two runs agree to its precision, not bitwise.
    scale = values.abs().max().item()
    torch.testing.assert_close(other.and_effects, reference.and_effects, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(other.or_effects, reference.or_effects, rtol=0, atol=1e-4 * scale)
