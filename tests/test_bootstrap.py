"""Bootstrap intervals over probe samples: coverage, determinism, agreement with the readings."""

import math

import pytest
import torch

from concept_tracker import order_profile
from concept_tracker.dynamics import Trajectory, detour_ratio
from concept_tracker.interactions import Interactions
from concept_tracker.metrics import band_summary, train_test_similarity
from concept_tracker.metrics.bootstrap import (
    band_intervals,
    bootstrap_interval,
    bootstrap_replicates,
    detour_intervals,
    per_sample_profile,
    resample_indices,
    train_test_similarity_intervals,
)
from concept_tracker.metrics.phase import high_order_share


def and_or_interactions(num_samples: int, gen: torch.Generator) -> Interactions:
    """AND and OR effects over n = 5 players with heavy-tailed magnitudes (so salience varies
    across samples and orders), classes ``arange(B) % 3``. The readings depend on the effects
    only, so no model is needed."""
    shape = (num_samples, 32)
    scale = torch.rand(shape, generator=gen, dtype=torch.float64) ** 3
    and_effects = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    or_effects = torch.randn(shape, generator=gen, dtype=torch.float64) * scale.flip(0)
    outputs = torch.zeros(shape, dtype=torch.float64)
    targets = torch.arange(num_samples) % 3
    return Interactions(outputs, and_effects, or_effects, n=5, kind="and_or", targets=targets)


@pytest.fixture(scope="module")
def interactions():
    """Training (12 samples) and held-out (8 samples) interactions."""
    gen = torch.Generator().manual_seed(3)
    return and_or_interactions(12, gen), and_or_interactions(8, gen)


def test_coverage_of_a_known_mean():
    # 200 data sets of 32 normal samples with mean 1.5 (the columns): a 95% interval should
    # contain 1.5 in about 95% of them. Binomial sd for 200 trials is 1.5%; the percentile
    # bootstrap under-covers slightly at B = 32, so accept 3 sd around 0.95.
    gen = torch.Generator().manual_seed(0)
    data = 1.5 + torch.randn(32, 200, generator=gen, dtype=torch.float64)
    low, high = bootstrap_interval(data)
    coverage = ((low <= 1.5) & (1.5 <= high)).double().mean().item()
    assert 0.95 - 3 * 0.0154 <= coverage <= 0.95 + 3 * 0.0154


def test_replicates_are_the_statistic_of_each_resample():
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    index = resample_indices(7, 5, seed=4)
    assert index.shape == (5, 7) and int(index.min()) >= 0 and int(index.max()) < 7
    reps = bootstrap_replicates(data, lambda x: x.amax(1), resamples=5, seed=4)
    torch.testing.assert_close(reps, torch.stack([data[i].amax(0) for i in index]))
    means = bootstrap_replicates(data, resamples=5, seed=4)
    torch.testing.assert_close(means, torch.stack([data[i].mean(0) for i in index]))
    # The bounds are the 2.5% and 97.5% points of the replicates (numpy's linear rule).
    low, high = bootstrap_interval(data, resamples=5, seed=4)
    sorted_means = means.sort(0).values  # position 0.025 * 4 = 0.1 between the 1st and 2nd
    torch.testing.assert_close(low, 0.9 * sorted_means[0] + 0.1 * sorted_means[1])
    torch.testing.assert_close(high, 0.1 * sorted_means[3] + 0.9 * sorted_means[4])


def test_seeded_and_leaves_the_global_rng_alone():
    data = torch.arange(10, dtype=torch.float64)
    state = torch.get_rng_state()
    first = bootstrap_interval(data, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = bootstrap_interval(data, seed=7)
    other = bootstrap_interval(data, seed=8)
    assert torch.equal(first.low, again.low) and torch.equal(first.high, again.high)
    assert not (torch.equal(first.low, other.low) and torch.equal(first.high, other.high))


def test_interval_shape_level_and_nan_replicates():
    gen = torch.Generator().manual_seed(2)
    data = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    low, high = bootstrap_interval(data)
    assert low.shape == high.shape == (4,)
    assert bool((low < data.mean(0)).all() and (data.mean(0) < high).all())
    narrow = bootstrap_interval(data, level=0.5)
    assert bool((narrow.low > low).all() and (narrow.high < high).all())
    # A statistic undefined on some resamples: those are left out, not propagated.
    # Here 1 / (times sample 0 is drawn): NaN on about a third of the resamples, else 1, 1/2, ...
    flags = torch.tensor([1.0] + [0.0] * 9, dtype=torch.float64)
    inverse = lambda x: 1.0 / x.sum(1).where(x.sum(1) > 0, torch.nan)  # noqa: E731
    assert bool(bootstrap_replicates(flags, inverse).isnan().any())
    low, high = bootstrap_interval(flags, inverse)
    assert 0 < low < 1 and high == 1.0


def test_one_sample_has_no_interval_and_bad_options_are_named():
    low, high = bootstrap_interval(torch.tensor([[2.0, 3.0]]))
    assert bool(low.isnan().all() and high.isnan().all()) and low.shape == (2,)
    with pytest.raises(ValueError, match="per_sample"):
        bootstrap_interval(torch.zeros(0))
    with pytest.raises(ValueError, match="level=1.5"):
        bootstrap_interval(torch.ones(3), level=1.5)
    with pytest.raises(ValueError, match="resamples=0"):
        bootstrap_interval(torch.ones(3), resamples=0)
    with pytest.raises(ValueError, match="seed"):
        bootstrap_interval(torch.ones(3), seed=0.5)


def test_band_intervals_recompute_the_band_summary_on_each_resample(interactions):
    res, _ = interactions
    strength, count = per_sample_profile(res)
    profile = order_profile(res)
    torch.testing.assert_close(strength.mean(0), profile.strength)
    torch.testing.assert_close(count.mean(0), profile.count)
    # One resample: both bounds are that resample's readings, which band_summary gives on the
    # resampled interactions.
    for seed in range(3):
        index = resample_indices(res.num_samples, 1, seed=seed)[0]
        expected = band_summary(order_profile(res[index]), simple_max=1, complex_min=4)
        profile_r = order_profile(res[index])
        got = band_intervals(res, simple_max=1, complex_min=4, resamples=1, seed=seed)
        for name in ("simple_strength", "medium_strength", "complex_strength", "complex_ratio", "num_concepts"):
            assert got[name].low.item() == pytest.approx(getattr(expected, name))
            assert got[name].high.item() == pytest.approx(getattr(expected, name))
        assert got["simple_share"].low.item() == pytest.approx(profile_r.share[1].item())
        assert got["medium_share"].low.item() == pytest.approx(profile_r.share[2:4].sum().item())
        assert got["high_share"].low.item() == pytest.approx(high_order_share(profile_r.strength, 1).item())


def test_band_intervals_contain_the_logged_readings(interactions):
    res, _ = interactions
    point = band_summary(order_profile(res))
    got = band_intervals(res)
    for name in ("simple_strength", "complex_strength", "complex_ratio", "num_concepts"):
        assert got[name].low <= getattr(point, name) <= got[name].high
        assert got[name].low < got[name].high


def test_train_test_intervals(interactions):
    train, test = interactions
    point = train_test_similarity(train, None, test, None)
    got = train_test_similarity_intervals(train, test, simple_max=1, complex_min=4)
    assert got["by_order"].low.shape == (6,)
    assert bool((got["by_order"].low[1:] <= point[1:] + 1e-12).all())
    assert bool((point[1:] <= got["by_order"].high[1:] + 1e-12).all())
    for band, orders in (("simple", [1]), ("medium", [2, 3]), ("complex", [4, 5])):
        assert got[band].low <= point[orders].mean() <= got[band].high
    again = train_test_similarity_intervals(train, test, simple_max=1, complex_min=4)
    assert torch.equal(again["complex"].low, got["complex"].low)


def test_train_test_interval_collapses_when_resampling_changes_nothing(interactions):
    # Every sample of a class is the same: each resample has the same class means.
    train, test = interactions
    train_same, test_same = train[torch.zeros(6, dtype=torch.long)], test[torch.zeros(4, dtype=torch.long)]
    point = train_test_similarity(train_same, None, test_same, None)
    got = train_test_similarity_intervals(train_same, test_same)
    torch.testing.assert_close(got["by_order"].low, point)
    torch.testing.assert_close(got["by_order"].high, point)


def test_train_test_intervals_check_their_inputs(interactions):
    train, test = interactions
    with pytest.raises(ValueError, match="share no class"):
        train_test_similarity_intervals(train, test, torch.zeros(12), torch.ones(8))
    with pytest.raises(ValueError, match="test_res"):
        train_test_similarity_intervals(train, test.and_effects)


def test_detour_intervals_recompute_the_detour_ratio(interactions):
    res, _ = interactions
    gen = torch.Generator().manual_seed(5)
    series = torch.stack([res.and_effects + 0.3 * t * torch.randn(res.and_effects.shape, generator=gen, dtype=torch.float64) for t in range(4)])
    traj = Trajectory()
    for t, effects in enumerate(series):
        traj.append(t, effects)
    path, disp = traj.detour_terms()
    index = resample_indices(res.num_samples, 1, seed=2)[0]
    one = detour_intervals(path, disp, simple_max=1, complex_min=4, resamples=1, seed=2)
    torch.testing.assert_close(one["by_order"].low, detour_ratio(series[:, index]), equal_nan=True)
    assert one["complex"].low.item() == pytest.approx(detour_ratio(series[:, index], [4, 5]))
    assert one["medium"].high.item() == pytest.approx(detour_ratio(series[:, index], [2, 3]))
    got = detour_intervals(path, disp)
    point = traj.detour_ratio()
    assert bool((got["by_order"].low[1:] <= point[1:]).all() and (point[1:] <= got["by_order"].high[1:]).all())
    with pytest.raises(ValueError, match="displacement"):
        detour_intervals(path, disp[:3])


def test_train_test_intervals_do_not_depend_on_the_chunk_size(interactions, monkeypatch):
    import concept_tracker.metrics.bootstrap as bootstrap

    train, test = interactions
    whole = train_test_similarity_intervals(train, test, resamples=50)
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 7 * 64)  # 7 resamples per chunk
    chunked = train_test_similarity_intervals(train, test, resamples=50)
    for key in whole:
        torch.testing.assert_close(chunked[key].low, whole[key].low, equal_nan=True)
        torch.testing.assert_close(chunked[key].high, whole[key].high, equal_nan=True)
