"""The one background worker: jobs in a child process give what they give inline (the AND-OR
split, warm starts, summaries, figure pixels), in submission order; a job's error comes back as
its exception; and a child that cannot start, dies, is stopped, or cannot be sent a job costs
one warning, a bounded wait, and nothing else: its jobs run inline with the same results."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from concept_tracker import worker as worker_module
from concept_tracker.and_or import AndOrConfig, matching_error
from concept_tracker.interactions import Interactions
from concept_tracker.metrics.dynamics import Trajectory
from concept_tracker.metrics.profile import order_profile
from concept_tracker.transforms import and_transform
from concept_tracker.worker import JOBS, THREADS, Worker, child_pays, run_job
from concept_tracker.writers import render

CONFIG = AndOrConfig(max_iter=200)


def values(seed: int, samples: int = 3, n: int = 5) -> Interactions:
    v = torch.randn(samples, 1 << n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    names = [[f"p{i}" for i in range(n)]] * samples
    return Interactions(outputs=v, and_effects=and_transform(v), or_effects=None, n=n, kind="and", player_names=names)


def finish_args(seed: int, warm=None, samples: int = 3) -> tuple:
    """A "finish_step" job of kind "and_or" (warm: the previous job's results)."""
    warm = warm or {"probe": None}
    return (seed, {"probe": values(seed, samples)}, warm, CONFIG, Trajectory(), None)


def figure_jobs() -> list[tuple]:
    v = values(0, n=4).outputs
    profile = order_profile(Interactions(outputs=v, and_effects=and_transform(v), or_effects=None, n=4, kind="and"))
    steps = [0, 1, 3, 10]
    series = {"{p1}": torch.tensor([0.0, 1.0, 2.0, 1.5])}
    return [
        ("order_profile_figure", profile, "AND concepts by order, step 10"),
        ("order_heatmap_figure", steps, torch.rand(4, 5, generator=torch.Generator().manual_seed(1))),
        ("trajectory_figure", steps, series, {"{p0,p2,p3}": torch.tensor([0.0, -1.0, 0.5, 2.0])}, "sample 0"),
    ]


def same_step(got, expected) -> None:
    """Two "finish_step" answers: the same split, dynamics and readings. Both sides run the same
    float64 code on one thread; the tolerance only absorbs library builds."""
    (res, traj, summary), (res_e, traj_e, summary_e) = got, expected
    for name in ("and_effects", "or_effects", "gamma", "q"):
        torch.testing.assert_close(getattr(res["probe"], name), getattr(res_e["probe"], name), rtol=0, atol=1e-12)
    assert traj.steps == traj_e.steps
    assert summary.scalars.keys() == summary_e.scalars.keys()
    for tag, value in summary.scalars.items():
        assert value == pytest.approx(summary_e.scalars[tag], rel=1e-9, abs=1e-12, nan_ok=True), tag


def finish(args: tuple):
    """A "finish_step" job run in this process."""
    return run_job(*JOBS["finish_step"], args)


def answers(worker: Worker) -> dict:
    """Every answer, waiting: ``{job: value or exception}``."""
    return {a.job: (a.value if a.error is None else a.error) for a in worker.answers(wait=True)}


def test_the_child_runs_jobs_in_order_with_the_results_of_this_process():
    worker = Worker()
    try:
        first = worker.submit("finish_step", *finish_args(0))
        [done] = worker.answers(wait=True)
        assert done.job == first and done.error is None and not done.inline and not worker.inline
        res = done.value[0]
        # The second job warm-starts from the first's split; figures follow in order.
        second = worker.submit("finish_step", *finish_args(1, warm=res))
        figures = [worker.submit("figure", *job) for job in figure_jobs()]
        assert worker.busy()
        out = worker.answers(wait=True)
        assert [a.job for a in out] == [second, *figures] and not worker.busy()
    finally:
        worker.close()
    same_step(done.value, finish(finish_args(0)))
    same_step(out[0].value, finish(finish_args(1, warm=res)))
    # CPU seconds per job; the child's start-up (importing torch) comes with its first answer.
    assert all(a.cpu > 0 for a in [done, *out]) and done.overhead > max(a.overhead for a in out)
    split = out[0].value[0]["probe"]
    assert matching_error(split.outputs, split.and_effects, split.or_effects, split.q).max() < 1e-9
    for answer, job in zip(out[1:], figure_jobs()):
        assert answer.value[:4] == b"\x89PNG" and answer.value == render.render(*job), job[0]


def test_without_room_for_a_child_every_job_runs_inline_from_the_start(monkeypatch):
    monkeypatch.setattr(worker_module, "spare_cores", lambda: 0)
    assert not child_pays("cpu") and child_pays("cuda")  # a model on a GPU leaves the CPU free
    worker = Worker()
    worker.decide(child_pays("cpu"))
    job = worker.submit("finish_step", *finish_args(7))
    [done] = worker.answers()  # no wait: it ran at submit
    worker.close()
    assert worker.inline and worker._proc is None and done.job == job and done.inline and done.cpu > 0
    same_step(done.value, finish(finish_args(7)))
    monkeypatch.setattr(worker_module, "spare_cores", lambda: 1)
    assert child_pays("cpu")


@pytest.mark.worker_process
def test_a_tracker_without_an_idle_core_finishes_its_steps_inline_without_a_child(tmp_path, monkeypatch):
    import concept_tracker.tracker as tracker_module
    from concept_tracker import ConceptTracker, OutputConfig, TabularPlayers, every
    from concept_tracker.writers import tags

    monkeypatch.setattr(tracker_module, "child_pays", child_pays)  # the rule itself, not the suite's stand-in
    monkeypatch.setattr(worker_module, "spare_cores", lambda: 0)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with ConceptTracker(TabularPlayers(), x, log_dir=tmp_path, schedule=every(1), output=OutputConfig(figures=False)) as tracker:
        summary = tracker.step(model, 0)
        assert tracker._worker.inline and tracker._worker._proc is None
        assert tags.summary("complex_ratio") in summary  # finished inside step()


def test_a_failing_job_comes_back_as_its_exception_and_the_child_goes_on():
    worker = Worker()
    try:
        bad = finish_args(0)
        bad[1]["probe"].outputs[1, 3] = float("nan")
        failing = [worker.submit("finish_step", *bad), worker.submit("figure", "order_heatmap_figure", [0, 1], "x")]
        good = worker.submit("finish_step", *finish_args(2))
        done = answers(worker)
        assert not worker.inline  # a job's error is not the worker's failure
    finally:
        worker.close()
    assert isinstance(done[failing[0]], ValueError) and "NaN or inf in samples [1]" in str(done[failing[0]])
    assert isinstance(done[failing[1]], Exception)
    same_step(done[good], finish(finish_args(2)))


@pytest.mark.parametrize("inline", [False, True])
def test_a_job_never_changes_the_callers_arguments(inline):
    worker = Worker(inline=inline)
    args = finish_args(0)
    worker.submit("finish_step", *args)
    [done] = worker.answers(wait=True)
    worker.close()
    assert done.inline == inline and done.value[1].steps == [0]
    assert args[4].steps == []  # the caller's trajectory


def test_inline_jobs_run_on_the_workers_thread_count_and_restore_the_callers(monkeypatch):
    seen = []
    monkeypatch.setitem(worker_module.JOBS, "threads", ("torch", "get_num_threads"))
    worker = Worker(inline=True)
    caller = torch.get_num_threads()
    worker.submit("threads")
    seen = [a.value for a in worker.answers()]
    assert seen == [THREADS] and torch.get_num_threads() == caller


def test_a_child_that_cannot_start_warns_once_and_jobs_run_inline(monkeypatch):
    monkeypatch.setattr(worker_module, "command", lambda: ["/nonexistent/python"])
    worker = Worker()
    with pytest.warns(UserWarning, match="background worker could not take a job") as record:
        jobs = [worker.submit("finish_step", *finish_args(3)), worker.submit("figure", *figure_jobs()[1])]
        jobs.append(worker.submit("finish_step", *finish_args(4)))
        done = answers(worker)
    worker.close()
    assert len(record) == 1 and worker.inline
    same_step(done[jobs[0]], finish(finish_args(3)))
    assert done[jobs[1]] == render.render(*figure_jobs()[1])
    same_step(done[jobs[2]], finish(finish_args(4)))


def test_an_argument_pickle_refuses_falls_back_inline():
    class Steps(list):
        """Defined in a function: pickle cannot find it by name."""

    worker = Worker()
    name, steps, shares = figure_jobs()[1]
    with pytest.warns(UserWarning, match="could not take a job"):
        job = worker.submit("figure", name, Steps(steps), shares)
    assert answers(worker)[job] == render.render(name, steps, shares)
    worker.close()


def test_the_jobs_of_a_killed_child_run_inline():
    worker = Worker()
    worker.submit("figure", *figure_jobs()[1])
    worker.answers(wait=True)  # the child is up
    proc = worker._proc
    os.kill(proc.pid, signal.SIGSTOP)  # so that it dies owing the next job's answer
    job = worker.submit("finish_step", *finish_args(5))
    proc.kill()
    proc.wait()
    with pytest.warns(UserWarning, match="background worker failed .EOFError: the worker exited") as record:
        done = answers(worker)
        later = worker.submit("figure", *figure_jobs()[1])
        done.update(answers(worker))
    worker.close()
    assert len(record) == 1 and worker.inline
    same_step(done[job], finish(finish_args(5)))
    assert done[later] == render.render(*figure_jobs()[1])


def test_a_stopped_child_never_blocks_and_its_jobs_run_inline_after_the_bound(monkeypatch):
    worker = Worker()
    worker.submit("figure", *figure_jobs()[1])
    worker.answers(wait=True)  # the child is up
    monkeypatch.setattr(worker_module, "ANSWER_TIMEOUT", 1.0)
    os.kill(worker._proc.pid, signal.SIGSTOP)
    try:
        # More than a pipe's buffer of jobs: submit never waits for the stopped child.
        big = [worker.submit("finish_step", *finish_args(6 + i, samples=300)) for i in range(3)]
        assert worker._out and worker.answers() == []  # not sent yet, and no answer
        start = time.monotonic()
        with pytest.warns(UserWarning, match="no progress within 1 s") as record:
            done = answers(worker)
        waited = time.monotonic() - start
    finally:
        if worker._proc is not None:
            os.kill(worker._proc.pid, signal.SIGCONT)
        worker.close()
    # The stated bound (1 s here) plus the inline work, with a wide margin for a busy machine.
    assert len(record) == 1 and waited < 1.0 + 60
    for i, job in enumerate(big):
        same_step(done[job], finish(finish_args(6 + i, samples=300)))
