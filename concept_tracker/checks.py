"""Argument checks shared by every entry point: the tracker, the engine and the integrations.

Each check raises ``ValueError`` naming the parameter, the value received and the fix, and
returns the value (normalized where noted), so a constructor validates with one line per
argument and fails at construction rather than mid-training.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .interactions import KINDS
from .players import Players
from .schedules import Schedule

T = TypeVar("T")

PLAYER_KINDS = "TabularPlayers, ImagePatchPlayers, TokenPlayers or FeatureMaskPlayers"


def check_players(players: Players) -> Players:
    """``players`` must be one of the library's player kinds."""
    if not isinstance(players, Players):
        raise ValueError(
            f"players has type {type(players).__name__}; pass a concept_tracker player kind ({PLAYER_KINDS})."
        )
    return players


def check_schedule(schedule: Schedule | None) -> Schedule | None:
    """``schedule`` must be a :class:`Schedule` or None (the caller's default)."""
    if schedule is not None and not isinstance(schedule, Schedule):
        raise ValueError(
            f"schedule has type {type(schedule).__name__}; pass every(n), log_spaced(...), "
            "at_steps([...]) or a combination with |, or None for the default."
        )
    return schedule


def check_kind(kind: str) -> str:
    """``kind`` must name an interaction kind: "and", "or" or "and_or"."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; use one of {list(KINDS)}.")
    return kind


def check_int(name: str, value: Any, minimum: int = 1, *, optional: bool = False, unit: str = "") -> Any:
    """``value`` must be an int >= ``minimum`` (bools refused), or None when ``optional``."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name}={value!r} must be {allowed}{f' ({unit})' if unit else ''}.")
    return value


def check_fraction(name: str, value: Any, example: float = 0.1) -> float | None:
    """``value`` must be None or a number strictly between 0 and 1."""
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
        raise ValueError(f"{name}={value!r} must be None or a fraction in (0, 1), e.g. {example}.")
    return value


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
