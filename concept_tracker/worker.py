"""The tracker's one background worker: a child process that runs post-processing jobs.

Only the masked forwards of a tracked step need the live weights; they run on the training
thread. What follows (the AND-OR solve, the step summary, the figures) is a pure function of
tensors, named in :data:`JOBS`. :class:`Worker` sends such jobs to one child process and hands
back their answers, in submission order, when asked (:meth:`Worker.answers`): training never
waits for a job, and nothing else runs beside the training thread in its process.

The protocol: each job and each answer is one pickle, preceded by its length (8 bytes, big
endian), on the child's stdin and stdout. The parent's ends of the pipes are non-blocking, so a
send or a read never blocks; bytes the pipe cannot take yet wait in a buffer for the next call.

The child is a fresh interpreter (not a ``multiprocessing`` child: fork is unsafe in a process
that holds CUDA and OpenMP threads, and spawn re-runs a training script that lacks an
``if __name__ == "__main__"`` guard), started by the first job, at a lower priority than training
and on one torch thread. It imports torch and the job's module (matplotlib only for figures).

Whether the child starts (the rule, :func:`child_pays`, applied by :meth:`Worker.decide` before
the first job): only if it can pay for itself, that is when training leaves the CPU room for it:
the model runs on an accelerator (the training thread mostly waits for the device), or this
process leaves a core idle (torch's intra-op threads fewer than the cores it may use, see
:func:`~concept_tracker.threads.spare_cores`). Otherwise the child's CPU time comes out of the
cores training runs on: its start-up (importing torch: 2.8 s of CPU measured on the 2-core VM of
BENCHMARKS.md) and every job, which cost the same CPU inline; so the jobs run inline from the
start, and training waits for them instead of sharing its cores with them. Each answer says what the job
cost the child's CPU (:attr:`Answer.cpu`) and what the child spent besides since its previous
answer (:attr:`Answer.overhead`: its start-up in the first), so that an overhead budget can
charge background work by the CPU it takes, not by the wall time a starved child needs.

One fallback and one failure rule: if the child cannot start, exits, cannot be sent a job, or
makes no progress for :data:`ANSWER_TIMEOUT` seconds while the caller waits for it (a stopped
child: no answer and, where ``/proc`` tells, no CPU time either, so that a child merely slowed
by a busy machine is not given up), the worker warns once, kills it, and runs every pending and
later job inline, on the calling thread, from then on. No wait outlasts that bound. Inline (also with
``inline=True``, for debugging) a job runs on one torch thread (the caller's setting is restored)
and on a copy of its arguments, as in the child: both give the same floats, and a job never
changes the caller's objects.
"""

from __future__ import annotations

import copy
import importlib
import os
import pickle
import select
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import torch

from .threads import spare_cores

JOBS = {
    "finish_step": ("concept_tracker.pipeline", "finish_step"),
    "figure": ("concept_tracker.writers.render", "render"),
}
"""Job name -> (module, function): what the worker can run. The child gets the module and function
with each job and imports the module then, so it imports only what its jobs need."""

ANSWER_TIMEOUT = 30.0
"""Seconds a caller waits (in :meth:`Worker.answers` with ``wait=True``: at ``close()``,
``state_dict()``) while the child makes no progress (no answer, no CPU time) before it counts
as stuck and its jobs run inline."""

STOP_TIMEOUT = 5.0
"""Seconds to wait for a killed child to be gone."""

NICENESS = 10
"""How much lower than training the child's scheduling priority is (Unix nice)."""

THREADS = 1
"""Torch intra-op threads of every job: chains of small tensor ops gain nothing from more, and
they would take cores from training."""

HEADER = 8
"""Bytes of the length before each pickle."""


class Answer(NamedTuple):
    """A finished job: its id (from :meth:`Worker.submit`), its return value or the exception it
    raised, the wall seconds it took, whether it ran inline (the caller waited for it), the CPU
    seconds it took, and (child only) the child's CPU seconds outside jobs since its previous
    answer (its start-up and imports in the first)."""

    job: int
    value: Any
    error: Exception | None
    seconds: float
    inline: bool = False
    cpu: float = 0.0
    overhead: float = 0.0


def child_pays(device: torch.device | str) -> bool:
    """Whether a child process can pay for itself beside a model on ``device``: the model runs on
    an accelerator, or this process leaves a core idle (see the module docstring)."""
    return torch.device(device).type != "cpu" or spare_cores() > 0


def command() -> list[str]:
    """The child's command line."""
    # Not ``-m``: the package imports this module before runpy would run it as __main__.
    return [sys.executable, "-c", "from concept_tracker.worker import serve; serve()"]


def run_job(module: str, function: str, args: tuple) -> Any:
    """``module.function(*args)`` (a job of :data:`JOBS`) on :data:`THREADS` torch threads."""
    caller = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return getattr(importlib.import_module(module), function)(*args)
    finally:
        torch.set_num_threads(caller)


def frame(message: Any) -> bytes:
    """``message`` pickled, after its length."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(HEADER, "big") + payload


class Worker:
    """One child process running :data:`JOBS` (see the module docstring); all calls from one thread.

    Args:
        inline: run every job inline, at :meth:`submit`.
    """

    def __init__(self, inline: bool = False) -> None:
        # Without select() on pipes (Windows), jobs run inline.
        self.inline = inline or sys.platform == "win32"
        self._proc: subprocess.Popen | None = None
        self._jobs: dict[int, tuple[str, str, tuple]] = {}  # submitted, not answered: id -> (module, function, args)
        self._done: list[Answer] = []  # answered, not handed out
        self._out = bytearray()  # bytes for the child not yet written
        self._in = bytearray()  # bytes from the child not yet parsed
        self._next = 0

    def submit(self, name: str, *args: Any) -> int:
        """Queue job ``name`` of :data:`JOBS` on ``args``; returns its id. Never waits (starts the
        child at the first job)."""
        job, self._next = self._next, self._next + 1
        self._jobs[job] = (*JOBS[name], args)
        if self.inline:
            self._run_inline()
            return job
        try:
            self._out += frame((job, *self._jobs[job]))
            if self._proc is None:
                self._proc = _start()
            self._pump(0.0)
        except Exception as err:  # no start, a closed pipe, an argument pickle refuses
            self._fail(f"could not take a job ({type(err).__name__}: {err})")
        return job

    def decide(self, pays: bool) -> None:
        """Before the first job: run every job inline unless a child ``pays`` (:func:`child_pays`)."""
        if self._proc is None and not self._next:
            self.inline = self.inline or not pays

    def busy(self) -> bool:
        """Whether the child owes answers (it then competes with training for the CPU)."""
        return bool(self._jobs) and not self.inline

    def answers(self, wait: bool = False) -> list[Answer]:
        """The answers finished since the last call, in submission order; ``wait=True`` first
        waits for every job submitted (at most :data:`ANSWER_TIMEOUT` s without an answer)."""
        if not self.inline and self._jobs:
            try:
                self._pump(0.0)
                last, cpu = time.monotonic(), self._cpu_ticks()
                while wait and self._jobs:
                    answered, now_cpu = self._pump(min(1.0, ANSWER_TIMEOUT)), self._cpu_ticks()
                    if answered or now_cpu != cpu:
                        last, cpu = time.monotonic(), now_cpu
                    elif time.monotonic() - last > ANSWER_TIMEOUT:
                        raise TimeoutError(f"no progress within {ANSWER_TIMEOUT:g} s")
            except Exception as err:  # it exited, a broken pipe, a stopped child
                self._fail(f"failed ({type(err).__name__}: {err})")
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Stop the child; answers still owed are dropped: call :meth:`answers` with ``wait=True`` first."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)
        self._jobs.clear()

    # ------------------------------------------------------------------------------ internals

    def _pump(self, timeout: float) -> bool:
        """Write what the child's stdin takes and read what its stdout has, waiting up to
        ``timeout`` seconds for either; True when an answer arrived.

        Raises:
            EOFError: the child exited. OSError: a broken pipe.
        """
        proc = cast(subprocess.Popen, self._proc)
        stdin, stdout = cast(IO[bytes], proc.stdin), cast(IO[bytes], proc.stdout)
        readable, writable, _ = select.select([stdout], [stdin] if self._out else [], [], timeout)
        if writable:
            try:
                del self._out[: os.write(stdin.fileno(), self._out)]
            except BlockingIOError:
                pass
        before = len(self._done)
        if readable:
            while True:
                try:
                    chunk = os.read(stdout.fileno(), 1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    raise EOFError(f"the worker exited (code {proc.poll()})")
                self._in += chunk
            self._parse()
        return len(self._done) > before

    def _cpu_ticks(self) -> int | None:
        """The child's CPU time so far, in clock ticks (None where ``/proc`` does not tell)."""
        try:
            stat = Path(f"/proc/{cast(subprocess.Popen, self._proc).pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return int(fields[11]) + int(fields[12])  # utime, stime

    def _parse(self) -> None:
        while len(self._in) >= HEADER:
            size = int.from_bytes(self._in[:HEADER], "big")
            if len(self._in) < HEADER + size:
                return
            job, value, error, seconds, cpu, overhead = pickle.loads(self._in[HEADER : HEADER + size])
            del self._in[: HEADER + size]
            self._jobs.pop(job, None)
            self._done.append(Answer(job, value, error, seconds, cpu=cpu, overhead=overhead))

    def _run_inline(self) -> None:
        for job in list(self._jobs):
            module, function, args = self._jobs.pop(job)
            start, cpu, value, error = time.perf_counter(), time.thread_time(), None, None
            try:
                # A copy, as the child gets: the job never changes the caller's objects.
                value = run_job(module, function, copy.deepcopy(args))
            except Exception as err:
                error = err
            seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
            self._done.append(Answer(job, value, error, seconds, inline=True, cpu=cpu))

    def _fail(self, reason: str) -> None:
        warnings.warn(
            f"concept_tracker: the background worker {reason}; its jobs run in the training process from now on.",
            stacklevel=4,
        )
        self.inline = True
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)
        self._out.clear()
        self._in.clear()
        self._run_inline()


def _start() -> subprocess.Popen:
    """Start the child with pipes on its stdin and stdout; the parent's ends do not block."""
    # The child must import this very package, also from a source checkout on sys.path.
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    for pipe in (proc.stdin, proc.stdout):
        os.set_blocking(cast(IO[bytes], pipe).fileno(), False)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """Kill the child (it holds nothing worth finishing: its answers are read or dropped) and reap it."""
    try:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for pipe in (proc.stdin, proc.stdout):
        cast(IO[bytes], pipe).close()


def serve() -> None:
    """The child's loop: run each job read from stdin, answer ``(id, value, error, seconds, cpu,
    overhead)`` (see :class:`Answer`) on stdout, until the input ends or nobody reads the answers
    any more."""
    # Answers go to a private copy of stdout; anything a library prints goes to stderr instead
    # of corrupting the answers.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs = sys.stdin.buffer
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    answered = 0.0  # process_time() when the last answer went out
    while True:
        header = jobs.read(HEADER)
        if len(header) < HEADER:
            return
        job, module, function, args = pickle.loads(jobs.read(int.from_bytes(header, "big")))
        start, cpu = time.perf_counter(), time.process_time()
        overhead = cpu - answered  # the start-up (process_time counts from 0), then reading the jobs
        value, error = None, None
        try:
            value = run_job(module, function, args)
        except Exception as err:
            if hasattr(err, "add_note"):  # Python >= 3.11: the child's traceback travels with it
                err.add_note("In the background worker:\n" + traceback.format_exc())
            error = err
        costs = (time.perf_counter() - start, time.process_time() - cpu, overhead)
        try:
            message = frame((job, value, error, *costs))
        except Exception as err:  # what pickle cannot carry: the exception's type and message
            error = error or err
            message = frame((job, None, RuntimeError(f"{type(error).__name__}: {error}"), *costs))
        answered = time.process_time()
        try:
            answers.write(message)
            answers.flush()
        except BrokenPipeError:
            return  # the caller stopped the child without waiting for this answer
