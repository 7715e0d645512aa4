"""A background thread that finishes tracked steps while training goes on.

Only the masked forwards of a tracked step need the live weights. Everything after them (the
AND-OR solve, the step summary, the store and TensorBoard writes) works on tensors the forwards
already returned, so :class:`StepWorker` runs it on one background thread, one job at a time, in
the order the jobs were submitted: steps are written in step order.

Threading: torch releases the GIL inside its kernels, so the worker and the training loop run
side by side. The worker sets its own intra-op thread count to :data:`WORKER_THREADS` when it
starts, so that it takes one core, not all of them; with torch's OpenMP backend that setting is
the calling thread's only (:data:`PER_THREAD_SETTING`; on other backends the worker leaves it
alone), so the training thread's setting is never touched. The worker draws no random numbers.

With ``sync=True`` (or ``inline=True`` for one job) a job runs inline, at
:meth:`StepWorker.submit`, on the same number of torch threads (the caller's setting is restored
afterwards), so it computes the very same floats; its exception then reaches the caller.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

WORKER_THREADS = 1
"""Intra-op torch threads of the worker: the post-processing is a chain of small tensor ops,
which gain nothing from more threads and would take cores from training."""

MAX_PENDING = 4
"""Jobs that may wait behind the running one before :meth:`StepWorker.submit` blocks (bounds
the memory held by steps not yet finished)."""

PER_THREAD_SETTING = "OpenMP" in torch.__config__.parallel_info()
"""Whether ``torch.set_num_threads`` acts on the calling thread only: true with torch's OpenMP
backend (that of the Linux and Windows builds). Elsewhere it would change the training thread's
setting too, so the worker then leaves the thread count alone."""

RESULTS_KEPT = 32
"""Job results kept for :meth:`StepWorker.results` (the oldest are dropped)."""


class StepWorker:
    """Run jobs in submission order on one background thread (or inline with ``sync=True``).

    A job's return value (unless None) joins :meth:`results`. A background job that raises does
    not stop the worker: its exception is kept, with the job's label, until :meth:`failures`
    hands it out (the caller decides how to report it). The thread starts
    with the first job and is a daemon: call :meth:`close` (or :meth:`drain`) before relying on
    the jobs' effects (at interpreter exit the queued jobs are finished all the same).

    Args:
        sync: run every job inline, at :meth:`submit`.
        max_pending: jobs waiting behind the running one before :meth:`submit` blocks.
    """

    def __init__(self, sync: bool = False, max_pending: int = MAX_PENDING) -> None:
        self.sync = sync
        self._results: deque[Any] = deque(maxlen=RESULTS_KEPT)
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: list[tuple[str, Exception]] = []
        self.busy_seconds = 0.0  # wall seconds the worker spent in jobs
        self.last_job_seconds: float | None = None  # wall seconds of the last finished job
        self.last_result: Any = None  # return value of the last job that returned one
        # At interpreter exit, finish the queued jobs before the daemon thread is stopped.
        weakref.finalize(self, self._queue.join)

    def submit(self, label: str, job: Callable[[], Any], inline: bool = False) -> None:
        """Queue ``job()``; ``label`` (e.g. ``"step 100"``) names it in :meth:`failures`. With
        ``sync`` or ``inline``, run it now, after the jobs queued before it, and let its
        exception propagate."""
        if self.sync or inline:
            self.drain()
            # The worker's thread count here too, so both modes compute the same floats.
            caller = torch.get_num_threads()
            torch.set_num_threads(WORKER_THREADS)
            try:
                self._run(label, job, catch=False)
            finally:
                torch.set_num_threads(caller)
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="concept-tracker-worker", daemon=True)
            self._thread.start()
        self._queue.put((label, job))

    def pending(self) -> int:
        """Jobs queued or running."""
        return self._queue.unfinished_tasks

    def drain(self) -> None:
        """Return once every submitted job has finished."""
        if not self.sync:
            self._queue.join()

    def results(self, wait: bool = False) -> list[Any]:
        """The return values of the jobs finished since the last call, in order (at most
        :data:`RESULTS_KEPT`); ``wait=True`` first waits for every submitted job."""
        if wait:
            self.drain()
        return [self._results.popleft() for _ in range(len(self._results))]

    def failures(self) -> list[tuple[str, Exception]]:
        """``(label, exception)`` of the background jobs that raised since the last call."""
        with self._lock:
            out, self._failures = self._failures, []
        return out

    def close(self) -> None:
        """Drain, then stop the thread."""
        self.drain()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._thread = None

    def _run(self, label: str, job: Callable[[], Any], catch: bool = True) -> None:
        start = time.perf_counter()
        try:
            out = job()
            if out is not None:
                self._results.append(out)
                self.last_result = out
        except Exception as err:
            if not catch:
                raise
            with self._lock:
                self._failures.append((label, err))
        finally:
            self.last_job_seconds = time.perf_counter() - start
            self.busy_seconds += self.last_job_seconds

    def _loop(self) -> None:
        if PER_THREAD_SETTING:
            torch.set_num_threads(WORKER_THREADS)
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._run(*item)
            finally:
                self._queue.task_done()
