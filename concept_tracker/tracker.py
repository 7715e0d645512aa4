"""The training plugin: compute interactions on a fixed probe set at scheduled steps and log them.

``ConceptTracker`` is the one stateful object of the library. At each step its schedule picks,
it runs the engine on the probe set (and on held-out probes when given), computes the metrics
of SPEC §5-8 with the pure functions of ``metrics`` and ``dynamics``, writes TensorBoard
scalars, histograms, figures, a custom layout and a table of the strongest concepts, and stores
the raw interactions as safetensors. Only process rank 0 writes.

Plain PyTorch::

    tracker = ConceptTracker(TabularPlayers(), probe_x, probe_y, log_dir="runs/concepts")
    for step, (x, y) in enumerate(loader):
        ...  # forward, backward, optimizer step
        tracker.step(model, step)
    tracker.close()
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate
from torch.utils.tensorboard import SummaryWriter

from . import store as storage
from .and_or import AndOrConfig, decompose
from .distributed import is_main_process, main_process_flag
from .dynamics import Trajectory
from .engine import batch_size_of, compute_interactions
from .interactions import KINDS, Interactions
from .metrics.profile import OrderProfile, band_orders, band_summary, check_ratio, order_profile, stack_effects
from .metrics.similarity import ALIGNED_HINT, train_test_similarity
from .players import Players
from .schedules import Schedule, every, log_spaced
from .transforms import orders as coalition_orders
from .values import resolve_value
from .writers import tags
from .writers.figures import concept_label
from .writers.render import FigureRenderer
from .writers.tensorboard import TensorBoardWriter

Inputs = Any
"""Probe inputs: a Tensor [B, ...] or a mapping of tensors [B, ...] (Hugging Face style)."""

DEFAULT_SCHEDULE = log_spaced(0, 10000, 20) | every(1000)
"""Used when ``schedule=None``: 20 log-spaced steps over the first 10,000 (dense early, when
concepts change fastest) plus every 1,000th step for long runs."""

STATE_VERSION = 1
TOP_CONCEPTS = 10
"""Rows of the markdown table of the strongest concepts."""
TRAJECTORY_CONCEPTS = 3
"""Concepts per band drawn in the trajectory figure."""


class ProbeSet(NamedTuple):
    """A probe set picked by :func:`select_probes`.

    Attributes:
        inputs: Tensor [k, ...] or dict of tensors [k, ...].
        labels: [k] int64 labels, or None when none were available.
        ids: the k dataset indices picked, ascending (pass as ``probe_ids``).
    """

    inputs: Inputs
    labels: Tensor | None
    ids: list[int]


def select_probes(
    dataset_or_tensors: Any, k: int, labels: Tensor | Sequence[int] | None = None, seed: int = 0
) -> ProbeSet:
    """Pick ``k`` probe samples, stratified by label and reproducible from ``seed``.

    With labels, every class gets a share of the ``k`` samples proportional to its frequency
    (largest classes first when the shares do not divide evenly); within a class the samples
    are a seeded random draw. Without labels it is a seeded random draw. The global RNG is not
    touched.

    Args:
        dataset_or_tensors: a Tensor [N, ...], a mapping of tensors [N, ...] (Hugging Face
            style), or a map-style dataset whose items are ``(input, label, ...)`` tuples,
            mappings (the label under "labels" or "label") or bare inputs. Dataset items are
            read once each to find their labels unless ``labels`` is given, then only the
            ``k`` picked items are read and stacked with ``default_collate``.
        k: number of probes, 1 <= k <= N.
        labels: [N] class labels; overrides labels found in dataset items.
        seed: seed of the draw.
    Returns:
        :class:`ProbeSet` ``(inputs, labels, ids)``.
    """
    data = dataset_or_tensors
    is_batch = isinstance(data, Tensor) or isinstance(data, Mapping)
    if not is_batch and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ValueError(
            f"dataset_or_tensors has type {type(data).__name__}; pass a Tensor [N, ...], a dict "
            "of tensors [N, ...] or a map-style dataset (len() and [i])."
        )
    size = batch_size_of(data) if is_batch else len(data)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"k={k!r} must be an int between 1 and the number of samples ({size}).")
    if labels is None and not is_batch:
        labels = _dataset_labels(data)
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.numel() != size:
            raise ValueError(f"labels has {labels.numel()} entries for {size} samples; pass one label per sample.")

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(size, generator=generator)
    if labels is None:
        picked = order[:k]
    else:
        # Rank every sample by its position within its class (as a fraction of the class size):
        # taking the k lowest ranks gives each class a share proportional to its size.
        shuffled = labels[order]
        rank = torch.empty(size, dtype=torch.float64)
        for c in shuffled.unique():
            members = (shuffled == c).nonzero().reshape(-1)
            rank[members] = (torch.arange(members.numel(), dtype=torch.float64) + 0.5) / members.numel()
        picked = order[torch.argsort(rank, stable=True)[:k]]
    ids = sorted(picked.tolist())
    index = torch.tensor(ids)
    if isinstance(data, Tensor):
        inputs = data[index]
    elif isinstance(data, Mapping):
        inputs = {key: v[index] if isinstance(v, Tensor) else [v[i] for i in ids] for key, v in data.items()}
    else:
        inputs = _collate([_item_input(data[i]) for i in ids])
    return ProbeSet(inputs, None if labels is None else labels[index], ids)


def _item_input(item: Any) -> Any:
    if isinstance(item, (tuple, list)):
        return item[0]
    if isinstance(item, Mapping):
        return {k: v for k, v in item.items() if k not in ("label", "labels")}
    return item


def _item_label(item: Any) -> Any:
    if isinstance(item, (tuple, list)) and len(item) > 1:
        return item[1]
    if isinstance(item, Mapping):
        return item.get("labels", item.get("label"))
    return None


def _dataset_labels(data: Any) -> Tensor | None:
    found = [_item_label(data[i]) for i in range(len(data))]
    if any(label is None for label in found):
        return None
    return torch.as_tensor([int(label) for label in found])


def _collate(items: list[Any]) -> Inputs:
    try:
        return default_collate(items)
    except RuntimeError as err:
        raise ValueError(
            f"the picked dataset items cannot be stacked into one batch ({err}); pad them to one "
            "length first (e.g. tokenizer(..., padding='max_length'))."
        ) from err


def _probe_set(split: str, inputs: Inputs, targets: Any, ids: Sequence[Any] | None) -> dict[str, Any]:
    """A checked probe set: ``{"inputs", "targets": [B] int64 or None, "ids": list or None}``."""
    try:
        size = batch_size_of(inputs)
    except ValueError as err:
        raise ValueError(f"{split}_inputs: {err}") from None
    if ids is not None and len(ids) != size:
        raise ValueError(f"{split}_ids has {len(ids)} entries for {size} samples; pass one id per sample.")
    if targets is not None:
        targets = torch.as_tensor(targets).reshape(-1).long().cpu()
        if targets.numel() != size:
            raise ValueError(
                f"{split}_targets has {targets.numel()} entries for {size} samples; pass one class per sample."
            )
    return {"inputs": inputs, "targets": targets, "ids": None if ids is None else list(ids)}


class ConceptTracker:
    """Track the interactive concepts a model learns, at scheduled training steps.

    At every step the schedule fires (and not twice for one step), :meth:`step` runs
    ``compute_interactions`` on the probe set and, when given, on the held-out probes (kind
    "and_or": one solver call for both sets, warm-started from the previous tracked step's
    solution), then writes to ``log_dir``:

    - the scalars of SPEC §10 at exactly that step, plus the extra tags listed in
      :mod:`concept_tracker.writers.tags`; detour ratios are NaN until a concept has moved
      (``D = 0``, e.g. at the first tracked step);
    - histograms of ``|I(S)|`` per kind and order, a markdown table of the strongest concepts,
      and the custom-scalars layout (once per event file);
    - figures (order profile per kind, order x step heat map of strength shares, trajectories
      of the strongest simple and complex concepts of probe sample 0) at the 1st, 2nd, 4th,
      8th, ... tracked step and at :meth:`close`;
    - the raw interactions, ``<log_dir>/interactions/step_{step:08d}.safetensors`` (held-out:
      ``interactions/heldout/...``), when ``store=True``.

    Tracking never changes training: the engine restores training flags, grad mode and RNG
    states, and the tracker draws no random numbers. A failure inside :meth:`step` warns once
    per exception type and returns False (``strict=True`` re-raises).

    Memory: besides the engine, the tracker keeps ``O(B * 2**n)`` running dynamics state and,
    for the trajectory figure, the effects of probe sample 0 at every tracked step
    (``T * K * 2**n`` floats for ``T`` steps and ``K`` kinds).

    Args:
        players: how each sample splits into players (``TabularPlayers``, ...).
        probe_inputs: Tensor [B, ...] or dict of tensors [B, ...]; fixed for the whole run.
        probe_targets: [B] target classes (labels); None = the model's predictions at the
            first tracked step, then fixed.
        heldout_inputs: held-out probes for ``generalization/*`` (needs aligned players).
        heldout_targets: their classes; None = predictions at the first tracked step.
        log_dir: directory of the event file and the raw interactions.
        schedule: a :class:`~concept_tracker.schedules.Schedule`; None = ``DEFAULT_SCHEDULE``,
            ``log_spaced(0, 10000, 20) | every(1000)``.
        kind: "and", "or" or "and_or".
        value: value function name or callable (see ``compute_interactions``).
        ratio: salience threshold ratio (SPEC §5).
        batch_size: rows per forward (None: automatic).
        and_or: ``AndOrConfig`` for kind "and_or".
        max_overhead: None, or the largest fraction of wall time (0 < f < 1) tracking may take.
            A scheduled step is skipped when its expected cost (the previous tracked step's)
            would push tracking time past ``max_overhead`` of the wall time since the first
            :meth:`step` call; skips are counted in ``perf/skipped_steps`` and warned about.
            :meth:`close` then draws no figures for a last tracked step that had none.
        strict: re-raise exceptions from :meth:`step` instead of warning.
        store: write the raw interactions of every tracked step.
        writer: an open ``SummaryWriter`` to log into (e.g. Lightning's); None opens one in
            ``log_dir`` on the first write.
        simple_max, complex_min: band cut-offs (default ``n // 3`` and ``n // 2 + 1``).
        figures: draw the matplotlib figures, at the 1st, 2nd, 4th, 8th, ... tracked step and,
            for the last tracked step, at :meth:`close`. A worker process renders them (see
            :mod:`concept_tracker.writers.render`): one takes a few tenths of a second of CPU,
            more than the rest of a tracked step for small models.
        probe_ids: B JSON-able ids of the probe samples (e.g. dataset indices), stored with
            the raw interactions.
        heldout_ids: ids of the held-out probes, likewise.
    """

    def __init__(
        self,
        players: Players,
        probe_inputs: Inputs,
        probe_targets: Tensor | Sequence[int] | None = None,
        *,
        heldout_inputs: Inputs | None = None,
        heldout_targets: Tensor | Sequence[int] | None = None,
        log_dir: str | os.PathLike = "runs/concepts",
        schedule: Schedule | None = None,
        kind: str = "and",
        value: Any = "log_odds",
        ratio: float = 0.05,
        batch_size: int | None = None,
        and_or: AndOrConfig | None = None,
        max_overhead: float | None = None,
        strict: bool = False,
        store: bool = True,
        writer: SummaryWriter | None = None,
        simple_max: int | None = None,
        complex_min: int | None = None,
        figures: bool = True,
        probe_ids: Sequence[Any] | None = None,
        heldout_ids: Sequence[Any] | None = None,
    ) -> None:
        if not isinstance(players, Players):
            raise ValueError(
                f"players has type {type(players).__name__}; pass a concept_tracker player kind "
                "(TabularPlayers, ImagePatchPlayers, TokenPlayers, FeatureMaskPlayers)."
            )
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}; use one of {list(KINDS)}.")
        resolve_value(value)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise ValueError(
                f"schedule has type {type(schedule).__name__}; pass every(n), log_spaced(...), "
                "at_steps([...]) or a combination with |, or None for the default."
            )
        if max_overhead is not None and not (
            isinstance(max_overhead, (int, float)) and 0 < max_overhead < 1
        ):
            raise ValueError(f"max_overhead={max_overhead!r} must be None or a fraction in (0, 1), e.g. 0.1.")
        if and_or is not None and not isinstance(and_or, AndOrConfig):
            raise ValueError(f"and_or has type {type(and_or).__name__}; pass an AndOrConfig or None for the defaults.")
        if writer is not None and not isinstance(writer, SummaryWriter):
            raise ValueError(f"writer has type {type(writer).__name__}; pass a torch SummaryWriter or None.")
        self._probe = _probe_set("probe", probe_inputs, probe_targets, probe_ids)
        self._heldout = None
        if heldout_inputs is not None:
            if not players.aligned:
                raise ValueError(f"heldout_inputs is given but players are not aligned: {ALIGNED_HINT}.")
            self._heldout = _probe_set("heldout", heldout_inputs, heldout_targets, heldout_ids)
        elif heldout_targets is not None or heldout_ids is not None:
            raise ValueError("heldout_targets / heldout_ids are given without heldout_inputs; pass the inputs too.")

        self.players = players
        self.log_dir = str(log_dir)
        self.schedule = DEFAULT_SCHEDULE if schedule is None else schedule
        self.kind = kind
        self.value = value
        self.ratio = check_ratio(ratio)
        self.batch_size = batch_size
        self.and_or = and_or
        self.max_overhead = max_overhead
        self.strict = strict
        self.store = store
        self.simple_max = simple_max
        self.complex_min = complex_min
        self.figures = figures
        self.writer = TensorBoardWriter(self.log_dir, writer)

        self._trajectory = Trajectory(ratio=self.ratio, simple_max=simple_max, complex_min=complex_min)
        self._warm: dict[str, Interactions | None] = {"probe": None, "heldout": None}
        self._shares: list[Tensor] = []  # [n + 1] per tracked step, for the heat map
        self._sample_effects: list[Tensor] = []  # [K, 2**n] of probe sample 0 per tracked step
        self._undrawn: tuple[int, Interactions, dict[str, OrderProfile]] | None = None  # figures due at close
        self._renderer: FigureRenderer | None = None  # started with the first figure
        self._cursor: int | None = None  # last step tracked, skipped or failed
        self._spent = 0.0  # seconds inside tracked steps
        self._elapsed_before = 0.0  # wall seconds of earlier sessions (before a resume)
        self._wall_origin: float | None = None
        self._last_cost: float | None = None
        self._skipped = 0
        self._warned: set[type] = set()

    # ----------------------------------------------------------------------------- stepping

    def step(self, model: nn.Module, global_step: int) -> bool:
        """Track ``model`` at ``global_step`` if the schedule fires there.

        Call it once per optimizer step (repeated calls with the same step are ignored).

        Returns:
            True when interactions were computed and logged at this step.
        """
        now = time.perf_counter()
        if self._wall_origin is None:
            self._wall_origin = now
        if not self.schedule(global_step) or (self._cursor is not None and global_step <= self._cursor):
            return False
        self._cursor = global_step
        try:
            # Rank 0 decides for all ranks: the engine's forwards are collective.
            if self.max_overhead is not None and main_process_flag(self._over_budget(now)):
                self._skip(global_step)
                return False
            self._track(model, global_step, now)
            return True
        except Exception as err:
            if self.strict:
                raise
            if type(err) not in self._warned:
                self._warned.add(type(err))
                warnings.warn(
                    f"ConceptTracker could not track step {global_step}: {type(err).__name__}: {err} "
                    "Training continues; later errors of this type are not reported. Pass "
                    "strict=True to raise instead.",
                    stacklevel=2,
                )
            return False
        finally:
            self._spent += time.perf_counter() - now

    def _over_budget(self, now: float) -> bool:
        """Whether tracking now, at the cost of the previous tracked step, would exceed the budget."""
        if self._last_cost is None:
            return False
        elapsed = self._elapsed_before + (now - self._wall_origin)
        return self._spent + self._last_cost > self.max_overhead * (elapsed + self._last_cost)

    def _skip(self, step: int) -> None:
        self._skipped += 1
        self.writer.scalar(tags.SKIPPED_STEPS, self._skipped, step)
        self.writer.flush()
        if self._skipped == 1 and is_main_process():
            warnings.warn(
                f"ConceptTracker skipped step {step}: tracking it (about {self._last_cost:.2f} s) "
                f"would exceed max_overhead={self.max_overhead} of the wall time. Further skips "
                f"are counted in the {tags.SKIPPED_STEPS!r} scalar.",
                stacklevel=3,
            )

    def _compute(self, model: nn.Module, probes: dict[str, Any]) -> Interactions:
        """The engine on one probe set; for kind "and_or" only the values (see :meth:`_decompose`)."""
        res = compute_interactions(
            model,
            probes["inputs"],
            self.players,
            target=probes["targets"],
            value=self.value,
            kind="and" if self.kind == "and_or" else self.kind,
            batch_size=self.batch_size,
        )
        if probes["targets"] is None and res.targets is not None:
            # Predictions at the first tracked step become the fixed targets of the run.
            probes["targets"] = res.targets.detach().cpu()
        return res

    def _decompose(self, results: dict[str, Interactions]) -> dict[str, Interactions]:
        """The AND-OR split of the probe and held-out values in one solver call.

        Samples are independent in the solver, so one call gives the same split as one per
        probe set, while its per-iteration cost (on a GPU mostly kernel launches) is paid once.
        Each set warm-starts from its split at the previous tracked step.
        """
        values = torch.cat([res.outputs for res in results.values()])
        warm = [self._warm[split] for split in results]
        start = None
        if all(w is not None for w in warm):
            start = (torch.cat([w.gamma for w in warm]).to(values.device), torch.cat([w.q for w in warm]).to(values.device))
        sol = decompose(values, self.and_or, warm_start=start)
        out, offset = {}, 0
        for split, res in results.items():
            part = slice(offset, offset + res.num_samples)
            offset += res.num_samples
            out[split] = replace(
                res, kind="and_or", and_effects=sol.and_effects[part], or_effects=sol.or_effects[part],
                gamma=sol.gamma[part], q=sol.q[part],
            )
            self._warm[split] = out[split]
        return out

    def _track(self, model: nn.Module, step: int, start: float) -> None:
        splits = {"probe": self._probe, "heldout": self._heldout}
        results = {split: self._compute(model, probes) for split, probes in splits.items() if probes is not None}
        engine_seconds = time.perf_counter() - start
        if not is_main_process():
            return
        if self.kind == "and_or":
            results = self._decompose(results)
        res = results["probe"].to("cpu")
        held = results["heldout"].to("cpu") if "heldout" in results else None
        effects = stack_effects(res)  # [B, K, 2**n]
        self._trajectory.append(step, effects)
        profile = order_profile(res, self.ratio)
        by_kind = {kind: order_profile(res, self.ratio, kind=kind) for kind in res.effect_kinds}
        self._shares.append(profile.share)
        self._sample_effects.append(effects[0].float())

        rows = res.outputs.numel() + (held.outputs.numel() if held is not None else 0)
        scalars = self._scalars(res, held, profile, by_kind)
        self._write(step, res, by_kind)
        if self.store:
            storage.save_step(self.log_dir, step, res, self._probe["ids"], ratio=self.ratio,
                              simple_max=self.simple_max, complex_min=self.complex_min)
            if held is not None:
                storage.save_step(self.log_dir, step, held, self._heldout["ids"], split="heldout", ratio=self.ratio,
                                  simple_max=self.simple_max, complex_min=self.complex_min)
        self.writer.scalars(scalars, step)
        self.writer.scalar(tags.FORWARDS_PER_SECOND, rows / max(engine_seconds, 1e-9), step)
        self._last_cost = time.perf_counter() - start
        self.writer.scalar(tags.PERF_SECONDS, self._last_cost, step)
        self.writer.flush()
        self._log_figures(wait=False)

    # ------------------------------------------------------------------------------ metrics

    def _scalars(
        self,
        res: Interactions,
        held: Interactions | None,
        profile: OrderProfile,
        by_kind: dict[str, OrderProfile],
    ) -> dict[str, float]:
        n = res.n
        orders = range(1, n + 1)
        out: dict[str, float] = {}
        for kind, kind_profile in by_kind.items():
            for stat in tags.ORDER_STATS:
                values = getattr(kind_profile, stat)
                out.update({tags.concept_order(kind, m, stat): float(values[m]) for m in orders})
        summary = band_summary(profile, self.simple_max, self.complex_min)
        out.update({tags.summary(stat): getattr(summary, stat) for stat in tags.SUMMARY_STATS})
        out[tags.MEDIUM_STRENGTH] = summary.medium_strength
        if held is not None:
            similarity = train_test_similarity(res, self._probe["targets"], held, self._heldout["targets"])
            out.update({tags.train_test_similarity(m): float(similarity[m]) for m in orders})

        traj = self._trajectory
        detour = traj.detour_ratio()
        out.update({tags.detour_ratio(m): float(detour[m]) for m in orders})
        bands = band_orders(n, self.simple_max, self.complex_min)
        for band in tags.DETOUR_BANDS:
            chosen = getattr(bands, band)
            out[tags.band_detour_ratio(band)] = traj.detour_ratio(chosen) if chosen else math.nan
        out[tags.SIGN_FLIPS] = float(traj.sign_flips().sum())
        forgotten = traj.forgotten()
        out.update({tags.forgotten(m): float(forgotten[m]) for m in orders})
        out[tags.FORGOTTEN] = float(forgotten.sum())
        out.update(_mean_emergence(traj.emergence_steps(), n))
        out[tags.HIGH_ORDER_STRENGTH] = float(traj.high_order_strength()[1][-1])
        boundary = traj.phase_boundary()
        if boundary is not None:
            out[tags.PHASE_BOUNDARY] = float(boundary)
        return out

    # ------------------------------------------------------------------------------ writing

    def _write(self, step: int, res: Interactions, by_kind: dict[str, OrderProfile]) -> None:
        writer = self.writer
        writer.layout(tags.custom_layout(res.effect_kinds, self._heldout is not None))
        orders = res.orders
        for kind in res.effect_kinds:
            magnitude = res.effects(kind).abs()
            for m in range(1, res.n + 1):
                writer.histogram(tags.abs_effect_histogram(kind, m), magnitude[:, orders == m], step)
        writer.text(tags.TOP_CONCEPTS_TEXT, self._top_table(res, step), step)
        if not self.figures:
            return
        tracked = len(self._trajectory.steps)
        # A figure costs the renderer process a few tenths of a second of CPU. At the 1st, 2nd,
        # 4th, 8th, ... tracked step (and at close) that is O(log T) renders over T tracked
        # steps; the scalars keep every step.
        if tracked & (tracked - 1) == 0:
            self._draw_figures(step, res, by_kind)
            self._undrawn = None
        else:
            self._undrawn = (step, res, by_kind)

    def _draw_figures(self, step: int, res: Interactions, by_kind: dict[str, OrderProfile]) -> None:
        """Hand the figures of the last tracked step, ``step``, to the renderer process."""
        if self._renderer is None:
            self._renderer = FigureRenderer()
        submit = self._renderer.submit
        for kind, profile in by_kind.items():
            title = f"{kind.upper()} concepts by order, step {step}"
            submit((tags.order_profile_figure(kind), step), "order_profile_figure", profile, title)
        steps = list(self._trajectory.steps)
        submit((tags.HEATMAP_FIGURE, step), "order_heatmap_figure", steps, torch.stack(self._shares))
        submit((tags.TRAJECTORY_FIGURE, step), "trajectory_figure", steps, *self._trajectory_series(res))

    def _log_figures(self, wait: bool) -> None:
        """Log the figures rendered so far (all of them when ``wait``). A figure function's
        error warns once per error type (the step itself was tracked), or raises under
        ``strict``."""
        if self._renderer is None:
            return
        for (tag, step), png in self._renderer.wait() if wait else self._renderer.ready():
            if not isinstance(png, Exception):
                self.writer.png(tag, png, step)
            elif self.strict:
                raise png
            elif type(png) not in self._warned:
                self._warned.add(type(png))
                warnings.warn(f"ConceptTracker could not draw {tag!r} of step {step}: {png}", stacklevel=3)

    def _trajectory_series(self, res: Interactions) -> tuple[dict[str, Tensor], dict[str, Tensor], str]:
        """The strongest simple and complex concepts of probe sample 0 (``{label: [T] effects}``
        each) and the title, for ``figures.trajectory_figure``."""
        history = torch.stack(self._sample_effects)  # [T, K, 2**n]
        kinds = res.effect_kinds
        names = res.player_names[0]
        bands = band_orders(res.n, self.simple_max, self.complex_min)
        orders = res.orders

        def strongest(band: tuple[int, ...]) -> dict[str, Tensor]:
            in_band = torch.isin(orders, torch.tensor(band, dtype=orders.dtype))
            latest = history[-1].abs() * in_band  # [K, 2**n]
            picked = latest.reshape(-1).topk(min(TRAJECTORY_CONCEPTS, int(in_band.sum()) * len(kinds))).indices
            series = {}
            for flat in picked.tolist():
                k, s = divmod(flat, 1 << res.n)
                prefix = f"{kinds[k].upper()} " if len(kinds) > 1 else ""
                # A copy: a view would carry all of `history` to the renderer process.
                series[prefix + concept_label(s, names)] = history[:, k, s].clone()
            return series

        title = f"probe sample {self._probe['ids'][0] if self._probe['ids'] is not None else 0}"
        if res.targets is not None and res.targets.dim() == 1:  # not answer labels [B, T]
            title += f", target class {int(res.targets[0])}"
        return (
            strongest(bands.simple) if bands.simple else {},
            strongest(bands.complex) if bands.complex else {},
            title,
        )

    def _top_table(self, res: Interactions, step: int) -> str:
        effects = stack_effects(res)  # [B, K, 2**n]
        emergence = self._trajectory.emergence_steps()
        magnitude = effects.abs()
        magnitude[..., 0] = 0.0  # the empty set is v(empty), not a concept
        k_count, size = effects.shape[1], effects.shape[2]
        top = magnitude.reshape(-1).topk(min(TOP_CONCEPTS, magnitude.numel())).indices.tolist()
        ids = self._probe["ids"]
        lines = [
            f"Strongest concepts at step {step} (salient since: first step of the current salient run)",
            "",
            "| rank | sample | kind | concept | order | I(S) | salient since |",
            "|---:|---|---|---|---:|---:|---:|",
        ]
        for rank, flat in enumerate(top, 1):
            b, rest = divmod(flat, k_count * size)
            k, s = divmod(rest, size)
            since = int(emergence[b, k, s])
            lines.append(
                f"| {rank} | {ids[b] if ids is not None else b} | {res.effect_kinds[k].upper()} | "
                f"{concept_label(s, res.player_names[b])} | {bin(s).count('1')} | "
                f"{float(effects[b, k, s]):+.4g} | {since if since >= 0 else '-'} |"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Draw the figures of the last tracked step if they are not drawn yet, log every figure
        the renderer process still owes, stop it, then flush and close the TensorBoard writer
        (an external writer is only flushed)."""
        try:
            # Under a budget, the last step's figures are not drawn: that work would come after
            # the budget's last say.
            if self._undrawn is not None and self.max_overhead is None:
                self._draw_figures(*self._undrawn)
            self._undrawn = None
            self._log_figures(wait=True)
        except Exception as err:
            if self.strict:
                raise
            warnings.warn(f"ConceptTracker could not draw its last figures: {type(err).__name__}: {err}", stacklevel=2)
        finally:
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None
            self.writer.close()

    def __enter__(self) -> "ConceptTracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue the dynamics exactly.

        Returns:
            A dict of tensors and JSON-able values: the probe and held-out sets (inputs,
            targets, ids), the schedule and its cursor, the trajectory state, the "and_or" warm
            starts, the figure history and timing. Save it with :meth:`save` or inside a
            training checkpoint.
        """
        warm = {
            split: None if res is None else storage.interactions_state(res.to("cpu"))
            for split, res in self._warm.items()
        }
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "ratio": self.ratio,
            "probe": dict(self._probe),
            "heldout": None if self._heldout is None else dict(self._heldout),
            "schedule": self.schedule.to_config(),
            "cursor": self._cursor,
            "trajectory": self._trajectory.state_dict(),
            "warm_start": warm,
            "shares": torch.stack(self._shares) if self._shares else None,
            "sample_effects": torch.stack(self._sample_effects) if self._sample_effects else None,
            "timing": {
                "spent": self._spent,
                "elapsed": self._elapsed_before
                + (0.0 if self._wall_origin is None else time.perf_counter() - self._wall_origin),
                "last_cost": self._last_cost,
                "skipped": self._skipped,
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`: steps up to the saved cursor are not tracked again.

        The saved probe sets replace those given to the constructor.

        Raises:
            ValueError: if the state is from another version, kind or ratio.
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
        if (state["heldout"] is None) != (self._heldout is None):
            raise ValueError(
                "state and tracker disagree on held-out probes; pass heldout_inputs exactly when "
                "the saved run had them."
            )
        if state["schedule"] != self.schedule.to_config():
            warnings.warn(
                f"resuming with schedule {self.schedule!r}, which differs from the saved "
                f"{Schedule.from_config(state['schedule'])!r}; dynamics continue on the new schedule.",
                stacklevel=2,
            )
        self._probe = dict(state["probe"])
        self._heldout = None if state["heldout"] is None else dict(state["heldout"])
        self._cursor = state["cursor"]
        self._trajectory.load_state_dict(state["trajectory"])
        self._warm = {
            split: None if s is None else storage.interactions_from_state(s) for split, s in state["warm_start"].items()
        }
        self._shares = [] if state["shares"] is None else list(state["shares"].unbind(0))
        self._sample_effects = [] if state["sample_effects"] is None else list(state["sample_effects"].unbind(0))
        self._undrawn = None
        timing = state["timing"]
        self._spent = timing["spent"]
        self._elapsed_before = timing["elapsed"]
        self._wall_origin = None
        self._last_cost = timing["last_cost"]
        self._skipped = timing["skipped"]

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to one safetensors file (tensors + JSON, no pickle)."""
        storage.save_state(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by :meth:`save` and :meth:`load_state_dict` it."""
        self.load_state_dict(storage.load_state(path))


def _mean_emergence(emergence: Tensor, n: int) -> dict[str, float]:
    """Mean emergence step per order over the concepts salient now (NaN for an order with none)."""
    order = coalition_orders(n).expand_as(emergence)
    salient = emergence >= 0
    out = {}
    for m in range(1, n + 1):
        chosen = emergence[salient & (order == m)]
        out[tags.emergence_step(m)] = float(chosen.double().mean()) if chosen.numel() else math.nan
    return out
