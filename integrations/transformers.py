"""Hugging Face ``Trainer`` integration: track interactive concepts while ``trainer.train()`` runs.

Usage::

    from concept_tracker import TokenPlayers
    from concept_tracker.integrations.transformers import ConceptTrackerCallback

    trainer = Trainer(model, args, train_dataset=train, eval_dataset=test,
                      callbacks=[ConceptTrackerCallback(TokenPlayers(n=8))])
    trainer.train()    # TensorBoard: beside the Trainer's scalars, see ``log_dir``

What happens at each Trainer event:

- ``on_train_begin``: probes are drawn from the training set (stratified by label, seeded) and
  collated with the Trainer's data collator, a :class:`~concept_tracker.tracker.ConceptTracker`
  is built, and the initial model is tracked at step 0. A resumed run loads the tracker state
  saved in the checkpoint instead, so the dynamics continue.
- ``on_step_end``: ``tracker.step(model, global_step)``; the schedule decides (once per
  optimizer step, so gradient accumulation is respected).
- ``on_save``: the tracker state goes to ``<checkpoint>/concept_tracker/state.safetensors``.
- ``on_log``: the headline scalars of newly tracked steps (read from ``tracker.summaries``)
  join the Trainer's logs; the callback waits there for the tracker's background worker if it
  has not finished those steps yet. The training and evaluation losses are kept (for
  ``stop_on_overfit``'s loss-gap step) and, unless the concepts share the Trainer's TensorBoard
  folder, written beside them as ``train/loss`` and ``eval/loss``, so that
  ``concept-tracker report`` finds them.
- ``on_train_end``: the last step is tracked (also after an early stop) and the writer closed.
"""

from __future__ import annotations

import glob
import json
import math
import numbers
import os
import socket
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from torch import Tensor, nn
from transformers import TrainerCallback
from transformers.integrations.integration_utils import default_logdir
from transformers.utils import logging

from concept_tracker import (
    ConceptTracker,
    Players,
    ProbeSet,
    Schedule,
    StepSummary,
    TokenPlayers,
    checks,
    config,
    distributed,
    new_run_dir,
    select_probes,
)
from concept_tracker.metrics import phase
from concept_tracker.metrics.dynamics import loss_gap_step
from concept_tracker.probes import fit_baseline_on_dataset, language_model_probes
from concept_tracker.writers import tags

from ._common import run_schedule, track_last_step, unwrap

logger = logging.get_logger(__name__)

STATE_DIR = "concept_tracker"
"""Folder of the callback's state inside each Trainer checkpoint folder."""
STATE_FILE = "state.safetensors"
CALLBACK_FILE = "callback.json"
"""The callback's own state beside the tracker's: its concept folder, counts and losses."""

HEADLINE_TAGS = (
    tags.summary("complex_ratio"),
    tags.summary("simple_strength"),
    tags.summary("complex_strength"),
    tags.band_detour_ratio("complex"),
    tags.HIGH_ORDER_SHARE,
)
"""Scalars copied into the Trainer's logs, so that every reporter (W&B, MLflow, ...) sees them."""


class ConceptTrackerCallback(TrainerCallback):
    """Track the interactive concepts of a ``Trainer``'s model on a fixed probe set.

    ``Trainer(..., callbacks=[ConceptTrackerCallback(players)])``

    Args:
        players: how each sample splits into players; a :class:`TokenPlayers` without a
            tokenizer gets the Trainer's ``processing_class``.
        probe_dataset: map-style dataset to draw the probes from, in the training set's item
            format; None = the Trainer's training set.
        heldout_dataset: map-style dataset of held-out probes (``generalization/*`` scalars;
            needs aligned players), e.g. the ``eval_dataset`` you give the Trainer. None = no
            held-out probes: a callback does not see the eval dataset before the first
            evaluation, so it is never picked implicitly.
        num_probe: probes drawn from each dataset (at most its size).
        schedule: when to track; None = ``log_spaced(0, max_steps, 20)`` plus every
            ``eval_steps`` when ``eval_strategy="steps"``. Step 0 and the last step are always
            tracked.
        log_dir: TensorBoard and raw-interaction directory; None = beside the Trainer's own
            scalars: with ``report_to`` including "tensorboard", the folder the Trainer's
            TensorBoard callback writes to (``$TENSORBOARD_LOGGING_DIR`` or
            ``<output_dir>/runs/<date>_<host>``); else ``$TENSORBOARD_LOGGING_DIR/concepts``
            or ``<output_dir>/runs/concepts``.
        seed: seed of the probe draw.
        stop_on_overfit: True stops training, "warn" only logs a warning (a memorization
            alarm), once the phase boundary has been reported at ``patience + 1`` consecutive
            tracked steps (:func:`~concept_tracker.metrics.phase.overfit_stop_step`). The
            boundary is read off the *share* of salient strength above the simple band
            (``dynamics/high_order_share``): the step where its smoothed series is lowest
            before a sustained rise of at least ``MIN_RISE``. When the Trainer logs evaluation
            losses, the message also gives the step where the eval-train loss gap started to
            grow. Off by default: in our tests it fired on most clean runs, and on noisy runs
            it beat early stopping on the held-out loss on one of three datasets
            (docs/evidence.md).
        patience: tracked steps to wait after the boundary first shows, for ``stop_on_overfit``.
        **tracker_options: passed to :class:`ConceptTracker` (``kind``, ``value``, ``strict``,
            ``readings``, ``output``, ``budget``). The Trainer's ``max_steps`` becomes the
            budget's ``total_steps``, so ``max_overhead`` plans the tracked steps.

    With ``stop_on_overfit``, training never waits for the readings: each scheduled step
    decides on the tracked steps whose readings have arrived, so while the background work
    lags, the stop (or warning) comes at a later scheduled step than the one at which
    ``overfit_stop_step`` fires on the logged series.

    Probe batches hold every tensor the collator returns except the labels, which become
    the targets (the model's prediction where a label is not one class per sample).

    Causal language models (logits ``[B, T, vocabulary]`` on a probe, token players): the value
    is ``"answer_log_prob"`` (unless ``value=`` is given), log p(answer | prompt) with the
    answer read from the probes' supervised fine-tuning labels (positions not -100), whatever
    the padding side. A probe without such labels gets its last token as the answer, and one
    warning says so. See :mod:`concept_tracker.language_models`.

    Resuming: the state saved at a checkpoint is looked up in ``args.resume_from_checkpoint``
    when set, else in ``<output_dir>/checkpoint-<global_step>`` (what
    ``trainer.train(resume_from_checkpoint=True)`` resumes from). Set
    ``args.resume_from_checkpoint`` when resuming from a folder elsewhere.

    Order of callbacks: reporters from ``report_to`` run before callbacks you add, so they log
    before this callback adds its scalars. To let them see the scalars, put it first:
    ``trainer.callback_handler.callbacks.insert(1, callback)`` (after the flow callback).
    """

    def __init__(
        self,
        players: Players,
        *,
        probe_dataset: Any = None,
        heldout_dataset: Any = None,
        num_probe: int = 16,
        schedule: Schedule | None = None,
        log_dir: str | os.PathLike | None = None,
        seed: int = 0,
        stop_on_overfit: bool | str = False,
        patience: int = 2,
        **tracker_options: Any,
    ) -> None:
        self.players = checks.check_players(players)
        self.num_probe = checks.check_int("num_probe", num_probe, 1, unit="probes per dataset")
        self.schedule = checks.check_schedule(schedule)
        self.patience = checks.check_int("patience", patience, 0, unit="tracked steps")
        if stop_on_overfit not in (False, True, "warn"):
            raise ValueError(f"stop_on_overfit={stop_on_overfit!r} must be False, True (stop) or 'warn' (warn only).")
        self.probe_dataset = probe_dataset
        self.heldout_dataset = heldout_dataset
        self.log_dir = None if log_dir is None else str(log_dir)
        self.seed = seed
        self.stop_on_overfit = stop_on_overfit
        self.tracker_options = config.tracker_options(tracker_options, "ConceptTrackerCallback")
        self.tracker: ConceptTracker | None = None
        self._pending: dict[int, dict[str, float]] = {}  # tracked step -> headline scalars not yet logged
        self._shares: dict[int, float] = {}  # high-order share by tracked step, for stop_on_overfit
        self._alarmed = False
        self._last_tracked: int | None = None
        self._losses: dict[str, dict[int, float]] = {"train": {}, "eval": {}}  # {split: {step: loss}}
        self._write_losses = True  # False when the concepts share the Trainer's TensorBoard folder

    # ------------------------------------------------------------------------------ events

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, processing_class=None, **kwargs):
        saved = _saved_state(args, state) if state.global_step > 0 else None
        # A setup mistake (players that cannot mask these inputs, ...) raises before training,
        # rather than leaving the whole run untracked behind one warning.
        self.tracker = self._build(args, state, train_dataloader, processing_class, model, saved)
        if state.global_step > 0:
            self._guard("resume", self._resume, self.tracker, state, saved)
        else:
            self._track(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.tracker is None:
            return
        due = self.tracker.schedule(state.global_step)  # the same answer on every rank
        self._track(model, state.global_step)
        if self.stop_on_overfit and due and distributed.main_process_flag(self._overfitting(state.global_step)):
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, split in (("loss", "train"), ("eval_loss", "eval")):
            if logs is not None and isinstance(logs.get(key), numbers.Real):
                self._losses[split][state.global_step] = float(logs[key])
                if self.tracker is not None and self._write_losses:
                    # Beside the concepts, under the Trainer's own TensorBoard names, so that
                    # ``concept-tracker report`` finds the loss gap in the same directory.
                    self.tracker.writer.scalar(f"{split}/loss", logs[key], state.global_step)
        # A log never waits for the background work: what is not finished goes with a later log.
        self._collect(wait=False)
        if not self._pending or logs is None:
            return
        *earlier, (_, latest) = self._pending.items()
        logs.update(latest)
        if state.log_history:  # Trainer.log appended this entry just before on_log
            # Steps finished before the latest since the last log: their own entries, before it.
            state.log_history[-1:-1] = [{**scalars, "step": step} for step, scalars in earlier]
            state.log_history[-1].update(latest)
        self._pending = {}

    def on_save(self, args, state, control, **kwargs):
        if self.tracker is None or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR)
        self._guard("save its state", self._save, self.tracker, folder, args.output_dir)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.tracker is None:
            return
        if self._last_tracked != state.global_step:
            self._track(model, state.global_step, last=True)
        self._collect(wait=True)  # bounded; what no log took gets its own entries
        state.log_history.extend({**scalars, "step": step} for step, scalars in self._pending.items())
        self._pending = {}
        self.tracker.close()

    # ------------------------------------------------------------------------------ helpers

    def _guard(self, what: str, fn, *args):
        """Run ``fn``; a failure warns and training goes on, unless the tracker is strict."""
        try:
            return fn(*args)
        except Exception as err:
            if self.tracker_options.get("strict", False):
                raise
            warnings.warn(
                f"ConceptTrackerCallback could not {what}: {type(err).__name__}: {err} Training "
                "continues; pass strict=True to raise instead.",
                stacklevel=3,
            )
            return None

    @staticmethod
    def _model(model: nn.Module) -> nn.Module:
        if model is None:
            raise ValueError("the Trainer passed no model to the callback event; is this a transformers Trainer?")
        return unwrap(model)

    def _build(self, args, state, train_dataloader, processing_class, model, saved: str | None) -> ConceptTracker:
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if isinstance(self.players, TokenPlayers) and self.players.tokenizer is None:
            self.players.tokenizer = tokenizer
        if train_dataloader is None:
            raise ValueError("the Trainer passed no train_dataloader; is this a transformers Trainer?")
        collate, train = train_dataloader.collate_fn, train_dataloader.dataset
        options = dict(self.tracker_options)
        probe = self._draw(train if self.probe_dataset is None else self.probe_dataset, collate, "probe_dataset")
        probe, causal = language_model_probes(self._model(model), self.players, probe)
        if causal:
            options.setdefault("value", "answer_log_prob")
        held = None if self.heldout_dataset is None else self._draw(self.heldout_dataset, collate, "heldout_dataset")
        # A "mean" baseline is fitted on a larger training sample than the probes.
        inputs_of = lambda batch: _batch_inputs(self.players, batch)  # noqa: E731
        fit_baseline_on_dataset(self.players, train, collate, inputs_of, probe.inputs, self.seed)
        period = state.eval_steps if args.eval_strategy == "steps" else None
        self._pending, self._shares, self._alarmed, self._last_tracked = {}, {}, False, None
        self._losses = {"train": {}, "eval": {}}
        trainer_dir = _trainer_log_dir(args)
        log_dir = self.log_dir or _resumed_log_dir(saved, args.output_dir) or trainer_dir or _concepts_log_dir(args)
        # The Trainer's TensorBoard callback already writes the losses into its own folder.
        self._write_losses = log_dir != trainer_dir
        total = state.max_steps if state.max_steps > 0 else None
        options["budget"] = replace(options["budget"], total_steps=total)
        schedule = run_schedule(self.schedule, state.max_steps, period)
        return ConceptTracker(self.players, probe, held, log_dir=log_dir, schedule=schedule, **options)

    def _track(self, model: nn.Module, step: int, last: bool = False) -> StepSummary | None:
        tracker = self.tracker
        if tracker is None:
            return None
        track = track_last_step if last else ConceptTracker.step
        summary = self._guard(f"track step {step}", lambda: track(tracker, self._model(model), step))
        if summary is not None:
            self._last_tracked = step
        return summary

    def _collect(self, wait: bool) -> None:
        """Take the summaries the tracker finished: headline scalars for the next log, and the
        high-order share for ``stop_on_overfit``."""
        tracker = self.tracker
        if tracker is None:
            return
        for summary in self._guard("read its summaries", lambda: tracker.summaries(wait=wait)) or []:
            headline = {tag: summary[tag] for tag in HEADLINE_TAGS if tag in summary}
            if headline:
                self._pending[summary.step] = headline
            self._shares[summary.step] = summary.get(tags.HIGH_ORDER_SHARE, math.nan)

    def _overfitting(self, step: int) -> bool:
        """Main process: has the phase boundary been reported long enough to stop (or warn), on
        the readings arrived so far?"""
        if not distributed.is_main_process() or self._alarmed:
            return False
        self._collect(wait=False)  # a wait here would stall training at every scheduled step
        steps = sorted(self._shares)
        shares = [self._shares[s] for s in steps]
        if phase.overfit_stop_step(steps, shares, patience=self.patience) is None:
            return False
        self._alarmed = True
        gap = self._loss_gap_step()
        beside = "" if gap is None else f" The eval-train loss gap started to grow at step {gap}."
        action = "stops training" if self.stop_on_overfit is True else "warns"
        logger.warning(
            f"ConceptTrackerCallback {action} at step {step} (stop_on_overfit={self.stop_on_overfit!r}): "
            f"the high-order share of concept strength bottomed out at step {phase.phase_boundary(steps, shares)} "
            f"and rises since, as seen at {self.patience + 1} tracked steps in a row (patience="
            f"{self.patience}); a sign of memorization, see the held-out loss.{beside}"
        )
        return self.stop_on_overfit is True

    def _loss_gap_step(self) -> int | None:
        """Step where the eval-train loss gap starts to grow, from the losses logged so far.

        Each evaluation is paired with the last training loss logged at or before its step
        (the Trainer logs the two at different intervals).
        """
        train = sorted(self._losses["train"].items())
        evals, paired = {}, {}
        for step, loss in self._losses["eval"].items():
            before = [value for s, value in train if s <= step]
            if before:
                evals[step], paired[step] = loss, before[-1]
        return loss_gap_step(evals, paired) if evals else None

    def _draw(self, dataset: Any, collate, name: str) -> ProbeSet:
        """``num_probe`` items of ``dataset`` drawn stratified by label (every RNG restored),
        collated by the Trainer's collator into the players' inputs."""
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or len(dataset) == 0:
            raise ValueError(
                f"{name} is a {type(dataset).__name__} without items to index (empty, or an iterable "
                f"dataset?); pass a map-style dataset with at least one item as {name}=..."
            )
        probe = select_probes(dataset, min(self.num_probe, len(dataset)), seed=self.seed, collate=collate)
        if not isinstance(probe.inputs, Mapping):
            raise ValueError(
                f"the data collator made no dict from {name}; the callback needs dict batches (Hugging Face style)."
            )
        return probe._replace(inputs=_for_players(self.players, probe.inputs, name))

    def _save(self, tracker: ConceptTracker, folder: str, output_dir: str) -> None:
        """The tracker state and the callback's own: its concept folder (relative to the output
        folder when inside it, so that a run resumed there continues in it), the phase-boundary
        count and the losses logged so far."""
        os.makedirs(folder, exist_ok=True)
        tracker.save(os.path.join(folder, STATE_FILE))
        losses = {split: sorted(by_step.items()) for split, by_step in self._losses.items()}
        log_dir = os.path.relpath(os.path.abspath(tracker.log_dir), os.path.abspath(output_dir))
        log_dir = os.path.abspath(tracker.log_dir) if log_dir.startswith(os.pardir) else log_dir
        own = {"log_dir": log_dir, "shares": sorted(self._shares.items()), "losses": losses}
        with open(os.path.join(folder, CALLBACK_FILE), "w", encoding="utf-8") as f:
            json.dump(own, f)

    def _resume(self, tracker: ConceptTracker, state, saved: str | None) -> None:
        self._last_tracked = state.global_step
        if saved is None:
            warnings.warn(
                f"ConceptTrackerCallback resumes at step {state.global_step} but found no tracker state "
                f"({STATE_DIR}/{STATE_FILE}) in the checkpoint; concept dynamics restart here. Set "
                "args.resume_from_checkpoint to the checkpoint folder you resume from.",
                stacklevel=3,
            )
            return
        tracker.load(os.path.join(saved, STATE_FILE))
        own = _callback_state(saved)
        self._shares = {int(s): float(v) for s, v in own.get("shares", [])}
        self._losses = {split: {int(s): float(v) for s, v in pairs} for split, pairs in own.get("losses", {}).items()}
        self._losses = {"train": {}, "eval": {}} | self._losses


def _saved_state(args, state) -> str | None:
    """The checkpoint's folder of the callback's state: in ``args.resume_from_checkpoint`` when
    set, else in ``<output_dir>/checkpoint-<global_step>``; None when neither holds it."""
    folders = [os.path.join(args.output_dir, f"checkpoint-{state.global_step}")]
    if isinstance(args.resume_from_checkpoint, str):
        folders.insert(0, args.resume_from_checkpoint)
    found = (os.path.join(folder, STATE_DIR) for folder in folders)
    return next((path for path in found if os.path.isfile(os.path.join(path, STATE_FILE))), None)


def _callback_state(saved: str) -> dict[str, Any]:
    path = os.path.join(saved, CALLBACK_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _resumed_log_dir(saved: str | None, output_dir: str) -> str | None:
    """The concept folder of the run a checkpoint belongs to, so that a resumed run continues
    there (one run, one folder); None, with a warning, when that folder is gone (a checkpoint
    copied to another output folder, say)."""
    log_dir = None if saved is None else _callback_state(saved).get("log_dir")
    if log_dir is None:
        return None
    log_dir = os.path.join(output_dir, log_dir)  # a relative folder is inside the output folder
    if os.path.isdir(log_dir):
        return log_dir
    warnings.warn(
        f"ConceptTrackerCallback: the checkpoint's concept folder {log_dir} is gone; the resumed run "
        "writes into a new folder, which holds only the steps from here on (the dynamics continue).",
        stacklevel=4,
    )
    return None


def _trainer_log_dir(args) -> str | None:
    """The folder transformers' TensorBoard callback writes to, or None when ``report_to`` has no
    TensorBoard: ``$TENSORBOARD_LOGGING_DIR`` when set, else ``<output_dir>/runs/<date>_<host>``
    (found from the event file this process opened there in the last minute, else named the way
    the callback names it). One folder is one TensorBoard run, so concepts written there sit
    beside the losses, and ``concept-tracker report`` reads both."""
    if "tensorboard" not in (args.report_to or []):
        return None
    root = os.getenv("TENSORBOARD_LOGGING_DIR")
    if root:
        return os.path.expanduser(root)
    return _trainer_event_dir(os.path.join(args.output_dir, "runs")) or os.path.join(args.output_dir, default_logdir())


def _concepts_log_dir(args) -> str:
    """Without TensorBoard reporting: a fresh ``<root>/concepts/<date>_<host>`` per launch, with
    ``<root>`` ``$TENSORBOARD_LOGGING_DIR`` or ``<output_dir>/runs``."""
    root = os.getenv("TENSORBOARD_LOGGING_DIR")
    return new_run_dir(
        os.path.join(os.path.expanduser(root) if root else os.path.join(args.output_dir, "runs"), "concepts")
    )


def _trainer_event_dir(runs: str, recent: float = 60.0) -> str | None:
    """The folder under ``runs`` holding the newest event file that this process opened in the
    last ``recent`` seconds (event file names carry the creation time, host and process id)."""
    host, pid, now = socket.gethostname(), os.getpid(), time.time()
    best, best_time = None, now - recent
    for path in glob.glob(os.path.join(glob.escape(runs), "*", f"events.out.tfevents.*.{host}.{pid}.*")):
        created = float(os.path.basename(path).split(".")[3])
        if created >= best_time:
            best, best_time = os.path.dirname(path), created
    return best


def _for_players(players: Players, inputs: Mapping[str, Tensor], name: str) -> Any:
    """Token players read dict batches; the tensor players mask one tensor, which the model
    then takes as its first argument (``pixel_values``, a feature tensor, ...)."""
    if isinstance(players, TokenPlayers):
        return inputs
    inputs = {key: v for key, v in inputs.items() if key != "labels"}  # per-token labels: text only
    if len(inputs) != 1:
        raise ValueError(
            f"{type(players).__name__} masks one input tensor, but batches of {name} hold "
            f"{sorted(inputs)}; use TokenPlayers for text, or a dataset with one input column."
        )
    return next(iter(inputs.values()))


def _batch_inputs(players: Players, batch: Any) -> Any:
    """The players' inputs of a collated training batch (None for a batch that is not a dict)."""
    if not isinstance(batch, Mapping):
        return None
    return _for_players(
        players,
        {k: v for k, v in batch.items() if isinstance(v, Tensor) and k not in ("labels", "label")},
        "train_dataset",
    )
