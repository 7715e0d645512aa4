"""Probe sets: the fixed samples a tracker computes interactions on.

One type, :class:`ProbeSet`, travels from where probes are picked (:func:`select_probes`, the
Trainer callback's draw from a dataset, the CLI's ``--data``) to the tracker, which checks it
with :func:`probe_set` and keeps it in its saved state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import default_collate

from .checks import check_targets
from .engine import batch_size_of
from .metrics.similarity import ALIGNED_HINT
from .players import Players

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
    inputs: Inputs
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
    players: Players, kind: str, value: str, probe: ProbeSet, heldout: ProbeSet | None
) -> dict[str, Any]:
    """What a resumed run must share with the saved one: the players (kind, n, names of the
    first probe), the interaction kind, the value function and the probe inputs (a digest);
    targets are not part of it (None targets are fixed from predictions at the first step).

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
    }
