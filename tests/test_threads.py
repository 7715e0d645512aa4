"""Size-aware threading: the caller's thread count survives, and results do not depend on it."""

from __future__ import annotations

import threading

import pytest
import torch
from models import mlp

import concept_tracker.and_or as and_or
import concept_tracker.threads as threads
from concept_tracker.and_or import AndOrConfig, decompose
from concept_tracker.threads import ELEMENTS_PER_THREAD, thread_count, threads_for
from concept_tracker.transforms import and_inverse, and_transform, coalition_matrix, or_inverse, or_transform


@pytest.fixture
def two_threads(torch_threads):
    """The test runs with 2 intra-op threads; the session's setting comes back afterwards."""
    torch_threads(2)


def mlp_values(n: int, samples: int) -> torch.Tensor:
    model = mlp(d_in=n, hidden=16, classes=2, seed=0).double()
    x = torch.randn(samples, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        out = model((x[:, None, :] * coalition_matrix(n).double()[None]).reshape(-1, n))[:, 0]
    return out.reshape(samples, 1 << n)


def test_thread_count_follows_the_size():
    assert thread_count(0, 8) == 1
    assert thread_count(ELEMENTS_PER_THREAD - 1, 8) == 1
    assert thread_count(3 * ELEMENTS_PER_THREAD, 8) == 3
    assert thread_count(100 * ELEMENTS_PER_THREAD, 8) == 8
    assert thread_count(100 * ELEMENTS_PER_THREAD, 1) == 1


def test_block_sets_and_restores(two_threads):
    with threads_for(1000) as inside:
        assert inside == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"):
        with threads_for(1000):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    # Nested blocks: the inner one finds 1 thread and leaves it.
    with threads_for(1000):
        with threads_for(10 * ELEMENTS_PER_THREAD) as inner:
            assert inner == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads_for(10 * ELEMENTS_PER_THREAD) as inside:
        assert inside == 2
    # Off the CPU nothing changes ("meta" stands in for CUDA here).
    with threads_for(1000, torch.device("meta")) as inside:
        assert inside == 2 and torch.get_num_threads() == 2


def test_library_calls_restore_the_callers_setting(two_threads, monkeypatch):
    values = mlp_values(5, 2)
    seen = []
    real_admm = and_or._admm

    def spy(*args):
        seen.append(torch.get_num_threads())
        return real_admm(*args)

    monkeypatch.setattr(and_or, "_admm", spy)
    decompose(values, AndOrConfig(max_iter=20))
    assert seen == [1] and torch.get_num_threads() == 2
    for fn in (and_transform, and_inverse, or_transform, or_inverse):
        fn(values)
        assert torch.get_num_threads() == 2

    def fail(*args):
        raise RuntimeError("solver failed")

    monkeypatch.setattr(and_or, "_admm", fail)
    with pytest.raises(RuntimeError, match="solver failed"):
        decompose(values)
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(
    "OpenMP" not in torch.__config__.parallel_info(), reason="per-thread settings are an OpenMP property"
)
def test_a_worker_thread_leaves_the_main_threads_setting(two_threads):
    inside, release = threading.Event(), threading.Event()
    seen = []

    def work():
        with threads_for(1000):
            seen.append(torch.get_num_threads())
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=work)
    worker.start()
    inside.wait(10)
    main_during = torch.get_num_threads()
    release.set()
    worker.join()
    assert seen == [1] and main_during == 2 and torch.get_num_threads() == 2


def test_results_agree_across_thread_counts(two_threads, monkeypatch):
    values = mlp_values(7, 3)
    one = decompose(values, AndOrConfig(max_iter=200))
    effects_one = [fn(values) for fn in (and_transform, or_transform)]
    # Every problem is "large" now: the solver and the transforms run on the caller's 2 threads.
    monkeypatch.setattr(threads, "ELEMENTS_PER_THREAD", 1)
    with threads_for(values.numel()) as inside:
        assert inside == 2
    two = decompose(values, AndOrConfig(max_iter=200))
    for name in ("and_effects", "or_effects", "gamma", "q"):
        torch.testing.assert_close(getattr(two, name), getattr(one, name), rtol=1e-9, atol=1e-9)
    for got, want in zip((and_transform(values), or_transform(values)), effects_one):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
