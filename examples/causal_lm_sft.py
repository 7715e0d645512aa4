"""Supervised fine-tuning of a causal LM with the Trainer: which prompt words explain the answer?

Prompts are six words followed by "->"; the answer is "yes ." when the prompt holds both "red"
and "ball", else "no .". A tiny GPT-2 (built from a ``GPT2Config``, random init) with a
word-level tokenizer built here from the vocabulary (no mask token, like GPT-2's own) learns
this with the Hugging Face ``Trainer`` on batches in the usual supervised fine-tuning layout:
``labels`` hold the answer's token ids at its positions and -100 on the prompt and padding.

The callback needs no setting to see that the model is a causal language model: it reads the
answers from the labels and tracks AND interactions of the value log p(answer | prompt) between
the six prompt words (the answer is never masked). The concepts go to the folder of the
Trainer's own TensorBoard scalars, so one TensorBoard run and ``concept-tracker report`` show
them beside the losses.

The one setting here is the mask. Without a mask token, masked words get the mean input
embedding; a model trained from scratch on six-word prompts has never seen it and answers it
arbitrarily (``--mask embedding``: after 300 steps, the strongest concepts were sets of four to
six filler words, worth up to 30 nats). So the players mask a word by a filler word the model
knows, "the" (``mask_token_id``): a masked word is then simply absent. A large pretrained
model answers a mean embedding sensibly and needs no such setting.

For a model that has learned the rule, on a "yes" prompt the value drops when "red" or "ball"
is masked, and only then: the strongest concept should be {red, ball}.

    python examples/causal_lm_sft.py              # 150 steps, well under a minute on an idle CPU
    python examples/causal_lm_sft.py --steps 20   # smoke test
    python examples/causal_lm_sft.py --every-word # 30-word prompts, every word a player (31 with "->"):
                                                  # the sampled order spectrum, spectrum/* tags
    tensorboard --logdir runs/causal_lm_sft/runs
    concept-tracker report runs/causal_lm_sft/runs/*

With ``--every-word`` the prompts have 30 words and every word of the prompt is a player:
2**31 coalitions per probe, far beyond the exact readings (they stop at 20 players). Above 16
players the tracker reads the sampled order spectrum instead (``ct.order_spectrum``, one
message says so): the simple and complex shares of salient Harsanyi strength, with intervals,
under ``spectrum/*`` tags and ``spectrum/`` files. To run as an example, that mode reads it
from 800 forwards per probe sample (every coalition of at most two words, 497 of them, exactly;
the rest samples the higher orders) on 8 probes, at step 0, half way and at the end: at most
6,400 masked forwards per tracked step instead of 8 * 2**31 (and 3 tracked steps instead of the
default schedule's 22 over 150 steps): training, not tracking, takes most of the run's time.

Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    DataCollatorForSeq2Seq,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from concept_tracker import ReadingsConfig, TokenPlayers, at_steps
from concept_tracker.integrations.transformers import ConceptTrackerCallback
from concept_tracker.store import SPECTRUM_DIR, list_steps, load_spectrum, load_step, step_path

SPECIAL = ["<pad>", "<unk>", "<eos>"]
RULE_WORDS = ("red", "ball")
FILLERS = ["a", "the", "big", "small", "blue", "green", "box", "cup", "on", "table", "near", "old"]
VOCAB = SPECIAL + list(RULE_WORDS) + FILLERS + ["->", "yes", "no", "."]
WORDS = 6
LONG_WORDS = 30
EVERY_WORD_FORWARDS = 800
"""Forwards per probe sample of the sampled spectrum with ``--every-word`` (all pairs of 31 players exactly)."""
EVERY_WORD_PROBES = 8


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer over ``VOCAB``; like GPT-2's, it has no mask token."""
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def example(rng: random.Random, length: int = WORDS) -> tuple[str, str]:
    """A prompt of ``length`` words and its answer: "yes ." iff the prompt holds both rule words."""
    words = rng.choices(FILLERS, k=length)
    slots = rng.sample(range(length), 2)
    for word, slot in zip(RULE_WORDS, slots):
        if rng.random() < 0.6:
            words[slot] = word
    answer = "yes ." if all(w in words for w in RULE_WORDS) else "no ."
    return " ".join(words) + " ->", answer


def sft_dataset(tokenizer, size: int, seed: int, length: int = WORDS) -> list[dict]:
    """Items in the supervised fine-tuning layout: prompt + answer ids, labels -100 on the prompt."""
    rng = random.Random(seed)
    items = []
    for _ in range(size):
        prompt, answer = example(rng, length)
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer)["input_ids"]
        items.append({"input_ids": p + a, "attention_mask": [1] * (len(p) + len(a)), "labels": [-100] * len(p) + a})
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--mask", choices=["word", "embedding"], default="word",
                        help='word: mask by the filler word "the"; embedding: the mean input embedding')
    parser.add_argument("--output-dir", default="runs/causal_lm_sft")
    parser.add_argument("--every-word", action="store_true",
                        help=f"{LONG_WORDS}-word prompts, every prompt word a player (the sampled order spectrum)")
    args = parser.parse_args()
    length = LONG_WORDS if args.every_word else WORDS

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = GPT2Config(
        vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=2, n_positions=length + 10,
        bos_token_id=VOCAB.index("<eos>"), eos_token_id=VOCAB.index("<eos>"), pad_token_id=VOCAB.index("<pad>"),
    )
    model = GPT2LMHeadModel(config)
    neutral = VOCAB.index("the") if args.mask == "word" else None
    if args.every_word:  # every word of the prompt, "->" included: 31 players; step 0 and the last are added
        callback = ConceptTrackerCallback(
            TokenPlayers(n=length + 1, mask_token_id=neutral), num_probe=EVERY_WORD_PROBES,
            schedule=at_steps([args.steps // 2]), readings=ReadingsConfig(spectrum=EVERY_WORD_FORWARDS),
        )
    else:
        callback = ConceptTrackerCallback(TokenPlayers(n=WORDS, mask_token_id=neutral))
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output_dir, max_steps=args.steps, per_device_train_batch_size=32,
            learning_rate=5e-3, warmup_steps=min(20, args.steps // 5), logging_steps=10,
            eval_strategy="steps", eval_steps=max(1, args.steps // 5), save_strategy="no",
            report_to=["tensorboard"], use_cpu=True, seed=0, disable_tqdm=True,
        ),
        train_dataset=sft_dataset(tokenizer, 2000, seed=1, length=length),
        eval_dataset=sft_dataset(tokenizer, 200, seed=2, length=length),
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),  # pads labels with -100
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()

    log_dir = Path(callback.tracker.log_dir)
    if args.every_word:
        print(f"\nthe sampled order spectrum in {log_dir} (spectrum/* tags; tensorboard --logdir {log_dir.parent})")
        for path in sorted((log_dir / SPECTRUM_DIR).glob("step_*.safetensors")):
            tensors, meta = load_spectrum(path)
            (simple, low, high), complex_ = meta["overall"]["simple_share"], meta["overall"]["complex_share"]
            print(
                f"step {meta['step']:4d}: simple share {simple:.3f} [{low:.3f}, {high:.3f}], complex share "
                f"{complex_[0]:.3f} [{complex_[1]:.3f}, {complex_[2]:.3f}], {meta['forwards']} forwards "
                f"(exact: {2 ** meta['n'] * tensors['simple_share'].numel():,})"
            )
        return
    last = list_steps(log_dir)[-1]
    res, meta = load_step(step_path(log_dir, last))
    print(f"\nconcepts and losses in {log_dir} (tensorboard --logdir {log_dir.parent}); step {last}")
    hits = yes = 0
    for b, names in enumerate(res.player_names):
        effects = res.and_effects[b]
        s = int(effects[1:].abs().argmax()) + 1
        concept = {names[i] for i in range(res.n) if s >> i & 1}
        says_yes = all(w in names for w in RULE_WORDS)
        yes += says_yes
        hits += says_yes and concept == set(RULE_WORDS)
        print(
            f"probe {meta['probe_ids'][b]:4d}: {' '.join(names):34s} log p(answer) = {float(res.outputs[b, -1]):6.2f}  "
            f"strongest concept {sorted(concept)} ({float(effects[s]):+.2f})"
        )
    print(f"{hits} of {yes} probes with both rule words have {{red, ball}} as their strongest concept.")


if __name__ == "__main__":
    main()
