"""Wall-time overhead of tracking a Hugging Face ``Trainer`` run under ``max_overhead``.

    python benchmarks/trainer_overhead.py [--steps 600] [--batch 32] [--repeats 1] [--budget 0.1]
                                          [--no-figures] [--output trainer_overhead.md]

A 4-layer, 128-wide BERT built from a config (no downloads) learns a word rule on generated
sentences (positive iff "good" or "great" and not "not"; 12 words from a 20-word vocabulary) on
the CPU, ``--steps`` optimizer steps of ``--batch`` sentences, with and without
``ConceptTrackerCallback(TokenPlayers(n=8), budget=BudgetConfig(max_overhead=--budget))`` (16 probes, kind "and", the
callback's default schedule; the Trainer's ``max_steps`` is the tracker's ``total_steps``, so the
budget plans the tracked steps). The two variants take turns, ``--repeats`` rounds. Target
(issue 14): <= 1.12x the untracked run, with at least 4 tracked steps including the first and
the last. The machine load is printed with the results: on a shared machine it moves every
figure; the CPU seconds of the training process and of the tracker's background process (none
when the training's torch threads use every core: the jobs then run inline) move less.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from overhead import machine
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, Trainer, TrainingArguments

from concept_tracker import BudgetConfig, OutputConfig, TokenPlayers
from concept_tracker.integrations.transformers import ConceptTrackerCallback

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CUES = ["good", "great", "not"]
FILLERS = ["the", "movie", "film", "was", "is", "really", "very", "plot", "acting", "story", "quite", "and"]
WORDS = 12


def dataset(tokenizer: BertTokenizer, size: int, seed: int) -> list[dict]:
    """``size`` tokenized sentences of ``WORDS`` words with their labels."""
    rng = random.Random(seed)
    items = []
    for _ in range(size):
        words = rng.choices(FILLERS, k=WORDS)
        for cue in CUES:
            if rng.random() < 0.45:
                words[rng.randrange(WORDS)] = cue
        label = int(("good" in words or "great" in words) and "not" not in words)
        items.append({**tokenizer(" ".join(words)), "label": label})
    return items


def run(variant: str, args: argparse.Namespace, out: Path) -> dict:
    """One training run; wall seconds of ``trainer.train()`` and the tracked steps."""
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(SPECIALS + CUES + FILLERS)})
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=512, max_position_embeddings=32, num_labels=2,
    )
    model = BertForSequenceClassification(config)
    callbacks = []
    if variant == "budget":
        callbacks.append(
            ConceptTrackerCallback(
                TokenPlayers(n=8), budget=BudgetConfig(max_overhead=args.budget),
                output=OutputConfig(figures=not args.no_figures), strict=True,
            )
        )
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=1e-3,
            logging_steps=100, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
            dataloader_num_workers=0,
        ),
        train_dataset=dataset(tokenizer, 4096, seed=1),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    tracked = callbacks[0].tracker.state_dict()["trajectory"]["steps"] if callbacks else []
    return {"seconds": seconds, "tracked": tracked, "cpu": cpu, "child_cpu": child}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--no-figures", action="store_true", help="track without the matplotlib figures")
    parser.add_argument("--output", help="write the results as Markdown to this file")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict]] = {"none": [], "budget": []}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for r in range(args.repeats):
            for variant in ("none", "budget") if r % 2 == 0 else ("budget", "none"):
                result = run(variant, args, Path(tmp) / f"{variant}_{r}")
                results[variant].append(result)
                print(f"repeat {r + 1} {variant}: {result['seconds']:.1f} s, tracked {result['tracked']}; CPU: "
                      f"training process {result['cpu']:.1f} s, background process {result['child_cpu']:.1f} s; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    ratios = [b["seconds"] / n["seconds"] for b, n in zip(results["budget"], results["none"])]
    tracked = results["budget"][-1]["tracked"]
    table = (
        f"Machine: {machine(torch.device('cpu'))}. Load average (1 min) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores).\n"
        f"HF Trainer, 4-layer 128-wide BERT, {args.steps} steps of batch {args.batch}, "
        f"ConceptTrackerCallback(TokenPlayers(n=8), max_overhead={args.budget}"
        f"{', figures=False' if args.no_figures else ''}); {args.repeats} interleaved repeats.\n\n"
        "| variant | seconds (median) | ratio to untracked (median) | per repeat | tracked steps (last run) |\n"
        "|---|---:|---:|---|---|\n"
        f"| none | {statistics.median(r['seconds'] for r in results['none']):.1f} | 1.000 | | |\n"
        f"| max_overhead={args.budget} | {statistics.median(r['seconds'] for r in results['budget']):.1f} | "
        f"{statistics.median(ratios):.3f} | {', '.join(f'{x:.3f}' for x in ratios)} | {len(tracked)}: {tracked} |\n"
    )
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table)


if __name__ == "__main__":
    main()
