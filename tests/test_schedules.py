"""Schedules fire at their documented steps, compose with |, validate and round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from concept_tracker.schedules import OverheadBudget, Schedule, at_steps, budget_text, every, log_spaced, plan_steps


def fired(schedule: Schedule, stop: int) -> list[int]:
    return [t for t in range(stop + 1) if schedule(t)]


def test_every_fires_at_multiples_from_zero():
    assert fired(every(4), 13) == [0, 4, 8, 12]
    assert fired(every(1), 3) == [0, 1, 2, 3]
    assert every(5).fires(10) and not every(5).fires(-5)


def test_at_steps_fires_exactly_there():
    schedule = at_steps([9, 2, 2, 0])
    assert schedule.steps == (0, 2, 9)
    assert fired(schedule, 20) == [0, 2, 9]


def test_log_spaced_documented_steps():
    # The example in the log_spaced docstring.
    assert log_spaced(0, 10000, 20).steps == (
        0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100, 167, 278, 464, 774, 1292, 2154, 3594, 5995, 10000
    )


@pytest.mark.parametrize("start, stop, num", [(0, 10000, 20), (1, 500, 7), (10, 10**6, 13), (0, 1, 2)])
def test_log_spaced_is_geometric_dense_early_and_includes_both_ends(start, stop, num):
    steps = log_spaced(start, stop, num).steps
    assert steps[0] == start and steps[-1] == stop
    assert len(steps) == num  # these ranges are wide enough for no duplicates
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))  # gaps never shrink: dense early


def test_log_spaced_deduplicates_short_ranges():
    assert log_spaced(0, 10, 50).steps == tuple(range(11))
    assert log_spaced(5, 5, 3).steps == (5,)
    assert log_spaced(7, 100, 1).steps == (7,)


def test_union_fires_when_any_part_fires():
    schedule = log_spaced(0, 1000, 8) | every(500) | at_steps([7])
    assert fired(schedule, 1000) == [0, 1, 3, 7, 10, 32, 100, 316, 500, 1000]
    assert repr(schedule) == "log_spaced(0, 1000, 8) | every(500) | at_steps([7])"


def test_config_round_trip_through_json():
    schedule = log_spaced(0, 100, 5) | (every(30) | at_steps([4, 77]))
    config = json.loads(json.dumps(schedule.to_config()))
    again = Schedule.from_config(config)
    assert again.to_config() == schedule.to_config()
    assert fired(again, 200) == fired(schedule, 200)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: every(0), "n"),
        (lambda: every(2.5), "n"),
        (lambda: every(True), "n"),
        (lambda: at_steps([3, -1]), r"steps\[1\]"),
        (lambda: log_spaced(-1, 10, 3), "start"),
        (lambda: log_spaced(10, 5, 3), "stop"),
        (lambda: log_spaced(0, 10, 0), "num"),
    ],
)
def test_bad_arguments_name_the_parameter(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_numpy_and_tensor_integers_are_steps():
    schedule = log_spaced(np.int64(0), np.int32(100), np.int64(5)) | every(np.int64(30)) | at_steps(np.array([4, 77]))
    plain = log_spaced(0, 100, 5) | every(30) | at_steps([4, 77])
    assert json.dumps(schedule.to_config()) == json.dumps(plain.to_config())
    assert [int(t) for t in np.arange(201) if schedule(t)] == fired(plain, 200)
    assert [t for t in range(201) if schedule(torch.tensor(t))] == fired(plain, 200)


def test_from_config_rejects_unknown_types():
    with pytest.raises(ValueError, match="config"):
        Schedule.from_config({"type": "weekly"})


def test_or_with_a_non_schedule_is_a_type_error():
    with pytest.raises(TypeError):
        every(2) | 3


# ----------------------------------------------------------------------------- budget planner


def test_plan_steps_are_log_spaced_from_the_origin_and_end_at_the_last_step():
    # Targets 10000 ** (i / 5): 6.3, 39.8, 251.2, 1584.9, then the last step.
    assert plan_steps(range(1, 10000), after=0, last=10000, count=5) == [6, 40, 251, 1585, 10000]
    # Snapped to the schedule's steps (every 100 here), never past the last.
    assert plan_steps(range(0, 10000, 100), after=0, last=10000, count=5) == [100, 200, 300, 1600, 10000]
    assert plan_steps(range(1, 10000), after=0, last=10000, count=1) == [10000]
    assert plan_steps(range(1, 10000), after=0, last=10000, count=0) == []
    assert plan_steps(range(1, 10000), after=10000, last=10000, count=3) == []


@pytest.mark.parametrize("count, gap", [(3, 1), (8, 1), (8, 700), (50, 300)])
def test_plan_steps_respect_count_gap_and_candidates(count, gap):
    candidates = [s for s in range(1, 5000) if s % 7 == 0]
    plan = plan_steps(candidates, after=20, last=5000, count=count, origin=0, min_gap=gap)
    assert plan[-1] == 5000 and len(plan) <= count
    assert all(s in candidates for s in plan[:-1]) and all(s > 20 for s in plan)
    assert all(b - a >= gap for a, b in zip(plan, plan[1:]))
    # Dense early: the gaps between the planned steps before the last never shrink much.
    gaps = [b - a for a, b in zip(plan, plan[1:-1])]
    assert all(later >= earlier - 7 for earlier, later in zip(gaps, gaps[1:]))


def simulate(f, total, step_seconds, stall, worker, schedule, contention=0.0, assumed=None):
    """A run on a synthetic clock, as the tracker drives the budget: training steps of
    ``step_seconds``; the first tracked step runs inline (``stall + worker`` seconds), later ones
    stall training ``stall`` seconds and keep a background worker busy ``worker`` seconds, during
    which each training step takes ``1 + contention`` times longer (``contention`` of the
    worker's time is taken from training); close() waits for the last one. ``assumed`` is the
    budget's contention before it measures any (default: the true one). Returns the tracked
    steps, the budget, and the share of wall time the run spent beyond its untracked training."""
    budget = OverheadBudget(f, total, contention=contention if assumed is None else assumed)
    clock, busy_until, tracked = 0.0, -1.0, []
    for step in range(total + 1):
        budget.start(clock)
        budget.arrived(clock)
        if clock >= busy_until and len(tracked) > 1:
            budget.background = (len(tracked) - 1) * worker  # jobs finished on the worker
        if budget.can_plan(step, clock >= busy_until):
            budget.make_plan(step, clock, [s for s in range(step, total) if schedule(s)])
        if schedule(step) or step == total:
            if budget.refuses(step, clock, last=step == total):
                budget.skipped += 1
            else:
                inline = not tracked
                clock += stall + (worker if inline else 0.0)
                budget.spent += stall + (worker if inline else 0.0)
                budget.last_cost, budget.worker_cost = stall, worker
                if not inline:
                    busy_until = clock + worker
                budget.tracked(step)
                tracked.append(step)
        budget.left(clock, clock < busy_until)
        if step < total:
            clock += step_seconds * (1 + contention if clock < busy_until else 1)
    clock = max(clock, busy_until)  # close() waits for the last tracked step
    return tracked, budget, 1 - total * step_seconds / clock


@pytest.mark.parametrize(
    "f, step_seconds, stall, worker",
    [(0.05, 0.005, 0.15, 1.0), (0.05, 0.001, 0.05, 0.3), (0.1, 0.1, 2.0, 0.5), (0.02, 0.01, 0.1, 0.2)],
)
def test_the_plan_keeps_the_budget_and_tracks_the_first_and_last_steps(f, step_seconds, stall, worker):
    tracked, budget, share = simulate(f, 20000, step_seconds, stall, worker, every(1))
    assert share <= f
    assert tracked[0] == 0 and tracked[-1] == 20000 and len(tracked) >= 4
    assert budget.plan == tracked and budget.cut.startswith(f"max_overhead={f} affords")
    # The worker finishes one tracked step before the next starts.
    gaps = [b - a for a, b in zip(tracked[1:], tracked[2:])]
    assert min(gaps) * step_seconds >= worker


@pytest.mark.parametrize("contention", [0.5, 1.0])
def test_background_work_that_slows_training_is_charged(contention):
    # No core to spare: the worker's time comes out of training's, and the plan counts it. A
    # training step takes 1 + c times longer beside the worker, so c / (1 + c) of the worker's
    # wall time is lost to training.
    tracked, budget, share = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=contention)
    assert share <= 0.05 and len(tracked) >= 4 and tracked[-1] == 20000
    assert budget.contention == pytest.approx(contention / (1 + contention), abs=0.03)
    free, _, _ = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1))
    assert len(tracked) < len(free)


def test_the_plan_follows_the_measured_contention():
    # Assumed to have a spare core, the run finds none: the measured slowdown drops later steps.
    tracked, budget, share = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=1.0, assumed=0.0)
    assert share <= 0.05 * 1.1 and tracked[-1] == 20000
    assumed_right, _, _ = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=1.0)
    blind = OverheadBudget(0.05, 20000, contention=0.0)
    assert budget.contention == pytest.approx(0.5, abs=0.03) and blind.contention == 0.0
    # Assumed to have none, it has one: the plan grows as the interference stays at zero.
    spare, budget, share = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=0.0, assumed=1.0)
    assert share <= 0.05 and len(spare) > len(assumed_right) and budget.contention == pytest.approx(0.0, abs=1e-9)


def test_interference_is_the_busy_steps_excess_over_the_idle_ones():
    budget = OverheadBudget(0.1, 100)
    clock = 0.0
    for busy, seconds in [(False, 0.01)] * 12 + [(True, 0.03)] * 5 + [(False, 0.01)] * 3:
        budget.arrived(clock)
        budget.left(clock, busy)
        clock += seconds
    budget.arrived(clock)
    assert budget.step_seconds == pytest.approx(0.01)
    assert budget.interference == pytest.approx(5 * 0.02)
    assert budget.contention == 1.0  # assumed: no background work measured yet
    budget.background = 0.2
    assert budget.contention == pytest.approx(0.5)
    assert budget.cost == pytest.approx(0.1)


def test_a_plan_that_affords_the_whole_schedule_cuts_nothing():
    tracked, budget, _ = simulate(0.05, 20000, 0.002, 0.01, 0.01, at_steps([0, 100, 5000]))
    assert tracked == [0, 100, 5000, 20000] and budget.cut == ""


def test_without_room_only_the_first_step_is_tracked():
    tracked, budget, _ = simulate(0.001, 2000, 0.001, 0.5, 0.5, every(1))
    assert tracked == [0] and budget.plan == [0] and budget.cut


def test_without_a_total_the_greedy_rule_applies():
    budget = OverheadBudget(0.1, contention=0.0)
    budget.start(0.0)
    budget.spent = budget.last_cost = 1.0
    assert not budget.can_plan(100, worker_idle=True)
    assert budget.refuses(5, now=10.0)  # 1 + 1 > 0.1 * (10 + 1)
    assert not budget.refuses(5, now=20.0)  # 2 <= 0.1 * 21


def test_the_budget_state_round_trips_with_its_plan():
    _, budget, _ = simulate(0.05, 20000, 0.002, 0.15, 1.0, every(1))
    restored = OverheadBudget(0.05, 20000)
    restored.load_state_dict(json.loads(json.dumps(budget.state_dict())))
    assert restored.plan == budget.plan and restored.skipped == budget.skipped
    assert [restored.refuses(s, 0.0) for s in budget.plan] == [False] * len(budget.plan)
    text = budget_text(restored, 0.05, now=1.0)
    assert str(budget.plan) in text and "max_overhead=0.05" in text


def test_a_plan_without_room_is_not_overridden_before_the_total():
    # The final wait for the worker (3 s) exceeds the whole allowance: only step 0, though the
    # rule without a plan would find room for a few steps later in the run.
    tracked, budget, share = simulate(0.05, 20000, 0.002, 0.15, 3.0, every(1))
    assert tracked == [0] and budget.plan == [0]
    assert share == pytest.approx(3.15 / 43.15)  # only the first (inline) step's own cost is over budget
    # An early stop at a step the plan left out: tracked only if the budget, waits included, allows.
    budget.spent, budget.last_cost, budget.worker_cost = 0.15, 0.15, 3.0
    assert budget.refuses(9000, now=20.0, last=True)  # 0.15 + 3.15 > 0.05 * 23.15
    assert not budget.refuses(9000, now=80.0, last=True)
    assert budget.refuses(20001, now=2.0) and not budget.refuses(20001, now=20.0)  # past the total


def test_a_slow_spell_that_is_not_tracking_does_not_pass_for_the_step_time():
    budget = OverheadBudget(0.1, 100)
    clock = 0.0
    for seconds in [0.01] * 20 + [0.5, 0.4]:  # e.g. a garbage collection, another job
        budget.arrived(clock)
        budget.left(clock, False)
        clock += seconds
    budget.arrived(clock)
    assert budget.step_seconds == pytest.approx(0.01)
