"""The training plugin: compute interactions on a fixed probe set at scheduled steps and log them.

``ConceptTracker`` orchestrates one tracked step: schedule -> overhead budget -> engine (and the
joint AND-OR solve) -> trajectory -> :func:`~concept_tracker.summary.summarize_step` -> writers
and store. It holds the run's state (declared once, see ``_add_state``); the readings themselves
are pure functions of :mod:`concept_tracker.summary`. Only process rank 0 writes.

Plain PyTorch::

    tracker = ConceptTracker(TabularPlayers(), ProbeSet(probe_x, probe_y), log_dir="runs/concepts")
    for step, (x, y) in enumerate(loader):
        ...  # forward, backward, optimizer step
        tracker.step(model, step)
    tracker.close()
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import checks
from . import store as storage
from .and_or import AndOrConfig, decompose
from .checks import check_kind, check_players, check_schedule
from .config import BudgetConfig, OutputConfig, ReadingsConfig, configs, warn_legacy
from .distributed import is_main_process, main_process_flag
from .engine import compute_interactions
from .interactions import Interactions
from .metrics.dynamics import Trajectory
from .metrics.profile import OrderProfile, band_orders, stack_effects
from .pipeline import decompose_splits, warm_from_state, warm_state
from .players import Players
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
from .schedules import OverheadBudget, Schedule, budget_text, every, log_spaced
from .solver_process import SolverProcess
from .state import DeclaredState, stack_list, unstack_list
from .summary import StepSummary, summarize_step
from .threads import spare_cores
from .values import resolve_value, value_name
from .worker import StepWorker
from .writers import tags
from .writers.step_figures import StepFigures
from .writers.tensorboard import TensorBoardWriter

DEFAULT_SCHEDULE = log_spaced(0, 10000, 20) | every(1000)
"""Used when ``schedule=None``: 20 log-spaced steps over the first 10,000 (dense early, when
concepts change fastest) plus every 1,000th step for long runs."""

STATE_VERSION = 1
PROGRESS_AFTER = 2.0
"""Seconds: after a tracked step that stalled training longer, the next ones show a progress bar."""


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

    Only the masked forwards stall training; the rest runs on a background thread, in step
    order, its AND-OR solves in a worker process (:mod:`concept_tracker.solver_process`);
    :meth:`summaries` hands out its summaries; :meth:`close`, :meth:`state_dict` wait for it.
    The first tracked step runs whole inside :meth:`step`. Tracking never changes training: the
    engine restores training flags, grad mode and RNG states, and the tracker draws no random
    numbers. Bad arguments raise at construction, a failing first scheduled step raises, later
    failures (a background one at the next call) warn once per distinct message (``strict=True``
    raises); :meth:`close` reports the step counts. One run per ``log_dir``: see
    :mod:`concept_tracker.rundir`.

    Memory: besides the engine, the tracker keeps ``O(B * 2**n)`` running dynamics state and,
    for the trajectory figure, the effects of probe sample 0 at every tracked step
    (``T * K * 2**n`` floats for ``T`` steps and ``K`` kinds).

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
        kind = found["kind"]
        if probes is None:
            raise TypeError("ConceptTracker needs probes: a ProbeSet, an (inputs, labels) tuple or the inputs.")
        self.readings, self.output, self.budget = found["readings"], found["output"], found["budget"]
        self.players = check_players(players)
        self.and_or = kind if isinstance(kind, AndOrConfig) else None
        self.kind = "and_or" if self.and_or is not None else check_kind(kind)
        resolve_value(value)
        self.schedule = check_schedule(schedule) or DEFAULT_SCHEDULE
        self.log_dir = checks.check_log_dir(log_dir)
        self.value, self.strict = value, strict
        # The step path reads these often; they are the configs' fields.
        self.ratio, self.batch_size, self.max_overhead = (
            self.readings.ratio,
            self.budget.batch_size,
            self.budget.max_overhead,
        )
        self.store, self.figures = self.output.store, self.output.figures
        # What the readings depend on besides the interactions; stored with every step.
        self._settings: dict[str, Any] = self.readings.stored
        self.writer = TensorBoardWriter(self.log_dir, self.output.writer)
        self._run = RunGuard(self.log_dir, lambda: storage.list_steps(self.log_dir))
        self._worker = StepWorker(sync=self.budget.sync)
        # Background solves run in their own process, off the training's interpreter lock.
        self._solver = SolverProcess() if self.kind == "and_or" and not self.budget.sync else None

        # The resumable state: state_dict() / load_state_dict() are derived from these lines.
        probe = probe_set(probes)
        self._probe: ProbeSet = self._add_state("probe", probe, probe_state, probe_from_state)
        held = heldout_set(players, heldout)
        self._heldout: ProbeSet | None = self._add_state("heldout", held, probe_state, probe_from_state)
        # Mistakes in players, probes or cut-offs fail here, not at the first tracked step.
        n = checks.check_players_fit(players, probe.inputs, "probes")
        bands = band_orders(n, self.readings.simple_max, self.readings.complex_min)
        self._figures = StepFigures(self.writer, bands, strict, self._run.tally.warn_once)
        if held is not None:
            checks.check_same_width(probe.inputs, held.inputs)
            checks.check_players_fit(players, held.inputs, "heldout")
        self._cursor: int | None = self._add_state("cursor", None)  # last step tracked, skipped or failed
        self._trajectory = self._add_state("trajectory", Trajectory(self.readings))
        warm: dict[str, Interactions | None] = {"probe": None, "heldout": None}
        self._warm_start = self._add_state("warm_start", warm, warm_state, warm_from_state)
        self._shares: list[Tensor] = self._add_state("shares", [], stack_list, unstack_list)  # [n + 1] per step
        # [K, 2**n] effects of probe sample 0 at every tracked step, for the trajectory figure.
        self._sample_effects: list[Tensor] = self._add_state("sample_effects", [], stack_list, unstack_list)
        contention = 0.0 if spare_cores() else 1.0
        budget_state = OverheadBudget(self.max_overhead, self.budget.total_steps, contention=contention)
        self._timing = self._add_state("timing", budget_state)

    # ----------------------------------------------------------------------------- stepping

    def step(self, model: nn.Module, global_step: int, *, last: bool = False) -> StepSummary | None:
        """Track ``model`` at ``global_step`` if the schedule (and the budget's plan) fires there.

        Call it once per optimizer step (repeated calls with the same step are ignored).
        ``last=True`` marks the run's final step: tracked unless ``max_overhead`` forbids it.

        Returns:
            For a tracked step, its :class:`~concept_tracker.summary.StepSummary` (a mapping
            ``{tag: value}``), with scalars only with ``sync=True`` on rank 0 (else they follow
            in :meth:`summaries`). None when not tracked (not scheduled, already tracked, skipped
            by ``max_overhead``, or failed without ``strict``).
        """
        now = time.perf_counter()
        timing = self._timing
        timing.start(now)
        timing.arrived(now)
        summary = None
        try:
            if not self._run.enter(self, global_step, self._cursor):
                return None
            self._report_background()
            if (
                self.max_overhead is not None
                and timing.can_plan(global_step, worker_idle=not self._worker.pending())
                and is_main_process()
            ):
                self._plan(global_step, now)
            if not (last or self.schedule(global_step) or global_step == timing.total_steps):
                return None
            self._cursor = global_step
            self._run.tally.scheduled += 1
            try:
                # Rank 0 decides for all ranks: the engine's forwards are collective.
                if self.max_overhead is not None and main_process_flag(timing.refuses(global_step, now, last)):
                    self._skip(global_step)
                    return None
                summary = self._track(model, global_step, now)
                return summary
            except Exception as err:
                self._run.failed(f"step {global_step}", err, self.strict)
                return None
            finally:
                if summary is not None:
                    if self._worker.sync:  # the whole step was the stall
                        timing.last_cost = time.perf_counter() - now
                    timing.tracked(global_step)
        finally:
            end = time.perf_counter()
            timing.spent += end - now  # every call counts, also the microseconds of untracked ones
            # The next training step is timed as running beside background work, or not.
            timing.left(end, self._worker.pending() > 0 or self._figures.busy())

    def _report_background(self) -> None:
        """Failures of steps finished on the worker since the last call: warn once per message."""
        for label, err in self._worker.failures():
            self._run.failed(label, err, self.strict)

    def summaries(self, wait: bool = False) -> list[StepSummary]:
        """Finished step summaries not yet handed out, in step order (see ``StepWorker.results``)."""
        return self._worker.results(wait)

    def _skip(self, step: int) -> None:
        self._timing.skipped += 1
        if self._timing.plan is not None:
            return  # counted; logged with the next tracked step and in the budget text
        skipped = self._timing.skipped
        self._worker.submit(f"step {step}", lambda: self.writer.scalars({tags.SKIPPED_STEPS: skipped}, step))
        if self._timing.skipped == 1 and is_main_process():
            reason = self._timing.skip_reason(tags.SKIPPED_STEPS)
            warnings.warn(f"ConceptTracker skipped step {step}: {reason}", stacklevel=3)

    def _plan(self, step: int, now: float) -> None:
        """(Re)plan the tracked steps of a run of known length (see ``OverheadBudget.make_plan``)."""
        total, first = cast(int, self._timing.total_steps), self._timing.plan is None
        self._timing.make_plan(step, now, (s for s in range(step, total) if self.schedule(s)))
        text = budget_text(self._timing, cast(float, self.max_overhead), now)
        self._worker.submit("the budget plan", lambda: self.writer.text(tags.BUDGET_TEXT, text, step))
        if first and self._timing.cut:
            warnings.warn(f"ConceptTracker: {self._timing.cut} (see the {tags.BUDGET_TEXT!r} text).", stacklevel=3)

    def _compute(self, model: nn.Module, split: str, show_progress: bool) -> Interactions:
        """The engine on one probe set; for kind "and_or" only the values (see ``decompose_splits``)."""
        probes: ProbeSet = getattr(self, f"_{split}")
        kind = "and" if self.kind == "and_or" else self.kind
        options = dict(value=self.value, kind=kind, batch_size=self.batch_size, show_progress=show_progress)
        res = compute_interactions(model, probes.inputs, self.players, target=probes.labels, **options)
        if probes.labels is None and res.targets is not None:
            # Predictions at the first tracked step become the fixed targets of the run.
            setattr(self, f"_{split}", probes._replace(labels=res.targets.detach().cpu()))
        return res

    def _track(self, model: nn.Module, step: int, start: float) -> StepSummary | None:
        """The masked forwards here, on the live weights; the rest on the worker (:meth:`_finish`)."""
        splits = ["probe"] + (["heldout"] if self._heldout is not None else [])
        show = (self._timing.last_cost or 0.0) > PROGRESS_AFTER and is_main_process()
        # On CUDA the small [B, 2**n] values come to the CPU here, so the worker never touches the device.
        results = {split: self._compute(model, split, show).to("cpu") for split in splits}
        if not is_main_process():
            return StepSummary(step)
        stall = self._timing.last_cost = time.perf_counter() - start
        # The first scheduled step runs whole here, so that a setup mistake raises before training.
        waited = self._worker.sync or self._run.tally.scheduled == 1
        self._worker.submit(f"step {step}", lambda: self._finish(step, results, stall, waited), inline=waited)
        if waited:
            return self._worker.last_result
        return StepSummary(step)

    def _finish(self, step: int, results: dict[str, Interactions], stall: float, waited: bool) -> StepSummary:
        """Everything after the forwards: decomposition, dynamics, summary, store and writers."""
        start = time.perf_counter()
        if self.kind == "and_or":  # warm-started from the previous tracked step's split
            solve = decompose if waited or self._solver is None else self._solver.decompose
            results = decompose_splits(results, self._warm_start, self.and_or, solve)
            self._warm_start.update(results)
        res, held = results["probe"], results.get("heldout")
        effects = stack_effects(res)  # [B, K, 2**n]
        self._trajectory.append(step, effects)
        summary = summarize_step(step, res, self._trajectory, held=held, ids=self._probe.ids)
        self._shares.append(cast(OrderProfile, summary.profile).share)
        self._sample_effects.append(effects[0].float())
        failure = None  # a storage failure is raised once the scalars are written
        try:
            for split, part, probes in (("probe", res, self._probe), ("heldout", held, self._heldout)):
                if self.store and part is not None and probes is not None:
                    meta = {**self._settings, "baseline": self.players.baseline_description}
                    storage.save_step(self.log_dir, step, part, probes.ids, split, run=self._run.id, **meta)
        except Exception as err:
            failure = err
        self._write(step, res, summary)
        rows = res.outputs.numel() + (held.outputs.numel() if held is not None else 0)
        seconds = time.perf_counter() - start
        perf = {tags.FORWARDS_PER_SECOND: rows / max(stall, 1e-9), tags.WORKER_SECONDS: seconds}
        perf[tags.PERF_SECONDS] = stall + (seconds if waited else 0.0)  # what training waited
        if self._timing.plan is not None:
            perf[tags.SKIPPED_STEPS] = self._timing.skipped
        self.writer.scalars(perf, step)
        self.writer.flush()
        self._figures.log(wait=False)
        self._timing.worker_cost = 0.0 if self._worker.sync else seconds
        self._timing.background += 0.0 if waited else seconds
        if failure is not None:
            raise failure
        self._run.tally.tracked += 1
        return summary

    # ------------------------------------------------------------------------------ writing

    def _write(self, step: int, res: Interactions, summary: StepSummary) -> None:
        writer = self.writer
        writer.layout(tags.custom_layout(res.effect_kinds, self._heldout is not None))
        for tag, magnitude in summary.histograms.items():
            writer.histogram(tag, magnitude, step)
        writer.text(tags.TOP_CONCEPTS_TEXT, summary.top_concepts, step)
        writer.scalars(summary.scalars, step)
        if self.figures:
            sample = self._probe.ids[0] if self._probe.ids is not None else 0
            history, shares = torch.stack(self._sample_effects), torch.stack(self._shares)
            steps, boundary = self._trajectory.steps, summary.get(tags.PHASE_BOUNDARY)
            figure = (res, summary.kind_profiles, boundary, list(steps), shares, history, sample)
            self._figures.tracked(len(steps), step, *figure)

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Draw the figures of the last tracked step if they are not drawn yet, log every figure
        the renderer process still owes, stop it, then flush and close the TensorBoard writer
        (an external writer is only flushed)."""
        try:
            self._worker.close()  # every tracked step written before the figures and the writer close
            if self._solver is not None:
                self._solver.close()
            self._report_background()
            if self.max_overhead is not None:
                self.writer.text(tags.BUDGET_TEXT, budget_text(self._timing, self.max_overhead), self._cursor or 0)
            # Under a budget, the last step's figures are not drawn: that work would come after
            # the budget's last say.
            self._figures.close(draw_last=self.max_overhead is None)
        except Exception as err:
            if self.strict:
                raise
            warnings.warn(f"ConceptTracker could not draw its last figures: {type(err).__name__}: {err}", stacklevel=2)
        finally:
            self.writer.close()
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
        self._worker.drain()  # pending steps first: the state holds every step tracked so far
        settings = {"version": STATE_VERSION, "kind": self.kind, "ratio": self.ratio}
        settings.update(fingerprint=self._fingerprint(), run=self._run.id)
        return {**settings, "schedule": self.schedule.to_config(), **self._declared_state()}

    def _fingerprint(self) -> dict[str, Any]:
        return run_fingerprint(self.players, self.kind, value_name(self.value), self._probe, self._heldout)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`: steps up to the saved cursor are not tracked again.

        Build the tracker as the saved run was (players, n, kind, value and probe inputs are
        compared, by a fingerprint saved with the state); the saved targets are used.

        Raises:
            ValueError: if the state is from another version, ratio or run (players, n, kind,
                value or probe inputs differ).
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"state has version {state.get('version')!r}; this tracker reads version "
                f"{STATE_VERSION} (pass the dict from ConceptTracker.state_dict())."
            )
        for name in ("kind", "ratio"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"state was saved with {name}={state[name]!r} but this tracker has "
                    f"{name}={getattr(self, name)!r}; build the tracker with the saved {name}."
                )
        self._run.resume(state.get("fingerprint"), self._fingerprint(), state.get("run"))
        if state["schedule"] != self.schedule.to_config():
            warnings.warn(
                f"resuming with schedule {self.schedule!r}, which differs from the saved "
                f"{Schedule.from_config(state['schedule'])!r}; dynamics continue on the new schedule.",
                stacklevel=2,
            )
        self._worker.drain()
        self._load_declared_state(state)
        self._figures.forget()

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to one safetensors file (tensors + JSON, no pickle)."""
        storage.save_state(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save` and :meth:`load_state_dict` it."""
        self.load_state_dict(storage.load_state(path))
