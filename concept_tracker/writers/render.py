"""Render figures in a separate Python process, so that training does not wait for matplotlib.

A figure of :mod:`.figures` takes a few tenths of a second of CPU to build and render, often
more than the rest of a tracked step. :class:`FigureRenderer` hands the *inputs* of a figure
function (small tensors and lists) to one worker process and collects the rendered PNG images
later, without blocking (:meth:`~FigureRenderer.ready`) or at the end
(:meth:`~FigureRenderer.wait`). PNG, not pixels, crosses the pipe: it is a tenth of the size,
and the training process neither encodes it nor spends long reading it.

The worker is a fresh interpreter running :func:`_serve`, talking pickle over its stdin and
stdout (:mod:`concept_tracker.interpreter`), at a lower priority than training.

If the worker cannot start, dies or stops answering, the renderer warns once and renders in
the calling process from then on, the figures still pending included: no figure is lost.
"""

from __future__ import annotations

import io
import pickle
import queue
import subprocess
import threading
from typing import IO, Any, cast

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import interpreter
from . import figures


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (RGBA), rendered off-screen with Agg."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def render(name: str, args: tuple, kwargs: dict) -> bytes:
    """Build figure ``name`` of :mod:`.figures` from its arguments and render it to PNG bytes."""
    return figure_png(getattr(figures, name)(*args, **kwargs))


def _command() -> list[str]:
    return interpreter.command("concept_tracker.writers.render", "_serve")


class FigureRenderer(interpreter.Client):
    """Figures rendered by a worker process, in the order they were submitted.

    Results are ``(key, png)`` pairs, ``png`` the PNG bytes of the figure, or an exception when
    the figure function failed.
    """

    fallback = "figures are rendered in the training process from now on."

    def __init__(self) -> None:
        super().__init__()
        self._results: queue.Queue = queue.Queue()
        self._pending: dict[int, tuple[Any, str, tuple, dict]] = {}
        self._finished: list[tuple[Any, bytes | Exception]] = []
        self._next_id = 0

    def submit(self, key: Any, name: str, *args: Any, **kwargs: Any) -> None:
        """Queue figure function ``name`` of :mod:`.figures` with its arguments under ``key``."""
        job_id = self._next_id
        self._next_id += 1
        self._pending[job_id] = (key, name, args, kwargs)
        if not self._local:
            try:
                self._send((job_id, name, args, kwargs))
                return
            except Exception as err:  # no start, a closed pipe, an argument pickle refuses
                self._fail(f"could not reach the figure worker ({type(err).__name__}: {err})")
        self._render_locally()

    def busy(self) -> bool:
        """Whether the worker still owes a figure (is starting or rendering); callable from any
        thread, without waiting."""
        return not self._local and len(self._pending) > self._results.qsize()

    def ready(self) -> list[tuple[Any, bytes | Exception]]:
        """The figures finished since the last call, without waiting."""
        while True:
            try:
                self._receive(self._results.get_nowait())
            except queue.Empty:
                break
        return self._take()

    def wait(self, timeout: float = 120.0) -> list[tuple[Any, bytes | Exception]]:
        """Every figure still pending, waiting up to ``timeout`` seconds for each answer."""
        while self._pending and not self._local:
            try:
                self._receive(self._results.get(timeout=timeout))
            except queue.Empty:
                self._fail(f"the figure worker did not answer within {timeout:.0f} s")
        self._render_locally()
        return self._take()

    def close(self) -> None:
        """Stop the worker: it exits once it has read the end of its input (figures still
        pending are dropped: call :meth:`wait` first)."""
        self._stop(kill=False)

    # ------------------------------------------------------------------------------ internals

    def _take(self) -> list[tuple[Any, bytes | Exception]]:
        done, self._finished = self._finished, []
        return done

    def _send(self, job: tuple) -> None:
        stdin = cast(IO[bytes], (self._proc or self._start()).stdin)  # a pipe: Popen(stdin=PIPE)
        pickle.dump(job, stdin, protocol=pickle.HIGHEST_PROTOCOL)
        stdin.flush()

    def _start(self) -> subprocess.Popen:
        self._proc = interpreter.start(_command(), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
        threading.Thread(target=_read, args=(self._proc.stdout, self._results), daemon=True).start()
        return self._proc

    def _receive(self, message: tuple | None) -> None:
        if message is None:  # the worker's stdout closed: it exited
            if self._pending and not self._local:
                self._fail("the figure worker exited")
            self._render_locally()
            return
        job_id, image, error = message
        job = self._pending.pop(job_id, None)
        if job is not None:  # else it was rendered here after a timeout
            self._finished.append((job[0], image if error is None else RuntimeError(error)))

    def _render_locally(self) -> None:
        if not self._local:
            return
        for job_id in list(self._pending):
            key, name, args, kwargs = self._pending.pop(job_id)
            try:
                self._finished.append((key, render(name, args, kwargs)))
            except Exception as err:
                self._finished.append((key, err))


def _read(stream: IO[bytes], results: queue.Queue) -> None:
    """Reader thread: the worker's answers into ``results``, then None when it is gone."""
    with stream:
        try:
            while True:
                results.put(pickle.load(stream))
        except (EOFError, OSError, pickle.UnpicklingError):
            results.put(None)


def _serve() -> None:
    """The worker: render each job read from stdin, answer ``(job id, image, error)``."""

    def answer(job: tuple) -> tuple:
        job_id, name, args, kwargs = job
        try:
            return job_id, render(name, args, kwargs), None
        except Exception as err:
            return job_id, None, f"{type(err).__name__} in {name}: {err}"

    interpreter.serve(answer)
