"""Causal language models: the answer a value reads, in the supervised fine-tuning layout.

A probe of a causal language model is a prompt followed by its answer in one ``input_ids``
row, with ``labels`` [T] holding the answer's token ids at the answer's positions and
``IGNORE_INDEX`` (-100) on the prompt and the padding, the layout of supervised fine-tuning
batches. The value ``"answer_log_prob"`` of a coalition S is then

    v(S) = sum over answer positions t of log p(y_t | prompt with the players outside S masked, y_<t)

(teacher-forced, the logits at ``t - 1`` predicting the token at ``t``). Token players are
words of the prompt only; the answer is never masked.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .values import IGNORE_INDEX, needs_answer, needs_target


def answer_labels(batch: Any, targets: Tensor | None, value: Any) -> tuple[Any, Tensor | None]:
    """The batch and targets of a run, with the answer labels in both places that need them.

    Answer labels given as ``targets`` [B, T] join the batch as ``"labels"`` (token players
    keep the answer out of the players). With no targets, a batch's own ``"labels"`` of the
    shape of ``input_ids`` become the targets of a named value that reads one (all but
    "output"); a callable value gets them only through ``target=``.

    Args:
        batch: Tensor [B, ...] or a mapping of tensors [B, ...].
        targets: [B] classes, [B, T] answer labels or None.
        value: the value name or callable.
    Returns:
        ``(batch, targets)``.
    """
    is_map = isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), Tensor)
    if targets is not None and targets.dim() == 2:
        if not is_map or batch["input_ids"].shape != targets.shape:
            shape = tuple(batch["input_ids"].shape) if is_map else None
            raise ValueError(
                f"target has shape {tuple(targets.shape)}: answer labels [B, T] must match the "
                f"inputs' input_ids, which have shape {shape}."
            )
        return {**batch, "labels": targets}, targets
    if targets is None and is_map and isinstance(value, str) and needs_target(value):
        labels = batch.get("labels")
        if isinstance(labels, Tensor) and labels.shape == batch["input_ids"].shape:
            targets = labels.long()
    if needs_answer(value) and (targets is None or targets.dim() != 2):
        raise ValueError(
            "value='answer_log_prob' needs the answer: labels [B, T] with the answer's token ids "
            "at its positions and -100 elsewhere, in the inputs as 'labels' or as target=. "
            "prompt_answer_batch(tokenizer, prompts, answers) builds both."
        )
    return batch, targets


def prompt_answer_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    padding_side: str = "right",
) -> dict[str, Tensor]:
    """Prompts followed by their answers, padded to one length, with answer labels.

    Each prompt is tokenized as the tokenizer does by itself (special tokens included), each
    answer without special tokens, and the answer's tokens follow the prompt's. Write answers
    with the leading space they have in running text (" Paris"), as BPE vocabularies expect.

    Args:
        tokenizer: a Hugging Face tokenizer.
        prompts, answers: one answer per prompt.
        padding_side: "right" or "left", as your training batches are padded: the tracker
            passes the batch's keys on as they are (no ``position_ids`` are added), so a causal
            LM numbers positions as it does for such a batch.
    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, each [B, T] int64; ``labels`` holds the
        answer's ids at its positions and -100 elsewhere.
    """
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"got {len(prompts)} prompts and {len(answers)} answers; give one answer per prompt.")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side={padding_side!r}; use 'right' or 'left'.")
    rows = []
    for prompt, answer in zip(prompts, answers):
        p = list(tokenizer(prompt)["input_ids"])
        a = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if not p or not a:
            raise ValueError(f"prompt {prompt!r} or answer {answer!r} gives no tokens; both need at least one.")
        rows.append((p + a, [IGNORE_INDEX] * len(p) + a))
    width = max(len(ids) for ids, _ in rows)
    pad = next((v for v in (tokenizer.pad_token_id, tokenizer.eos_token_id) if v is not None), 0)
    ids_out, mask_out, labels_out = [], [], []
    for ids, labels in rows:
        fill = width - len(ids)
        ids_pad, mask, label_pad = [pad] * fill, [1] * len(ids), [IGNORE_INDEX] * fill
        if padding_side == "right":
            ids_out.append(ids + ids_pad)
            mask_out.append(mask + [0] * fill)
            labels_out.append(labels + label_pad)
        else:
            ids_out.append(ids_pad + ids)
            mask_out.append([0] * fill + mask)
            labels_out.append(label_pad + labels)
    return {
        "input_ids": torch.tensor(ids_out),
        "attention_mask": torch.tensor(mask_out),
        "labels": torch.tensor(labels_out),
    }


def is_causal_lm(logits: Tensor, input_ids: Tensor, vocab_size: int | None) -> bool:
    """Whether a model's logits on ``input_ids`` [B, T] look like a causal language model's:
    ``[B, T, V]`` with ``V`` the vocabulary size (a token classifier has ``V`` = its classes)."""
    return (
        logits.dim() == 3
        and logits.shape[:2] == input_ids.shape
        and (vocab_size is None or logits.shape[-1] == vocab_size)
    )


def guess_answers(input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor | None) -> tuple[Tensor, int]:
    """Answer labels for probes of a causal language model, guessing where there is no answer.

    A probe whose labels mark an answer (some positions -100, at least one not, none at the
    first position) keeps them. Any other probe (no labels, or language-modelling labels on
    every token) gets its last token as the answer and the rest as the prompt.

    Args:
        input_ids: [B, T].
        attention_mask: [B, T] or None (no padding).
        labels: [B, T] or None.
    Returns:
        ``(labels [B, T] int64, number of probes whose answer was guessed)``.
    """
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    out = torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long)
    if labels is not None:
        answer = (labels != IGNORE_INDEX) & real
        sft = answer.any(1) & (answer.sum(1) < real.sum(1)) & ~answer[:, 0]
        out[sft] = torch.where(answer[sft], labels[sft].long(), IGNORE_INDEX)
    else:
        sft = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    last = torch.where(real, positions, -1).amax(1)
    for b in (~sft).nonzero().reshape(-1).tolist():
        if last[b] < 1:
            raise ValueError(f"probe {b} has {int(last[b]) + 1} tokens; a prompt and an answer need at least 2.")
        out[b, last[b]] = input_ids[b, last[b]]
    return out, int((~sft).sum())


def answer_probes(inputs: Mapping[str, Tensor], logits: Tensor, vocab_size: int | None) -> dict[str, Tensor] | None:
    """Probe inputs with answer labels, if ``logits`` show a causal language model.

    Args:
        inputs: the probes' ``{"input_ids": [B, T], ...}``, with supervised fine-tuning
            ``"labels"`` [B, T] where the dataset had them.
        logits: the model's logits on the first probe, ``[1, T, V]`` for a causal LM.
        vocab_size: the model's vocabulary size (None: not known).
    Returns:
        The inputs with answer labels as ``"labels"`` (see :func:`guess_answers`), with one
        warning when some answers are guessed; None when the model is no causal LM.
    """
    ids = inputs["input_ids"]
    if not is_causal_lm(logits, ids[:1], vocab_size):
        return None
    labels = inputs.get("labels")
    labels = labels if isinstance(labels, Tensor) and labels.shape == ids.shape else None
    answers, guessed = guess_answers(ids, inputs.get("attention_mask"), labels)
    if guessed:
        why = "have no labels" if labels is None else "have no answer in their labels (no -100 on the prompt)"
        warnings.warn(
            f"ConceptTracker probes: the model is a causal language model, but {guessed} of {ids.shape[0]} "
            f"probes {why}, so the last token of each is taken as the answer and the words before it "
            "as the prompt; the value is log p(answer | prompt). For your own answers, give labels "
            "with -100 on the prompt (supervised fine-tuning layout).",
            stacklevel=3,
        )
    return {**inputs, "labels": answers}
