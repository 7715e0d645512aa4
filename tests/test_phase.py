"""Phase boundary on the normalized order distribution: share series with known valleys."""

import math

import pytest
import torch

from concept_tracker import compute_interactions, order_profile
from concept_tracker.metrics.dynamics import Trajectory, high_order_strength
from concept_tracker.metrics.phase import MIN_RISE, high_order_share, overfit_stop_step, phase_boundary, smooth
from concept_tracker.players import TabularPlayers


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_high_order_share_by_hand():
    # n = 4, simple_max = 1: orders 2..4 are "high"; the empty set (index 0) never counts.
    strength = f64([[9.0, 3.0, 1.0, 0.5, 0.5], [0.0, 1.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    share = high_order_share(strength, simple_max=1)
    torch.testing.assert_close(share[:2], f64([2.0 / 5.0, 0.0]))
    assert math.isnan(share[2])  # no salient strength: no order distribution
    torch.testing.assert_close(high_order_share(strength[:1], simple_max=2), f64([1.0 / 5.0]))
    assert high_order_share(strength[0], simple_max=0).item() == pytest.approx(1.0)
    assert high_order_share(strength[0], simple_max=4).item() == 0.0
    with pytest.raises(ValueError, match="simple_max=5"):
        high_order_share(strength, simple_max=5)
    with pytest.raises(ValueError, match="strength_by_order"):
        high_order_share([1.0, 2.0], simple_max=0)


def test_high_order_share_of_an_order_profile_matches_its_shares():
    # Independent route: the profile's per-order shares, summed over the orders above simple_max.
    torch.manual_seed(0)
    x = torch.randn(6, 5)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    res = compute_interactions(model, x, TabularPlayers(baselines="zero"), kind="and")
    profile = order_profile(res)
    expected = profile.share[2:].sum()
    torch.testing.assert_close(high_order_share(profile.strength, simple_max=1), expected)


def test_known_valley_is_found():
    steps = [10 * t for t in range(13)]
    share = [0.6 - 0.05 * t if t <= 7 else 0.25 + 0.04 * (t - 7) for t in range(13)]
    assert phase_boundary(steps, share) == 70
    # Noise of +-0.03 on alternate steps: the raw series zigzags (no two rises in a row), the
    # smoothed one keeps the valley.
    noisy = [v + (0.03 if t % 2 else -0.03) for t, v in enumerate(share)]
    assert phase_boundary(steps, noisy, window=1) is None
    assert phase_boundary(steps, noisy) == 70
    assert phase_boundary(steps, torch.tensor(share)) == 70


def test_monotone_and_flat_series_have_no_boundary():
    steps = list(range(10))
    assert phase_boundary(steps, [0.9 - 0.05 * t for t in range(10)]) is None
    assert phase_boundary(steps, [0.1 + 0.05 * t for t in range(10)]) is None
    assert phase_boundary(steps, [0.3] * 10) is None
    assert phase_boundary([], []) is None
    assert phase_boundary([0, 1], [math.nan, math.nan]) is None


def test_a_rise_that_is_not_sustained_is_not_a_boundary():
    steps = list(range(9))
    # Falls, one step up, then keeps falling: min_rises=2 consecutive rises are never met.
    zigzag = [0.8, 0.6, 0.4, 0.45, 0.3, 0.2, 0.1, 0.05, 0.01]
    assert phase_boundary(steps, zigzag, window=1) is None
    assert phase_boundary(steps, zigzag, window=1, min_rises=1) == 2
    # Two rises worth 5% of the drop before them are under the 10% rise_fraction.
    small = [0.8, 0.6, 0.4, 0.41, 0.42, 0.3, 0.2, 0.1, 0.05]
    assert phase_boundary(steps, small, window=1) is None
    assert phase_boundary(steps, small, window=1, rise_fraction=0.01) == 2


def test_steps_without_concepts_are_left_out():
    steps = [0, 10, 20, 30, 40, 50, 60, 70]
    share = [math.nan, 0.5, 0.4, 0.3, 0.2, 0.3, 0.4, 0.5]
    assert phase_boundary(steps, share, window=1) == 40
    # A NaN inside the series: the valley keeps its own step number.
    share = [0.5, 0.4, 0.3, math.nan, 0.2, 0.3, 0.4, 0.5]
    assert phase_boundary(steps, share, window=1) == 40


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="steps has 2 entries but high_share has 3"):
        phase_boundary([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="high_share contains inf"):
        phase_boundary([0, 1], [0.1, math.inf])
    with pytest.raises(ValueError, match="window"):
        phase_boundary([0, 1], [0.1, 0.2], window=2)
    with pytest.raises(ValueError, match="min_rises"):
        phase_boundary([0, 1], [0.1, 0.2], min_rises=0)


def test_a_rise_below_min_rise_is_not_a_boundary():
    steps = list(range(12))
    # A dip to step 5, then a sustained rise of 0.2 in share units: a boundary at the dip.
    dip = [0.6 - 0.04 * t if t <= 5 else 0.4 + 0.05 * (t - 5) for t in range(12)]
    assert phase_boundary(steps, dip, min_rise=0.1) == 5
    # Wiggles of the size the callback used to stop on: a fall of 0.0009, rises of 0.0012.
    wiggle = [0.3, 0.2997, 0.2994, 0.2991, 0.3003, 0.3015, 0.3015, 0.3015, 0.3015, 0.3015, 0.3015, 0.3015]
    assert phase_boundary(steps, wiggle, window=1, min_rise=0.0) == 3
    assert phase_boundary(steps, wiggle, window=1, min_rise=0.01) is None
    assert phase_boundary(steps, wiggle, window=1) == (3 if MIN_RISE <= 0.0024 else None)
    with pytest.raises(ValueError, match="min_rise=-0.1"):
        phase_boundary(steps, dip, min_rise=-0.1)


def test_stop_step_is_read_online_with_patience():
    """Hand-computed on prefixes (window 3, the last point smoothed over the two available):
    up to step 4 the smoothed prefix still falls; at step 5 it rises 0.2667 -> 0.3 -> 0.35
    (+0.083); at step 6, 0.2667 -> 0.3 -> 0.4 -> 0.45 (+0.183)."""
    steps = list(range(8))
    share = [0.5, 0.4, 0.3, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert overfit_stop_step(steps, share, patience=0, min_rise=0.05) == 5
    assert overfit_stop_step(steps, share, patience=1, min_rise=0.05) == 6
    assert overfit_stop_step(steps, share, patience=1, min_rise=0.1) == 7  # found at 6 only
    assert overfit_stop_step(steps, share, patience=2, min_rise=0.1) is None  # too few steps
    assert overfit_stop_step(steps, share, patience=0, min_rise=0.5) is None
    # Hindsight on the whole series finds the dip; online the rule fires later, and never
    # looks past the step it fires at: the prefix ending there gives the same answer.
    assert phase_boundary(steps, share, min_rise=0.05) == 3
    for patience in (0, 1, 2):
        stop = overfit_stop_step(steps, share, patience=patience, min_rise=0.05)
        assert stop is not None
        assert overfit_stop_step(steps[: stop + 1], share[: stop + 1], patience=patience, min_rise=0.05) == stop
    # The boundary must show on consecutive prefixes: a dip that vanishes resets the count.
    vanishing = [0.5, 0.4, 0.3, 0.2, 0.3, 0.4, 0.1, 0.05, 0.0, 0.0, 0.0]
    assert overfit_stop_step(list(range(11)), vanishing, patience=0, min_rise=0.05) == 5
    assert overfit_stop_step(list(range(11)), vanishing, patience=1, min_rise=0.05) is None
    with pytest.raises(ValueError, match="patience"):
        overfit_stop_step(steps, share, patience=-1)
    with pytest.raises(ValueError, match="steps has 7 entries"):
        overfit_stop_step(steps[:-1], share)


def share_dip_series(num_steps: int = 13, dip_at: int = 6) -> list[torch.Tensor]:
    """n = 3 effects whose absolute strength grows threefold per step while the share of
    orders 2-3 dips to its lowest at ``dip_at``: order 1 gets ``(1 - s) * 3**t`` and the
    order-3 concept ``s * 3**t`` with ``s = 0.2 + 0.03 * |t - dip_at|``."""
    out = []
    for t in range(num_steps):
        s, scale = 0.2 + 0.03 * abs(t - dip_at), 3.0**t
        effects = torch.zeros(2, 8, dtype=torch.float64)
        effects[:, 1] = (1 - s) * scale  # {0}
        effects[:, 7] = s * scale  # {0, 1, 2}
        out.append(effects)
    return out


def test_boundary_is_read_off_the_share_not_the_growing_absolute_strength():
    traj = Trajectory()
    series = share_dip_series()
    for t, effects in enumerate(series):
        traj.append(100 * t, effects)
    steps, h = traj.high_order_strength()
    assert bool((h.diff() > 0).all())  # absolute H(t) rises at every step
    assert phase_boundary(steps.tolist(), h) is None  # so a rule on H would find nothing
    _, share = traj.high_order_share()
    torch.testing.assert_close(share, f64([0.2 + 0.03 * abs(t - 6) for t in range(13)]))
    assert traj.phase_boundary() == 600
    torch.testing.assert_close(h, f64([high_order_strength(e) for e in series]))


def test_trajectory_share_survives_state_dict_and_old_states_load():
    series = share_dip_series()
    unbroken = Trajectory()
    first = Trajectory()
    for t, effects in enumerate(series):
        unbroken.append(100 * t, effects)
        if t < 8:
            first.append(100 * t, effects)
    resumed = Trajectory()
    resumed.load_state_dict(first.state_dict())
    for t, effects in enumerate(series[8:], start=8):
        resumed.append(100 * t, effects)
    torch.testing.assert_close(resumed.high_order_share()[1], unbroken.high_order_share()[1])
    assert resumed.phase_boundary() == 600
    # A state saved before the share was kept: the old steps have no share and are skipped.
    old = first.state_dict()
    del old["high_order_share"]
    legacy = Trajectory()
    legacy.load_state_dict(old)
    assert bool(legacy.high_order_share()[1].isnan().all())
    assert legacy.phase_boundary() is None


def test_smooth_is_shared_with_the_loss_gap_rule():
    torch.testing.assert_close(smooth(f64([1, 2, 6, 3])), f64([1.5, 3, 11 / 3, 4.5]))


class _Planted(torch.nn.Module):
    """Log-odds ``b * x0 + a * x0 x1 x2 x3``: on all-ones probes with zero baselines the AND
    effects are I({0}) = b and I({0,1,2,3}) = a, so share_H = a / (a + b) and H = a."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(1.0))
        self.b = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.b * x[:, 0] + self.a * x.prod(1)
        return torch.stack([-z / 2, z / 2], 1)


def test_the_tracker_reads_the_boundary_off_the_share_not_absolute_strength(tmp_path):
    from concept_tracker import ConceptTracker, every
    from concept_tracker.config import BudgetConfig, OutputConfig
    from concept_tracker.probes import ProbeSet
    from concept_tracker.writers import tags

    # H(t) = a doubles at every step (the output scale grows), while the share dips to its
    # lowest (smoothed) at step 3 and then rises for good.
    share = [0.5, 0.3, 0.2, 0.1, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9]
    model = _Planted()
    logged = {}
    with ConceptTracker(
        TabularPlayers(baselines="zero"),
        ProbeSet(torch.ones(2, 4), torch.tensor([1, 1])),
        log_dir=tmp_path,
        schedule=every(1),
        output=OutputConfig(figures=False),
        strict=True,
        budget=BudgetConfig(sync=True),  # step() returns each step's readings
    ) as tracker:
        for step, s in enumerate(share):
            with torch.no_grad():
                model.a.fill_(2.0**step)
                model.b.fill_(2.0**step * (1 - s) / s)
            logged[step] = tracker.step(model, step)
    strength = [logged[t][tags.HIGH_ORDER_STRENGTH] for t in logged]
    assert strength == pytest.approx([2.0**t for t in range(10)])  # monotone: no valley in H(t)
    assert phase_boundary(list(logged), strength) is None
    assert [logged[t][tags.HIGH_ORDER_SHARE] for t in logged] == pytest.approx(share)
    # Found once two smoothed rises follow step 3 (the last point is smoothed over the two
    # available), then reported at every later step.
    assert [logged[t].get(tags.PHASE_BOUNDARY) for t in logged] == [None] * 5 + [3.0] * 5
