"""The sampled order spectrum against planted functions, brute force and the exact readings."""

from __future__ import annotations

import math
import random
import warnings
from itertools import combinations

import numpy as np
import pytest
import torch
from models import mlp
from torch import nn

import concept_tracker as ct
from concept_tracker import spectrum as sp
from concept_tracker.metrics.bootstrap import per_sample_profile


class AndRules(nn.Module):
    """``y = sum_r w_r * [every player of rule r is kept]`` on 0/1 inputs ``[M, n]`` (baseline 0).

    Harsanyi answer: ``I(rule_r) = w_r`` and 0 for every other coalition, so rule r counts at
    order ``len(rule_r)`` with strength ``|w_r|``.
    """

    def __init__(self, rules: list[tuple[list[int], float]]) -> None:
        super().__init__()
        self.rules = rules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], dtype=torch.float64)
        for players, w in self.rules:
            out = out + w * (x[:, players] > 0.5).all(1).double()
        return out


class Parity(nn.Module):
    """``y = w * (number of kept players of ``support`` is odd)`` on 0/1 inputs.

    Harsanyi answer: ``I(T) = w * (-2)**(|T| - 1)`` for every non-empty ``T`` inside the
    support, 0 elsewhere.
    """

    def __init__(self, support: list[int], w: float = 1.0) -> None:
        super().__init__()
        self.support, self.w = support, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * ((x[:, self.support] > 0.5).sum(1) % 2).double()


def true_shares(effects: dict[tuple[int, ...], float], simple_max: int, complex_min: int) -> tuple[float, float]:
    """Simple and complex shares of salient strength from a dict of non-zero Harsanyi effects."""
    tau = 0.05 * max(abs(v) for v in effects.values())
    salient = {s: abs(v) for s, v in effects.items() if abs(v) > tau and s}
    total = sum(salient.values())
    simple = sum(v for s, v in salient.items() if len(s) <= simple_max)
    complex_ = sum(v for s, v in salient.items() if len(s) >= complex_min)
    return simple / total, complex_ / total


def parity_effects(support: list[int], w: float) -> dict[tuple[int, ...], float]:
    return {t: w * (-2.0) ** (len(t) - 1) for m in range(1, len(support) + 1) for t in combinations(support, m)}


def ones(b: int, n: int) -> torch.Tensor:
    return torch.ones(b, n)


# ---------------------------------------------------------------- pure pieces against brute force


@pytest.mark.parametrize(("n", "k"), [(6, 3), (7, 2), (5, 5), (4, 1)])
def test_low_order_effects_match_full_transform(n, k):
    g = torch.Generator().manual_seed(n * 10 + k)
    full = torch.randn(3, 1 << n, generator=g, dtype=torch.float64)
    table = sp.low_order_sets(n, k)
    assert table.shape[0] == sp.low_order_cost(n, k) == sum(math.comb(n, j) for j in range(k + 1))
    masks = (sp.set_coalitions(table, n).long() << torch.arange(n)).sum(-1)
    got = sp.low_order_effects(full[:, masks], table, n)
    assert torch.allclose(got, ct.and_transform(full)[:, masks], atol=1e-10)


def test_set_index_lattice_and_low_part():
    n, k = 7, 2
    table = sp.low_order_sets(n, k)
    assert torch.equal(sp.set_index(table.flip(-1), table, n), torch.arange(table.shape[0]))
    universe = torch.tensor([[1, 4, 6]])
    coal = sp.lattice(universe, n)[0]
    assert coal.shape == (8, n)
    assert coal[5].nonzero().flatten().tolist() == [1, 6]  # local bits 0 and 2
    is_low, where = sp.lattice_low_index(universe, table, n)
    assert is_low.tolist() == [True] * 7 + [False]
    assert torch.equal(sp.set_coalitions(table[where[0, :7]], n), coal[:7])
    # Low-order part of arbitrary masks: brute-force subset sums.
    g = torch.Generator().manual_seed(1)
    effects = torch.randn(2, table.shape[0], generator=g, dtype=torch.float64)
    masks = torch.rand(2, 5, n, generator=g) < 0.6
    got = sp.low_order_part(masks, effects, table, n)
    sets = [tuple(i for i in row.tolist() if i < n) for row in table]
    for b in range(2):
        for m in range(5):
            kept = set(masks[b, m].nonzero().flatten().tolist())
            want = sum(float(effects[b, j]) for j, s in enumerate(sets) if set(s) <= kept)
            assert got[b, m].item() == pytest.approx(want, abs=1e-10)


def test_plan_fits_the_budget():
    for n, f in [(10, 256), (10, 128), (20, 10486), (64, 5000), (32, 2000), (200, 30000)]:
        plan = sp.plan_spectrum(n, f, n // 2 + 1)
        assert sp.low_order_cost(n, plan.k) + plan.pilot <= f, (n, f, plan)
        u, blocks = sp.block_layout(f - sp.low_order_cost(n, plan.k) - plan.pilot, n, plan.k)
        assert blocks * sp.lattice_cost(u, plan.k) <= f - sp.low_order_cost(n, plan.k) - plan.pilot
    assert sp.plan_spectrum(10, 256, 6).k == 2
    assert sp.plan_spectrum(64, 5000, 6).k == 2
    assert sp.plan_spectrum(10, 1024, 6).exact


# ---------------------------------------------------------------- planted functions


@pytest.mark.parametrize(
    ("n", "rules", "forwards", "simple_max", "complex_min"),
    [
        (10, [([0, 3], 4.0), ([1, 2, 5, 6, 8, 9], 3.0)], 512, 3, 6),
        (32, [([2], 1.0), ([4, 30], -2.0), ([5, 7, 11, 19, 23], 2.5), ([1, 8, 13, 21, 26, 29], 3.0)], 3000, 3, 6),
        (64, [([3, 17], 4.0), ([1, 5, 9, 22, 40, 63], 3.0)], 5000, 3, 6),
    ],
)
def test_planted_and_rules(n, rules, forwards, simple_max, complex_min):
    model = AndRules(rules)
    out = ct.order_spectrum(
        model,
        ones(3, n),
        ct.TabularPlayers(baselines="zero"),
        value="output",
        forwards_per_probe=forwards,
        simple_max=simple_max,
        complex_min=complex_min,
    )
    simple, complex_ = true_shares({tuple(r): w for r, w in rules}, simple_max, complex_min)
    assert out.forwards <= 3 * forwards
    for i in range(3):
        assert out.simple_interval.low[i] <= simple + 1e-9 <= out.simple_interval.high[i] + 2e-9
        assert out.complex_interval.low[i] <= complex_ + 1e-9 <= out.complex_interval.high[i] + 2e-9
        assert out.simple_share[i].item() == pytest.approx(simple, abs=0.02)
        assert out.complex_share[i].item() == pytest.approx(complex_, abs=0.02)
    value, low, high = out.overall["simple_share"]
    assert low <= simple + 1e-9 <= high + 2e-9
    top = {players for players, _ in out.concepts[0]}
    assert tuple(sorted(rules[-1][0])) in top  # the strongest complex rule, recovered whole


def test_planted_parity_at_32_players():
    support = [3, 9, 14, 20, 27]
    out = ct.order_spectrum(
        Parity(support, 1.5),
        ones(2, 32),
        ct.TabularPlayers(baselines="zero"),
        value="output",
        forwards_per_probe=2000,
        simple_max=2,
        complex_min=4,
    )
    simple, complex_ = true_shares(parity_effects(support, 1.5), 2, 4)
    for i in range(2):
        assert out.simple_share[i].item() == pytest.approx(simple, abs=0.02)
        assert out.complex_share[i].item() == pytest.approx(complex_, abs=0.02)
        assert out.complex_interval.low[i] <= complex_ + 1e-9 <= out.complex_interval.high[i] + 2e-9


def test_exact_when_forwards_cover_every_coalition():
    model = mlp(d_in=8, seed=3)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    players = ct.TabularPlayers(baselines="zero")
    out = ct.order_spectrum(model, x, players, forwards_per_probe=256, simple_max=2, complex_min=5)
    res = ct.compute_interactions(model, x, players)
    strength, _ = per_sample_profile(res)
    assert out.exact and out.forwards == 5 * 256
    assert torch.allclose(out.strength, strength, atol=1e-9)
    total = strength[:, 1:].sum(1)
    assert torch.allclose(out.simple_share, strength[:, 1:3].sum(1) / total, atol=1e-12)
    assert torch.allclose(out.complex_share, strength[:, 5:].sum(1) / total, atol=1e-12)
    summary = ct.band_summary(ct.order_profile(res), 2, 5)
    assert out.overall["complex_share"][0] == pytest.approx(summary.complex_ratio, abs=1e-12)


# ---------------------------------------------------------------- against the exact readings


def test_sampled_tracks_exact_on_small_models():
    """n = 10 tabular players, mean baseline, 8 random MLPs of different widths and scales: a
    quarter of the exact forwards ranks the models' simple shares like the exact readings, and
    the intervals over probes hold the exact share."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 10, generator=g)
    exact, sampled, covered = [], [], 0
    for seed in range(8):
        model = mlp(d_in=10, hidden=8 + 8 * seed, seed=seed)
        with torch.no_grad():
            model[0].weight.mul_(0.5 + 0.5 * seed)  # larger weights: more high-order structure
        players = ct.TabularPlayers(baselines="mean").fit(x)
        res = ct.compute_interactions(model, x, players)
        strength, _ = per_sample_profile(res)
        share = float(strength[:, 1:4].sum() / strength[:, 1:].sum())
        out = ct.order_spectrum(model, x, players, forwards_per_probe=256, seed=seed)
        assert out.forwards <= 12 * 256
        value, low, high = out.overall["simple_share"]
        covered += low - 1e-9 <= share <= high + 1e-9
        exact.append(share)
        sampled.append(value)
    rho = np.corrcoef(np.argsort(np.argsort(exact)), np.argsort(np.argsort(sampled)))[0, 1]
    assert rho >= 0.9, (exact, sampled)
    assert covered >= 7, (exact, sampled)


# ---------------------------------------------------------------- contract


class Counting(nn.Module):
    """Wraps a model and counts the rows it is called on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.inner(x)


def test_forwards_are_counted_and_seeded():
    model = Counting(mlp(d_in=12, seed=1))
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(2))
    players = ct.TabularPlayers(baselines="zero")
    a = ct.order_spectrum(model, x, players, target=0, forwards_per_probe=300, seed=7)
    assert a.forwards == model.rows and a.forwards <= 4 * 300
    b = ct.order_spectrum(model, x, players, target=0, forwards_per_probe=300, seed=7)
    assert torch.equal(a.simple_share, b.simple_share) and a.overall == b.overall


def test_no_observer_effect():
    model = nn.Sequential(nn.Linear(12, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    x = torch.randn(3, 12)
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    ct.order_spectrum(model, x, ct.TabularPlayers(baselines="zero"), forwards_per_probe=200)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_bad_input_names_the_parameter():
    model, x, players = mlp(d_in=12), torch.randn(3, 12), ct.TabularPlayers(baselines="zero")
    with pytest.raises(ValueError, match="forwards_per_probe=10 .*>= 26"):
        ct.order_spectrum(model, x, players, forwards_per_probe=10)
    with pytest.raises(ValueError, match="forwards_per_probe=True"):
        ct.order_spectrum(model, x, players, forwards_per_probe=True)
    with pytest.raises(ValueError, match="forwards_per_probe=300.5"):
        ct.order_spectrum(model, x, players, forwards_per_probe=300.5)
    with pytest.raises(ValueError, match="simple_max=5 is not below complex_min=4"):
        ct.order_spectrum(model, x, players, simple_max=5, complex_min=4)
    with pytest.raises(ValueError, match="complex_min=14"):
        ct.order_spectrum(model, x, players, complex_min=14)
    with pytest.raises(ValueError, match="seed='a'"):
        ct.order_spectrum(model, x, players, seed="a")
    with pytest.raises(ValueError, match="value='nope'"):
        ct.order_spectrum(model, x, players, value="nope")
    with pytest.raises(ValueError, match="players has type"):
        ct.order_spectrum(model, x, object())


def test_large_n_player_kinds():
    """64 image patches (8 x 8 grid) and every word of a 30-word prompt go through the sampled path."""
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    patches = ct.ImagePatchPlayers(grid=(8, 8), baselines="zero")
    out = ct.order_spectrum(cnn, images, patches, forwards_per_probe=2500)
    assert out.n == 64 and out.forwards <= 2 * 2500 and torch.isfinite(out.simple_share).all()
    with pytest.raises(ValueError, match="n=64.*order_spectrum"):
        ct.compute_interactions(cnn, images, patches)

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, input_ids, attention_mask=None):
            return self.head(self.embed(input_ids).mean(1))

    ids = torch.randint(1, 50, (2, 30), generator=torch.Generator().manual_seed(1))
    words = ct.TokenPlayers(n=30, mask_token_id=0)
    out = ct.order_spectrum(Bag(), {"input_ids": ids}, words, forwards_per_probe=1500)
    assert out.n == 30 and out.forwards <= 2 * 1500


def test_random_blocks_are_unbiased_per_order():
    """Without a pilot, every order above k comes from the random blocks alone (Horvitz-Thompson):
    over 300 independent draws on one sample, the mean estimated strength of each order the
    blocks can see is within four standard errors of the exact one."""
    model = mlp(d_in=10, hidden=32, seed=4)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    x = torch.randn(1, 10, generator=torch.Generator().manual_seed(3))
    values = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero")).outputs
    exact = sp.exact_strength(ct.and_transform(values), 0.05)[0]
    bits = 1 << torch.arange(10)

    def oracle(coalitions):
        return values[0][(coalitions.long() * bits).sum(-1)]

    draws = 300
    plan = sp.SpectrumPlan(n=10, k=2, pilot=0, keep=1.0)
    est = sp.estimate_spectrum(oracle, draws, plan, 600, generator=torch.Generator().manual_seed(0), resamples=10)
    assert est.block_size >= 6 and est.blocks >= 2
    mean, se = est.strength.mean(0), est.strength.std(0) / draws**0.5
    assert torch.allclose(mean[:3], exact[:3], rtol=1e-9, atol=1e-12)  # orders <= k: exact
    for m in range(3, est.block_size + 1):
        assert abs(mean[m] - exact[m]) <= 4 * se[m] + 1e-12, (m, mean[m], exact[m], se[m])
    assert exact[3 : est.block_size + 1].sum() > 0.2 * exact[1:].sum()  # the blocks carry real weight


def test_stored_fields_and_scalars_are_its_own(tmp_path):
    from concept_tracker.spectrum import spectrum_scalars
    from concept_tracker.store import list_steps, load_spectrum, save_spectrum
    from concept_tracker.writers import tags

    out = ct.order_spectrum(
        mlp(d_in=12, seed=2), torch.randn(3, 12), ct.TabularPlayers(baselines="zero"), forwards_per_probe=300
    )
    path = save_spectrum(tmp_path, 7, out, run="r1")
    tensors, meta = load_spectrum(path)
    assert torch.equal(tensors["simple_share"], out.simple_share)
    assert torch.equal(tensors["complex_ci_high"], out.complex_interval.high)
    assert meta["step"] == 7 and meta["forwards"] == out.forwards and meta["overall"] == out.overall
    assert list_steps(tmp_path) == []  # no exact interactions file was written
    scalars = spectrum_scalars(out)
    assert scalars["spectrum/simple_share"] == out.overall["simple_share"][0]
    assert scalars["spectrum/forwards"] == out.forwards
    assert not any(tag.startswith("concepts/") for tag in scalars)  # an estimate never fills an exact tag
    assert set(tags.spectrum_layout()["spectrum (sampled)"]) == {
        "simple_share (95% interval)",
        "medium_share (95% interval)",
        "complex_share (95% interval)",
    }


# ---------------------------------------------------------------- in the tracker


def test_tracker_reads_the_spectrum_beside_the_exact_readings(tmp_path):
    from concept_tracker.config import BudgetConfig, OutputConfig, ReadingsConfig
    from concept_tracker.store import list_steps, load_spectrum, spectrum_path

    model = mlp(d_in=8, seed=5)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    probes = ct.ProbeSet(x, torch.arange(6) % 3)
    quiet, sync = OutputConfig(figures=False), BudgetConfig(sync=True)
    plain = ct.ConceptTracker(
        ct.TabularPlayers(baselines="zero"), probes, log_dir=tmp_path / "a", output=quiet, budget=sync
    )
    both = ct.ConceptTracker(
        ct.TabularPlayers(baselines="zero"),
        probes,
        log_dir=tmp_path / "b",
        readings=ReadingsConfig(spectrum=100),
        output=quiet,
        budget=sync,
    )
    with plain, both:
        exact = plain.step(model, 0)
        summary = both.step(model, 0)
    assert summary is not None and exact is not None and len(exact) > 10
    for tag, value in exact.items():  # the exact readings are untouched
        assert summary[tag] == pytest.approx(value, nan_ok=True, abs=1e-12), tag
    spectrum_tags = {t for t in summary if t.startswith("spectrum/")}
    assert spectrum_tags and not spectrum_tags & set(exact)
    assert list_steps(tmp_path / "b") == [0]
    tensors, meta = load_spectrum(spectrum_path(tmp_path / "b", 0))
    assert meta["forwards_per_probe"] == 100 and summary["spectrum/forwards"] == meta["forwards"]
    assert summary["spectrum/simple_share"] == pytest.approx(meta["overall"]["simple_share"][0])


def test_tracker_above_16_players_reads_the_sampled_spectrum_only(tmp_path):
    from concept_tracker.config import BudgetConfig, ReadingsConfig
    from concept_tracker.store import list_steps, spectrum_path

    n = 24
    model = nn.Sequential(nn.Linear(n, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(4, n, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="n=24 players, above 16.*sampled order spectrum.*300 forwards"):
        tracker = ct.ConceptTracker(
            ct.TabularPlayers(baselines="zero"),
            ct.ProbeSet(x),
            log_dir=tmp_path,
            schedule=ct.every(1),
            readings=ReadingsConfig(spectrum=300),
            budget=BudgetConfig(max_overhead=0.5, total_steps=3, sync=True),
        )
    weights = [p.detach().clone() for p in model.parameters()]
    with tracker, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a budget skip depends on the load
        summaries = [tracker.step(model, step) for step in range(4)]
    tracked = [s for s in summaries if s is not None]
    assert tracked and all(set(s) <= {t for t in s if t.startswith("spectrum/")} for s in tracked)
    assert all(0.0 <= s["spectrum/simple_share"] <= 1.0 for s in tracked)
    assert spectrum_path(tmp_path, tracked[0].step).is_file() and list_steps(tmp_path) == []
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_tail_extrapolates_the_energy_line():
    """Mean square effects exactly on a line in log scale at the fit orders: the tail is
    ``TAIL_FACTOR * C(n, m) * e(m) / tau`` above the blocks' reach (up to 2u), zero below; a fit
    order without energy (a sparse function) gives no tail."""
    n, u, tau = 12, 6, 0.3
    orders = torch.arange(3, u + 1, dtype=torch.float64)
    count = torch.tensor([[[20.0, 15.0, 6.0, 1.0], [20.0, 15.0, 6.0, 1.0]]])  # [B, J, O]
    square = torch.exp(-2.0 + 0.7 * orders)
    fit = sp.TailFit(orders, count * square, count)
    known = [0] * (n + 1)
    known[8] = 5
    out = sp.tail_strength(fit, 0, None, torch.tensor(tau, dtype=torch.float64), n, u, known)
    expected = torch.zeros(n + 1, dtype=torch.float64)
    for m in range(u + 1, n + 1):
        expected[m] = sp.TAIL_FACTOR * (math.comb(n, m) - known[m]) * math.exp(-2.0 + 0.7 * m) / tau
    assert torch.allclose(out, expected, rtol=1e-9)
    reps = sp.tail_strength(fit, 0, torch.tensor([[0, 1], [1, 1]]), torch.tensor(tau, dtype=torch.float64), n, u, known)
    assert torch.allclose(reps, expected.expand(2, -1), rtol=1e-9)
    short = sp.tail_strength(fit, 0, None, torch.tensor(tau, dtype=torch.float64), 20, u, [0] * 21)
    assert short[u + 1 : 2 * u + 1].gt(0).all() and short[2 * u + 1 :].eq(0).all()
    sparse = sp.TailFit(orders, count * square * (orders != 5), count)
    assert sp.tail_strength(sparse, 0, None, torch.tensor(tau, dtype=torch.float64), n, u, known).eq(0).all()


def test_tail_trusts_the_orders_the_blocks_agree_on():
    """MIN_BLOCKS blocks agree on the energy line at orders 4-6 and disagree a hundredfold at
    order 3, which holds most coalitions. The fit weighs each order by the inverse spread of its
    mean square over the blocks, so the tail follows the line. With two blocks that spread is
    not trusted and the coalitions seen weigh: order 3's mean pulls the line off."""
    n, u, tau = 12, 6, 0.3
    j = sp.MIN_BLOCKS
    orders = torch.arange(3, u + 1, dtype=torch.float64)
    count = torch.tensor([20.0, 15.0, 6.0, 1.0]).expand(1, j, -1)
    square = torch.exp(-2.0 + 0.7 * orders).expand(1, j, -1).clone()
    square[0, 0::2, 0] *= 10.0
    square[0, 1::2, 0] *= 0.1
    fit = sp.TailFit(orders, count * square, count)
    out = sp.tail_strength(fit, 0, None, torch.tensor(tau, dtype=torch.float64), n, u, [0] * (n + 1))
    line = torch.tensor(
        [sp.TAIL_FACTOR * math.comb(n, m) * math.exp(-2.0 + 0.7 * m) / tau for m in range(u + 1, n + 1)],
        dtype=torch.float64,
    )
    assert torch.allclose(out[u + 1 :], line, rtol=1e-3)
    two = sp.TailFit(orders, fit.energy[:, :2], fit.count[:, :2])
    out = sp.tail_strength(two, 0, None, torch.tensor(tau, dtype=torch.float64), n, u, [0] * (n + 1))
    assert ((out[u + 1 :] - line).abs() > 0.5 * line).all()


def test_a_dense_residual_goes_to_the_blocks():
    """Every player of a dense function takes part in high-order effects, more than one
    candidate lattice holds: no candidate group is evaluated, the forwards go to at least
    MIN_BLOCKS random blocks. A sparse parity (five influential players) still gets its group."""
    n = 20
    w = torch.linspace(0.5, 1.5, n, dtype=torch.float64)

    def values(f):  # the oracle takes a [B, M, n] batch or a list of B [M_b, n] groups
        return lambda c: f(c) if isinstance(c, torch.Tensor) else [f(x) for x in c]

    def dense(coalitions):
        return torch.sin(2.0 * (coalitions.to(torch.float64) * w).sum(-1))

    plan = sp.plan_spectrum(n, 10485, 11)
    est = sp.estimate_spectrum(values(dense), 2, plan, 10485, generator=torch.Generator().manual_seed(0), resamples=10)
    assert est.candidates == 0
    assert est.blocks >= sp.MIN_BLOCKS and est.forwards <= 10485
    support = [1, 6, 11, 15, 18]

    def parity(coalitions):
        return ((coalitions[..., support]).sum(-1) % 2).to(torch.float64)

    est = sp.estimate_spectrum(values(parity), 2, plan, 10485, generator=torch.Generator().manual_seed(0), resamples=10)
    assert est.candidates == len(support)


class Offset(nn.Module):
    """Two float32 logits: ``[offset + scale * sum_i tanh(x_i) w_i, 0]``; additive in the players."""

    def __init__(self, offset: float, scale: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.offset, self.scale = nn.Linear(32, 1), offset, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.offset + self.scale * self.lin(torch.tanh(x))
        return torch.cat([z, torch.zeros_like(z)], -1)


@pytest.mark.parametrize(("offset", "scale"), [(0.0, 1.0), (2.0, 1e-3)])
def test_rounding_noise_gets_no_tail(offset, scale):
    """A float32 model additive in its 32 players: its effects above order 1 are rounding noise,
    which grows with the order of the Moebius sum. Counted, that noise would extrapolate to a
    large tail; it is far below the salience threshold (first case), or, where every effect is
    tiny next to the values as in a model at initialization (second case), near the threshold
    but below the rounding floor. Either way none of it becomes high-order strength."""
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    out = ct.order_spectrum(
        Offset(offset, scale),
        x,
        ct.TabularPlayers(baselines="zero"),
        target=0,
        forwards_per_probe=2000,
        simple_max=3,
        complex_min=6,
    )
    assert out.tail is not None and out.tail.abs().max().item() == 0.0
    assert out.overall["simple_share"][0] > 1 - 1e-6
