"""Does the tracker find a planted rule? A tiny BERT learns "good and not 'not'" with the Trainer.

Synthetic reviews are six words long. A review is positive exactly when it contains "good" and
does not contain "not"; "bad" and the filler words carry no signal. A tiny BERT (built from a
``BertConfig``, random init) with a fast word-level tokenizer built here from the vocabulary
learns the rule with the Hugging Face ``Trainer``, while a ``ConceptTrackerCallback`` computes
AND interactions between the six words of 16 training reviews at log-spaced steps.

For a model that has learned the rule, on a review with "good" the value (log-odds of its
label) changes only through "good" and "not": the strongest concepts should be {good} and, when
"not" is there too, {good,not}. The script prints the strongest concepts the tracker stored at
the last step and whether they are made of the rule's words.

    python examples/hf_text_classification.py              # 200 steps, about a minute on 2 CPU cores
    python examples/hf_text_classification.py --steps 20   # smoke test
    tensorboard --logdir runs/hf_text_classification

Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from concept_tracker import TokenPlayers
from concept_tracker.integrations.transformers import ConceptTrackerCallback
from concept_tracker.store import list_steps, load_step, step_path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
RULE_WORDS = ("good", "not")
FILLERS = ["the", "movie", "plot", "was", "acting", "film", "story", "really", "quite", "cast", "music", "ending"]
VOCAB = SPECIAL + list(RULE_WORDS) + ["bad"] + FILLERS
WORDS = 6


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer over ``VOCAB``: ``[CLS] w1 ... w6 [SEP]``."""
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB.index("[CLS]")), ("[SEP]", VOCAB.index("[SEP]"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def rule(words: list[str]) -> int:
    """The planted label: 1 iff "good" is present and "not" is absent."""
    return int("good" in words and "not" not in words)


def make_reviews(count: int, seed: int) -> list[list[str]]:
    """Reviews of ``WORDS`` words: fillers, "good" in half of them, "not" and "bad" in some."""
    rng = random.Random(seed)
    reviews = []
    for _ in range(count):
        words = rng.sample(FILLERS, WORDS)
        slots = rng.sample(range(WORDS), 3)
        for word, chance, slot in zip(("good", "not", "bad"), (0.5, 0.4, 0.3), slots):
            if rng.random() < chance:
                words[slot] = word
        reviews.append(words)
    return reviews


class Reviews(torch.utils.data.Dataset):
    """Tokenized reviews with their rule labels, in the Trainer's dict-of-tensors format."""

    def __init__(self, reviews: list[list[str]], tokenizer: PreTrainedTokenizerFast) -> None:
        self.encoded = tokenizer([" ".join(r) for r in reviews], return_tensors="pt")
        self.labels = torch.tensor([rule(r) for r in reviews])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.encoded["input_ids"][i], "attention_mask": self.encoded["attention_mask"][i],
                "labels": self.labels[i]}


def strongest_concepts(log_dir: str, top: int = 2) -> list[tuple[list[str], list[tuple[list[str], float]]]]:
    """Per probe review at the last tracked step: its words and its ``top`` concepts as
    (words of S, I(S)), strongest first."""
    last = list_steps(log_dir)[-1]
    res, _ = load_step(step_path(log_dir, last))
    out = []
    for effects, names in zip(res.and_effects, res.player_names):
        magnitude = effects.abs()
        magnitude[0] = 0.0  # v(empty) is an offset, not a concept
        picked = magnitude.topk(top).indices.tolist()
        concepts = [([names[i] for i in range(res.n) if s >> i & 1], float(effects[s])) for s in picked]
        out.append((names, concepts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    parser.add_argument("--output-dir", default="runs/hf_text_classification")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be at least 1.")

    tokenizer = build_tokenizer()
    train = Reviews(make_reviews(2000, args.seed), tokenizer)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=WORDS + 2, num_labels=2, pad_token_id=VOCAB.index("[PAD]"),
    )
    torch.manual_seed(args.seed)
    model = BertForSequenceClassification(config)
    training = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=32, learning_rate=2e-3,
        warmup_steps=min(20, args.steps // 10), logging_steps=max(1, args.steps // 10), save_strategy="no",
        report_to="none", use_cpu=True, seed=args.seed,
    )
    # Words are the players; a masked word becomes [MASK]. n = 6: every word of a review.
    callback = ConceptTrackerCallback(TokenPlayers(n=WORDS), num_probe=16, kind="and", seed=args.seed)
    trainer = Trainer(model=model, args=training, train_dataset=train, processing_class=tokenizer, callbacks=[callback])
    trainer.train()

    log_dir = callback.tracker.log_dir
    print(f"\nStrongest concepts at the last tracked step (AND interactions, log-odds of the label), {log_dir}:")
    with_good = matched = 0
    for words, concepts in strongest_concepts(log_dir):
        shown = ", ".join(f"{{{','.join(s)}}} {effect:+.2f}" for s, effect in concepts)
        print(f"  label {rule(words)}  {' '.join(words):<42} {shown}")
        if "good" in words:
            with_good += 1
            matched += "good" in concepts[0][0] and set(concepts[0][0]) <= set(RULE_WORDS)
    print(
        f"\nOn {matched} of {with_good} probe reviews containing 'good', the strongest concept is made of the "
        f"rule's words {{good}} or {{good,not}}: the tracker "
        f"{'recovered' if with_good and matched == with_good else 'did not fully recover'} the planted rule."
    )
    print(f"TensorBoard: tensorboard --logdir {Path(log_dir)}")


if __name__ == "__main__":
    main()
