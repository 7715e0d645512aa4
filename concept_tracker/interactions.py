"""The result of an interaction computation: values and effects on every coalition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .transforms import orders as _orders

KINDS = ("and", "or", "and_or")


def concept_label(s: int, names: Sequence[str]) -> str:
    """Name of coalition ``s`` from its players' names, e.g. ``{p3,p7}`` or ``{not,bad}``.

    Args:
        s: coalition bitmask (bit ``i`` set iff player ``i`` is in ``S``).
        names: the ``n`` player names of the sample.
    """
    return "{" + ",".join(name for i, name in enumerate(names) if s >> i & 1) + "}"


@dataclass
class Interactions:
    """Interactions of ``B`` samples over ``n`` players.

    Coalition tensors are ``[B, 2**n]`` float64, indexed by the bitmask of the players kept
    (bit ``i`` set iff player ``i`` is in ``S``).

    Attributes:
        outputs: [B, 2**n] v(S), the value of every masked input.
        and_effects: [B, 2**n] I_and(S) (kind "and" or "and_or"), else None.
        or_effects: [B, 2**n] I_or(S) (kind "or" or "and_or"), else None.
        gamma: [B, 2**n] learned AND/OR split (kind "and_or"), else None.
        q: [B, 2**n] learned bounded noise (kind "and_or"), else None.
        n: number of players.
        kind: "and", "or" or "and_or".
        targets: [B] int64 target class per sample, or None for scalar outputs.
        value: name of the value function ("log_odds", ...) or "callable".
        player_names: per sample, the ``n`` player names (patch ids, words, feature names).
        aligned: True when player ``i`` means the same thing in every sample.
    """

    outputs: Tensor
    and_effects: Tensor | None
    or_effects: Tensor | None
    n: int
    kind: str
    gamma: Tensor | None = None
    q: Tensor | None = None
    targets: Tensor | None = None
    value: str = "log_odds"
    player_names: list[list[str]] = field(default_factory=list)
    aligned: bool = True

    @property
    def orders(self) -> Tensor:
        """[2**n] int64 order ``|S|`` of every coalition, on the device of ``outputs``."""
        return _orders(self.n, self.outputs.device)

    @property
    def num_samples(self) -> int:
        return self.outputs.shape[0]

    def effects(self, kind: str) -> Tensor:
        """[B, 2**n] effects of one kind ("and" or "or").

        Raises:
            ValueError: if this result holds no effects of that kind.
        """
        if kind not in ("and", "or"):
            raise ValueError(f"kind={kind!r}; use 'and' or 'or'.")
        out = self.and_effects if kind == "and" else self.or_effects
        if out is None:
            raise ValueError(
                f"these interactions were computed with kind={self.kind!r} and hold no "
                f"{kind.upper()} effects; recompute with kind='{kind}' or 'and_or'."
            )
        return out

    @property
    def effect_kinds(self) -> list[str]:
        """The kinds of effects present: ["and"], ["or"] or ["and", "or"]."""
        return [k for k, e in (("and", self.and_effects), ("or", self.or_effects)) if e is not None]

    def to(self, device: torch.device | str) -> Interactions:
        """A copy with every tensor moved to ``device``."""
        moved: dict[str, Any] = {}
        for name in ("outputs", "and_effects", "or_effects", "gamma", "q", "targets"):
            t = getattr(self, name)
            moved[name] = None if t is None else t.to(device)
        return replace(self, **moved)

    def __getitem__(self, index: Any) -> Interactions:
        """The samples picked by ``index`` (an int, slice, list or bool/int tensor)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        picked: dict[str, Any] = {}
        for name in ("outputs", "and_effects", "or_effects", "gamma", "q", "targets"):
            t = getattr(self, name)
            picked[name] = None if t is None else t[index]
        rows = torch.arange(self.num_samples)[index].tolist()
        names = [self.player_names[i] for i in rows] if self.player_names else []
        return replace(self, player_names=names, **picked)
