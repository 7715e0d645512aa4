"""Probe sets: the fixed samples a tracker computes interactions on.

One type, :class:`ProbeSet`, travels from where probes are picked (:func:`select_probes`, the
Trainer callback's draw from a dataset, the CLI's ``--data``) to the tracker, which checks it
with :func:`probe_set` and keeps it in its saved state.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from .checks import check_targets
from .config import ReadingsConfig, warn_legacy
from .engine import batch_size_of, model_device, preserved_state
from .language_models import answer_probes
from .metrics.similarity import ALIGNED_HINT
from .players import Players, TokenPlayers, fit_mean_baseline, mean_unfitted
from .values import model_logits

Inputs = Any
"""Probe inputs: a Tensor [B, ...] or a mapping of tensors [B, ...] (Hugging Face style)."""


class ProbeSet(NamedTuple):
    """A set of probe samples.

    Attributes:
        inputs: Tensor [k, ...] or dict of tensors [k, ...].
        labels: [k] int64 class per sample (the tracker's targets), or None when none were
            available (the tracker then fixes the model's predictions at its first step).
        ids: k JSON-able ids of the samples (dataset indices, ascending for
            :func:`select_probes`), or None.
    """

    inputs: Inputs
    labels: Tensor | None = None
    ids: list[Any] | None = None

    def fixed(self, targets: Tensor | None) -> ProbeSet:
        """This set with ``targets`` [k] as its labels if it has none: the model's predictions at
        a tracker's first tracked step become the run's fixed targets."""
        return self if self.labels is not None or targets is None else self._replace(labels=targets.detach().cpu())


def select_probes(
    dataset_or_tensors: Any,
    k: int,
    labels: Tensor | Sequence[int] | None = None,
    seed: int = 0,
    collate: Callable[[list], Any] | None = None,
) -> ProbeSet:
    """Pick ``k`` probe samples, stratified by label and reproducible from ``seed``.

    With labels, every class gets a share of the ``k`` samples proportional to its frequency
    (largest classes first when the shares do not divide evenly); within a class the samples
    are a seeded random draw. Without labels it is a seeded random draw. Every RNG (torch CPU
    and CUDA, numpy, ``random``) is left as it was, even when reading an item draws a random
    augmentation, so picking probes never changes training.

    Args:
        dataset_or_tensors: a Tensor [N, ...], a mapping of tensors [N, ...] (Hugging Face
            style), or a map-style dataset whose items are ``(input, label, ...)`` tuples,
            mappings (the label under "labels" or "label") or bare inputs. From a dataset, a
            seeded pool of at most ``LABEL_POOL`` items is read (once each) and the probes
            are drawn from it.
        k: number of probes, 1 <= k <= N.
        labels: [N] class labels; overrides labels found in dataset items.
        seed: seed of the draw.
        collate: for a dataset, how the picked items become one batch (e.g. a Trainer's data
            collator); None: ``default_collate`` of the items' inputs. A collated mapping's
            "labels" / "label" are the probes' labels when they hold one class per sample;
            other labels (per-token, ``[k, T]``) stay in the inputs as "labels".
    Returns:
        :class:`ProbeSet` ``(inputs, labels, ids)``.
    """
    data = dataset_or_tensors
    is_batch = isinstance(data, Tensor) or isinstance(data, Mapping)
    if not is_batch and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ValueError(
            f"dataset_or_tensors has type {type(data).__name__}, which has no len() and [i] (an iterable "
            "dataset?); pass a Tensor [N, ...], a dict of tensors [N, ...] or a map-style dataset."
        )
    size = batch_size_of(data) if is_batch else len(data)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"k={k!r} must be an int between 1 and the number of samples ({size}).")
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.numel() != size:
            raise ValueError(f"labels has {labels.numel()} entries for {size} samples; pass one label per sample.")
    if is_batch:
        index = torch.tensor(sorted(_pick(size, k, labels, seed).tolist()))
        if isinstance(data, Tensor):
            return ProbeSet(data[index], None if labels is None else labels[index], index.tolist())
        inputs = {key: v[index] if isinstance(v, Tensor) else [v[i] for i in index] for key, v in data.items()}
        return ProbeSet(inputs, None if labels is None else labels[index], index.tolist())
    with preserved_state(nn.Identity()):  # forks every RNG: an item may draw a random augmentation
        generator = torch.Generator().manual_seed(seed)
        pool = torch.randperm(size, generator=generator)[:LABEL_POOL].sort().values if size > LABEL_POOL else None
        ids = torch.arange(size) if pool is None else pool
        items = [data[int(i)] for i in ids]
        found = labels[ids] if labels is not None else _item_labels(items)
        picked = sorted(_pick(len(items), k, found, seed).tolist())
        chosen = [items[p] for p in picked]
        probe_labels = None if found is None else found[picked]
        ids_out = ids[picked].tolist()
        if collate is None:
            return ProbeSet(_collate([_item_input(item) for item in chosen]), probe_labels, ids_out)
        return _split_labels(collate(chosen), ids_out)


LABEL_POOL = 2048
"""At most this many dataset items are read to stratify a probe draw by label."""


def _pick(size: int, k: int, labels: Tensor | None, seed: int) -> Tensor:
    """``k`` of ``size`` positions, a seeded draw stratified by ``labels`` when given."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    if labels is None:
        return order[:k]
    # Rank every sample by its position within its class (as a fraction of the class size):
    # taking the k lowest ranks gives each class a share proportional to its size.
    shuffled = labels[order]
    rank = torch.empty(size, dtype=torch.float64)
    for c in shuffled.unique():
        members = (shuffled == c).nonzero().reshape(-1)
        rank[members] = (torch.arange(members.numel(), dtype=torch.float64) + 0.5) / members.numel()
    return order[torch.argsort(rank, stable=True)[:k]]


def _item_input(item: Any) -> Any:
    if isinstance(item, (tuple, list)):
        return item[0]
    if isinstance(item, Mapping):
        return {k: v for k, v in item.items() if k not in ("label", "labels")}
    return item


def _class_label(label: Any) -> int | None:
    """``label`` as one class index, or None (no label, a float, per-token labels, ...)."""
    if isinstance(label, Tensor):
        label = label.item() if label.numel() == 1 and not label.is_floating_point() else None
    return int(label) if isinstance(label, numbers.Integral) and not isinstance(label, bool) else None


def _item_labels(items: list[Any]) -> Tensor | None:
    """The class of every item, or None when one has none."""
    found = []
    for item in items:
        label = item[1] if isinstance(item, (tuple, list)) and len(item) > 1 else None
        label = item.get("labels", item.get("label")) if isinstance(item, Mapping) else label
        found.append(_class_label(label))
    return None if None in found else torch.as_tensor(found, dtype=torch.int64)


def _split_labels(batch: Any, ids: list[int]) -> ProbeSet:
    """A collated batch as a probe set: class labels [k] become its labels, other tensors its
    inputs (per-token labels included, as "labels")."""
    if isinstance(batch, (tuple, list)):
        inputs, labels = batch[0], batch[1] if len(batch) > 1 else None
    elif isinstance(batch, Mapping):
        inputs = {key: v for key, v in batch.items() if isinstance(v, Tensor) and key != "label"}
        labels = batch.get("labels", batch.get("label"))
        if isinstance(labels, Tensor) and labels.dim() == 1:
            inputs.pop("labels", None)
    else:
        raise ValueError(
            f"the collate function made a {type(batch).__name__}; return a dict or an (inputs, labels) tuple."
        )
    is_class = isinstance(labels, Tensor) and labels.dim() == 1 and not labels.is_floating_point()
    return ProbeSet(inputs, labels.long() if isinstance(labels, Tensor) and is_class else None, ids)


def _collate(items: list[Any]) -> Inputs:
    try:
        return default_collate(items)
    except RuntimeError as err:
        raise ValueError(
            f"the picked dataset items cannot be stacked into one batch ({err}); pad them to one "
            "length first (e.g. tokenizer(..., padding='max_length'))."
        ) from err


def fit_baseline_on_dataset(
    players: Players,
    dataset: Any,
    collate: Callable[[list], Any] | None,
    inputs_of: Callable[[Any], Any],
    like: Any,
    seed: int = 0,
) -> bool:
    """Fit the players' unfitted "mean" baseline on up to ``BASELINE_SAMPLES`` training items.

    The items are drawn with a private generator and every RNG is restored afterwards (reading
    an item may draw a random augmentation), so training is unchanged. Nothing is fitted (the
    probe inputs then give the mean) when the players need no fit, the dataset is not
    map-style, or its inputs do not have the probes' sample shape.

    Args:
        players: the tracked players.
        dataset: the training dataset (map-style: ``len()`` and ``[i]``).
        collate: the training loader's collate function (None: ``default_collate``).
        inputs_of: maps a collated batch to the players' inputs [N, ...] (or None).
        like: the probe inputs [B, ...], whose sample shape the fit must match.
        seed: seed of the draw.
    Returns:
        True when the baseline was fitted on the training items.
    """
    if not mean_unfitted(players) or not isinstance(like, Tensor):
        return False
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or len(dataset) < 2:
        return False
    with preserved_state(nn.Identity()):
        picked = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:BASELINE_SAMPLES]
        inputs = inputs_of((collate or default_collate)([dataset[int(i)] for i in picked]))
    if not isinstance(inputs, Tensor) or inputs.shape[1:] != like.shape[1:]:
        return False
    return fit_mean_baseline(players, inputs)


BASELINE_SAMPLES = 1024
"""Training items a "mean" baseline is fitted on when the players are not fitted yet."""


def language_model_probes(model: nn.Module, players: Players, probe: ProbeSet) -> tuple[ProbeSet, bool]:
    """The probes as the model reads them: for a causal language model read through token
    players (its logits on a probe are ``[1, T, V]`` over its vocabulary), the probe set with
    answer labels in its inputs (:func:`~concept_tracker.language_models.answer_probes`) and
    True (the value is then "answer_log_prob"); else the probes without per-token labels and
    False. The one forward runs in eval mode, without gradients, every RNG restored."""
    inputs = probe.inputs
    if not isinstance(inputs, Mapping) or not isinstance(inputs.get("input_ids"), Tensor):
        return probe, False
    plain = probe._replace(inputs={k: v for k, v in inputs.items() if k != "labels"})
    if not isinstance(players, TokenPlayers):
        return plain, False
    first = {k: v[:1].to(model_device(model)) for k, v in plain.inputs.items()}
    with preserved_state(model), torch.no_grad():
        logits = model_logits(model(**first), position=slice(None))
    embed = getattr(model, "get_input_embeddings", lambda: None)()
    answered = answer_probes(inputs, logits, getattr(embed, "num_embeddings", None))
    return (plain, False) if answered is None else (probe._replace(inputs=answered), True)


Probes = ProbeSet | tuple | Inputs
"""Probes as the tracker takes them: a :class:`ProbeSet`, an ``(inputs, labels[, ids])`` tuple,
or the inputs alone (labels: the model's predictions at the first tracked step)."""


def probe_set(probes: Probes, name: str = "probes") -> ProbeSet:
    """A checked :class:`ProbeSet`: one label and one id per sample, labels as [B] int64 on the
    CPU, the inputs copied.

    Args:
        probes: see :data:`Probes`.
        name: the argument's name, for messages.
    Raises:
        ValueError: naming ``name`` when the labels or ids do not match the inputs.
    """
    inputs, labels, ids = ProbeSet(*probes) if isinstance(probes, tuple) else ProbeSet(probes)
    if inputs is None:
        raise ValueError(f"{name} has labels or ids but no inputs; pass ProbeSet(inputs, labels, ids).")
    try:
        size = batch_size_of(inputs)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if ids is not None and len(ids) != size:
        raise ValueError(f"{name} has {len(ids)} ids for {size} samples; pass one id per sample.")
    labels = check_targets(f"{name} labels", labels, size)
    # A copy: the caller may reuse its tensors in place (a buffer, an augmentation).
    if isinstance(inputs, Tensor):
        inputs = inputs.detach().clone()
    else:
        inputs = {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return ProbeSet(inputs, None if labels is None else labels.clone(), None if ids is None else list(ids))


def heldout_set(players: Players, heldout: Probes | None) -> ProbeSet | None:
    """The checked held-out :class:`ProbeSet` (see :func:`probe_set`), or None.

    Raises:
        ValueError: if the players are not aligned (train-test similarity compares coalitions
            across samples).
    """
    if heldout is None:
        return None
    if not players.aligned:
        raise ValueError(f"heldout is given but players are not aligned: {ALIGNED_HINT}.")
    return probe_set(heldout, "heldout")


LEGACY_KEYWORDS = {
    f"{split}_{part}": (split, i)
    for split in ("probe", "heldout")
    for i, part in enumerate(("inputs", "targets", "ids"))
}
"""Probe keywords of earlier releases: ``probe_inputs``, ``heldout_targets``, ... -> (split, field)."""


def legacy_probes(probes: Any, heldout: Any, legacy: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """``probes`` and ``heldout`` with the probe keywords of earlier releases popped from
    ``legacy`` and folded in, and notes saying where they moved. A third positional argument
    that holds one class (or one row of answer labels) per probe sample is the old positional
    ``probe_targets``: a tensor of lower rank than tensor probes, any tensor beside dict probes,
    or a list."""
    moved = []
    if heldout is not None and not isinstance(heldout, (tuple, Mapping)):
        if isinstance(heldout, Tensor):
            targets = isinstance(probes, Mapping) or (isinstance(probes, Tensor) and heldout.dim() < probes.dim())
        else:
            targets = isinstance(heldout, Sequence)
        if targets:
            if "probe_targets" in legacy:
                raise TypeError("ConceptTracker got probe_targets twice: as the third positional argument and by name.")
            legacy["probe_targets"], heldout = heldout, None
            moved.append("targets as the third positional argument -> probes=ProbeSet(inputs, targets)")
    parts = {"probe": probes, "heldout": heldout}
    for key, (split, i) in LEGACY_KEYWORDS.items():
        if key in legacy:
            name, given = "probes" if split == "probe" else split, parts[split]
            fields = list(given if isinstance(given, tuple) else (given,)) + [None, None, None]
            if fields[i] is not None:
                raise ValueError(f"{key} repeats what {name} already holds; pass it once.")
            fields[i] = legacy.pop(key)
            parts[split] = ProbeSet(*fields[:3])
            if not (moved and key == "probe_targets"):  # positional targets have their note
                moved.append(f"{key}= -> {name}=ProbeSet({ProbeSet._fields[i]}=...)")
    held = parts["heldout"]
    if isinstance(held, ProbeSet) and held.inputs is None:
        raise ValueError("heldout_targets / heldout_ids are given without heldout_inputs; pass the inputs too.")
    return parts["probe"], held, moved


def probe_arguments(
    players: Players, probes: Any, heldout: Any, legacy: dict[str, Any], owner: str
) -> tuple[ProbeSet, ProbeSet | None]:
    """The checked probe and held-out sets of a caller that takes them as ``ConceptTracker``
    does, with the probe keywords of earlier releases popped from ``legacy`` (one
    ``FutureWarning``; see :func:`legacy_probes`)."""
    probes, heldout, moved = legacy_probes(probes, heldout, legacy)
    warn_legacy(owner, moved, {}, stacklevel=4)
    if probes is None:
        raise TypeError(f"{owner} needs probes: a ProbeSet, an (inputs, labels) tuple or the inputs.")
    return probe_set(probes), heldout_set(players, heldout)


def probe_state(probes: ProbeSet | None) -> dict[str, Any] | None:
    """A probe set as saved in tracker state: ``{"inputs", "targets", "ids"}`` (None stays None)."""
    return None if probes is None else {"inputs": probes.inputs, "targets": probes.labels, "ids": probes.ids}


def probe_from_state(state: Mapping[str, Any] | None) -> ProbeSet | None:
    """The inverse of :func:`probe_state`."""
    return None if state is None else ProbeSet(state["inputs"], state["targets"], state["ids"])


def _digest(inputs: Inputs | None) -> str | None:
    if inputs is None:
        return None
    h = hashlib.sha256()
    parts = [("", inputs)] if isinstance(inputs, Tensor) else sorted(inputs.items())
    for key, t in parts:
        if isinstance(t, Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{key}{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def run_fingerprint(
    players: Players, kind: str, value: str, probe: ProbeSet, heldout: ProbeSet | None, readings: ReadingsConfig
) -> dict[str, Any]:
    """What a resumed run must share with the saved one: the players (kind, n, names of the
    first probe, baseline), the interaction kind, the value function, the probe inputs (a
    digest) and the band cut-offs (the readings and the report depend on them too); targets are
    not part of it (None targets are fixed from predictions at the first step).

    The players must be prepared (see ``checks.check_players_fit``).
    """
    first = probe.inputs[0] if isinstance(probe.inputs, Tensor) else {k: v[0] for k, v in probe.inputs.items()}
    return {
        "players": type(players).__name__,
        "n": players.n,
        "player_names": players.names(first),
        "kind": kind,
        "value": value,
        "probe_inputs": _digest(probe.inputs),
        "heldout_inputs": None if heldout is None else _digest(heldout.inputs),
        "baseline": players.baseline_description,
        "simple_max": readings.simple_max,
        "complex_min": readings.complex_min,
    }
