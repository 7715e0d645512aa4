"""Raw interactions and tracker state on disk, as safetensors (no pickle).

Layout under a tracker's ``log_dir``::

    <log_dir>/interactions/step_{step:08d}.safetensors          probe set, one file per step
    <log_dir>/interactions/heldout/step_{step:08d}.safetensors  held-out probe set, if any

Each interactions file holds the tensors ``outputs`` and ``and_effects`` and/or ``or_effects``
(plus ``gamma``, ``q`` for kind "and_or" and ``targets`` when the value has a target class),
all ``[B, 2**n]`` float64 (``targets``: ``[B]`` int64), and string metadata readable by any
safetensors client: ``step``, ``n``, ``kind``, ``value``, ``aligned``, ``player_names`` (JSON,
one list of ``n`` names per sample), ``probe_ids`` (JSON list or ``null``), ``split``.
Beside them, the settings the run was tracked with, as JSON: ``ratio`` (salience threshold
ratio, ``null`` when the writer did not say), ``simple_max`` and ``complex_min`` (band
cut-offs, ``null`` for the defaults ``n // 3`` and ``n // 2 + 1``), and ``baseline``: what masked
players became, in words (``"zero"``, ``"mean (fit on 1000 samples)"``, ...; ``null`` when the
writer did not say). Files written before these settings were recorded lack those keys and
still load; see :func:`tracked_settings` and :func:`stored_baseline`.

Files are written to a temporary name and renamed, so a crash never leaves a half-written
step file behind.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .interactions import Interactions

INTERACTIONS_DIR = "interactions"
SPLITS = ("probe", "heldout")
FORMAT = "concept-tracker/interactions/1"
STATE_FORMAT = "concept-tracker/state/1"

_TENSOR_FIELDS = ("outputs", "and_effects", "or_effects", "gamma", "q", "targets")
# Metadata values that are JSON; the others are stored as plain strings.
_JSON_FIELDS = (
    "step", "n", "aligned", "player_names", "probe_ids", "ratio", "simple_max", "complex_min", "baseline",
)
SETTINGS = ("ratio", "simple_max", "complex_min")
"""Metadata keys of the settings a run was tracked with (absent from older files)."""
_STEP_FILE = re.compile(r"^step_(\d{8,})\.safetensors$")


def step_path(log_dir: str | os.PathLike, step: int, split: str = "probe") -> Path:
    """Where the interactions of ``step`` live: ``<log_dir>/interactions[/heldout]/step_{step:08d}.safetensors``."""
    return _split_dir(log_dir, split) / f"step_{step:08d}.safetensors"


def _split_dir(log_dir: str | os.PathLike, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; use one of {SPLITS}.")
    root = Path(log_dir) / INTERACTIONS_DIR
    return root if split == "probe" else root / split


def save_step(
    log_dir: str | os.PathLike,
    step: int,
    res: Interactions,
    probe_ids: list[Any] | None = None,
    split: str = "probe",
    *,
    ratio: float | None = None,
    simple_max: int | None = None,
    complex_min: int | None = None,
    baseline: str | None = None,
) -> Path:
    """Write the interactions of one tracked step.

    Args:
        log_dir: the tracker's log directory.
        step: global training step.
        res: interactions of ``B`` probe samples.
        probe_ids: ``B`` JSON-able ids of the probe samples (dataset indices), or None.
        split: "probe" or "heldout".
        ratio: salience threshold ratio the run is tracked with; None records "unknown", and
            a report then falls back to 0.05.
        simple_max, complex_min: band cut-offs the run is tracked with; None records the
            defaults ``n // 3`` and ``n // 2 + 1``.
        baseline: what masked players became, in words (``players.baseline_description``);
            None records "unknown".
    Returns:
        The path written (see ``step_path``).
    """
    if probe_ids is not None and len(probe_ids) != res.num_samples:
        raise ValueError(
            f"probe_ids has {len(probe_ids)} entries but the interactions hold "
            f"{res.num_samples} samples; pass one id per probe sample."
        )
    path = step_path(log_dir, step, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = interactions_state(res)
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    meta = {k: v for k, v in state.items() if not isinstance(v, Tensor)}
    meta.update(format=FORMAT, step=step, probe_ids=probe_ids, split=split)
    meta.update(ratio=ratio, simple_max=simple_max, complex_min=complex_min, baseline=baseline)
    metadata = {k: json.dumps(v) if k in _JSON_FIELDS else str(v) for k, v in meta.items()}
    _atomic_save(path, tensors, metadata)
    return path


def load_step(path: str | os.PathLike) -> tuple[Interactions, dict[str, Any]]:
    """Read one interactions file written by ``save_step``.

    Returns:
        ``(interactions, metadata)``; metadata holds ``step``, ``n``, ``kind``, ``value``,
        ``aligned``, ``player_names``, ``probe_ids``, ``split`` and ``format`` decoded, and
        ``ratio``, ``simple_max``, ``complex_min`` when the file records them (read them
        with :func:`tracked_settings`).
    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is truncated, not a safetensors file, or not an interactions file.
    """
    tensors, metadata = _read(path)
    meta = _decode(path, metadata)
    try:
        res = interactions_from_state({**tensors, **meta})
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} has incomplete or unreadable metadata: {err!r}.") from err
    return res, meta


def load_step_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of one interactions file, as :func:`load_step` returns it, read
    from the file's header alone (no tensor data).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_step`.
    """
    _, metadata = _read(path, tensors=False)
    return _decode(path, metadata)


def _decode(path: str | os.PathLike, metadata: dict[str, str]) -> dict[str, Any]:
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a safetensors file but not a concept-tracker interactions file "
            f"(metadata format={metadata.get('format')!r}, expected {FORMAT!r})."
        )
    try:
        return {k: json.loads(v) if k in _JSON_FIELDS else v for k, v in metadata.items()}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has incomplete or unreadable metadata: {err!r}.") from err


def tracked_settings(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The settings a run was tracked with, from the metadata :func:`load_step` returns.

    Returns:
        ``{"ratio": float, "simple_max": int | None, "complex_min": int | None}`` (None cut-offs
        mean the defaults), or None when the file does not record its ratio: it was written
        before the settings were stored, or by a caller that did not pass them.
    """
    if meta.get("ratio") is None:
        return None
    return {key: meta.get(key) for key in SETTINGS}


def stored_baseline(meta: dict[str, Any]) -> str | None:
    """The baseline a step file records, from the metadata :func:`load_step` returns.

    Returns:
        The description (such as ``"zero"`` or ``"mean (fit on 1000 samples)"``), or None when
        the file does not record it (written before baselines were stored, or by a caller that
        did not pass one).
    """
    return meta.get("baseline")


def interactions_state(res: Interactions) -> dict[str, Any]:
    """An ``Interactions`` as a flat dict of its tensors (those present) and JSON-able fields."""
    state: dict[str, Any] = {name: t for name in _TENSOR_FIELDS if (t := getattr(res, name)) is not None}
    state.update(n=res.n, kind=res.kind, value=res.value, aligned=res.aligned, player_names=res.player_names)
    return state


def interactions_from_state(state: dict[str, Any]) -> Interactions:
    """The ``Interactions`` described by :func:`interactions_state`.

    Raises:
        KeyError: if a required field is missing.
    """
    return Interactions(
        **{name: state.get(name) for name in _TENSOR_FIELDS},
        n=state["n"],
        kind=state["kind"],
        value=state["value"],
        aligned=state["aligned"],
        player_names=state["player_names"],
    )


def list_steps(log_dir: str | os.PathLike, split: str = "probe") -> list[int]:
    """Sorted steps that have an interactions file under ``log_dir`` (empty if none)."""
    folder = _split_dir(log_dir, split)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)))


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a nested state (dicts / lists of tensors and JSON values) to one safetensors file.

    Tensors go into the file's tensor table; the rest of the structure, with a reference in
    place of each tensor, goes into the ``state`` metadata entry as JSON. Tuples come back as
    lists; dict keys must be strings.
    """
    tensors: dict[str, Tensor] = {}
    skeleton = _split_tensors(state, tensors, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(path, tensors, {"format": STATE_FORMAT, "state": json.dumps(skeleton)})
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by ``save_state``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is truncated, corrupt or not a state file.
    """
    tensors, metadata = _read(path)
    if metadata.get("format") != STATE_FORMAT or "state" not in metadata:
        raise ValueError(
            f"{path} is not a concept-tracker state file (metadata format="
            f"{metadata.get('format')!r}, expected {STATE_FORMAT!r})."
        )
    try:
        return _join_tensors(json.loads(metadata["state"]), tensors)
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} has a damaged state entry: {err!r}.") from err


_REF = "__tensor__"


def _split_tensors(obj: Any, tensors: dict[str, Tensor], where: str) -> Any:
    if isinstance(obj, Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj
        return {_REF: name}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"state key {where}[{key!r}] is not a string; use string keys.")
            if key == _REF:
                raise ValueError(f"state key {where}[{key!r}] is reserved; rename it.")
            out[key] = _split_tensors(value, tensors, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(
        f"state entry {where} is a {type(obj).__name__}; only tensors, dicts, lists, str, "
        "int, float, bool and None can be saved."
    )


def _join_tensors(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_REF}:
            return tensors[obj[_REF]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _atomic_save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # safetensors refuses tensors that share storage; every entry gets its own buffer.
    tensors = {k: t.detach().cpu().clone(memory_format=torch.contiguous_format) for k, t in tensors.items()}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: str | os.PathLike, tensors: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (no interactions or state file there).")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            data = {name: fh.get_tensor(name) for name in fh.keys()} if tensors else {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is truncated or not a safetensors file: {err}") from err
    return data, metadata
