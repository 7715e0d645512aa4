"""The training plugin: compute interactions on a fixed probe set at scheduled steps and log them.

``ConceptTracker`` decides which steps are tracked (schedule, overhead budget) and runs their
masked forwards (the engine; the sampled spectrum, :mod:`~concept_tracker.spectrum_readings`);
:mod:`~concept_tracker.tracked_steps` finishes them in the background and logs them. The run's
state is declared once (see ``_add_state``). Only process rank 0 writes.

Plain PyTorch::

    tracker = ConceptTracker(TabularPlayers(), ProbeSet(probe_x, probe_y), log_dir="runs/concepts")
    for step, (x, y) in enumerate(loader):
        ...  # forward, backward, optimizer step
        tracker.step(model, step)
    tracker.close()
"""

from __future__ import annotations

import atexit
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from . import checks
from . import store as storage
from .and_or import AndOrConfig
from .budget import OverheadBudget, budget_text
from .config import BudgetConfig, OutputConfig, ReadingsConfig, configs, warn_legacy
from .distributed import is_main_process, main_process_flag
from .engine import compute_interactions, model_device, progress_bar_open
from .metrics.profile import band_orders
from .players import Players, claim_baseline
from .probes import (
    Probes,
    ProbeSet,
    heldout_set,
    legacy_probes,
    probe_from_state,
    probe_set,
    probe_state,
    run_fingerprint,
)
from .rundir import RunGuard
from .schedules import Schedule, every, log_spaced
from .spectrum_readings import SpectrumReadings
from .state import DeclaredState
from .summary import StepSummary
from .tracked_steps import TrackedSteps
from .values import resolve_value, value_name
from .worker import Worker, child_pays
from .writers import tags
from .writers.tensorboard import TensorBoardWriter

DEFAULT_SCHEDULE = log_spaced(0, 10000, 20) | every(1000)
"""Used when ``schedule=None``: 20 log-spaced steps over the first 10,000 (dense early, when
concepts change fastest) plus every 1,000th step for long runs."""

STATE_VERSION = 1
PROGRESS_AFTER = 2.0
"""Seconds: after a tracked step that stalled training longer, the next ones show a progress bar
(unless another tqdm bar is open, such as the Hugging Face Trainer's)."""


class ConceptTracker(DeclaredState):
    """Track the interactive concepts a model learns, at scheduled training steps.

    At every step the schedule fires (and not twice for one step), :meth:`step` runs
    ``compute_interactions`` on the probe set and, when given, on the held-out probes (kind
    "and_or": one solver call for both sets, warm-started from the previous tracked step's
    solution), then writes to ``log_dir``:

    - the scalars of :mod:`concept_tracker.writers.tags` at exactly that step, computed by
      :func:`concept_tracker.summary.summarize_step`; detour ratios are NaN until a concept has moved
      (``D = 0``, e.g. at the first tracked step);
    - histograms of ``|I(S)|`` per kind and order, a markdown table of the strongest concepts,
      and the custom-scalars layout (once per event file);
    - figures (order profile per kind, order x step heat map of strength shares, trajectories
      of the strongest simple and complex concepts of probe sample 0) at the 1st, 2nd, 4th,
      8th, ... tracked step and at :meth:`close`;
    - the raw interactions, ``<log_dir>/interactions/step_{step:08d}.safetensors`` (held-out:
      ``interactions/heldout/...``), when ``store=True``.

    Only the masked forwards stall training; the rest of a step runs in one background process
    and is applied, in step order, at the next calls (:mod:`concept_tracker.tracked_steps`);
    :meth:`summaries` hands out its summaries. Tracking never changes training: the engine
    restores training flags, grad mode and RNG states, and the tracker draws no random numbers.
    Bad arguments raise at construction, a failing first scheduled step raises, later failures
    warn once per distinct message (``strict=True`` raises); :meth:`close` reports the step
    counts. One run per ``log_dir``: see :mod:`concept_tracker.rundir`.

    Args:
        players: how each sample splits into players (``TabularPlayers``, ...). A "mean" baseline
            not fitted yet (``players.fit(train_x)``) becomes the mean of the probe inputs.
        probes: the probe samples, fixed for the run: a :class:`ProbeSet` (inputs [B, ...] or a
            dict of them; labels [B], None = the model's predictions at the first tracked step;
            ids, stored with the raw interactions), an ``(inputs, labels)`` tuple or the inputs.
        heldout: held-out probes for ``generalization/*`` (aligned players), in the same forms.
        log_dir: the run's folder (event file, raw interactions); one holding another run's
            interactions is refused unless :meth:`load` resumes it before the first step.
        schedule: a :class:`~concept_tracker.schedules.Schedule`; None = ``DEFAULT_SCHEDULE``.
        kind: "and", "or", "and_or", or an ``AndOrConfig`` (kind "and_or" with those settings).
        value: value function name or callable (see ``compute_interactions``).
        readings: :class:`~concept_tracker.config.ReadingsConfig` (salience ratio, band cut-offs,
            bootstrap), the one the trajectory, the summaries and ``report`` use.
        output: :class:`~concept_tracker.config.OutputConfig` (store, figures, writer).
        budget: :class:`~concept_tracker.config.BudgetConfig` (max_overhead, total_steps,
            batch_size, sync).
        strict: re-raise exceptions from :meth:`step` instead of warning.
        **legacy: the keywords of the previous release, for this release only, with one
            ``FutureWarning``: ``probe_inputs``, ``probe_targets`` (also positional),
            ``probe_ids``, ``heldout_*``, the config fields by name, and ``and_or``.
    """

    def __init__(
        self,
        players: Players,
        probes: Probes | None = None,
        heldout: Probes | None = None,
        *,
        log_dir: str | os.PathLike = "runs/concepts",
        schedule: Schedule | None = None,
        kind: str | AndOrConfig = "and",
        value: Any = "log_odds",
        readings: ReadingsConfig | None = None,
        output: OutputConfig | None = None,
        budget: BudgetConfig | None = None,
        strict: bool = False,
        **legacy: Any,
    ) -> None:
        probes, heldout, moved = legacy_probes(probes, heldout, legacy)
        given = {"kind": kind, "readings": readings, "output": output, "budget": budget}
        found, more = configs(given, legacy, "ConceptTracker")
        warn_legacy("ConceptTracker", moved + more, legacy)
        if probes is None:
            raise TypeError("ConceptTracker needs probes: a ProbeSet, an (inputs, labels) tuple or the inputs.")
        self.readings, self.output, self.budget = found["readings"], found["output"], found["budget"]
        self.players = checks.check_players(players)
        self.and_or = found["kind"] if isinstance(found["kind"], AndOrConfig) else None
        self.kind = "and_or" if self.and_or is not None else checks.check_kind(found["kind"])
        resolve_value(value)
        self.schedule = checks.check_schedule(schedule) or DEFAULT_SCHEDULE
        self.log_dir = checks.check_log_dir(log_dir)
        self.value, self.strict = value, strict
        self.ratio, self.max_overhead = self.readings.ratio, self.budget.max_overhead
        self.batch_size, self.store, self.figures = self.budget.batch_size, self.output.store, self.output.figures
        self.writer = TensorBoardWriter(self.log_dir, self.output.writer)
        self._run = RunGuard(self.log_dir, lambda: storage.list_steps(self.log_dir))
        self._worker = Worker(inline=self.budget.sync)

        # The resumable state: state_dict() / load_state_dict() are derived from these lines.
        probe = probe_set(probes)
        self._probe: ProbeSet = self._add_state("probe", probe, probe_state, probe_from_state)
        held = heldout_set(players, heldout)
        self._heldout: ProbeSet | None = self._add_state("heldout", held, probe_state, probe_from_state)
        # Mistakes in players, probes or cut-offs fail here, not at the first tracked step.
        n = checks.check_players_fit(players, probe.inputs, "probes")
        self._spectrum = SpectrumReadings.choose(n, self.readings, self.kind)
        self._sampled_only = self._spectrum is not None and self._spectrum.only
        bands = band_orders(n, self.readings.simple_max, self.readings.complex_min)
        claim_baseline(players, self, probe.inputs)  # players reused from another tracker: not its mean
        if held is not None:
            checks.check_same_width(probe.inputs, held.inputs)
            checks.check_players_fit(players, held.inputs, "heldout")
        self._cursor: int | None = self._add_state("cursor", None)  # last step tracked, skipped or failed
        # The child runs only where it is expected to take nothing from training (worker.child_pays).
        budget_state = OverheadBudget(self.max_overhead, self.budget.total_steps, self.schedule, contention=0.0)
        self._steps = TrackedSteps(
            self._worker,
            self.writer,
            self._run,
            budget_state,
            players,
            bands,
            and_or=(self.and_or or AndOrConfig()) if self.kind == "and_or" else None,
            readings=self.readings,
            output=self.output,
            spectrum=self._spectrum,
            strict=strict,
        )
        self._adopt_state(self._steps)  # trajectory, warm starts, figure history
        self._timing = self._add_state("timing", budget_state)

    # ----------------------------------------------------------------------------- stepping

    def step(self, model: nn.Module, global_step: int, *, last: bool = False) -> StepSummary | None:
        """Track ``model`` at ``global_step`` if the schedule (and the budget) says so.

        Call it once per optimizer step (repeated calls with the same step are ignored).
        ``global_step`` may be any integer type (int, numpy integer, 0-dim integer tensor); a
        float or a string raises ``TypeError``.
        ``last=True`` marks the run's final step: tracked unless ``max_overhead`` forbids it.
        Every call first applies the background work finished since the last one, in step order.

        Returns:
            For a tracked step, its :class:`~concept_tracker.summary.StepSummary` (a mapping
            ``{tag: value}``), with scalars when its background work is already done (``sync=True``,
            on rank 0), else empty (they follow in :meth:`summaries`). None when not tracked (not
            scheduled, already tracked, skipped by ``max_overhead``, or failed without ``strict``).
        """
        global_step = checks.check_step(global_step)
        start = time.perf_counter()
        self._timing.call_began(start)
        try:
            if not self._run.enter(self, global_step, self._cursor):
                return None
            self._steps.collect()
            if not (last or self.schedule(global_step) or global_step == self._timing.horizon):
                return None
            self._cursor = global_step
            self._run.tally.scheduled += 1
            if self._run.tally.scheduled == 1:  # a script that never calls close() still gets its steps
                atexit.register(self.close)
            try:
                # Rank 0 decides for all ranks: the engine's forwards are collective.
                if not main_process_flag(not is_main_process() or self._allows(global_step, start, last)):
                    return None
                self._track(model, global_step, start)
            except Exception as err:
                self._run.failed(f"step {global_step}", err, self.strict)
                return None
            self._steps.collect(wait=self._steps.overdue())  # a stuck worker: bounded, then inline
            self._timing.tracked(global_step, time.perf_counter() - start)
            return self._steps.summary(global_step)
        finally:
            self._timing.call_ended(time.perf_counter(), self._worker.busy())

    def _allows(self, step: int, now: float, last: bool) -> bool:
        """The budget's answer; a new plan goes to the budget text, a skip without a plan to its
        scalar (with a plan: with the next tracked step, and in the budget text)."""
        allowed = self._timing.allows(step, now, last)
        news = self._timing.news()
        if news is not None:
            self.writer.text(tags.BUDGET_TEXT, news, step)
        if not allowed and self._timing.plan is None:
            self.writer.scalars({tags.SKIPPED_STEPS: self._timing.skipped}, step)
        return allowed

    def _track(self, model: nn.Module, step: int, start: float) -> None:
        """The masked forwards, here on the live weights (a setup mistake raises at the first
        scheduled step); the rest of the step is queued for the worker."""
        splits = [] if self._sampled_only else ["probe"] + (["heldout"] if self._heldout is not None else [])
        # No bar of our own under another one (the Trainer's, Lightning's, a loop's): they would interleave.
        show = (self._timing.last_cost or 0.0) > PROGRESS_AFTER and is_main_process() and not progress_bar_open()
        # Kind "and_or": the values only (the split is the worker's). On CUDA the small [B, 2**n]
        # values come to the CPU here: the worker never touches the device.
        kind = "and" if self.kind == "and_or" else self.kind
        options = dict(value=self.value, kind=kind, batch_size=self.batch_size, show_progress=show)
        self._worker.decide(child_pays(model_device(model)))
        results = {}
        for split in splits:
            probes: ProbeSet = getattr(self, f"_{split}")
            res = compute_interactions(model, probes.inputs, self.players, target=probes.labels, **options)
            setattr(self, f"_{split}", probes.fixed(res.targets))
            results[split] = res.to("cpu")
        spectrum = None
        if self._spectrum is not None:
            spectrum = self._spectrum.read(model, self._probe, self.players, self.value, self.batch_size)
            self._probe = self._probe.fixed(spectrum.targets)
        if is_main_process():
            self._steps.add(step, start, results, spectrum, {split: getattr(self, f"_{split}").ids for split in splits})

    def summaries(self, wait: bool = False) -> list[StepSummary]:
        """Step summaries finished since the last call (the latest 32), in step order; ``wait``:
        first every tracked step."""
        return self._steps.take(wait)

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Finish every tracked step, draw the figures of the last one if not drawn yet, wait for
        the figures owed (each wait bounded, see :mod:`concept_tracker.worker`), stop the worker,
        then flush and close the TensorBoard writer (an external writer is only flushed)."""
        try:
            self._steps.collect(wait=True)
            if self.max_overhead is not None:
                self.writer.text(tags.BUDGET_TEXT, budget_text(self._timing), self._cursor or 0)
            # Under a budget, the last step's figures are not drawn: that work would come after
            # the budget's last say.
            self._steps.figures.close(draw_last=self.max_overhead is None)
            self._steps.collect(wait=True)
        except Exception as err:
            if self.strict:
                raise
            warnings.warn(f"ConceptTracker could not finish at close: {type(err).__name__}: {err}", stacklevel=2)
        finally:
            atexit.unregister(self.close)
            self._worker.close()
            try:
                self.writer.close()
            finally:  # the lock goes whatever the event file does
                self._run.close(self._timing.skipped)

    def __enter__(self) -> ConceptTracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the dynamics exactly.

        Returns:
            A dict of tensors and JSON-able values: the settings that must match on load, then
            every state declared with ``_add_state`` (probe and held-out sets, the schedule
            cursor, the trajectory, the "and_or" warm starts, the figure history, timing). Save
            it with :meth:`save` or inside a training checkpoint.
        """
        self._steps.collect(wait=True)  # pending steps first: the state holds every step tracked so far
        settings = {"version": STATE_VERSION, "kind": self.kind, "ratio": self.ratio}
        settings.update(fingerprint=self._fingerprint(), run=self._run.id, step=self._run.last_step)
        return {**settings, "schedule": self.schedule.to_config(), **self._declared_state()}

    def _fingerprint(self) -> dict[str, Any]:
        value = value_name(self.value)
        return run_fingerprint(self.players, self.kind, value, self._probe, self._heldout, self.readings)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`: steps up to the saved cursor are not tracked again.

        Build the tracker as the saved run was (players, n, kind, value and probe inputs are
        compared, by a fingerprint saved with the state); the saved targets are used.

        Raises:
            ValueError: if the state is from another version, ratio or run (players, n, kind,
                value or probe inputs differ).
        """
        checks.check_saved_state(state, STATE_VERSION, kind=self.kind, ratio=self.ratio)
        saved_at = state.get("step", state.get("cursor"))  # states without "step": the last tracked one
        self._run.resume(state.get("fingerprint"), self._fingerprint(), state.get("run"), saved_at)
        if state["schedule"] != self.schedule.to_config():
            warnings.warn(
                f"resuming with schedule {self.schedule!r}, which differs from the saved "
                f"{Schedule.from_config(state['schedule'])!r}; dynamics continue on the new schedule.",
                stacklevel=2,
            )
        self._steps.collect(wait=True)
        self._load_declared_state(state)
        self._steps.figures.forget()

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to one safetensors file (tensors + JSON, no pickle)."""
        storage.save_state(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save` and :meth:`load_state_dict` it."""
        self.load_state_dict(storage.load_state(path))
