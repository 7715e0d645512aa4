"""Worker processes: a fresh Python interpreter that answers pickled jobs over its stdin and stdout.

The figure renderer (:mod:`concept_tracker.writers.render`) and the AND-OR solver
(:mod:`concept_tracker.solver_process`) run in such a process. Not a ``multiprocessing`` child:
fork is unsafe in a process that holds CUDA and OpenMP threads, and spawn re-runs a training
script that lacks an ``if __name__ == "__main__"`` guard. The worker runs at a lower priority
than training.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

NICENESS = 10
"""How much lower than training a worker's scheduling priority is (Unix nice)."""


def command(module: str, function: str) -> list[str]:
    """The command line of a worker that runs ``module.function()``."""
    # Not ``-m``: the package imports the module before runpy would run it as __main__.
    return [sys.executable, "-c", f"from {module} import {function}; {function}()"]


def start(argv: list[str], **env: str) -> subprocess.Popen:
    """Start a worker with pipes on its stdin and stdout and ``env`` added to this environment."""
    # The worker must import this very package, also from a source checkout on sys.path.
    root = str(Path(__file__).resolve().parents[1])
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [root, full.get("PYTHONPATH")]))
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full)


def stop(proc: subprocess.Popen, kill: bool) -> None:
    """Close the worker's input (it exits once it has read to the end), killing it first when
    ``kill``; its exit (unloading torch takes about a second) is awaited on a daemon thread."""
    try:
        if kill:
            proc.kill()
        cast(IO[bytes], proc.stdin).close()
    except OSError:
        pass
    threading.Thread(target=proc.wait, daemon=True).start()


class Client:
    """What the caller of a worker process keeps: the process, once started, and whether it
    failed. After a failure the caller does the work itself; :attr:`fallback` says so in the one
    warning :meth:`_fail` gives."""

    fallback: str  # e.g. "figures are rendered in the training process from now on."

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._local = False  # work in this process (the worker failed)

    def _stop(self, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop(proc, kill)

    def _fail(self, reason: str) -> None:
        warnings.warn(f"concept_tracker: {reason}; {self.fallback}", stacklevel=4)
        self._local = True
        self._stop(kill=True)


def serve(answer: Callable[[Any], Any]) -> None:
    """The worker's loop: ``answer(job)`` for each job unpickled from stdin, pickled to stdout,
    until the input ends or nobody reads the answers any more."""
    # Answers go to a private copy of stdout; anything a library prints goes to stderr instead
    # of corrupting the pickle stream.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs = sys.stdin.buffer
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    while True:
        try:
            job = pickle.load(jobs)
        except EOFError:
            return
        reply = answer(job)
        try:
            pickle.dump(reply, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
        except BrokenPipeError:
            return  # the caller stopped the worker without waiting for this answer
