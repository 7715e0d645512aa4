"""Argument checks shared by every entry point: the tracker, the engine, the players, the
schedules, the solver, the metrics and the integrations.

Each check raises ``ValueError`` naming the parameter, the value received and the fix, and
returns the value (normalized where noted), so a constructor validates with one line per
argument and fails at construction rather than mid-training. This module sits below the
modules it serves (it imports only ``transforms`` and ``interactions``, not even for types),
so players and schedules are recognised by what they provide, not by their class.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from .interactions import KINDS
from .transforms import MAX_SAMPLED_PLAYERS

T = TypeVar("T")

PLAYER_KINDS = "TabularPlayers, ImagePatchPlayers, TokenPlayers or FeatureMaskPlayers"


def check_players(players: T) -> T:
    """``players`` must be one of the library's player kinds (a :class:`~concept_tracker.players.Players`)."""
    if not all(callable(getattr(players, name, None)) for name in ("prepare", "masker", "names")):
        raise ValueError(
            f"players has type {type(players).__name__}; pass a concept_tracker player kind ({PLAYER_KINDS})."
        )
    return players


def check_num_players(n: int, param: str) -> int:
    """``n`` players, as ``param`` gives them, must be between 1 and ``MAX_SAMPLED_PLAYERS``.

    The exact readings stop at 20 players (checked where they run); the sampled order spectrum
    reads more."""
    if n < 1:
        raise ValueError(f"{param} gives n={n} players; at least 1 is needed.")
    if n > MAX_SAMPLED_PLAYERS:
        raise ValueError(
            f"{param} gives n={n} players; at most {MAX_SAMPLED_PLAYERS} are supported. Choose fewer players."
        )
    return n


def check_schedule(schedule: T | None) -> T | None:
    """``schedule`` must be a :class:`~concept_tracker.schedules.Schedule` or None (the caller's default)."""
    if schedule is not None and not (callable(schedule) and callable(getattr(schedule, "to_config", None))):
        raise ValueError(
            f"schedule has type {type(schedule).__name__}; pass every(n), log_spaced(...), "
            "at_steps([...]) or a combination with |, or None for the default."
        )
    return schedule


def check_kind(kind: Any) -> str:
    """``kind`` must name an interaction kind: "and", "or" or "and_or"."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; use one of {list(KINDS)}.")
    return kind


def check_int(name: str, value: Any, minimum: int | None = 1, *, optional: bool = False, unit: str = "") -> Any:
    """``value`` as a Python int >= ``minimum`` (any integer type, bools refused; None: no
    minimum), or None when ``optional``."""
    if optional and value is None:
        return None
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or (minimum is not None and number < minimum):
        allowed = ("an int" if minimum is None else f"an int >= {minimum}") + (" or None" if optional else "")
        raise ValueError(f"{name}={value!r} must be {allowed}{f' ({unit})' if unit else ''}.")
    return number


def check_number(name: str, value: Any, low: float, *, strict: bool = False) -> float:
    """``value`` must be a finite number >= ``low`` (> ``low`` when ``strict``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        raise ValueError(f"{name}={value!r}; it must be a finite number {'>' if strict else '>='} {low}.")
    return float(value)


def check_fraction(name: str, value: Any, example: float = 0.1, *, optional: bool = True) -> Any:
    """``value`` must be a number strictly between 0 and 1, or None when ``optional``."""
    if optional and value is None:
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
        allowed = "None or a fraction" if optional else "a fraction"
        raise ValueError(f"{name}={value!r} must be {allowed} in (0, 1), e.g. {example}.")
    return value


def check_ratio(ratio: float) -> float:
    """The salience threshold ``ratio`` as a float in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise ValueError(f"ratio={ratio!r} must be a finite number; the default is 0.05.")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(
            f"ratio={ratio!r} is outside [0, 1); the salience threshold is ratio * max |I(S)|, "
            "so use a small fraction such as 0.05."
        )
    return float(ratio)


def check_step(value: Any, name: str = "global_step") -> int:
    """A training step as a Python int: any integer type (Python, numpy, a 0-dim integer tensor).

    Raises:
        TypeError: for a float (even a whole one: a fractional step would be truncated), a bool,
            a string or any other type, naming ``name``.
        ValueError: for a negative step.
    """
    try:
        step = operator.index(value)
    except TypeError:
        step = None
    if isinstance(value, bool) or step is None:
        raise TypeError(
            f"{name}={value!r} has type {type(value).__name__}; pass the integer optimizer step (an int, a numpy "
            "integer or a 0-dim integer tensor), e.g. int(step) or trainer.state.global_step."
        )
    if step < 0:
        raise ValueError(f"{name}={step} is negative; pass the optimizer step, counted from 0.")
    return step


def check_type(name: str, value: T | None, expected: type, fix: str) -> T | None:
    """``value`` must be None or an instance of ``expected``; ``fix`` says what to pass."""
    if value is not None and not isinstance(value, expected):
        raise ValueError(f"{name} has type {type(value).__name__}; pass {fix}.")
    return value


def check_band_cutoffs(simple_max: Any, complex_min: Any) -> None:
    """Band cut-offs must be ints >= 0 (or None for the defaults) with ``simple_max < complex_min``;
    whether they fit the number of players is checked once ``n`` is known."""
    check_int("simple_max", simple_max, 0, optional=True, unit="highest order of a simple concept")
    check_int("complex_min", complex_min, 1, optional=True, unit="lowest order of a complex concept")
    if simple_max is not None and complex_min is not None and simple_max >= complex_min:
        raise ValueError(
            f"simple_max={simple_max} is not below complex_min={complex_min}; a concept cannot be "
            "both simple and complex, so pass simple_max < complex_min."
        )


def check_targets(name: str, targets: Any, size: int) -> Tensor | None:
    """Class targets: integer values, one per sample, as [size] int64 on the CPU (None stays None).

    Float targets are refused rather than truncated: ``[0.9, 1.6]`` would silently become
    classes ``[0, 1]``.
    """
    if targets is None:
        return None
    if isinstance(targets, (str, bytes)) or (
        isinstance(targets, Sequence)
        and not isinstance(targets, Tensor)
        and any(isinstance(t, (str, bytes)) for t in targets)
    ):
        raise ValueError(f"{name}={targets!r} holds strings; pass integer class indices (e.g. map names to 0..C-1).")
    try:
        tensor = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} cannot be read as a tensor of class indices ({err}); pass a list or Tensor of ints."
        ) from None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        shown = [round(v, 4) for v in tensor.reshape(-1)[:4].double().tolist()]
        raise ValueError(
            f"{name} has dtype {tensor.dtype} (first values {shown}); pass integer class indices, e.g. "
            f"{name}.long() if the values are whole numbers."
        )
    tensor = tensor.reshape(-1).long().cpu()
    if tensor.numel() != size:
        raise ValueError(f"{name} has {tensor.numel()} entries for {size} samples; pass one class per sample.")
    if tensor.numel() and int(tensor.min()) < 0:
        raise ValueError(f"{name} holds the class {int(tensor.min())}; classes are indices 0..C-1.")
    return tensor


def _first(inputs: Any, rows: int = 1) -> Any:
    if isinstance(inputs, Tensor):
        return inputs[:rows]
    return {k: v[:rows] for k, v in inputs.items() if isinstance(v, Tensor)}


def check_players_fit(players: Any, inputs: Any, name: str) -> int:
    """Dry-run the players (a :class:`~concept_tracker.players.Players`) on ``inputs`` [B, ...]
    (prepared on the batch, then sample 0 masked by the empty and the full coalition and its
    players named): the number of players ``n``.

    Raises:
        ValueError: naming ``name`` when the batch is empty or the players cannot mask it
            (a column or key it lacks, baselines of another shape, ...).
    """
    sizes = (
        [inputs.shape[0]]
        if isinstance(inputs, Tensor)
        else [v.shape[0] for v in inputs.values() if isinstance(v, Tensor)]
    )
    if not sizes or min(sizes) == 0:
        raise ValueError(f"{name} holds no samples; pass at least one probe sample [B >= 1, ...].")
    try:
        players.prepare(inputs)
        n = players.n
        sample = _first(inputs)
        sample = sample[0] if isinstance(sample, Tensor) else {k: v[0] for k, v in sample.items()}
        players.masker(sample)(torch.arange(2)[:, None].expand(2, n).bool())
        players.names(sample)
    except Exception as err:
        raise ValueError(
            f"{type(players).__name__} cannot mask {name} ({_shape(inputs)}): {err} Fix the players' arguments "
            f"(features, baselines, patch size, ...) or the inputs so that they match."
        ) from None
    return n


def _shape(inputs: Any) -> Any:
    if isinstance(inputs, Tensor):
        return tuple(inputs.shape)
    return {k: tuple(v.shape) for k, v in inputs.items() if isinstance(v, Tensor)}


def check_same_width(probe_inputs: Any, heldout_inputs: Any) -> None:
    """Held-out samples must have the probe samples' shape (their coalitions are compared)."""
    if isinstance(probe_inputs, Tensor) and isinstance(heldout_inputs, Tensor):
        if probe_inputs.shape[1:] != heldout_inputs.shape[1:]:
            raise ValueError(
                f"heldout_inputs has samples of shape {tuple(heldout_inputs.shape[1:])} but probe_inputs has "
                f"{tuple(probe_inputs.shape[1:])}; pass held-out samples of the same shape."
            )


def check_log_dir(log_dir: str | os.PathLike) -> str:
    """``log_dir`` must be a directory, or creatable as one, that this process can write to.

    Nothing is created: the nearest existing ancestor is checked instead.
    """
    path = Path(log_dir)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ValueError(
            f"log_dir={str(log_dir)!r} cannot be a directory: {str(existing)!r} is a file; pass a directory path."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"log_dir={str(log_dir)!r} is not writable ({str(existing)!r} is read-only for this user); "
            "pass a directory you can write to."
        )
    return str(log_dir)


def check_saved_state(state: Any, version: int, **current: Any) -> None:
    """A tracker's saved ``state`` must be of ``version`` and hold the ``current`` settings
    (``{name: this tracker's value}``) that a resumed run cannot change."""
    if state.get("version") != version:
        raise ValueError(
            f"state has version {state.get('version')!r}; this tracker reads version "
            f"{version} (pass the dict from ConceptTracker.state_dict())."
        )
    for name, value in current.items():
        if state[name] != value:
            raise ValueError(
                f"state was saved with {name}={state[name]!r} but this tracker has "
                f"{name}={value!r}; build the tracker with the saved {name}."
            )
