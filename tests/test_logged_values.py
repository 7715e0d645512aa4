"""The values the tracker logs, checked against values computed here, independently, from the
interactions it stored: the dynamics by brute force over every (sample, coalition) in plain
Python, the concept summary and train-test similarity from the stored probe and held-out
interactions. A tracker that wires the wrong tensors into a reading (say, train-test similarity
of the probes against themselves, always 1) logs values these do not reproduce.
"""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from concept_tracker import (
    OutputConfig,
    ProbeSet,
    ReadingsConfig,
    TabularPlayers,
    band_summary,
    order_profile,
    train_test_similarity,
)
from concept_tracker.schedules import every
from concept_tracker.store import list_steps, load_step, step_path
from concept_tracker.tracker import ConceptTracker
from concept_tracker.writers import tags

N, B, RATIO = 4, 6, 0.05
SIMPLE, MEDIUM, COMPLEX = (1,), (2,), (3, 4)  # default bands for n = 4: n // 3 = 1, n // 2 + 1 = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Five tracked steps of a small MLP trained with a large step size, so concepts appear,
    vanish and flip sign; probes and held-out probes of three classes."""
    log_dir = tmp_path_factory.mktemp("run")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, N, generator=gen)
    y = (x[:, 0] * x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    tracker = ConceptTracker(
        TabularPlayers(baselines="zero"),
        ProbeSet(x[:B], y[:B]),
        ProbeSet(x[B : 2 * B], y[B : 2 * B]),
        log_dir=log_dir,
        schedule=every(3),
        readings=ReadingsConfig(ratio=RATIO),
        output=OutputConfig(figures=False),
        strict=True,
    )
    with tracker:
        for step in range(13):
            tracker.step(model, step)
            batch = torch.randint(0, 64, (16,), generator=gen)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    steps = list_steps(log_dir)
    stored = [load_step(step_path(log_dir, s))[0] for s in steps]
    held = [load_step(step_path(log_dir, s, "heldout"))[0] for s in steps]
    return steps, stored, held, logged


def order(s: int) -> int:
    return bin(s).count("1")


def salient(row: list[float]) -> set[int]:
    """Salient coalitions of one sample: non-empty, |I(S)| above RATIO times the largest."""
    top = max(abs(v) for v in row[1:])
    return {s for s in range(1, len(row)) if top > 0 and abs(row[s]) > RATIO * top}


def close(logged: float, want: float) -> bool:
    # TensorBoard stores scalars as float32.
    return (math.isnan(logged) and math.isnan(want)) or logged == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_the_run_moves_enough_to_test_anything(run):
    steps, stored, _, _ = run
    assert steps == [0, 3, 6, 9, 12]
    series = [res.and_effects.tolist() for res in stored]
    flips = brute_dynamics(steps, series)["flips"]
    assert flips >= 2  # else a sum-vs-max slip in the sign flips would go unseen


def brute_dynamics(steps: list[int], series: list[list[list[float]]]) -> dict:
    """Sign flips, forgotten concepts, emergence steps, detour path/displacement and H(t) at
    the last step, by loops over every sample and coalition."""
    flips, forgotten = 0, {m: 0 for m in range(1, N + 1)}
    emergence: dict[int, list[int]] = {m: [] for m in range(1, N + 1)}
    path, disp = {m: 0.0 for m in range(1, N + 1)}, {m: 0.0 for m in range(1, N + 1)}
    high = 0.0
    for b in range(B):
        marks = [salient(effects[b]) for effects in series]
        for s in range(1, 1 << N):
            values = [effects[b][s] for effects in series]
            last_sign = 0
            for value, mark in zip(values, marks):
                if s in mark:
                    sign = (value > 0) - (value < 0)
                    flips += last_sign != 0 and sign != last_sign
                    last_sign = sign
            on = [s in mark for mark in marks]
            forgotten[order(s)] += any(on) and not on[-1]
            if on[-1]:
                first = len(on) - 1
                while first > 0 and on[first - 1]:
                    first -= 1
                emergence[order(s)].append(steps[first])
                if order(s) in MEDIUM + COMPLEX:
                    high += abs(values[-1])
            path[order(s)] += sum(abs(a - b) for a, b in zip(values[1:], values[:-1]))
            disp[order(s)] += abs(values[-1] - values[0])
    return dict(flips=flips, forgotten=forgotten, emergence=emergence, path=path, disp=disp, high=high / B)


def test_dynamics_scalars_match_a_brute_force_recount(run):
    steps, stored, _, logged = run
    for t in range(1, len(steps) + 1):
        want = brute_dynamics(steps[:t], [res.and_effects.tolist() for res in stored[:t]])
        step = steps[t - 1]
        assert close(logged[tags.SIGN_FLIPS][step], want["flips"]), step
        assert close(logged[tags.FORGOTTEN][step], sum(want["forgotten"].values())), step
        assert close(logged[tags.HIGH_ORDER_STRENGTH][step], want["high"]), step
        for m in range(1, N + 1):
            assert close(logged[tags.forgotten(m)][step], want["forgotten"][m]), (step, m)
            times = want["emergence"][m]
            mean_time = sum(times) / len(times) if times else math.nan
            assert close(logged[tags.emergence_step(m)][step], mean_time), (step, m)
            ratio = want["path"][m] / want["disp"][m] if want["disp"][m] > 0 else math.nan
            assert close(logged[tags.detour_ratio(m)][step], ratio), (step, m)
        for band, orders in (("simple", SIMPLE), ("complex", COMPLEX)):
            d = sum(want["disp"][m] for m in orders)
            ratio = sum(want["path"][m] for m in orders) / d if d > 0 else math.nan
            assert close(logged[tags.band_detour_ratio(band)][step], ratio), (step, band)
        # Scale-free: each step's effects of a sample divided by their sum of |I(S)|, S non-empty.
        unit = [
            [[v / (sum(abs(x) for x in row[1:]) or 1.0) for v in row] for row in res.and_effects.tolist()]
            for res in stored[:t]
        ]
        for band, orders in (("simple", SIMPLE), ("complex", COMPLEX)):
            chosen = [(b, s) for b in range(B) for s in range(1, 2**N) if order(s) in orders]
            p = sum(abs(x[b][s] - y[b][s]) for x, y in zip(unit[1:], unit[:-1]) for b, s in chosen)
            d = sum(abs(unit[-1][b][s] - unit[0][b][s]) for b, s in chosen)
            want_ratio = p / d if d > 0 else math.nan
            assert close(logged[tags.band_scale_free_detour_ratio(band)][step], want_ratio), (step, band)


def test_summary_and_train_test_similarity_match_the_stored_interactions(run):
    steps, stored, held, logged = run
    lowest = 1.0
    for step, res, test in zip(steps, stored, held):
        summary = band_summary(order_profile(res, RATIO))
        for stat in tags.SUMMARY_STATS:
            assert close(logged[tags.summary(stat)][step], getattr(summary, stat)), (step, stat)
        assert close(logged[tags.MEDIUM_STRENGTH][step], summary.medium_strength), step
        similarity = train_test_similarity(res, res.targets, test, test.targets)
        for m in range(1, N + 1):
            assert close(logged[tags.train_test_similarity(m)][step], float(similarity[m])), (step, m)
            lowest = min(lowest, float(similarity[m]))
    # Probes against themselves would give 1 at every order.
    assert lowest < 0.95
