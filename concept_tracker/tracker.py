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

import atexit
import os
import time
import warnings
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import checks
from . import store as storage
from .and_or import AndOrConfig
from .budget import OverheadBudget, budget_text
from .checks import check_kind, check_players, check_schedule
from .config import BudgetConfig, OutputConfig, ReadingsConfig, configs, warn_legacy
from .distributed import is_main_process, main_process_flag
from .engine import compute_interactions, progress_bar_open
from .interactions import Interactions
from .metrics.dynamics import Trajectory
from .metrics.profile import OrderProfile, band_orders, stack_effects
from .pipeline import warm_from_state, warm_state
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
from .spectrum import OrderSpectrum, order_spectrum, spectrum_scalars
from .state import DeclaredState, stack_list, unstack_list
from .summary import StepSummary
from .threads import spare_cores
from .values import resolve_value, value_name
from .worker import Answer, Worker
from .writers import tags
from .writers.step_figures import StepFigures
from .writers.tensorboard import TensorBoardWriter

DEFAULT_SCHEDULE = log_spaced(0, 10000, 20) | every(1000)
"""Used when ``schedule=None``: 20 log-spaced steps over the first 10,000 (dense early, when
concepts change fastest) plus every 1,000th step for long runs."""

SAMPLED_ABOVE = 16
"""Players above which the tracker reads the sampled order spectrum instead of the exact
readings (``2**n`` forwards per probe sample: 131,072 at n = 17; the exact path stops at 20)."""
SPECTRUM_FORWARDS = 4096
"""Forwards per probe sample of the sampled order spectrum when ``ReadingsConfig.spectrum`` is None."""

STATE_VERSION = 1
PROGRESS_AFTER = 2.0
"""Seconds: after a tracked step that stalled training longer, the next ones show a progress bar
(unless another tqdm bar is open, such as the Hugging Face Trainer's)."""
MAX_PENDING = 4
"""Tracked steps whose background work may wait; a step beyond waits for the worker (bounded)."""


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
    (:mod:`concept_tracker.worker`) and is applied, in step order, at the next calls;
    :meth:`summaries` hands out its summaries; :meth:`close`, :meth:`state_dict` wait for it
    (bounded). Tracking never changes training: the
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
        # Read often on the step path: the configs' fields.
        self.ratio, self.max_overhead = self.readings.ratio, self.budget.max_overhead
        self.batch_size, self.store, self.figures = self.budget.batch_size, self.output.store, self.output.figures
        # What the readings depend on besides the interactions; stored with every step.
        self._settings: dict[str, Any] = self.readings.stored
        self.writer = TensorBoardWriter(self.log_dir, self.output.writer)
        self._run = RunGuard(self.log_dir, lambda: storage.list_steps(self.log_dir))
        self._worker = Worker(inline=self.budget.sync)
        # Tracked steps whose forwards are done: queued, then (one at a time) on the worker.
        self._queue: deque[tuple[int, dict[str, Interactions], float]] = deque()  # step, values, stall
        self._inflight: tuple[int, int, float] | None = None  # job id, step, stall
        self._summaries: deque[StepSummary] = deque(maxlen=32)  # finished, not handed out

        # The resumable state: state_dict() / load_state_dict() are derived from these lines.
        probe = probe_set(probes)
        self._probe: ProbeSet = self._add_state("probe", probe, probe_state, probe_from_state)
        held = heldout_set(players, heldout)
        self._heldout: ProbeSet | None = self._add_state("heldout", held, probe_state, probe_from_state)
        # Mistakes in players, probes or cut-offs fail here, not at the first tracked step.
        n = checks.check_players_fit(players, probe.inputs, "probes")
        # Above SAMPLED_ABOVE players the sampled order spectrum replaces the exact readings;
        # at or below, it is read beside them when readings.spectrum asks for it.
        self._sampled_only = n > SAMPLED_ABOVE
        self._spectrum = self.readings.spectrum or (SPECTRUM_FORWARDS if self._sampled_only else None)
        self._spectrum_scalars: dict[int, dict[str, float]] = {}  # by step, until the exact step is done
        if self._sampled_only:
            warnings.warn(
                f"ConceptTracker: n={n} players, above {SAMPLED_ABOVE}: the tracker reads the sampled order "
                f"spectrum (spectrum/* tags, {self._spectrum} forwards per probe sample; set "
                f"readings=ReadingsConfig(spectrum=...) to change it) instead of the exact readings (2**{n} "
                "forwards per probe sample). Per-coalition readings (dynamics, held-out similarity, figures, "
                f"kind={self.kind!r}) need the exact ones and are not tracked.",
                stacklevel=2,
            )
        bands = band_orders(n, self.readings.simple_max, self.readings.complex_min)
        claim_baseline(players, self, probe.inputs)  # players reused from another tracker: not its mean
        self._figures = StepFigures(self.writer, bands, strict, self._run.tally.warn_once, self._worker.submit)
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
        budget_state = OverheadBudget(self.max_overhead, self.budget.total_steps, self.schedule, contention)
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
            self._collect()
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
            self._collect(wait=len(self._queue) > MAX_PENDING)  # a stuck worker: bounded, then inline
            self._timing.tracked(global_step, time.perf_counter() - start)
            done = self._summaries[-1] if self._summaries else None
            return done if done is not None and done.step == global_step else StepSummary(global_step)
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

    def _compute(self, model: nn.Module, split: str, show_progress: bool) -> Interactions:
        """The engine on one probe set; for kind "and_or" only the values (the split is the worker's)."""
        probes: ProbeSet = getattr(self, f"_{split}")
        kind = "and" if self.kind == "and_or" else self.kind
        options = dict(value=self.value, kind=kind, batch_size=self.batch_size, show_progress=show_progress)
        res = compute_interactions(model, probes.inputs, self.players, target=probes.labels, **options)
        if probes.labels is None and res.targets is not None:
            # Predictions at the first tracked step become the fixed targets of the run.
            setattr(self, f"_{split}", probes._replace(labels=res.targets.detach().cpu()))
        return res

    def _track(self, model: nn.Module, step: int, start: float) -> None:
        """The masked forwards, here on the live weights (a setup mistake raises at the first
        scheduled step); the rest of the step is queued for the worker."""
        splits = [] if self._sampled_only else ["probe"] + (["heldout"] if self._heldout is not None else [])
        # No bar of our own under another one (the Trainer's, Lightning's, a loop's): it would
        # interleave with it, line by line and escape code by escape code.
        show = (self._timing.last_cost or 0.0) > PROGRESS_AFTER and is_main_process() and not progress_bar_open()
        # On CUDA the small [B, 2**n] values come to the CPU here: the worker never touches the device.
        results = {split: self._compute(model, split, show).to("cpu") for split in splits}
        spectrum = self._read_spectrum(model) if self._spectrum is not None else None
        if not is_main_process():
            return
        if spectrum is None:
            self._queue.append((step, results, time.perf_counter() - start))
            return
        # The spectrum's readings are a few scalars and one small file: written here, not queued.
        scalars = self._write_spectrum(step, spectrum)
        if not self._sampled_only:
            self._spectrum_scalars[step] = scalars  # joins the exact step's summary
            self._queue.append((step, results, time.perf_counter() - start))
            return
        stall = time.perf_counter() - start
        perf = {tags.FORWARDS_PER_SECOND: spectrum.forwards / max(stall, 1e-9), tags.PERF_SECONDS: stall}
        if self._timing.plan is not None:
            perf[tags.SKIPPED_STEPS] = self._timing.skipped
        self.writer.scalars(perf, step)
        self.writer.flush()
        self._timing.finished(0.0)
        self._run.tally.tracked += 1
        self._summaries.append(StepSummary(step, scalars=scalars))

    def _read_spectrum(self, model: nn.Module) -> OrderSpectrum:
        """The sampled order spectrum of the probes (the same seed at every step: the same
        random masks, so steps differ by the model only)."""
        probes = self._probe
        spectrum = order_spectrum(
            model,
            probes.inputs,
            self.players,
            probes.labels,
            value=self.value,
            forwards_per_probe=cast(int, self._spectrum),
            simple_max=self.readings.simple_max,
            complex_min=self.readings.complex_min,
            seed=self.readings.seed,
            ratio=self.ratio,
            batch_size=self.batch_size,
        )
        if probes.labels is None and spectrum.targets is not None:
            # Predictions at the first tracked step become the fixed targets of the run.
            self._probe = probes._replace(labels=spectrum.targets.detach().cpu())
        return spectrum

    def _write_spectrum(self, step: int, spectrum: OrderSpectrum) -> dict[str, float]:
        """Its own scalars, layout and file: an estimate never fills an exact tag or field."""
        scalars = spectrum_scalars(spectrum)
        if self._sampled_only:  # else the exact readings' layout holds its category too
            self.writer.layout(tags.spectrum_layout())
        self.writer.scalars(scalars, step)
        if self.store:
            storage.save_spectrum(self.log_dir, step, spectrum, run=self._run.id)
        return scalars

    def _collect(self, wait: bool = False) -> None:
        """Apply the steps the worker finished, in step order, sending it the next queued step
        once the previous one is applied (its warm start and dynamics are the next one's input).
        ``wait``: until every queued step is applied (each wait bounded, see ``Worker.answers``)."""
        while True:
            if self._inflight is None and self._queue:
                step, results, stall = self._queue.popleft()
                warm = self._warm_start if self.kind == "and_or" else None
                args = (step, results, warm, self.and_or, self._trajectory, self._probe.ids)
                self._inflight = (self._worker.submit("finish_step", *args), step, stall)
            answers = self._worker.answers(wait)
            for answer in answers:
                if not self._figures.received(answer):
                    _, step, stall = cast(tuple, self._inflight)
                    self._inflight = None
                    try:
                        self._finish(step, stall, answer)
                    except Exception as err:
                        self._run.failed(f"step {step}", err, self.strict)
            if not answers:
                return

    def _finish(self, step: int, stall: float, answer: Answer) -> None:
        """Take the worker's result of tracked ``step`` into the state, then store and log it."""
        if answer.error is not None:
            raise answer.error
        results, self._trajectory, summary = answer.value
        if self.kind == "and_or":
            self._warm_start.update(results)
        res = results["probe"]
        self._shares.append(cast(OrderProfile, summary.profile).share)
        self._sample_effects.append(stack_effects(res)[0].float())
        self._timing.finished(0.0 if answer.inline else answer.seconds)
        rows = sum(part.outputs.numel() for part in results.values())
        perf = {tags.FORWARDS_PER_SECOND: rows / max(stall, 1e-9), tags.WORKER_SECONDS: answer.seconds}
        perf[tags.PERF_SECONDS] = stall + (answer.seconds if answer.inline else 0.0)  # what training waited
        try:
            meta = {**self._settings, "baseline": self.players.baseline_description}
            for split, part in results.items() if self.store else ():
                ids = cast(ProbeSet, getattr(self, f"_{split}")).ids
                storage.save_step(self.log_dir, step, part, ids, split, run=self._run.id, **meta)
        finally:  # the scalars are logged even when the store fails
            self._write(step, res, summary, perf)
        self._run.tally.tracked += 1
        summary.scalars.update(self._spectrum_scalars.pop(step, {}))  # logged at the forwards
        self._summaries.append(summary)

    def summaries(self, wait: bool = False) -> list[StepSummary]:
        """Step summaries finished since the last call (the latest 32), in step order; ``wait``:
        first every tracked step."""
        self._collect(wait)
        done = list(self._summaries)
        self._summaries.clear()
        return done

    # ------------------------------------------------------------------------------ writing

    def _write(self, step: int, res: Interactions, summary: StepSummary, perf: dict[str, float]) -> None:
        writer = self.writer
        layout = tags.custom_layout(res.effect_kinds, self._heldout is not None, self.max_overhead is not None)
        writer.layout({**layout, **(tags.spectrum_layout() if self._spectrum is not None else {})})
        for tag, magnitude in summary.histograms.items():
            writer.histogram(tag, magnitude, step)
        writer.text(tags.TOP_CONCEPTS_TEXT, summary.top_concepts, step)
        writer.scalars(summary.scalars, step)
        if self._timing.plan is not None:
            perf[tags.SKIPPED_STEPS] = self._timing.skipped
        writer.scalars(perf, step)
        writer.flush()
        if self.figures:
            sample = self._probe.ids[0] if self._probe.ids is not None else 0
            history, shares = torch.stack(self._sample_effects), torch.stack(self._shares)
            steps, boundary = self._trajectory.steps, summary.get(tags.PHASE_BOUNDARY)
            figure = (res, summary.kind_profiles, boundary, list(steps), shares, history, sample)
            self._figures.tracked(len(steps), step, *figure)

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Finish every tracked step, draw the figures of the last one if not drawn yet, wait for
        the figures owed (each wait bounded, see :mod:`concept_tracker.worker`), stop the worker,
        then flush and close the TensorBoard writer (an external writer is only flushed)."""
        try:
            self._collect(wait=True)
            if self.max_overhead is not None:
                self.writer.text(tags.BUDGET_TEXT, budget_text(self._timing), self._cursor or 0)
            # Under a budget, the last step's figures are not drawn: that work would come after
            # the budget's last say.
            self._figures.close(draw_last=self.max_overhead is None)
            self._collect(wait=True)
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
        self._collect(wait=True)  # pending steps first: the state holds every step tracked so far
        settings = {"version": STATE_VERSION, "kind": self.kind, "ratio": self.ratio}
        settings.update(fingerprint=self._fingerprint(), run=self._run.id, step=self._run.last_step)
        return {**settings, "schedule": self.schedule.to_config(), **self._declared_state()}

    def _fingerprint(self) -> dict[str, Any]:
        fingerprint = run_fingerprint(self.players, self.kind, value_name(self.value), self._probe, self._heldout)
        # The readings and the report depend on these too: a resume must not change them.
        bands = {"simple_max": self.readings.simple_max, "complex_min": self.readings.complex_min}
        return {**fingerprint, "baseline": self.players.baseline_description, **bands}

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
        saved_at = state.get("step", state.get("cursor"))  # states without "step": the last tracked one
        self._run.resume(state.get("fingerprint"), self._fingerprint(), state.get("run"), saved_at)
        if state["schedule"] != self.schedule.to_config():
            warnings.warn(
                f"resuming with schedule {self.schedule!r}, which differs from the saved "
                f"{Schedule.from_config(state['schedule'])!r}; dynamics continue on the new schedule.",
                stacklevel=2,
            )
        self._collect(wait=True)
        self._load_declared_state(state)
        self._figures.forget()

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to one safetensors file (tensors + JSON, no pickle)."""
        storage.save_state(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save` and :meth:`load_state_dict` it."""
        self.load_state_dict(storage.load_state(path))
