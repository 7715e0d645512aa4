"""The step summary: one implementation of the per-step readings, shared by tracker and report.

A tracked run's logged scalars (read back from the TensorBoard event file) must equal, tag by
tag and step by step, what ``report`` recomputes from the stored interactions, and what
``ConceptTracker.step`` returned.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from models import seeded
from torch import nn

from concept_tracker import report
from concept_tracker.config import OutputConfig, ReadingsConfig
from concept_tracker.metrics.bootstrap import resample_indices
from concept_tracker.metrics.dynamics import Trajectory
from concept_tracker.metrics.profile import order_profile, stack_effects
from concept_tracker.players import TabularPlayers
from concept_tracker.probes import select_probes
from concept_tracker.schedules import at_steps
from concept_tracker.store import load_step, step_path
from concept_tracker.summary import StepSummary, concept_scalars, summarize_step
from concept_tracker.tracker import ConceptTracker
from concept_tracker.writers import tags

FEATURES = 5
STEPS = [0, 1, 3, 6, 10]
BANDS = ReadingsConfig(simple_max=2, complex_min=4)


def _tracked_run(log_dir, kind: str) -> dict[int, StepSummary]:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(80, FEATURES, generator=gen)
    y = ((x[:, 0] * x[:, 1] > 0) & (x[:, 2] > 0)).long()
    model = seeded(lambda: nn.Sequential(nn.Linear(FEATURES, 12), nn.Tanh(), nn.Linear(12, 2)), seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    probes = select_probes(x[:60], 6, labels=y[:60], seed=0)
    held = select_probes(x[60:], 6, labels=y[60:], seed=0)
    with ConceptTracker(
        TabularPlayers(),
        probes,
        held,
        log_dir=log_dir,
        schedule=at_steps(STEPS),
        kind=kind,
        readings=BANDS,
        output=OutputConfig(figures=False),
        strict=True,
    ) as tracker:
        for step in range(STEPS[-1] + 1):
            loss = nn.functional.cross_entropy(model(x[:60]), y[:60])
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert (tracker.step(model, step) is not None) == (step in STEPS)
    # The background worker's summaries, all finished once the tracker is closed.
    returned = {summary.step: summary for summary in tracker.summaries()}
    return returned


@pytest.mark.parametrize("kind", ["and", "or"])
def test_report_recomputes_exactly_what_the_tracker_logged(tmp_path, kind):
    returned = _tracked_run(tmp_path, kind)
    run = report.summarize_run(tmp_path)
    logged = {tag: dict(series) for tag, series in report.read_scalars(tmp_path).items()}
    concept_tags = {tag for tag in logged if not tag.startswith("perf/")}

    assert sorted(run.readings) == STEPS == sorted(returned)
    for step in STEPS:
        recomputed = run.readings[step]
        # Every concept scalar logged at the step is recomputed, and nothing more.
        assert set(recomputed) == {tag for tag in concept_tags if step in logged[tag]}
        assert tags.train_test_similarity(1) in recomputed  # held-out probes are stored and read back
        for tag, value in recomputed.items():
            # Events hold float32; the tracker's own summary holds the float64 it logged.
            assert np.float32(value) == np.float32(logged[tag][step]) or (
                math.isnan(value) and math.isnan(logged[tag][step])
            ), (tag, step)
            assert value == returned[step][tag] or (math.isnan(value) and math.isnan(returned[step][tag])), (tag, step)
        # Every averaged reading carries its bootstrap interval, logged and recomputed alike.
        for tag in tags.interval_tags(generalization=True):
            assert {tag, tags.ci_low(tag), tags.ci_high(tag)} <= set(recomputed), (tag, step)
    last = run.readings[STEPS[-1]]
    for tag in tags.interval_tags(generalization=True):
        # The bounds bracket the reading (a mean-like statistic of 6 probes).
        assert last[tags.ci_low(tag)] - 1e-9 <= last[tag] <= last[tags.ci_high(tag)] + 1e-9, tag
    for tag in (tags.summary("simple_strength"), tags.share("simple_share"), tags.band_detour_ratio("simple")):
        assert last[tags.ci_low(tag)] < last[tags.ci_high(tag)], tag  # a real spread over the probes
    assert run.complex_ratio == [returned[s][tags.summary("complex_ratio")] for s in STEPS]
    assert run.sign_flips == int(returned[STEPS[-1]][tags.SIGN_FLIPS])


def test_band_intervals_match_a_brute_force_bootstrap(tmp_path):
    """The logged interval of each band reading equals percentiles of the reading recomputed,
    by the non-bootstrap code path, on each resample of the probe samples."""
    _tracked_run(tmp_path, "and")
    res, _ = load_step(step_path(tmp_path, STEPS[-1]))
    resamples = 40
    trajectory = Trajectory(replace(BANDS, resamples=resamples, seed=3))
    trajectory.append(STEPS[-1], stack_effects(res))
    got = summarize_step(STEPS[-1], res, trajectory)  # with the trajectory's readings settings
    index = resample_indices(res.num_samples, resamples, seed=3)
    replicates: dict[str, list[float]] = {}
    for rows in index:
        # A resample is the probe set with repeated samples: the ordinary readings on it.
        scalars = concept_scalars(order_profile(res[rows]), {}, BANDS)
        for tag in (*tags.band_strength_tags(), tags.summary("complex_ratio"), tags.share("simple_share")):
            replicates.setdefault(tag, []).append(scalars[tag])
    for tag, values in replicates.items():
        low, high = np.percentile(values, [2.5, 97.5])
        assert got[tags.ci_low(tag)] == pytest.approx(low, rel=1e-9, abs=1e-12), tag
        assert got[tags.ci_high(tag)] == pytest.approx(high, rel=1e-9, abs=1e-12), tag


def test_summary_is_a_mapping_of_the_logged_scalars(tmp_path):
    returned = _tracked_run(tmp_path, "and")
    summary = returned[STEPS[-1]]
    assert dict(summary) == summary.scalars and len(summary) == len(summary.scalars)
    assert summary.step == STEPS[-1]
    assert summary.top_concepts.startswith(f"Strongest concepts at step {STEPS[-1]}")
    assert len(summary.top_concepts.splitlines()) == 4 + 10  # title, blank, header, rule, 10 rows
    assert set(summary.histograms) == {tags.abs_effect_histogram("and", m) for m in range(1, FEATURES + 1)}
    # [B, C(n, m)] magnitudes of the coalitions of each order.
    assert summary.histograms[tags.abs_effect_histogram("and", 2)].shape == (6, math.comb(FEATURES, 2))


def test_summarize_step_needs_the_step_in_the_trajectory(tmp_path):
    _tracked_run(tmp_path, "and")
    res, _ = load_step(step_path(tmp_path, 0))
    trajectory = Trajectory()
    with pytest.raises(ValueError, match="step=3 is not the trajectory's last step"):
        summarize_step(3, res, trajectory)
    trajectory.append(0, stack_effects(res))
    with pytest.raises(ValueError, match="step=3 is not the trajectory's last step"):
        summarize_step(3, res, trajectory)
    assert summarize_step(0, res, trajectory).step == 0
