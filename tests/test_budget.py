"""The overhead budget: the planner is log-spaced and keeps its gaps; driven as the tracker drives
it on a synthetic clock, the budget keeps max_overhead, tracks the first and the last step,
charges background work that slows training, takes a finite schedule's last step as the horizon,
and says once when it cannot be kept."""

from __future__ import annotations

import json

import pytest

from concept_tracker.budget import OverheadBudget, budget_text, plan_steps
from concept_tracker.schedules import at_steps, every, log_spaced


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


def simulate(f, total, step_seconds, stall, worker, schedule, contention=0.0, assumed=None, horizon=True):
    """A run on a synthetic clock, driving the budget through its methods as the tracker does:
    training steps of ``step_seconds``; a tracked step stalls training ``stall`` seconds and hands
    ``worker`` seconds of background work to the worker (one step at a time), during which each
    training step takes ``1 + contention`` times longer (``contention`` of the worker's time is
    taken from training); finished work is reported at the next call, and close() waits for the
    last. ``assumed``: the budget's contention before it measures any (default: the true one);
    ``horizon=False``: no total_steps (the schedule's last step is the horizon, if finite).
    Returns the tracked steps, the budget, and the share of wall time beyond untracked training."""
    budget = OverheadBudget(f, total if horizon else None, schedule, contention if assumed is None else assumed)
    clock, busy_until, tracked, done_at = 0.0, -1.0, [], []
    for step in range(total + 1):
        budget.call_began(clock)
        while len(done_at) and done_at[0] <= clock:  # background work finished since the last call
            done_at.pop(0)
            budget.finished(worker)
        if schedule(step) or step == total and horizon:
            if budget.allows(step, clock, last=step == total):
                clock += stall
                budget.tracked(step, stall)
                tracked.append(step)
                busy_until = max(clock, busy_until) + worker
                done_at.append(busy_until)
        budget.call_ended(clock, clock < busy_until)
        if step < total:
            clock += step_seconds * (1 + contention if clock < busy_until else 1)
    clock = max(clock, busy_until)  # close() waits for the last tracked step
    return tracked, budget, 1 - total * step_seconds / clock


@pytest.mark.parametrize(
    "f, step_seconds, stall, worker",
    [(0.05, 0.005, 0.15, 1.0), (0.05, 0.001, 0.05, 0.3), (0.1, 0.1, 2.0, 0.5), (0.02, 0.01, 0.1, 0.2)],
)
def test_the_plan_keeps_the_budget_and_tracks_the_first_and_last_steps(f, step_seconds, stall, worker):
    with pytest.warns(UserWarning, match=f"max_overhead={f} affords"):
        tracked, budget, share = simulate(f, 20000, step_seconds, stall, worker, every(1))
    assert share <= f
    assert tracked[0] == 0 and tracked[-1] == 20000 and len(tracked) >= 4
    assert budget.plan == tracked and budget.cut.startswith(f"max_overhead={f} affords")
    # One tracked step's background work is done before the next starts.
    gaps = [b - a for a, b in zip(tracked[1:], tracked[2:])]
    assert min(gaps) * step_seconds >= worker


@pytest.mark.parametrize("contention", [0.5, 1.0])
def test_background_work_that_slows_training_is_charged(contention):
    # No core to spare: the worker's time comes out of training's, and the plan counts it. A
    # training step takes 1 + c times longer beside the worker, so c / (1 + c) of the worker's
    # wall time is lost to training.
    with pytest.warns(UserWarning, match="affords"):
        tracked, budget, share = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=contention)
        free, _, _ = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1))
    assert share <= 0.05 and len(tracked) >= 4 and tracked[-1] == 20000
    assert budget.contention == pytest.approx(contention / (1 + contention), abs=0.03)
    assert len(tracked) < len(free)


def test_the_plan_follows_the_measured_contention():
    with pytest.warns(UserWarning, match="affords"):
        # Assumed to have a spare core, the run finds none: the measured slowdown drops later steps.
        tracked, budget, share = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=1.0, assumed=0.0)
        assumed_right, _, _ = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=1.0)
        # Assumed to have none, it has one: the plan grows as the interference stays at zero.
        spare, spare_budget, spare_share = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), assumed=1.0)
    assert share <= 0.05 * 1.1 and tracked[-1] == 20000
    assert budget.contention == pytest.approx(0.5, abs=0.03)
    assert OverheadBudget(0.05, 20000, contention=0.0).contention == 0.0
    assert spare_share <= 0.05 and len(spare) > len(assumed_right)
    assert spare_budget.contention == pytest.approx(0.0, abs=1e-9)


def test_interference_is_the_busy_steps_excess_over_the_idle_ones():
    budget = OverheadBudget(0.1, 100)
    clock = 0.0
    for busy, seconds in [(False, 0.01)] * 12 + [(True, 0.03)] * 5 + [(False, 0.01)] * 3:
        budget.call_began(clock)
        budget.call_ended(clock, busy)
        clock += seconds
    budget.call_began(clock)
    assert budget.step_seconds == pytest.approx(0.01)
    assert budget.interference == 0.0  # no background CPU time reported yet: the excess is not ours
    assert budget.contention == 1.0  # assumed: no background work measured yet
    budget.finished(0.2)
    assert budget.interference == pytest.approx(5 * 0.02)
    assert budget.contention == pytest.approx(0.5)
    assert budget.cost == pytest.approx(0.1)


def test_background_work_is_charged_by_its_cpu_time_and_interference_at_most_that():
    # A niced child on a busy machine: 5 s of wall time for 0.04 s of CPU, beside steps that other
    # jobs slowed by 0.1 s in all. The cost is the CPU time; the wall time is the final wait only.
    budget = OverheadBudget(0.1, 100)
    clock = 0.0
    for busy, seconds in [(False, 0.01)] * 12 + [(True, 0.03)] * 5:
        budget.call_began(clock)
        budget.call_ended(clock, busy)
        clock += seconds
    budget.call_began(clock)
    budget.tracked(0, 0.2)
    budget.finished(5.0, cpu=0.04)
    budget.worked(0.01)  # e.g. the child's start-up
    assert budget.interference == pytest.approx(0.05) and budget.contention == pytest.approx(1.0)
    assert budget.cost == pytest.approx(0.05)
    assert budget.step_cost() == pytest.approx(0.2 + 0.04)  # the stall and the step's CPU time
    assert budget.worker_cost == 5.0 and budget.worker_cpu == 0.04


def test_optional_work_is_afforded_only_beside_the_plan():
    assert OverheadBudget(None, 100).affords(0.0, 100.0, background=True)  # no budget
    # No plan yet (or no horizon): as a step without a plan, within max_overhead of the wall time.
    early = OverheadBudget(0.5, 20000, contention=1.0)
    early.call_began(0.0)
    early.call_ended(1.0, False)  # 1 s of stalls
    assert early.affords(4.0, 2.0, background=True) and not early.affords(4.0, 2.1, background=True)
    with pytest.warns(UserWarning, match="affords"):
        _, budget, _ = simulate(0.05, 20000, 0.005, 0.15, 1.0, every(1), contention=1.0)
    # At the end of the run (tracked: the horizon) no planned step is left: only the slack counts.
    now = 20000 * 0.005 * 1.05
    slack = 0.05 / 0.95 * (budget.elapsed(now) - budget.cost) - budget.cost - budget.worker_cost
    assert slack > 0.1
    assert budget.affords(now, slack - 0.05, background=True)
    assert not budget.affords(now, slack + 0.05, background=True)
    # Mid-run, background work is charged at the contention (assumed 0.5 here), inline in full.
    budget, clock = OverheadBudget(0.05, 20000, every(1), contention=0.5), 0.0
    with pytest.warns(UserWarning, match="affords"):
        for step in range(20):
            budget.call_began(clock)
            if step == 1:
                budget.finished(1.0)
            if budget.allows(step, clock) and step == 0:
                clock += 0.15
                budget.tracked(0, 0.15)
            budget.call_ended(clock, step == 0)
            clock += 0.005
    assert budget.plan is not None and budget.contention == 0.5
    untracked = budget.elapsed(clock) - budget.cost + 20000 * budget.step_seconds
    planned = (len(budget.plan) - 1) * budget.step_cost() + budget.worker_cost
    room = 0.05 / 0.95 * untracked - budget.cost - planned
    assert room > 0
    assert budget.affords(clock, 1.9 * room, background=True)
    assert not budget.affords(clock, 1.9 * room, background=False)


def test_a_slow_spell_that_is_not_tracking_does_not_pass_for_the_step_time():
    budget = OverheadBudget(0.1, 100)
    clock = 0.0
    for seconds in [0.01] * 20 + [0.5, 0.4]:  # e.g. a garbage collection, another job
        budget.call_began(clock)
        budget.call_ended(clock, False)
        clock += seconds
    budget.call_began(clock)
    assert budget.step_seconds == pytest.approx(0.01)


def test_a_plan_that_affords_the_whole_schedule_cuts_nothing():
    tracked, budget, _ = simulate(0.05, 20000, 0.002, 0.01, 0.01, at_steps([0, 100, 5000]))
    assert tracked == [0, 100, 5000, 20000] and budget.cut == ""


def test_a_finite_schedule_is_the_horizon_without_total_steps():
    schedule = log_spaced(0, 20000, 40)
    with pytest.warns(UserWarning, match="affords"):
        tracked, budget, share = simulate(0.05, 20000, 0.005, 0.15, 1.0, schedule, horizon=False)
    assert budget.horizon == 20000 and budget.plan == tracked
    assert tracked[0] == 0 and tracked[-1] == 20000 and len(tracked) >= 4 and share <= 0.05


def test_a_budget_that_cannot_be_kept_says_so_once_with_the_figures():
    with pytest.warns(UserWarning) as record:
        tracked, budget, _ = simulate(0.001, 2000, 0.001, 0.5, 0.5, every(1))
    assert tracked == [0] and budget.plan == [0]
    [warning] = [str(w.message) for w in record]
    assert "max_overhead=0.001 cannot be kept" in warning and "0.50 s" in warning and "1.0 ms" in warning


def test_without_a_horizon_the_greedy_rule_applies_and_warns_at_the_first_skip():
    budget = OverheadBudget(0.1, None, every(1), contention=0.0)
    budget.call_began(0.0)
    budget.tracked(0, 1.0)
    budget.call_ended(1.0, False)
    with pytest.warns(UserWarning, match="skipped step 5: tracking it .about 1.00 s. would exceed") as record:
        assert not budget.allows(5, now=10.0)  # 1 + 1 > 0.1 * (10 + 1)
        assert not budget.allows(6, now=10.0)
    assert len(record) == 1 and budget.skipped == 2 and budget.plan is None
    assert budget.allows(7, now=20.0)  # 2 <= 0.1 * 21


def test_the_budget_state_round_trips_with_its_plan():
    with pytest.warns(UserWarning, match="affords"):
        _, budget, _ = simulate(0.05, 20000, 0.002, 0.15, 1.0, every(1))
    restored = OverheadBudget(0.05, 20000, every(1))
    restored.load_state_dict(json.loads(json.dumps(budget.state_dict())))
    assert restored.plan == budget.plan and restored.skipped == budget.skipped
    assert all(restored.allows(s, 0.0) for s in budget.plan)
    text = budget_text(restored, now=1.0)
    assert str(budget.plan) in text and "max_overhead=0.05" in text


def test_a_plan_without_room_is_not_overridden_before_the_horizon():
    # The final wait for the worker (3 s) exceeds the whole allowance: only step 0, though the
    # rule without a plan would find room for a few steps later in the run.
    with pytest.warns(UserWarning, match="cannot be kept"):
        tracked, budget, share = simulate(0.05, 20000, 0.002, 0.15, 3.0, every(1))
    assert tracked == [0] and budget.plan == [0]
    assert share == pytest.approx(0.15 / 40.15)  # the first step's stall; its background work ran beside training
    # An early stop at a step the plan left out: tracked only if the budget, waits included, allows.
    late = OverheadBudget(0.05, 20000, every(1), contention=0.0)
    late.load_state_dict({**budget.state_dict(), "spent": 0.15, "elapsed": 0.0})
    late.call_began(0.0)
    assert not late.allows(9000, now=20.0, last=True)  # 0.15 + 3.15 > 0.05 * 23.15
    assert late.allows(9001, now=80.0, last=True)
    assert not late.allows(20001, now=2.0) and late.allows(20002, now=20.0)  # past the horizon


def test_figures_under_a_budget_are_drawn_only_when_afforded_and_charged_what_they_measured(tmp_path):
    import torch

    from concept_tracker.interactions import Interactions
    from concept_tracker.metrics.profile import band_orders, order_profile
    from concept_tracker.rundir import StepTally
    from concept_tracker.transforms import and_transform
    from concept_tracker.worker import Worker
    from concept_tracker.writers import step_figures
    from concept_tracker.writers.tensorboard import TensorBoardWriter

    v = torch.randn(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    names = [[f"p{i}" for i in range(4)]] * 2
    res = Interactions(outputs=v, and_effects=and_transform(v), or_effects=None, n=4, kind="and", player_names=names)
    figure = (res, {"and": order_profile(res)}, None, [0], torch.rand(1, 5), torch.rand(1, 1, 16), 0)
    asked, room = [], [False]
    worker, tally = Worker(inline=True), StepTally()
    figures = step_figures.StepFigures(
        TensorBoardWriter(tmp_path), band_orders(4), True, tally.warn_once, worker.submit,
        lambda cpu: asked.append(cpu) or room[0],
    )
    with pytest.warns(UserWarning, match="figures of step 0 were not drawn") as record:
        figures.tracked(1, 0, *figure)
        figures.tracked(2, 1, *figure)
    assert len(record) == 1 and not worker._done  # one message; nothing drawn
    assert asked == [step_figures.FIRST_DRAW_SECONDS] * 2
    room[0] = True
    figures.tracked(4, 2, *figure)
    answers = worker.answers()
    assert len(answers) == 3 and all(figures.received(a) for a in answers)  # order profile, heat map, trajectory
    assert figures.cost == pytest.approx(sum(a.cpu for a in answers))  # the next set is charged this
    measured = figures.cost
    figures.tracked(8, 3, *figure)
    assert asked[-1] == measured != step_figures.FIRST_DRAW_SECONDS
