"""Value functions: one scalar per masked input, read off the model's outputs.

A value function maps ``(outputs, target) -> Tensor[M]`` where ``outputs`` is whatever the
model returned for ``M`` masked rows and ``target`` is ``[M]`` int64 (or None for "output").

Causal language models: the target of a row may instead be the answer, ``[M, T]`` int64 labels
in the supervised fine-tuning layout (the answer's token ids at its positions in
``input_ids``, ``IGNORE_INDEX`` = -100 everywhere else). The logits at position ``t - 1``
predict the token at ``t``. ``"answer_log_prob"`` sums the answer's log-probabilities;
``"log_odds"``, ``"logit"`` and ``"log_prob"`` read a one-token answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

ValueFn = Callable[[Any, "Tensor | None"], Tensor]

VALUE_NAMES = ("log_odds", "logit", "log_prob", "output", "answer_log_prob")

IGNORE_INDEX = -100
"""Label of the positions that are not part of the answer (the Hugging Face loss convention)."""


def model_logits(outputs: Any, position: int | slice = -1) -> Tensor:
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
    if z.dim() == 3 and not isinstance(position, slice):
        z = z[:, position]
    if z.dim() > 3:
        raise ValueError(f"model logits have shape {tuple(z.shape)}; expected [M], [M, C] or [M, T, V].")
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return z


def _answer_token(outputs: Any, target: Tensor, position: int) -> tuple[Tensor, Tensor]:
    """Logits [M, V] and class [M] of each row's one answer token (target [M, T] labels), or
    ``model_logits(outputs, position)`` and ``target`` unchanged for class targets [M]."""
    if target is None or target.dim() != 2:
        return model_logits(outputs, position), target
    z = _sequence_logits(outputs, target)
    target = target.to(z.device)
    answer = target != IGNORE_INDEX
    counts = answer.sum(1)
    if not bool((counts == 1).all()):
        raise ValueError(
            f"the answer labels hold {sorted(set(counts.tolist()))} answer tokens per row; this "
            "value reads a one-token answer. Use value='answer_log_prob' for answers of any length."
        )
    at = answer.long().argmax(1)
    rows = torch.arange(z.shape[0], device=z.device)
    return z[rows, at - 1], target[rows, at]


def _sequence_logits(outputs: Any, target: Tensor) -> Tensor:
    """The ``[M, T, V]`` logits of a causal language model, checked against labels [M, T]."""
    z = model_logits(outputs, position=slice(None))
    if z.dim() != 3 or z.shape[:2] != target.shape:
        raise ValueError(
            f"answer labels of shape {tuple(target.shape)} need sequence logits [M, T, V] with the "
            f"same M and T; the model returned logits of shape {tuple(z.shape)}."
        )
    if bool((target[:, 0] != IGNORE_INDEX).any()):
        raise ValueError(
            "an answer starts at position 0 of input_ids, where no earlier position predicts it; "
            "the answer must follow a prompt."
        )
    return z


def answer_log_prob(outputs: Any, target: Tensor) -> Tensor:
    """``log p(answer | prompt)`` under teacher forcing: the sum over the answer's tokens of
    ``log softmax(z[t - 1])[y_t]``.

    Args:
        outputs: model outputs with logits [M, T, V] (a causal language model).
        target: [M, T] int64 labels: the answer token ``y_t`` at each answer position ``t``,
            ``IGNORE_INDEX`` (-100) elsewhere (prompt and padding).
    Returns:
        [M] total log-probability of each row's answer, float32 or wider.
    """
    if target is None or target.dim() != 2:
        raise ValueError(
            "value='answer_log_prob' needs the answer as labels [B, T] (the answer's token ids at "
            "its positions, -100 elsewhere): put them in the inputs as 'labels' or pass target=."
        )
    z = _sequence_logits(outputs, target)
    target = target.to(z.device)
    # Logits at t - 1 predict token t; only the answer's positions are read, so the [M, T, V]
    # log-softmax is never formed.
    labels = target[:, 1:]
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    picked = z[rows, cols]  # [A, V]: the logits before every answer token
    token_lp = picked.gather(1, labels[rows, cols][:, None])[:, 0] - torch.logsumexp(picked, 1)
    out = torch.zeros(z.shape[0], dtype=token_lp.dtype, device=z.device)
    return out.index_add_(0, rows, token_lp)


def _binary_sign(z: Tensor, target: Tensor) -> Tensor:
    """+z for target 1, -z for target 0: the logit of the target class of a one-logit model.

    Any other class is rejected: read as "not 1" it would silently count as class 0.
    """
    target = target.to(z.device)
    if target.numel() and not bool(((target == 0) | (target == 1)).all()):
        low, high = (int(v) for v in torch.aminmax(target))
        raise ValueError(
            f"target holds classes {low}..{high}, but the model gives one logit per row (binary: class 1 "
            "when the logit is > 0); pass classes 0 or 1 (a tracker's probe_targets / heldout_targets), "
            "or give the model one logit per class."
        )
    return torch.where(target == 1, z, -z)


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
        target: [M] int64 class per row, or [M, T] answer labels with one answer token per
            row (read at the position before it; ``position`` is then unused).
    Returns:
        [M] log-odds of the target class.
    """
    z, target = _answer_token(outputs, target, position)
    z = _squeeze_single(z)
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
    z, target = _answer_token(outputs, target, position)
    z = _squeeze_single(z)
    if z.dim() == 1:
        return _binary_sign(z, target)
    return z.gather(1, target.to(z.device)[:, None])[:, 0]


def log_prob(outputs: Any, target: Tensor, position: int = -1) -> Tensor:
    """``log softmax(z)_y`` (``log sigmoid`` for one logit). Args/returns as :func:`log_odds`."""
    z, target = _answer_token(outputs, target, position)
    z = _squeeze_single(z)
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


_BUILTIN: dict[str, Callable[..., Tensor]] = {
    "log_odds": log_odds,
    "logit": logit,
    "log_prob": log_prob,
    "output": output,
    "answer_log_prob": answer_log_prob,
}


def resolve_value(value: str | ValueFn) -> ValueFn:
    """The value function named by ``value`` ("log_odds", "logit", "log_prob", "output",
    "answer_log_prob") or
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


def needs_answer(value: str | ValueFn) -> bool:
    """Whether the value function reads answer labels [B, T] only ("answer_log_prob")."""
    return value == "answer_log_prob"


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
