"""Learning dynamics: detours, flips, forgetting, emergence and phases on constructed series."""

import json
import math

import pytest
import torch

from concept_tracker.config import ReadingsConfig
from concept_tracker.metrics.dynamics import (
    Trajectory,
    detour_ratio,
    emergence_steps,
    forgotten,
    high_order_strength,
    loss_gap_step,
    phase_boundary,
    scale_free_detour_ratio,
    sign_flips,
    smooth,
    unit_effects,
)


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def trajectory(series: torch.Tensor, steps=None, readings: ReadingsConfig | None = None) -> Trajectory:
    traj = Trajectory(readings)
    for step, effects in zip(steps or range(series.shape[0]), series):
        traj.append(step, effects)
    return traj


def test_straight_path_has_detour_one_at_every_order():
    start = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direction = torch.ones(2, 8, dtype=torch.float64)
    series = torch.stack([start + t * direction for t in range(5)])
    torch.testing.assert_close(detour_ratio(series), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(trajectory(series).detour_ratio(), torch.ones(4, dtype=torch.float64))


def test_out_and_back_has_detour_three():
    d = f64([[1, -2, 3, 0.5]])
    series = torch.stack([torch.zeros_like(d), 2 * d, d])
    torch.testing.assert_close(detour_ratio(series), f64([3, 3, 3]))
    assert trajectory(series).detour_ratio({1, 2}) == pytest.approx(3.0)


def test_detour_pools_a_set_of_orders_and_marks_no_displacement():
    # Order 1 straight (P = D = 2); order 2 out to 2 and back to 1 (P = 3, D = 1).
    series = f64([[[0, 0, 0, 0]], [[0, 1, 1, 2]], [[0, 1, 1, 1]]])
    out = detour_ratio(series)
    assert math.isnan(out[0]) and out[1] == 1 and out[2] == 3
    assert detour_ratio(series, [1, 2]) == pytest.approx(5 / 3)
    assert math.isnan(detour_ratio(series, [0])) and math.isnan(detour_ratio(series, []))
    traj = trajectory(series)
    assert traj.bands.simple == () and traj.bands.complex == (2,)
    assert traj.detour_ratio(traj.bands.complex) == 3
    with pytest.raises(ValueError, match="orders"):
        detour_ratio(series, [3])


def test_unit_effects_by_hand():
    # Sample 0: |I| over the non-empty sets sums to 4; sample 1 has no effect at all.
    series = f64([[[5, 1, -1, 2], [3, 0, 0, 0]]])
    torch.testing.assert_close(unit_effects(series), f64([[[0, 0.25, -0.25, 0.5], [0, 0, 0, 0]]]))
    # Kinds pooled: one total over AND and OR of a sample.
    pooled = f64([[[[0, 1, 0, 0], [0, 0, 0, 3]]]])
    torch.testing.assert_close(unit_effects(pooled), f64([[[[0, 0.25, 0, 0], [0, 0, 0, 0.75]]]]))


def test_scale_free_detour_ignores_a_growing_output_scale():
    gen = torch.Generator().manual_seed(3)
    series = torch.randn(7, 4, 2, 16, generator=gen, dtype=torch.float64)  # [T, B, K, 2**4]
    growth = torch.logspace(0, 3, 7, dtype=torch.float64).view(7, 1, 1, 1)  # x1000 over the run
    per_sample = torch.rand(1, 4, 1, 1, generator=gen, dtype=torch.float64) + 0.5
    scaled = series * growth * per_sample
    torch.testing.assert_close(scale_free_detour_ratio(scaled), scale_free_detour_ratio(series), equal_nan=True)
    complex_band = [3, 4]
    assert scale_free_detour_ratio(scaled, complex_band) == pytest.approx(scale_free_detour_ratio(series, complex_band))
    # The plain ratio follows the scale: the late, large steps dominate its path.
    assert abs(detour_ratio(scaled, complex_band) - detour_ratio(series, complex_band)) > 0.1
    # Brute force: the ratio of the unit effects, path over displacement, summed per order.
    unit = series.clone()
    unit[..., 0] = 0
    unit = unit / unit.abs().sum((-2, -1), keepdim=True)
    orders = torch.tensor([bin(s).count("1") for s in range(16)])
    path = (unit[1:] - unit[:-1]).abs().sum((0, 1, 2))
    disp = (unit[-1] - unit[0]).abs().sum((0, 1))
    mask = (orders == 3) | (orders == 4)
    assert scale_free_detour_ratio(series, complex_band) == pytest.approx(float(path[mask].sum() / disp[mask].sum()))


def test_trajectory_scale_free_detour_matches_the_pure_function_and_survives_a_restore():
    gen = torch.Generator().manual_seed(4)
    series = torch.randn(6, 3, 16, generator=gen, dtype=torch.float64) * torch.logspace(0, 2, 6).view(6, 1, 1)
    traj = trajectory(series[:3])
    resumed = Trajectory()
    resumed.load_state_dict(traj.state_dict())
    for step, effects in zip(range(3, 6), series[3:]):
        traj.append(step, effects)
        resumed.append(step, effects)
    torch.testing.assert_close(traj.scale_free_detour_ratio(), scale_free_detour_ratio(series), equal_nan=True)
    torch.testing.assert_close(resumed.scale_free_detour_ratio(), scale_free_detour_ratio(series), equal_nan=True)
    assert traj.scale_free_detour_ratio([3, 4]) == pytest.approx(scale_free_detour_ratio(series, [3, 4]))
    # A state saved before the unit effects were kept: the scale-free ratio is unknown, not wrong.
    old = {k: v for k, v in trajectory(series[:3]).state_dict().items() if not k.startswith("unit_")}
    legacy = Trajectory()
    legacy.load_state_dict(old)
    legacy.append(3, series[3])
    assert math.isnan(legacy.scale_free_detour_ratio([3, 4]))
    assert legacy.detour_ratio([3, 4]) == pytest.approx(detour_ratio(series[:4], [3, 4]))


def test_sign_flips_count_changes_while_salient():
    # {0, 1} (index 3) goes +, -, + while salient next to a steady {0} = 4: two flips at order 2.
    series = f64([[[0, 4, 0, 1]], [[0, 4, 0, -1]], [[0, 4, 0, 1]]])
    assert sign_flips(series).tolist() == [0, 0, 2]
    assert trajectory(series).sign_flips().tolist() == [0, 0, 2]


def test_sign_flips_ignore_jitter_below_threshold_and_bridge_gaps():
    # {1} jitters around 0 below tau = 0.2: no flip. {0, 1}: +1, ~0, -1: one flip across the gap.
    series = f64([[[0, 4, 0.01, 1]], [[0, 4, -0.01, 0.001]], [[0, 4, 0.01, -1]]])
    assert sign_flips(series).tolist() == [0, 0, 1]


def test_forgotten_concepts():
    # {1} is salient then drops below tau for good; {0, 1} drops and comes back.
    series = f64([[[0, 4, 2, 1]], [[0, 4, 0.1, 0.0]], [[0, 4, 0.1, 1]]])
    assert forgotten(series).tolist() == [0, 1, 0]
    assert trajectory(series).forgotten().tolist() == [0, 1, 0]


def test_emergence_steps_on_constructed_series():
    # n = 2, steps 0, 5, 10, 20; {0} = 4 always salient (tau = 0.2).
    # {1}: salient at 5, off at 10, on at 20 -> 20. {0,1}: salient from 5 on -> 5.
    steps = [0, 5, 10, 20]
    series = f64([[[9, 4, 0, 0]], [[9, 4, 1, 1]], [[9, 4, 0, 1]], [[9, 4, 1, 1]]])
    expected = [[-1, 0, 20, 5]]
    assert emergence_steps(series, steps).tolist() == expected
    assert trajectory(series, steps).emergence_steps().tolist() == expected
    # A concept salient earlier but not now has no emergence step.
    faded = torch.cat([series, f64([[[9, 4, 0, 0]]])])
    assert emergence_steps(faded, steps + [30]).tolist() == [[-1, 0, -1, -1]]


def test_trajectory_agrees_with_pure_functions_on_random_series():
    gen = torch.Generator().manual_seed(1)
    series = torch.randn(7, 3, 16, generator=gen, dtype=torch.float64).cumsum(0)
    steps = [0, 3, 4, 10, 11, 50, 51]
    traj = trajectory(series, steps, ReadingsConfig(ratio=0.1))
    torch.testing.assert_close(traj.detour_ratio(), detour_ratio(series))
    assert traj.detour_ratio([2, 3]) == pytest.approx(detour_ratio(series, [2, 3]))
    assert torch.equal(traj.sign_flips(), sign_flips(series, ratio=0.1))
    assert torch.equal(traj.forgotten(), forgotten(series, ratio=0.1))
    assert torch.equal(traj.emergence_steps(), emergence_steps(series, steps, ratio=0.1))
    hsteps, h = traj.high_order_strength()
    assert hsteps.tolist() == steps
    torch.testing.assert_close(h, f64([high_order_strength(e, ratio=0.1) for e in series]))
    assert traj.sign_flips().sum() > 0


def test_pooled_kinds_series():
    # [T, B, K, 2**n]: OR effect 10 sets a pooled threshold 0.5 that hides the AND flip of 0.3.
    series = f64([[[[0, 0.3, 0, 0], [0, 10, 0, 0]]], [[[0, -0.3, 0, 0], [0, 10, 0, 0]]]])
    assert sign_flips(series).tolist() == [0, 0, 0]
    assert trajectory(series).emergence_steps().shape == (1, 2, 4)


def test_state_dict_round_trip_mid_series():
    gen = torch.Generator().manual_seed(2)
    series = torch.randn(8, 2, 8, generator=gen, dtype=torch.float64).cumsum(0)
    steps = [10 * t for t in range(8)]
    readings = ReadingsConfig(ratio=0.1, simple_max=1, complex_min=3)
    unbroken = trajectory(series, steps, readings)
    first = trajectory(series[:4], steps[:4], readings)
    state = first.state_dict()
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    assert json.loads(json.dumps(plain)) == plain
    resumed = Trajectory()
    resumed.load_state_dict(state)
    assert resumed.readings == readings
    for step, effects in zip(steps[4:], series[4:]):
        resumed.append(step, effects)
    torch.testing.assert_close(resumed.detour_ratio(), unbroken.detour_ratio())
    assert torch.equal(resumed.sign_flips(), unbroken.sign_flips())
    assert torch.equal(resumed.forgotten(), unbroken.forgotten())
    assert torch.equal(resumed.emergence_steps(), unbroken.emergence_steps())
    for a, b in zip(resumed.high_order_strength(), unbroken.high_order_strength()):
        torch.testing.assert_close(a, b)
    empty = Trajectory()
    empty.load_state_dict(Trajectory(ReadingsConfig(ratio=0.2)).state_dict())
    assert empty.readings.ratio == 0.2 and empty.steps == []


def test_append_rejects_bad_steps_and_shapes():
    traj = Trajectory()
    traj.append(5, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="step=5"):
        traj.append(5, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="step"):
        traj.append(6.5, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="effects"):
        traj.append(6, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="effects"):
        traj.append(6, torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match="effects"):
        traj.append(6, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="append"):
        Trajectory().detour_ratio()
    with pytest.raises(ValueError, match="state"):
        Trajectory().load_state_dict({"steps": []})


def test_phase_boundary_on_u_shaped_and_monotone_series():
    steps = [10 * t for t in range(13)]
    u_shape = [(t - 6) ** 2 + 1.0 for t in range(13)]
    assert phase_boundary(steps, u_shape) == 60
    assert phase_boundary(steps, [13.0 - t for t in range(13)]) is None
    assert phase_boundary(steps, [1.0 + t for t in range(13)]) is None
    # A small bump in the falling phase (rise < 10% of the drop so far) is not a boundary.
    bumpy = [20, 15, 10, 10.1, 10.2, 10.3, 6, 3, 2, 4, 7, 11, 15]
    assert phase_boundary(steps, bumpy, window=1) == 80


def test_smooth_is_a_centred_moving_average():
    torch.testing.assert_close(smooth(f64([1, 2, 6, 3])), f64([1.5, 3, 11 / 3, 4.5]))
    with pytest.raises(ValueError, match="window"):
        smooth(f64([1, 2]), window=2)


def test_high_order_strength_counts_salient_medium_and_complex_concepts():
    # n = 3: simple = order 1, complex = orders 2-3 (no medium). Sample 0: {0,1} = -2, {0,1,2} = 1
    # and a non-salient {1,2} = 0.1 (tau = 0.05 * 4); sample 1: nothing of high order.
    effects = f64([[0, 4, 0, -2, 0, 0, 0.1, 1], [0, 1, 1, 0, 1, 0, 0, 0]])
    assert high_order_strength(effects) == pytest.approx(3 / 2)
    # Order 2 moved to the simple band: only {0,1,2} is left.
    assert high_order_strength(effects, simple_max=2, complex_min=3) == pytest.approx(1 / 2)


def test_trajectory_phase_boundary_and_loss_gap():
    # n = 3, order-1 concept fixed at 10, order-3 concept |t - 6| + 1: H is U-shaped, lowest at 6.
    traj = Trajectory()
    for t in range(13):
        effects = torch.zeros(1, 8, dtype=torch.float64)
        effects[0, 1], effects[0, 7] = 10.0, abs(t - 6) + 1.0
        traj.append(100 * t, effects)
    assert traj.phase_boundary() == 600
    # Gap = eval - train: 1.0, 0.8, 0.6, 0.5, 0.6, ... smoothed lowest at step 300, then rises.
    gaps = [1.0, 0.8, 0.6, 0.5, 0.6, 0.8, 1.0, 1.2]
    train = {100 * t: 1.0 for t in range(8)}
    evals = [(100 * t, 1.0 + g) for t, g in enumerate(gaps)]
    assert loss_gap_step(evals, train) == 300
    assert traj.phase_boundary(evals, train) == (600, 300)
    assert loss_gap_step({0: 1.0, 1: 0.9}, {0: 0.5, 1: 0.5}) is None
    with pytest.raises(ValueError, match="train_losses"):
        traj.phase_boundary(evals)


def test_the_old_loose_keywords_still_work_with_a_future_warning():
    with pytest.warns(FutureWarning, match=r"ratio= -> readings=ReadingsConfig\(ratio=...\)"):
        traj = Trajectory(ratio=0.2, simple_max=1)
    assert traj.readings == ReadingsConfig(ratio=0.2, simple_max=1)
    with pytest.raises(TypeError, match="unexpected keyword argument.*rate"):
        Trajectory(rate=0.2)
    with pytest.raises(ValueError, match="ratio=2"):
        Trajectory(ReadingsConfig(ratio=2))
