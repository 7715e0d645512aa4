"""Lightning integration: track interactive concepts while ``trainer.fit()`` runs.

Usage::

    from concept_tracker import TabularPlayers
    from concept_tracker.integrations.lightning import ConceptTrackerLightningCallback

    trainer = L.Trainer(callbacks=[ConceptTrackerLightningCallback(TabularPlayers(), probe_x, probe_y)])
    trainer.fit(module, loader)

The initial model is tracked at ``on_train_start`` (step 0), then ``tracker.step(pl_module,
trainer.global_step)`` runs after every training batch (the schedule decides; with gradient
accumulation the step only moves once per optimizer step), and the last step is tracked at
``on_train_end``. With a ``TensorBoardLogger`` the scalars, histograms and figures go into its
event file (``trainer.logger.experiment``) and the raw interactions under
``<logger.log_dir>/concepts``; otherwise into ``<trainer.log_dir>/concepts``. Only global rank
zero writes. The tracker state rides in Lightning checkpoints, so a resumed fit continues the
dynamics.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import replace
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from concept_tracker import ConceptTracker, Players, Schedule, checks, config
from concept_tracker.probes import fit_baseline_on_dataset, probe_arguments

from ._common import run_schedule, track_last_step, unwrap


class ConceptTrackerLightningCallback(Callback):
    """Track the interactive concepts of a ``LightningModule`` on a fixed probe set.

    ``L.Trainer(callbacks=[ConceptTrackerLightningCallback(players, ProbeSet(probe_x, probe_y))])``

    Args:
        players: how each sample splits into players (``TabularPlayers``, ...).
        probes: a :class:`~concept_tracker.ProbeSet` (inputs: Tensor [B, ...] or dict of
            tensors [B, ...], the module is called as ``pl_module(x)`` or
            ``pl_module(**inputs)``; labels: [B] classes, None = the model's predictions at
            step 0), an ``(inputs, labels)`` tuple or the inputs alone, as for ``ConceptTracker``.
        heldout: held-out probes for ``generalization/*`` scalars, in the same forms.
        schedule: when to track; None = ``log_spaced(0, last_step, 20)`` over the run's
            ``estimated_stepping_batches`` (the tracker's default for runs of unknown length).
            Step 0 and the last step are always tracked.
        log_dir: directory of the raw interactions (and of the event file when the trainer has
            no ``TensorBoardLogger``); None = ``<trainer.log_dir>/concepts``.
        **tracker_options: passed to :class:`ConceptTracker` (``kind``, ``value``, ``strict``,
            ``readings``, ``output``, ``budget``). The run's length
            (``estimated_stepping_batches``, from ``max_steps`` / ``max_epochs``) becomes the
            budget's ``total_steps``, so ``max_overhead`` plans the tracked steps. The probe
            keywords of earlier releases (``probe_targets``, ``heldout_inputs``, ...) still work
            for this release, with a ``FutureWarning``.
    """

    def __init__(
        self,
        players: Players,
        probes: Any = None,
        heldout: Any = None,
        *,
        schedule: Schedule | None = None,
        log_dir: str | os.PathLike | None = None,
        **tracker_options: Any,
    ) -> None:
        self.players = checks.check_players(players)
        self.schedule = checks.check_schedule(schedule)
        owner = "ConceptTrackerLightningCallback"
        # Checked now, so that a bad probe set fails at construction, not when training starts.
        self.probes, self.heldout = probe_arguments(players, probes, heldout, tracker_options, owner)
        self.log_dir = None if log_dir is None else str(log_dir)
        self.tracker_options = config.tracker_options(tracker_options, owner)
        self.tracker: ConceptTracker | None = None
        self._restored: dict[str, Any] | None = None  # checkpoint state that arrived before the tracker
        self._last_tracked: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        # trainer.log_dir is a collective (a broadcast from rank 0): every rank reads it.
        log_dir = self.log_dir or os.path.join(trainer.log_dir, "concepts")
        last = trainer.estimated_stepping_batches
        # A "mean" baseline is fitted on a larger training sample than the probes.
        loader = trainer.train_dataloader
        dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
        fit_baseline_on_dataset(self.players, dataset, collate, _first_tensor, self.probes.inputs)
        total = None if math.isinf(last) else int(last)
        options = dict(self.tracker_options)
        options["budget"] = replace(options["budget"], total_steps=total)
        if logger is not None and trainer.is_global_zero:
            # Off rank zero the logger's experiment is a dummy; the tracker writes nothing there.
            options["output"] = replace(options["output"], writer=logger.experiment)
        schedule = run_schedule(self.schedule, total)
        self.tracker = ConceptTracker(
            self.players, self.probes, self.heldout, log_dir=log_dir, schedule=schedule, **options
        )
        if self._restored:
            self.tracker.load_state_dict(self._restored)
            self._last_tracked = trainer.global_step
        elif trainer.global_step > 0:
            warnings.warn(
                f"ConceptTrackerLightningCallback resumes at step {trainer.global_step} from a "
                "checkpoint without its state (saved without this callback?); concept dynamics "
                "restart here.",
                stacklevel=2,
            )
        self._restored = None
        if trainer.global_step == 0:
            self._track(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._track(pl_module, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.tracker is None:
            return
        if self._last_tracked != trainer.global_step:
            if track_last_step(self.tracker, unwrap(pl_module), trainer.global_step) is not None:
                self._last_tracked = trainer.global_step
        self.tracker.close()

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict() if self.tracker is not None else dict(self._restored or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before on_train_start builds the tracker.
        self._restored = dict(state_dict)

    def _track(self, pl_module, step: int) -> None:
        if self.tracker is not None and self.tracker.step(unwrap(pl_module), step) is not None:
            self._last_tracked = step


def _first_tensor(batch: Any) -> Any:
    """The inputs of a collated ``(inputs, targets, ...)`` or plain-tensor batch, else None."""
    if isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    return batch if isinstance(batch, Tensor) else None
