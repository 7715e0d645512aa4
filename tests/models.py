"""Tiny models for tests and benchmarks, each with its answer in the docstring.

Planted models (``Product``, ``Sum``, ``Max``) return one scalar per row (use
``value="output"``) and have known interactions under zero baselines. The small networks have no
closed form: tests compare them with the brute-force oracles in ``oracles.py``. Every model
builds its weights from its own seed without touching the global RNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``build()`` with the torch RNG seeded by ``seed``, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class Product(nn.Module):
    """``y = x0 * x1`` for inputs ``[M, d]``, d >= 2.

    Zero baselines: ``v(S) = x0 * x1`` if ``{0, 1} ⊆ S`` else 0, so the only non-zero AND
    interaction is ``I({0, 1}) = x0 * x1`` (bitmask 3); players 2.. are dummies.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0] * x[:, 1]


class Sum(nn.Module):
    """``y = x0 + x1`` for inputs ``[M, d]``, d >= 2.

    Zero baselines: ``v(S) = x0 [0 ∈ S] + x1 [1 ∈ S]``, so the AND interactions are the
    singletons ``I({0}) = x0`` (bitmask 1) and ``I({1}) = x1`` (bitmask 2), and 0 elsewhere.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0] + x[:, 1]


class Max(nn.Module):
    """``y = max(x0, x1)`` for inputs ``[M, d]``, d >= 2, evaluated at ``x0 = x1 = 1``.

    Zero baselines: ``v(S) = 1`` iff ``S`` meets ``{0, 1}``. The only non-zero OR interaction is
    ``I_or({0, 1}) = 1`` (bitmask 3; ``I_or(∅) = v(∅) = 0``). The AND view of the same game
    needs three terms: ``I({0}) = I({1}) = 1``, ``I({0, 1}) = -1``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.maximum(x[:, 0], x[:, 1])


def mlp(d_in: int = 6, hidden: int = 16, classes: int = 3, seed: int = 0) -> nn.Module:
    """A two-layer tanh MLP ``[M, d_in] -> [M, classes]`` logits. No closed form."""
    return seeded(lambda: nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes)), seed)


def cnn(classes: int = 10, seed: int = 0) -> nn.Module:
    """A small CNN on digits-sized images ``[M, 1, 8, 8] -> [M, classes]`` logits. No closed form."""
    return seeded(
        lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, classes),
        ),
        seed,
    )


class Noisy(nn.Module):
    """An MLP with dropout and a frozen (eval-mode) sub-block that draws from every RNG it can.

    In eval mode its logits do not depend on the random draws (they are multiplied by zero), so
    the interactions are deterministic while the torch, numpy and ``random`` streams still
    advance on every forward: a caller that does not restore them leaves a trace.
    """

    def __init__(self, d_in: int = 4, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.body = seeded(lambda: nn.Sequential(nn.Linear(d_in, 8), nn.ReLU(), nn.Dropout(0.5)), seed)
        self.frozen = seeded(lambda: nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)), seed + 1)
        self.frozen.eval()
        self.head = seeded(lambda: nn.Linear(8, classes), seed + 2)

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.rand(()) + float(np.random.rand()) + random.random()
        return self.head(self.frozen(self.body(x))) + 0.0 * noise


class NaNAt(nn.Module):
    """``y = x.sum(1)``, except NaN where ``x0 != 0``, ``x1 == 0`` and ``x2 != 0``.

    With zero baselines and non-zero inputs the first bad coalition keeps players 0 and 2 but
    not 1: bitmask 5. A sample with ``x2 = 0`` never hits it.
    """

    def forward(self, x: Tensor) -> Tensor:
        bad = (x[:, 0] != 0) & (x[:, 1] == 0) & (x[:, 2] != 0)
        return torch.where(bad, torch.nan, x.sum(1))


VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "cat", "dog", "is", "was", "very", "un", "##happy", "happy",
    "play", "##ing", "run", "##s", "sad", "day", "today", ".",
]  # fmt: skip
"""WordPiece vocabulary: "unhappy" -> un ##happy, "playing" -> play ##ing, "runs" -> run ##s."""


def wordpiece_tokenizer():
    """A real fast tokenizer built from :data:`VOCAB` (no download).

    WordPiece model, BERT pre-tokenizer, ``[CLS] $A [SEP]`` post-processor, wrapped in
    ``transformers.PreTrainedTokenizerFast`` with ``[MASK]`` (id 4) and ``[PAD]`` (id 0).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_bert(classes: int = 2, seed: int = 0) -> nn.Module:
    """``BertForSequenceClassification`` from a tiny ``BertConfig`` over :data:`VOCAB`, in eval mode.
    No closed form."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=classes,
        initializer_range=0.5,
    )
    return seeded(lambda: BertForSequenceClassification(config), seed).eval()


WORDS = ["<unk>", "<pad>", "<eos>"] + (
    "the a cat dog sat on mat red blue big small is was capital of france paris rome italy yes no , ."
).split()


def word_tokenizer():
    """A word-level fast tokenizer over :data:`WORDS` with no mask token (like GPT-2's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_lm(arch: str) -> nn.Module:
    """A 2-layer causal LM over :data:`WORDS` from a config, ``arch`` "gpt2" or "llama"; random
    weights (seed 0), so only what holds for any weights can be checked against it."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if arch == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=len(WORDS), n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=2, eos_token_id=2
        )
        return seeded(lambda: GPT2LMHeadModel(gpt2), 0).eval()
    llama = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32, bos_token_id=2, eos_token_id=2, pad_token_id=1,
    )
    return seeded(lambda: LlamaForCausalLM(llama), 0).eval()
