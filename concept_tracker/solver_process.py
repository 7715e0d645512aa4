"""The AND-OR solver in a separate Python process, so that it never holds the training's GIL.

The tracker finishes tracked steps on a background thread (:mod:`concept_tracker.worker`). The
solver is most of that work: thousands of small tensor ops, each dispatched from Python. Beside
a training loop that is itself bound by Python dispatch (a small model, or a CPU run), the two
threads take turns on the interpreter lock, and training slows down even when a core is free
for the solver (measured in BENCHMARKS.md). :class:`SolverProcess` runs
:func:`~concept_tracker.and_or.decompose` in one worker process instead: the calling thread
sends the values and waits for the split, without the lock, while the process computes.

The worker is a fresh interpreter (:mod:`concept_tracker.interpreter`, as for the figures) on
one torch thread and at a lower priority than training. It computes the very same floats as
:func:`~concept_tracker.and_or.decompose` on one thread in the calling process. If it cannot
start or dies, the solver warns once and runs in the calling process from then on; a solver
error (bad values) is raised in the caller as a ``ValueError``, as in-process.
"""

from __future__ import annotations

import pickle
import subprocess
import threading
from typing import IO, cast

from torch import Tensor

from . import interpreter
from .and_or import AndOrConfig, AndOrResult, decompose

__all__ = ["SolverProcess"]


def _command() -> list[str]:
    return interpreter.command("concept_tracker.solver_process", "_serve")


class SolverProcess(interpreter.Client):
    """:func:`~concept_tracker.and_or.decompose` in a worker process (see the module docstring).

    Calls are answered in order; one caller at a time (the tracker's worker thread).
    """

    fallback = "the AND-OR solver runs in the training process from now on."

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def decompose(
        self, values: Tensor, config: AndOrConfig | None = None, warm_start: tuple[Tensor, Tensor] | None = None
    ) -> AndOrResult:
        """:func:`~concept_tracker.and_or.decompose` of CPU ``values`` [B, 2**n], in the worker."""
        with self._lock:
            if not self._local:
                try:
                    # Started by the first call, on the tracker's worker thread: a run that never
                    # solves in the background never pays for it.
                    proc = self._proc or self._spawn()
                    stdin, stdout = cast(IO[bytes], proc.stdin), cast(IO[bytes], proc.stdout)
                    pickle.dump((values, config, warm_start), stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    stdin.flush()
                    result, error = pickle.load(stdout)
                except Exception as err:  # no start, a closed pipe, a worker that died
                    self._fail(f"the solver process failed ({type(err).__name__}: {err})")
                else:
                    if error is not None:
                        raise ValueError(error)
                    return cast(AndOrResult, result)
        return decompose(values, config, warm_start=warm_start)

    def close(self) -> None:
        """Stop the worker (it exits once it has read the end of its input)."""
        with self._lock:
            self._stop(kill=False)

    def _spawn(self) -> subprocess.Popen:
        self._proc = interpreter.start(_command(), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        return self._proc


def _serve() -> None:
    """The worker: decompose each job read from stdin, answer ``(result, error message)``."""
    import torch

    torch.set_num_threads(1)

    def answer(job: tuple) -> tuple:
        values, config, warm_start = job
        try:
            return decompose(values, config, warm_start=warm_start), None
        except Exception as err:
            return None, str(err)

    interpreter.serve(answer)
