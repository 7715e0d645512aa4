"""Resumable state declared once, so that saving and loading it is derived, not hand-kept.

A stateful class declares each piece of state once in its constructor,
``self._<key>: Type = self._add_state(key, default, save, load)``; then
:meth:`DeclaredState._declared_state` and :meth:`DeclaredState._load_declared_state` walk the
declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import Tensor, stack

T = TypeVar("T")


class DeclaredState:
    """Mixin holding the declarations; the state ``key`` lives in attribute ``_<key>``."""

    # key -> (the object holding ``_<key>``, None for this one; save; load)
    _state_codecs: dict[str, tuple[Any, Callable[[Any], Any] | None, Callable[[Any], Any] | None]]

    def _add_state(
        self, key: str, default: T, save: Callable[[Any], Any] | None = None, load: Callable[[Any], Any] | None = None
    ) -> T:
        """Declare the state ``key``, held in ``self._<key>``; returns ``default`` to assign there.

        It is saved as ``save(value)`` and restored as ``load(saved)`` when those are given,
        else through the value's own ``state_dict()`` / ``load_state_dict()`` (in place) when
        it has them, else as is.
        """
        if "_state_codecs" not in self.__dict__:
            self._state_codecs = {}
        self._state_codecs[key] = (None, save, load)
        return default

    def _adopt_state(self, part: DeclaredState) -> None:
        """Declare every state ``part`` declared so far as this object's too (saved and loaded
        with it, in this place of the order); it stays in ``part``."""
        if "_state_codecs" not in self.__dict__:
            self._state_codecs = {}
        self._state_codecs.update({key: (part, *codec[1:]) for key, codec in part._state_codecs.items()})

    def _declared_state(self) -> dict[str, Any]:
        """``{key: saved value}`` for every declared state."""
        out = {}
        for key, (owner, save, _) in self._state_codecs.items():
            value = getattr(self if owner is None else owner, f"_{key}")
            out[key] = save(value) if save else value.state_dict() if hasattr(value, "state_dict") else value
        return out

    def _load_declared_state(self, state: Mapping[str, Any]) -> None:
        """Restore every declared state from ``state`` (the output of :meth:`_declared_state`)."""
        missing = sorted(set(self._state_codecs) - set(state))
        if missing:
            raise ValueError(f"state is missing {missing}; pass the dict returned by state_dict().")
        for key, (owner, _, load) in self._state_codecs.items():
            owner = self if owner is None else owner
            current = getattr(owner, f"_{key}")
            if load is None and hasattr(current, "load_state_dict"):
                current.load_state_dict(state[key])
            else:
                setattr(owner, f"_{key}", load(state[key]) if load else state[key])


def stack_list(tensors: list[Tensor]) -> Tensor | None:
    """A list of same-shape tensors as one [T, ...] tensor (None for an empty list)."""
    return stack(tensors) if tensors else None


def unstack_list(stacked: Tensor | None) -> list[Tensor]:
    """The inverse of :func:`stack_list`."""
    return [] if stacked is None else list(stacked.unbind(0))
