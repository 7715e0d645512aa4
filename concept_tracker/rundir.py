"""One run per ``log_dir``: a lock against concurrent trackers, a refusal to mix a new run into an
old one, and the bookkeeping of what a run tracked.

TensorBoard shows every event file of a folder as one run, and the stored interactions of two
runs would interleave by step, so a folder holds exactly one run, as with
``SummaryWriter``'s and the Hugging Face ``Trainer``'s default ``runs/<date>_<host>`` folders:

- :class:`RunLock`: ``<log_dir>/concept_tracker.lock`` holds the owner's host and pid while a
  tracker writes there. A second live tracker on the folder is refused; a lock whose process
  is gone (a crash, a kill) is taken over.
- :func:`check_new_run`: a folder that already holds a run (stored interactions, or the run
  file ``<log_dir>/concept_tracker_run.json`` naming its run id, written at the first step also
  with ``store=False``) is refused unless the tracker resumes that run; :func:`new_run_dir`
  takes a fresh folder per run.
- :class:`StepTally`: tracked / scheduled / skipped / failed steps, warnings once per distinct
  message, and the end-of-run report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
import warnings
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from . import store
from .distributed import is_main_process

LOCK_NAME = "concept_tracker.lock"
RUN_FILE = "concept_tracker_run.json"
"""Names the run a folder holds (``{"run": id, "host", "pid", "started"}``)."""

_held: dict[str, weakref.ref[Any]] = {}
"""Locks held by this process: resolved path -> the owner (a lock file names a pid, not an
object, so two trackers of one process are told apart here)."""


def new_run_dir(root: str | os.PathLike = "runs/concepts") -> str:
    """A fresh run folder ``<root>/<Mon><DD>_<HH>-<MM>-<SS>_<host>``, named as ``SummaryWriter``
    and the Hugging Face ``Trainer`` name their default run folders, so that TensorBoard pointed
    at ``root`` shows each run as its own line.

    Returns:
        The path of a new, empty folder. It is created here, atomically, so that two launches
        within one second (in one process or several) never get the same folder: the later one
        gets a suffix ``_2``, ``_3``, ...
    """
    base = Path(root) / f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, k = base, 1
    while True:
        try:
            path.mkdir()
            return str(path)
        except FileExistsError:
            k += 1
            path = base.with_name(f"{base.name}_{k}")


def run_entries(folder: str | os.PathLike) -> list[Path]:
    """What a tracked run keeps in ``folder``: its TensorBoard event files, its stored
    interactions and sampled spectra, and its run file (empty when ``folder`` holds no run;
    other files are not the run's)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = (store.INTERACTIONS_DIR, store.SPECTRUM_DIR, RUN_FILE)
    return sorted(p for p in folder.iterdir() if p.name.startswith("events.out.tfevents") or p.name in names)


def marked_run(log_dir: str | os.PathLike) -> str | None:
    """The run id that ``<log_dir>/concept_tracker_run.json`` names (None without one)."""
    try:
        run = json.loads((Path(log_dir) / RUN_FILE).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        return None  # no run file, or a damaged one: no claim
    return run if isinstance(run, str) else None


def folder_runs(log_dir: str | os.PathLike) -> dict[str, str]:
    """The runs a folder holds: ``{run id: where it is named}``, from its run file and the run
    ids its stored step files record (files that record none or cannot be read make no claim)."""
    found = {}
    marked = marked_run(log_dir)
    if marked is not None:
        found[marked] = str(Path(log_dir) / RUN_FILE)
    for split in store.SPLITS:
        for step in store.list_steps(log_dir, split):
            path = store.step_path(log_dir, step, split)
            try:
                run = store.load_step_metadata(path).get("run")
            except ValueError:
                continue
            if isinstance(run, str):
                found.setdefault(run, str(path))
    return found


def _write_run_file(log_dir: str, run: str) -> None:
    path = Path(log_dir) / RUN_FILE
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
    info = {"run": run, "host": socket.gethostname(), "pid": os.getpid()}
    tmp.write_text(json.dumps({**info, "started": datetime.now().isoformat(timespec="seconds")}))
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to another user, or the platform cannot tell
    return True


class RunLock:
    """The lock of one tracker on its ``log_dir``; :meth:`acquire` once, :meth:`release` at close."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.path = Path(log_dir) / LOCK_NAME
        self._finalizer: weakref.finalize | None = None

    def acquire(self, owner: object) -> None:
        """Take the lock for ``owner`` (released when ``owner`` is garbage collected, if not before).

        Raises:
            ValueError: while another live tracker (in this or another process) holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._break_if_stale(key, me)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**me, "started": datetime.now().isoformat(timespec="seconds")}, f)
            _held[key] = weakref.ref(owner)
            self._finalizer = weakref.finalize(owner, _release, self.path, key)
            return
        raise ValueError(f"could not take the lock {str(self.path)!r}; another tracker keeps taking it.")

    def _break_if_stale(self, key: str, me: dict[str, Any]) -> None:
        try:
            holder = json.loads(self.path.read_text() or "{}")
            age = time.time() - self.path.stat().st_mtime
        except (OSError, json.JSONDecodeError):
            holder, age = {}, math.inf  # gone meanwhile, or written halfway by a killed process
        same_host = holder.get("host") == me["host"]
        pid = holder.get("pid")
        if not holder:
            live = age < 10  # an empty lock is either being written right now or left by a crash
        elif same_host and pid == me["pid"]:
            owner = _held.get(key)
            live = owner is not None and owner() is not None
        else:
            live = not same_host or (isinstance(pid, int) and _pid_alive(pid))
        if live:
            where = "this process" if pid == me["pid"] and same_host else f"process {pid} on {holder.get('host')}"
            raise ValueError(
                f"log_dir={str(self.path.parent)!r} is in use by another ConceptTracker ({where}); close() "
                f"that tracker first, or give this one its own log_dir (e.g. concept_tracker.new_run_dir()). "
                f"If no tracker runs there any more, delete {str(self.path)!r}."
            )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file (no-op when it was never taken or already released)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None


def _release(path: Path, key: str) -> None:
    _held.pop(key, None)
    path.unlink(missing_ok=True)


def check_new_run(log_dir: str | os.PathLike, stored_steps: list[int], marked: str | None = None) -> None:
    """Refuse to start a run in a folder that holds another run: stored interactions
    (``stored_steps``) or a run file naming the run ``marked`` (a run tracked with ``store=False``
    has only that, beside its event file).

    Raises:
        ValueError: naming the folder, what it holds and the three ways on.
    """
    if stored_steps or marked is not None:
        shown = ", ".join(map(str, stored_steps[:5])) + (", ..." if len(stored_steps) > 5 else "")
        held = f"stored steps {shown}" if stored_steps else f"run {marked}, no stored interactions"
        raise ValueError(
            f"log_dir={str(log_dir)!r} already holds a run ({held}); a second run there would "
            "interleave with it. Pass a fresh log_dir per run (e.g. log_dir=concept_tracker.new_run_dir()), "
            "resume that run with tracker.load(...) / load_state_dict(...) before the first step, or "
            "delete the folder."
        )


class StepTally:
    """What happened to the scheduled steps of a run, and warnings once per distinct message."""

    def __init__(self) -> None:
        self.called = False  # step() was called at least once
        self.scheduled = 0
        self.tracked = 0
        self.failed = 0
        self._messages: set[str] = set()

    def warn_once(self, message: str, key: str | None = None, stacklevel: int = 3) -> None:
        """Warn ``message`` unless a warning of the same ``key`` (default: the message) was given."""
        key = message if key is None else key
        if key not in self._messages:
            self._messages.add(key)
            warnings.warn(message, stacklevel=stacklevel)

    def report(self, skipped: int, log_dir: str) -> str:
        """The run's step counts as one line: a warning when a step failed or nothing was
        tracked, else logged at INFO level."""
        line = (
            f"ConceptTracker ({log_dir}): {self.tracked} steps tracked of {self.scheduled} scheduled, "
            f"{skipped} skipped (max_overhead), {self.failed} failed."
        )
        if self.called and not self.tracked:
            warnings.warn(line + " Nothing was tracked; see the warnings above, or the schedule.", stacklevel=4)
        elif self.failed:
            warnings.warn(line, stacklevel=4)
        else:
            logging.getLogger("concept_tracker").info(line)
        return line


class RunGuard:
    """The life cycle of one tracker's run, around each ``step()`` call.

    Args:
        log_dir: the run folder.
        stored_steps: returns the steps already stored in ``log_dir`` (checked at the first
            ``step()``, so that a :meth:`resume` in between can allow them).

    Only global rank 0, the process that writes, locks and checks the folder (asked at the first
    ``step()``: a process group may start after the tracker is built).
    """

    def __init__(self, log_dir: str, stored_steps: Any) -> None:
        self.log_dir = log_dir
        self.tally = StepTally()
        self.id = uuid.uuid4().hex[:16]
        """The run's id, stored with every step file (see ``store.save_step``)."""
        self.resumed = False
        self.closed = False
        self.last_step: int | None = None
        """The last step ``step()`` was called with (saved with the state: steps stored after it
        belong to a timeline that a resume from that state abandons)."""
        self._stored_steps = stored_steps
        self._main = False
        self._lock = RunLock(log_dir)
        self._started = False
        self._refused = False  # the folder was refused at the first step: later steps do nothing
        self._resumed_at: int | None = None

    def enter(self, owner: object, step: int, cursor: int | None) -> bool:
        """Called first by every ``step(model, step)``: False when ``step`` is at or below the last
        step tracked (``cursor``), with one warning for a step counter that went backwards.

        Raises:
            RuntimeError: after :meth:`close`.
            ValueError: at the first call, when the folder is locked or holds another run (later
                calls then track nothing and raise nothing: the refusal is said once).
        """
        if self.closed:
            raise RuntimeError(
                f"step() called after close() on the tracker of {self.log_dir!r}; build a new tracker "
                "(with load() to continue this run)."
            )
        self.tally.called = True
        if self._refused:
            return False
        self._main = self._main or (not self._started and is_main_process())
        if not self._started and self._main:
            try:
                self._lock.acquire(owner)
            except ValueError:
                self._refused = True
                raise
            try:
                if self.resumed:
                    self._trim()
                else:
                    check_new_run(self.log_dir, self._stored_steps(), marked_run(self.log_dir))
                _write_run_file(self.log_dir, self.id)
            except ValueError:
                self._lock.release()  # refused: the folder stays free for the run it holds
                self._refused = True
                raise
        self._started = True
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        if cursor is not None and step < cursor:
            self.tally.warn_once(
                f"ConceptTracker got step {step} after step {cursor}: the step counter went backwards (a "
                f"restarted loop?), and steps up to {cursor} are not tracked again. Pass the global step, "
                "or use one tracker per run.",
                key="backwards",
                stacklevel=4,
            )
        return cursor is None or step > cursor

    def failed(self, what: str, err: Exception, strict: bool) -> None:
        """Handle an exception of a scheduled step (``what``: e.g. ``"step 100"``): raise it when
        ``strict`` or when it is the run's first scheduled step (before training has cost
        anything), else warn once per message."""
        self.tally.failed += 1
        if strict or self.tally.scheduled == 1:
            raise err
        reason = f"{type(err).__name__}: {err}"
        self.tally.warn_once(
            f"ConceptTracker could not track {what}: {reason} Training continues; the same error at "
            "later steps is not reported again. Pass strict=True to raise instead.",
            key=getattr(err, "warn_key", reason),  # errors whose message names a sample share one key
            stacklevel=4,
        )

    def resume(self, saved: dict[str, Any] | None, current: dict[str, Any], run: str | None, step: int | None) -> None:
        """Continue the saved run ``run`` (its id; None in states that predate it), saved at
        training step ``step`` (None: before any step), in this folder.

        Refused before anything changes: after the first :meth:`enter` (a load mid-run would
        rewind it), when an entry of the saved run fingerprint (``probes.run_fingerprint`` and the
        settings the readings depend on; None or missing entries in older states) differs from
        ``current``, and when the folder holds another run. Steps stored after ``step`` are
        removed at the first :meth:`enter`, with one warning (see :meth:`_trim`).

        Raises:
            ValueError: naming what differs and the way on.
        """
        if self._started:
            raise ValueError(
                f"load() / load_state_dict() must come before the first step(); this tracker is at step "
                f"{self.last_step} already, and loading a state now would rewind the run. Keep this tracker "
                "going, or build a new tracker and load the state into it."
            )
        diff = [
            f"{k}: saved {saved[k]!r}, now {v!r}" for k, v in current.items() if saved and k in saved and saved[k] != v
        ]
        if diff:
            raise ValueError(
                f"state is from another run ({'; '.join(diff)}); build the tracker with the players, "
                "baseline, kind, value, bands and probes of the saved run, or start a new run instead of "
                "loading this state."
            )
        others = {r: where for r, where in folder_runs(self.log_dir).items() if r != run}
        if run is not None and others:
            other, where = next(iter(others.items()))
            raise ValueError(
                f"state is of run {run} but log_dir={self.log_dir!r} holds run {other} ({where}); loading it "
                "there would mix two runs. Build the tracker with the log_dir of the saved run, or start a "
                "new run in a fresh log_dir (concept_tracker.new_run_dir())."
            )
        self.resumed = True
        self._refused = False
        self._resumed_at = -1 if step is None else step
        self.id = run or self.id

    def _trim(self) -> None:
        """Remove the steps stored after the resumed state was saved, with one warning: they
        belong to a timeline that training abandoned (a resume from an earlier checkpoint), and
        the resumed history continues from the state."""
        at = cast(int, self._resumed_at)
        later = {split: [s for s in store.list_steps(self.log_dir, split) if s > at] for split in store.SPLITS}
        later["spectrum"] = [s for s in store.list_spectra(self.log_dir) if s > at]
        if not any(later.values()):
            return
        for split, steps in later.items():
            for step in steps:
                path = store.spectrum_path(self.log_dir, step) if split == "spectrum" else None
                (path or store.step_path(self.log_dir, step, split)).unlink(missing_ok=True)
        steps = sorted({s for found in later.values() for s in found})
        shown = ", ".join(map(str, steps[:5])) + (", ..." if len(steps) > 5 else "")
        self.tally.warn_once(
            f"ConceptTracker resumes {self.log_dir!r} from a state saved at step {at}; the steps stored "
            f"after it (steps {shown}) belong to the run as it went before the resume and are removed, so "
            "that the stored history continues from the state. Their TensorBoard events stay in the "
            "older event file.",
            stacklevel=5,
        )

    def close(self, skipped: int) -> str | None:
        """Release the lock and report the step counts (see :meth:`StepTally.report`); once."""
        if self.closed:
            return None
        self.closed = True
        self._lock.release()
        return self.tally.report(skipped, self.log_dir) if self._main else None
