"""The AND-OR solver in a worker process: the same split as in this process, and a solve that
still happens when the worker cannot start or dies."""

from __future__ import annotations

import pytest
import torch

from concept_tracker import solver_process
from concept_tracker.and_or import AndOrConfig, decompose, matching_error
from concept_tracker.solver_process import SolverProcess
from concept_tracker.threads import threads_for

CONFIG = AndOrConfig(max_iter=200)


def values(seed: int) -> torch.Tensor:
    return torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def same_split(got, expected) -> None:
    # Both sides run the same float64 code on one thread; a tolerance only absorbs library builds.
    for name in ("and_effects", "or_effects", "gamma", "q"):
        assert torch.allclose(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-12), name
    assert got.iterations == expected.iterations


def test_the_worker_splits_like_this_process_and_warm_starts():
    solver = SolverProcess()
    try:
        first = solver.decompose(values(0), CONFIG)
        second = solver.decompose(values(1), CONFIG, warm_start=(first.gamma, first.q))
    finally:
        solver.close()
    with threads_for(1):
        same_split(first, decompose(values(0), CONFIG))
        same_split(second, decompose(values(1), CONFIG, warm_start=(first.gamma, first.q)))
    assert matching_error(values(1), second.and_effects, second.or_effects, second.q).max() < 1e-9


def test_a_solver_error_reaches_the_caller_and_the_worker_goes_on():
    solver = SolverProcess()
    try:
        bad = values(0)
        bad[1, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN or inf in samples \\[1\\]"):
            solver.decompose(bad, CONFIG)
        same_split(solver.decompose(values(2), CONFIG), decompose(values(2), CONFIG))
        assert not solver._local
    finally:
        solver.close()


def test_a_worker_that_cannot_start_solves_here(monkeypatch):
    monkeypatch.setattr(solver_process, "_command", lambda: ["/nonexistent/python"])
    solver = SolverProcess()
    with pytest.warns(UserWarning, match="the solver process failed"):
        result = solver.decompose(values(3), CONFIG)
    same_split(result, decompose(values(3), CONFIG))


def test_a_worker_that_died_is_replaced_by_this_process():
    solver = SolverProcess()
    solver.decompose(values(4), CONFIG)
    solver._proc.kill()
    solver._proc.wait()
    with pytest.warns(UserWarning, match="the solver process failed"):
        result = solver.decompose(values(5), CONFIG)
    same_split(result, decompose(values(5), CONFIG))
    solver.close()
