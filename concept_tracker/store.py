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

Every file also carries ``sha256``: a SHA-256 checksum of its tensors (names, dtypes, shapes,
bytes) and its other metadata entries, ``step``, ``split`` and ``run`` (the tracker's run id)
included. Readers that load the tensors verify it and name the file when it does not match;
reading the metadata alone (:func:`load_step_metadata`) does not verify it. Both refuse a file
of the current format without a checksum (re-saved by another tool), and a file whose
``step`` or ``split`` is not the one its name and folder say (a byte copy of another step).
Files of the first format (``concept-tracker/interactions/1``), written before checksums were
recorded, have none and still load.

Sampled order spectra (:func:`save_spectrum`) live in ``<log_dir>/spectrum/step_{step:08d}.safetensors``,
apart from the exact interactions, with their own format (``concept-tracker/spectrum/1``). They
carry the same ``sha256`` checksum, ``step`` and ``run``, and :func:`load_spectrum` makes the same
checks: a damaged file, a file without a checksum and a byte copy of another step are refused.

Files are written to a temporary name (``.<name>.<pid>.tmp`` in the same directory) and
renamed, so a crash never leaves a half-written step file behind. A temporary file left by a
process killed during a save is removed by the first save into that directory of a later
process.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .interactions import Interactions

INTERACTIONS_DIR = "interactions"
SPLITS = ("probe", "heldout")
FORMAT = "concept-tracker/interactions/2"
_LEGACY_FORMAT = "concept-tracker/interactions/1"
"""Files written before checksums were recorded (or with one, by the first versions that did)."""
STATE_FORMAT = "concept-tracker/state/1"

_TENSOR_FIELDS = ("outputs", "and_effects", "or_effects", "gamma", "q", "targets")
# Metadata values that are JSON; the others are stored as plain strings.
_JSON_FIELDS = (
    "step",
    "n",
    "aligned",
    "player_names",
    "probe_ids",
    "ratio",
    "simple_max",
    "complex_min",
    "baseline",
    "run",
)
SETTINGS = ("ratio", "simple_max", "complex_min")
"""Metadata keys of the settings a run was tracked with (absent from older files)."""
_STEP_FILE = re.compile(r"^step_(\d{8,})\.safetensors$")
CHECKSUM = "sha256"
"""Metadata key of the checksum every file written since it was introduced carries."""
_TMP_FILE = re.compile(r"^\..+\.(\d+)\.tmp$")
# A temporary file older than this process cannot belong to one of its saves.
_STARTED = time.time()
_swept: set[Path] = set()


def as_step(step: Any, name: str = "step") -> int:
    """``step`` as a Python int: any integer type (numpy, 0-dim integer tensor) is accepted.

    Raises:
        ValueError: if ``step`` is not an integer or is negative.
    """
    try:
        value = operator.index(step)
    except TypeError:
        raise ValueError(f"{name}={step!r} is a {type(step).__name__}; pass a non-negative integer step.") from None
    if isinstance(step, bool) or value < 0:
        raise ValueError(f"{name}={step!r}; pass a non-negative integer step.")
    return value


def step_path(log_dir: str | os.PathLike, step: int, split: str = "probe") -> Path:
    """Where the interactions of ``step`` live: ``<log_dir>/interactions[/heldout]/step_{step:08d}.safetensors``."""
    return _split_dir(log_dir, split) / f"step_{as_step(step):08d}.safetensors"


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
    run: str | None = None,
    baseline: str | None = None,
) -> Path:
    """Write the interactions of one tracked step.

    Args:
        log_dir: the tracker's log directory.
        step: global training step, any non-negative integer type.
        res: interactions of ``B`` probe samples.
        probe_ids: ``B`` JSON-able ids of the probe samples (dataset indices), or None.
        split: "probe" or "heldout".
        ratio: salience threshold ratio the run is tracked with; None records "unknown", and
            a report then falls back to 0.05.
        simple_max, complex_min: band cut-offs the run is tracked with; None records the
            defaults ``n // 3`` and ``n // 2 + 1``.
        baseline: what masked players became, in words (``players.baseline_description``);
            None records "unknown".
        run: the id of the tracked run (one per tracker, kept on resume); a report refuses a
            folder whose files name different runs.
    Returns:
        The path written (see ``step_path``).
    """
    if probe_ids is not None and len(probe_ids) != res.num_samples:
        raise ValueError(
            f"probe_ids has {len(probe_ids)} entries but the interactions hold "
            f"{res.num_samples} samples; pass one id per probe sample."
        )
    step = as_step(step)
    path = step_path(log_dir, step, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = interactions_state(res)
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    meta = {k: v for k, v in state.items() if not isinstance(v, Tensor)}
    meta.update(format=FORMAT, step=step, probe_ids=probe_ids, split=split)
    meta.update(ratio=ratio, simple_max=simple_max, complex_min=complex_min, baseline=baseline, run=run)
    metadata = {k: _dumps(v) if k in _JSON_FIELDS else str(v) for k, v in meta.items()}
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
        ValueError: if ``path`` is truncated, not a safetensors file, not an interactions file,
            or its checksum does not match its contents.
    """
    tensors, metadata = _read(path)
    meta = _decode(path, metadata)
    _check_place(path, meta)
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
    meta = _decode(path, metadata)
    _check_place(path, meta)
    return meta


def _decode(path: str | os.PathLike, metadata: dict[str, str]) -> dict[str, Any]:
    if metadata.get("format") not in (FORMAT, _LEGACY_FORMAT):
        raise ValueError(
            f"{path} is a safetensors file but not a concept-tracker interactions file "
            f"(metadata format={metadata.get('format')!r}, expected {FORMAT!r})."
        )
    if metadata["format"] == FORMAT and CHECKSUM not in metadata:
        raise ValueError(
            f"{Path(path)} has no {CHECKSUM} checksum, which every file of its format carries: it was "
            "re-saved by another tool and cannot be verified. Restore it from a copy or delete it and "
            "track that step again."
        )
    try:
        return {k: json.loads(v) if k in _JSON_FIELDS else v for k, v in metadata.items() if k != CHECKSUM}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has incomplete or unreadable metadata: {err!r}.") from err


def _check_place(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Refuse a step file whose recorded step or split is not the one its name and folder say."""
    path = Path(path)
    match = _STEP_FILE.match(path.name)
    if match is None:
        return  # not in the store's layout: nothing to compare with
    split = "heldout" if path.parent.name == "heldout" else "probe"
    held = f"step {meta.get('step')}" if meta.get("step") != int(match.group(1)) else None
    if held is None and meta.get("split", split) != split:
        held = f"the {meta.get('split')} split"
    if held is not None:
        raise ValueError(
            f"{path} holds {held}: it was copied or renamed from another step file. Delete it (or "
            "put it back where it came from) and track that step again."
        )


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
    tensors: dict[str, Any] = {name: state.get(name) for name in _TENSOR_FIELDS}
    return Interactions(
        **tensors,
        n=state["n"],
        kind=state["kind"],
        value=state["value"],
        aligned=state["aligned"],
        player_names=state["player_names"],
    )


def list_steps(log_dir: str | os.PathLike, split: str = "probe") -> list[int]:
    """Sorted steps that have an interactions file under ``log_dir`` (empty if none)."""
    return _steps_in(_split_dir(log_dir, split))


def _steps_in(folder: Path) -> list[int]:
    """Sorted steps of the ``step_{step:08d}.safetensors`` files in ``folder`` (empty if none)."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)))


SPECTRUM_DIR = "spectrum"
SPECTRUM_FORMAT = "concept-tracker/spectrum/1"
SPECTRUM_FIELDS = (
    "strength",
    "simple_share",
    "medium_share",
    "complex_share",
    "simple_ci_low",
    "simple_ci_high",
    "complex_ci_low",
    "complex_ci_high",
    "unseen",
)
"""The tensors of a stored sampled order spectrum (``[B, n + 1]`` strength, the rest ``[B]``)."""


def spectrum_path(log_dir: str | os.PathLike, step: int) -> Path:
    """``<log_dir>/spectrum/step_{step:08d}.safetensors``: the sampled order spectrum of one step."""
    return Path(log_dir) / SPECTRUM_DIR / f"step_{as_step(step):08d}.safetensors"


def save_spectrum(log_dir: str | os.PathLike, step: int, spectrum: Any, *, run: str | None = None) -> Path:
    """Write the sampled order spectrum of one tracked step (its own file: an estimate never
    sits in the exact interactions' fields).

    Args:
        spectrum: a :class:`~concept_tracker.spectrum.OrderSpectrum`.
        run: the tracked run's id.
    Returns:
        The path written (:func:`spectrum_path`): tensors :data:`SPECTRUM_FIELDS`, metadata
        ``step``, ``n``, ``forwards``, ``forwards_per_probe``, ``exact_order``, ``seen_order``,
        ``simple_max``, ``complex_min``, ``ratio``, ``overall`` (JSON) and ``run``.
    """
    step = as_step(step)
    path = spectrum_path(log_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "strength": spectrum.strength,
        "simple_share": spectrum.simple_share,
        "medium_share": spectrum.medium_share,
        "complex_share": spectrum.complex_share,
        "simple_ci_low": spectrum.simple_interval.low,
        "simple_ci_high": spectrum.simple_interval.high,
        "complex_ci_low": spectrum.complex_interval.low,
        "complex_ci_high": spectrum.complex_interval.high,
        "unseen": spectrum.unseen,
    }
    meta = {
        "format": SPECTRUM_FORMAT,
        "step": str(step),
        "run": str(run),
        "overall": json.dumps(spectrum.overall),
        **{
            key: str(getattr(spectrum, key))
            for key in ("n", "forwards", "forwards_per_probe", "exact_order", "seen_order", "simple_max", "complex_min")
        },
        "ratio": str(spectrum.ratio),
    }
    _atomic_save(path, tensors, meta)
    return path


def load_spectrum(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_spectrum`, checked like a step file (see the module
    docstring): its checksum is verified, and a file without one, or whose recorded step is not
    the one its name says, is refused.

    Returns:
        ``(tensors, metadata)`` with the integers and ``overall`` decoded, and ``run`` None when
        the writer gave no run id.
    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is truncated, damaged (checksum mismatch), not a spectrum file,
            without a checksum, or copied from another step (the message names the file and the fix).
    """
    tensors, raw = _read(path)
    return tensors, _decode_spectrum(path, raw)


def load_spectrum_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of one spectrum file, as :func:`load_spectrum` returns it, read from
    the file's header alone (the checksum is not verified; every other check is made).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_spectrum`.
    """
    return _decode_spectrum(path, _read(path, tensors=False)[1])


def list_spectra(log_dir: str | os.PathLike) -> list[int]:
    """Sorted steps that have a sampled order spectrum file under ``log_dir`` (empty if none)."""
    return _steps_in(Path(log_dir) / SPECTRUM_DIR)


_SPECTRUM_INTS = (
    "step",
    "n",
    "forwards",
    "forwards_per_probe",
    "exact_order",
    "seen_order",
    "simple_max",
    "complex_min",
)


def _decode_spectrum(path: str | os.PathLike, raw: dict[str, str]) -> dict[str, Any]:
    path = Path(path)
    if raw.get("format") != SPECTRUM_FORMAT:
        raise ValueError(
            f"{path} is not a sampled order spectrum file (metadata format={raw.get('format')!r}, expected "
            f"{SPECTRUM_FORMAT!r}). Move it out of {SPECTRUM_DIR}/, or delete it and track that step again."
        )
    if CHECKSUM not in raw:
        raise ValueError(
            f"{path} has no {CHECKSUM} checksum, which every sampled order spectrum file carries: it was "
            "re-saved by another tool and cannot be verified. Restore it from a copy or delete it and "
            "track that step again."
        )
    meta: dict[str, Any] = {k: v for k, v in raw.items() if k != CHECKSUM}
    try:
        for key in _SPECTRUM_INTS:
            meta[key] = int(raw[key])
        meta["ratio"] = float(raw["ratio"])
        meta["overall"] = {k: tuple(v) for k, v in json.loads(raw["overall"]).items()}
        meta["run"] = None if raw["run"] == "None" else raw["run"]
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path} has incomplete or unreadable metadata: {err!r}.") from err
    match = _STEP_FILE.match(path.name)
    if match is not None and meta["step"] != int(match.group(1)):
        raise ValueError(
            f"{path} holds the sampled spectrum of step {meta['step']}: it was copied or renamed from another "
            "step file. Delete it (or put it back where it came from) and track that step again."
        )
    return meta


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
    _atomic_save(path, tensors, {"format": STATE_FORMAT, "state": _dumps(skeleton)})
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by ``save_state``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is truncated, corrupt (checksum mismatch) or not a state file.
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
    if _is_scalar(obj):
        return obj.item()
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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_scalar)


def _is_scalar(obj: Any) -> bool:
    # numpy scalars (np.int64 steps and ids, np.float32 ratios) and 0-dim arrays.
    return getattr(obj, "ndim", None) == 0 and callable(getattr(obj, "item", None))


def _json_scalar(obj: Any) -> Any:
    if _is_scalar(obj):
        return obj.item()
    raise TypeError(
        f"a {type(obj).__name__} ({obj!r}) cannot be stored as JSON metadata; pass ints, floats or strings."
    )


def _checksum(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    digest = hashlib.sha256()

    def feed(text: str) -> None:
        data = text.encode()
        digest.update(len(data).to_bytes(8, "little") + data)

    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        feed(name)
        feed(f"{t.dtype}{list(t.shape)}")
        raw = t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b""
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    for key in sorted(k for k in metadata if k != CHECKSUM):
        feed(key)
        feed(metadata[key])
    return digest.hexdigest()


def _sweep_stale_tmp(folder: Path) -> None:
    """Remove temporary files that processes killed during a save left in ``folder``."""
    key = folder.resolve()
    if key in _swept:
        return
    _swept.add(key)
    for entry in folder.iterdir():
        match = _TMP_FILE.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            stale = entry.stat().st_mtime < _STARTED and (pid == os.getpid() or not _alive(pid))
        except FileNotFoundError:
            continue
        if stale:
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        # Exists but belongs to someone else, or the platform cannot tell: keep its file.
        return True
    return True


def _atomic_save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    _sweep_stale_tmp(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # safetensors refuses tensors that share storage; every entry gets its own buffer.
    tensors = {k: t.detach().cpu().clone(memory_format=torch.contiguous_format) for k, t in tensors.items()}
    metadata = {**metadata, CHECKSUM: _checksum(tensors, metadata)}
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
    stored = metadata.get(CHECKSUM)
    if tensors and stored is not None and stored != _checksum(data, metadata):
        raise ValueError(
            f"{path} is damaged: its {CHECKSUM} checksum does not match its contents (the file "
            "changed after it was written). Restore it from a copy or delete it and track that step again."
        )
    return data, metadata
