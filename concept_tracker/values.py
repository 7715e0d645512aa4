"""Value functions: one scalar per masked input, read off the model's outputs.

A value function maps ``(outputs, target) -> Tensor[M]`` where ``outputs`` is whatever the
model returned for ``M`` masked rows and ``target`` is ``[M]`` int64 (or None for "output").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

ValueFn = Callable[[Any, "Tensor | None"], Tensor]

VALUE_NAMES = ("log_odds", "logit", "log_prob", "output")


def model_logits(outputs: Any, position: int = -1) -> Tensor:
    """The logits in a model's outputs.

    Accepts a Tensor, a tuple or list (first item), a mapping with ``"logits"`` or an object
    with ``.logits`` (Hugging Face ``ModelOutput``). 3-D logits ``[M, T, V]`` (language models)
    are read at sequence ``position``.

    Returns:
        [M, C] logits, or [M] for a model with one scalar output per row.
    """
    if isinstance(outputs, Tensor):
        z = outputs
    elif hasattr(outputs, "logits"):
        z = outputs.logits
    elif isinstance(outputs, Mapping) and "logits" in outputs:
        z = outputs["logits"]
    elif isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        z = outputs[0]
    else:
        raise ValueError(
            f"cannot find logits in model outputs of type {type(outputs).__name__}; return a "
            "Tensor, a tuple whose first item is the logits, or an object with .logits, or pass "
            "a callable value=f(outputs, target) -> Tensor[M]."
        )
    if z.dim() == 3:
        z = z[:, position]
    if z.dim() > 3:
        raise ValueError(f"model logits have shape {tuple(z.shape)}; expected [M], [M, C] or [M, T, V].")
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return z


def _binary_sign(z: Tensor, target: Tensor) -> Tensor:
    """+z for target 1, -z for target 0: the logit of the target class of a one-logit model."""
    return torch.where(target.to(z.device) == 1, z, -z)


def _squeeze_single(z: Tensor) -> Tensor:
    return z[:, 0] if z.dim() == 2 and z.shape[1] == 1 else z


def _flat_targets(z: Tensor, target: Tensor) -> Tensor:
    """[M] position of each row's target logit in ``z.view(-1)`` for contiguous logits [M, C].

    On CPU, index_select and index_fill_ at these positions are several times faster than
    gather and scatter along dim 1. A class outside ``0..C-1`` would silently point into
    another row, so it is rejected here.
    """
    target = target.to(z.device)
    if target.numel():
        low, high = (int(v) for v in torch.aminmax(target))
        if low < 0 or high >= z.shape[1]:
            raise ValueError(
                f"target holds classes {low}..{high}, but the model gives {z.shape[1]} logits per row; pass "
                f"classes in 0..{z.shape[1] - 1} (a tracker's probe_targets / heldout_targets)."
            )
    return torch.arange(0, z.numel(), z.shape[1], device=z.device) + target


def log_odds(outputs: Any, target: Tensor, position: int = -1) -> Tensor:
    """``log p(y|x) / (1 - p(y|x)) = z_y - logsumexp_{k != y} z_k``, stable at any logit size.

    Args:
        outputs: model outputs with logits [M, C] (or [M]/[M, 1] binary, [M, T, V] sequence).
        target: [M] int64 class per row.
    Returns:
        [M] log-odds of the target class.
    """
    z = _squeeze_single(model_logits(outputs, position))
    if z.dim() == 1:
        return _binary_sign(z, target)
    z = z.contiguous()
    at = _flat_targets(z, target)
    z_y = z.view(-1).index_select(0, at)
    # logsumexp over the other classes (the target's logit set to -inf), shifted by their
    # largest logit m: every term is at most 1 and m's own term is 1, so the sum neither
    # overflows nor underflows. The in-place ops touch no tensor that autograd saved
    # (adversarial sensitivity differentiates through this function).
    others = z.clone().view(-1).index_fill_(0, at, float("-inf")).view(z.shape)
    m = others.amax(1, keepdim=True)
    if z.requires_grad:
        rest = (others - m).exp_().sum(1)
    else:
        # The same sum without exp(-inf), which is slow on CPU: the target's term (inf when
        # z_y >> m) is overwritten with 0 after the exp. Its gradient would be nan, hence
        # the branch.
        rest = (z - m).exp_().view(-1).index_fill_(0, at, 0.0).view(z.shape).sum(1)
    return z_y - m[:, 0] - rest.log()


def logit(outputs: Any, target: Tensor, position: int = -1) -> Tensor:
    """``z_y``: the target's logit. Args/returns as :func:`log_odds`."""
    z = _squeeze_single(model_logits(outputs, position))
    if z.dim() == 1:
        return _binary_sign(z, target)
    return z.gather(1, target.to(z.device)[:, None])[:, 0]


def log_prob(outputs: Any, target: Tensor, position: int = -1) -> Tensor:
    """``log softmax(z)_y`` (``log sigmoid`` for one logit). Args/returns as :func:`log_odds`."""
    z = _squeeze_single(model_logits(outputs, position))
    if z.dim() == 1:
        return torch.nn.functional.logsigmoid(_binary_sign(z, target))
    return torch.log_softmax(z, dim=1).gather(1, target.to(z.device)[:, None])[:, 0]


def output(outputs: Any, target: Tensor | None = None) -> Tensor:
    """The model's own scalar output per row (``[M]`` or ``[M, 1]``); ``target`` is ignored."""
    z = _squeeze_single(model_logits(outputs))
    if z.dim() != 1:
        raise ValueError(
            f'value="output" needs one scalar per row, but the model returned shape '
            f'{tuple(z.shape)}; use value="log_odds" for class logits.'
        )
    return z


_BUILTIN: dict[str, Callable[..., Tensor]] = {"log_odds": log_odds, "logit": logit, "log_prob": log_prob, "output": output}


def resolve_value(value: str | ValueFn) -> ValueFn:
    """The value function named by ``value`` ("log_odds", "logit", "log_prob", "output") or
    ``value`` itself when it is a callable ``f(outputs, target) -> Tensor[M]``."""
    if callable(value):
        return value
    if value not in _BUILTIN:
        raise ValueError(
            f"value={value!r} is not a known value function; use one of {list(VALUE_NAMES)} or a "
            "callable f(outputs, target) -> Tensor[M]."
        )
    return _BUILTIN[value]


def needs_target(value: str | ValueFn) -> bool:
    """Whether the value function reads a target class (all but "output")."""
    return value != "output"


def value_name(value: str | ValueFn) -> str:
    """A printable name for the value function, for metadata."""
    return value if isinstance(value, str) else getattr(value, "__name__", "callable")


def predicted_targets(outputs: Any) -> Tensor:
    """The predicted class of each row: argmax of the logits, or ``z > 0`` for one logit.

    Returns:
        [M] int64.
    """
    z = _squeeze_single(model_logits(outputs))
    if z.dim() == 1:
        return (z > 0).long()
    return z.argmax(dim=1)
