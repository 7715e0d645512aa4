"""StepWorker: jobs in submission order on one background thread, errors kept for failures(),
results handed out once, the caller's torch threads untouched; sync=True runs inline."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from concept_tracker.worker import PER_THREAD_SETTING, WORKER_THREADS, StepWorker


@pytest.mark.parametrize("sync", [False, True])
def test_jobs_run_in_order_and_results_come_out_once(sync):
    worker = StepWorker(sync=sync, max_pending=2)
    done = []

    def job(i):
        time.sleep(0.01 * (i % 3))  # uneven jobs: the order must not depend on their length
        done.append(i)
        return i

    for i in range(8):
        worker.submit(f"job {i}", lambda i=i: job(i))
    assert worker.results(wait=True) == list(range(8))
    assert done == list(range(8)) and worker.results() == []
    worker.close()


def test_jobs_run_off_the_calling_thread_and_inline_when_sync():
    threads = {}
    for sync in (False, True):
        worker = StepWorker(sync=sync)
        worker.submit("where", lambda sync=sync: threads.__setitem__(sync, threading.current_thread()))
        worker.close()
    assert threads[True] is threading.current_thread()
    assert threads[False] is not threading.current_thread()


@pytest.mark.parametrize("sync", [False, True])
def test_jobs_see_the_worker_thread_count_and_the_caller_keeps_its_own(sync):
    if not (sync or PER_THREAD_SETTING):
        pytest.skip("torch's thread setting is per thread only with its OpenMP backend")
    caller = torch.get_num_threads()
    seen = []
    worker = StepWorker(sync=sync)
    worker.submit("threads", lambda: seen.append(torch.get_num_threads()))
    worker.close()
    assert seen == [WORKER_THREADS]
    assert torch.get_num_threads() == caller


def test_a_failing_job_is_handed_out_once_and_the_next_jobs_still_run():
    worker = StepWorker()
    worker.submit("step 3", lambda: 1 / 0)
    worker.submit("step 4", lambda: 4)
    assert worker.results(wait=True) == [4]
    [(label, err)] = worker.failures()
    assert label == "step 3" and isinstance(err, ZeroDivisionError)
    assert worker.failures() == []  # handed out already
    worker.close()


@pytest.mark.parametrize("sync", [False, True])
def test_an_inline_job_raises_to_the_caller_after_the_queued_ones(sync):
    worker = StepWorker(sync=sync)
    done = []
    worker.submit("queued", lambda: done.append(1))
    with pytest.raises(IndexError):
        worker.submit("step 3", lambda: [][1], inline=True)
    assert done == [1] and worker.failures() == []
    worker.close()


def test_submit_waits_when_max_pending_jobs_are_held():
    release = threading.Event()
    worker = StepWorker(max_pending=1)
    worker.submit("blocker", release.wait)
    while worker._queue.qsize():  # until the worker runs the blocker
        time.sleep(0.01)
    worker.submit("waits", lambda: None)
    submitted = threading.Event()
    thread = threading.Thread(target=lambda: (worker.submit("next", lambda: None), submitted.set()))
    thread.start()
    # One job runs and one waits: a third submit cannot return before the first finishes.
    assert not submitted.wait(0.2)
    release.set()
    assert submitted.wait(5)
    thread.join()
    worker.close()
    assert worker.pending() == 0


def test_queued_jobs_finish_at_interpreter_exit_without_close():
    import subprocess
    import sys

    code = (
        "import time\n"
        "from concept_tracker.worker import StepWorker\n"
        "w = StepWorker()\n"
        "w.submit('slow', lambda: (time.sleep(0.3), print('job done', flush=True)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "job done" in out.stdout, out.stderr
