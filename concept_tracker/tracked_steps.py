"""Tracked steps after their masked forwards: queued for the background worker, then applied in
step order to the run's records, the store and the writer.

The worker finishes one step at a time (:func:`concept_tracker.pipeline.finish_step`) on copies
of the records (trajectory, "and_or" warm starts) and hands back new ones, applied here, on the
training thread: no record is written from two threads. Only ``collect(wait=True)`` (at
``close()``, ``state_dict()``) waits for the worker, each wait bounded.

Memory: besides the engine, the records hold ``O(B * 2**n)`` running dynamics state and, for
the trajectory figure, the effects of probe sample 0 at every tracked step (``T * K * 2**n``
floats for ``T`` steps and ``K`` kinds).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from . import store as storage
from .and_or import AndOrConfig
from .budget import OverheadBudget
from .config import OutputConfig, ReadingsConfig
from .interactions import Interactions
from .metrics.dynamics import Trajectory
from .metrics.profile import Bands, OrderProfile, stack_effects
from .pipeline import warm_from_state, warm_state
from .players import Players
from .rundir import RunGuard
from .spectrum import OrderSpectrum
from .spectrum_readings import SpectrumReadings
from .state import DeclaredState, stack_list, unstack_list
from .summary import StepSummary
from .worker import Answer, Worker
from .writers import tags
from .writers.step_figures import StepFigures
from .writers.tensorboard import TensorBoardWriter

MAX_PENDING = 4
"""Tracked steps whose background work may wait; a step beyond waits for the worker (bounded)."""


class Queued(NamedTuple):
    """A tracked step whose forwards are done: the engine's results on the CPU, what training
    waited for them, the probe ids per split, and the sampled spectrum's scalars read beside them."""

    step: int
    results: dict[str, Interactions]
    stall: float
    ids: Mapping[str, list[Any] | None]
    spectrum: dict[str, float]


class TrackedSteps(DeclaredState):
    """The queue of tracked steps and the records their results build.

    Declared state (adopted by the tracker's ``state_dict``): ``trajectory``, ``warm_start``,
    ``shares`` ([n + 1] strength shares per tracked step) and ``sample_effects`` ([K, 2**n]
    effects of probe sample 0 per tracked step, for the trajectory figure).

    Args:
        worker, writer, run, budget: the tracker's background worker, TensorBoard writer (its
            folder holds the stored steps), run guard (tally, warnings, run id) and overhead budget.
        players: the players (their baseline is stored with each step); ``bands``: the band
            cut-offs, for the figures.
        and_or: the solver's settings for kind "and_or" (the values are split on the worker);
            None for kinds "and" and "or" (the engine's results are final).
        readings, output: the tracker's configurations.
        spectrum: the sampled order spectrum's writer, when the tracker reads it.
        strict: a failing step or figure raises instead of warning.
    """

    def __init__(
        self,
        worker: Worker,
        writer: TensorBoardWriter,
        run: RunGuard,
        budget: OverheadBudget,
        players: Players,
        bands: Bands,
        *,
        and_or: AndOrConfig | None,
        readings: ReadingsConfig,
        output: OutputConfig,
        spectrum: SpectrumReadings | None,
        strict: bool,
    ) -> None:
        self._worker, self._writer, self._run, self._budget = worker, writer, run, budget
        self.players, self.and_or, self.output, self.strict = players, and_or, output, strict
        self._settings, self._spectrum = readings.stored, spectrum
        affords = None if budget.max_overhead is None else self._affords
        self.figures = StepFigures(writer, bands, strict, run.tally.warn_once, worker.submit, affords)
        self._queue: deque[Queued] = deque()  # forwards done, not yet sent to the worker
        self._inflight: tuple[int, Queued] | None = None  # job id, the step on the worker
        self.done: deque[StepSummary] = deque(maxlen=32)  # finished, not handed out
        self._trajectory = self._add_state("trajectory", Trajectory(readings))
        warm: dict[str, Interactions | None] = {"probe": None, "heldout": None}
        self._warm_start = self._add_state("warm_start", warm, warm_state, warm_from_state)
        self._shares: list[Tensor] = self._add_state("shares", [], stack_list, unstack_list)
        self._sample_effects: list[Tensor] = self._add_state("sample_effects", [], stack_list, unstack_list)

    @property
    def trajectory(self) -> Trajectory:
        """The probe dynamics up to the last step applied."""
        return self._trajectory

    def add(
        self,
        step: int,
        start: float,
        results: dict[str, Interactions],
        spectrum: OrderSpectrum | None,
        ids: Mapping[str, list[Any] | None],
    ) -> None:
        """Tracked ``step`` after its forwards (``start``: when the step began, for the time training
        waited): ``results`` and probe ``ids`` by split, and the sampled ``spectrum``. The
        spectrum's readings, a few scalars and one small file, are written now; the rest is queued
        for the worker (a step of the spectrum alone is done here)."""
        scalars, reader = {}, self._spectrum
        if spectrum is not None and reader is not None:
            scalars = reader.write(step, spectrum, self._writer, self.output.store, self._run.id)
        stall = time.perf_counter() - start
        if spectrum is None or reader is None or not reader.only:  # its scalars join the exact summary
            self._queue.append(Queued(step, results, stall, ids, scalars))
            return
        perf = {tags.FORWARDS_PER_SECOND: spectrum.forwards / max(stall, 1e-9), tags.PERF_SECONDS: stall}
        self._write_perf(step, perf)
        self._budget.finished(0.0)
        self._run.tally.tracked += 1
        self.done.append(StepSummary(step, scalars=scalars))

    def take(self, wait: bool = False) -> list[StepSummary]:
        """The step summaries finished since the last call, in step order (``wait``: first every
        queued step)."""
        self.collect(wait)
        done = list(self.done)
        self.done.clear()
        return done

    def summary(self, step: int) -> StepSummary:
        """Tracked ``step``'s summary: with its scalars when it is already done, else empty."""
        done = self.done[-1] if self.done else None
        return done if done is not None and done.step == step else StepSummary(step)

    def overdue(self) -> bool:
        """More than :data:`MAX_PENDING` steps wait: a stuck worker, to be waited for (bounded)."""
        return len(self._queue) > MAX_PENDING

    def collect(self, wait: bool = False) -> None:
        """Apply the steps the worker finished, in step order, sending it the next queued step
        once the previous one is applied (its warm start and dynamics are the next one's input).
        ``wait``: until every queued step is applied (each wait bounded, see ``Worker.answers``)."""
        while True:
            if self._inflight is None and self._queue:
                queued = self._queue.popleft()
                warm = self._warm_start if self.and_or is not None else None
                args = (queued.step, queued.results, warm, self.and_or, self._trajectory, queued.ids["probe"])
                self._inflight = (self._worker.submit("finish_step", *args), queued)
            answers = self._worker.answers(wait)
            for answer in answers:
                figure = self.figures.received(answer)
                if not answer.inline:  # the child's CPU time (inline, a job's time is a stall)
                    self._budget.worked(answer.overhead + (answer.cpu if figure else 0.0))
                if not figure:
                    queued = cast(tuple, self._inflight)[1]
                    self._inflight = None
                    try:
                        self._finish(queued, answer)
                    except Exception as err:
                        self._run.failed(f"step {queued.step}", err, self.strict)
            if not answers:
                return

    def _finish(self, queued: Queued, answer: Answer) -> None:
        """Take the worker's result of a tracked step into the records, then store and log it."""
        if answer.error is not None:
            raise answer.error
        step, stall = queued.step, queued.stall
        results, self._trajectory, summary = answer.value
        if self.and_or is not None:
            self._warm_start.update(results)
        res = results["probe"]
        self._shares.append(cast(OrderProfile, summary.profile).share)
        self._sample_effects.append(stack_effects(res)[0].float())
        self._budget.finished(*((0.0, 0.0) if answer.inline else (answer.seconds, answer.cpu)))
        rows = sum(part.outputs.numel() for part in results.values())
        perf = {tags.FORWARDS_PER_SECOND: rows / max(stall, 1e-9), tags.WORKER_SECONDS: answer.seconds}
        perf[tags.PERF_SECONDS] = stall + (answer.seconds if answer.inline else 0.0)  # what training waited
        try:
            # What the readings depend on besides the interactions.
            meta = {**self._settings, "baseline": self.players.baseline_description, "run": self._run.id}
            for split, part in results.items() if self.output.store else ():
                storage.save_step(self._writer.log_dir, step, part, queued.ids[split], split, **meta)
        finally:  # the scalars are logged even when the store fails
            self._write(queued, results, summary, perf)
        self._run.tally.tracked += 1
        summary.scalars.update(queued.spectrum)  # logged at the forwards
        self.done.append(summary)

    def _write(self, queued: Queued, results: dict[str, Interactions], summary: StepSummary, perf: dict) -> None:
        writer, res, step, ids = self._writer, results["probe"], queued.step, queued.ids["probe"]
        layout = tags.custom_layout(res.effect_kinds, "heldout" in results, self._budget.max_overhead is not None)
        writer.layout({**layout, **(tags.spectrum_layout() if self._spectrum is not None else {})})
        for tag, magnitude in summary.histograms.items():
            writer.histogram(tag, magnitude, step)
        writer.text(tags.TOP_CONCEPTS_TEXT, summary.top_concepts, step)
        writer.scalars(summary.scalars, step)
        self._write_perf(step, perf)
        if self.output.figures:
            sample = ids[0] if ids is not None else 0
            history, shares = torch.stack(self._sample_effects), torch.stack(self._shares)
            steps, boundary = self._trajectory.steps, summary.get(tags.PHASE_BOUNDARY)
            figure = (res, summary.kind_profiles, boundary, list(steps), shares, history, sample)
            self.figures.tracked(len(steps), step, *figure)

    def _affords(self, cpu: float) -> bool:
        """Whether the budget has room for ``cpu`` seconds of figures, in the child or inline."""
        return self._budget.affords(time.perf_counter(), cpu, background=not self._worker.inline)

    def _write_perf(self, step: int, perf: dict[str, float]) -> None:
        """A tracked step's perf scalars (with the steps skipped so far, under a plan), flushed."""
        if self._budget.plan is not None:
            perf[tags.SKIPPED_STEPS] = self._budget.skipped
        self._writer.scalars(perf, step)
        self._writer.flush()
