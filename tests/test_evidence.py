"""The evidence study's statistics (benchmarks/evidence.py) on planted zoos whose taus are known."""

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evidence  # noqa: E402


def planted_zoo(gap_of, readings_of) -> list[dict]:
    """Every point of the grid for both datasets, with a gap and readings given per config."""
    models = []
    for dataset in evidence.TRAIN_SIZES:
        for values in itertools.product(*evidence.AXES.values()):
            config = dict(zip(evidence.AXES, values), dataset=dataset)
            readings = {name: 0.0 for name in evidence.ORIENTATION}
            readings.update(readings_of(config))
            models.append({"config": config, "gap_loss": gap_of(config), "test_error": gap_of(config),
                           "readings": readings, "phase_boundary": None, "loss_gap_step": None})
    return models


def level(config: dict, axis: str) -> int:
    return evidence.AXES[axis].index(config[axis])


def test_groups_differ_in_exactly_one_axis():
    models = planted_zoo(lambda c: 0.0, lambda c: {})
    for axis in evidence.AXES:
        groups = evidence.axis_groups(models, axis)
        assert len(groups) == 2 * 2 ** (len(evidence.AXES) - 1)
        for g in groups:
            a, b = (models[i]["config"] for i in g)
            assert [k for k in a if a[k] != b[k]] == [axis]


def test_granulated_tau_isolates_the_axis_that_moves_the_gap():
    # The gap grows with depth and, less, with width; "concepts" reads depth only, "margin"
    # (oriented with -1) reads width with the sign that predicts a larger gap.
    def gap(c):
        return 2.0 * level(c, "depth") + level(c, "width")

    def readings(c):
        return {"concepts": float(level(c, "depth")), "margin": -float(level(c, "width"))}

    models = planted_zoo(gap, readings)
    out = evidence.analyse(models, reps=20)
    assert out["granulated"]["depth"]["concepts"]["tau"] == pytest.approx(1.0)
    assert math.isnan(out["granulated"]["width"]["concepts"]["tau"])  # ties: no information
    assert out["granulated"]["width"]["margin"]["tau"] == pytest.approx(1.0)
    assert math.isnan(out["granulated"]["lr"]["margin"]["tau"])
    # Overall tau-b per dataset: 64 x 64 concordant pairs, 2 C(64, 2) ties in the reading and
    # 4 C(32, 2) in the gap out of C(128, 2) pairs: 4096 / sqrt(4096 * 6144) = sqrt(2 / 3).
    assert out["overall"]["concepts"]["tau"] == pytest.approx(math.sqrt(2 / 3), abs=1e-9)


def test_orientation_is_applied_before_the_tau():
    models = planted_zoo(lambda c: float(level(c, "lr")), lambda c: {"simple_share": float(level(c, "lr"))})
    out = evidence.analyse(models, reps=20)
    # simple_share is oriented with -1 a priori: a reading rising with the gap scores -1.
    assert out["granulated"]["lr"]["simple_share"]["tau"] == pytest.approx(-1.0)
    assert out["overall"]["simple_share"]["tau"] == pytest.approx(-1.0)


def test_bootstrap_interval_brackets_the_mean_of_the_group_taus():
    taus = np.array([1.0, 1.0, -1.0, 1.0, np.nan])
    out = evidence.granulated(taus, reps=500)
    assert out["tau"] == pytest.approx(0.5)
    assert -1.0 <= out["ci"][0] < 0.5 < out["ci"][1] <= 1.0
