"""The sampled order spectrum on a real Hugging Face run: does label noise shift the concepts to high orders?

A tiny BERT (``BertForSequenceClassification`` from a ``BertConfig``, random init; a WordPiece
tokenizer over a vocabulary this script writes) learns a planted rule with the ``Trainer``:
a prompt of 32 words is positive exactly when it holds "good" and not "not". The
``ConceptTrackerCallback`` tracks every word of 16 training prompts as a player (n = 32, far
above the exact readings' 20): the tracker reads the sampled order spectrum
(``ReadingsConfig(spectrum=...)``) at a few tracked steps. Each seed trains twice on the same
prompts and the same initial weights, once with clean labels and once with 30 % of the
training labels flipped, and the probes are the same 16 training prompts in both runs (with
their flipped labels in the noisy run, since those are what the model is fitted to).

The rule is simple (orders 1 and 2); a flipped label can only be fitted by memorizing its
prompt, a conjunction of many words. The interaction literature (Zhou et al., arXiv 2302.13091,
2405.10262) predicts that the noisy runs end with more of their salient strength in high orders.

Pre-registered (fixed in this file before the first full run; see ``PREREGISTERED``):

- bands: simple = orders 1-3, complex = orders >= 6 (as the issue's n = 64 target);
- per run, the complex share of the probe-mean salient strength (``band_shares`` of the strength
  averaged over probes, what ``spectrum/complex_share`` logs) at the last tracked step minus at
  the first (step 0, the initial model);
- the statistic: that change averaged over the seeds of the noisy runs minus of the clean runs
  (seeds paired: same prompts, same initial weights, same probes);
- its 95 % interval: percentile bootstrap resampling seeds (pairs) and, within each seed, probes
  (the same probe indices at both steps and in both runs);
- the shift shows iff the interval lies above 0. The same for the simple share (expected below
  0) is secondary, as are the per-level changes, the end-of-training shares and the complex
  share of the flipped versus the kept probes.

The estimator's own intervals (blocks and probes) of every tracked step are kept beside them.

    nice -n 5 python benchmarks/spectrum_hf.py                          # 10 min on a 2-core VM at load 9
    nice -n 5 python benchmarks/spectrum_hf.py --json docs/spectrum_hf.json --docs BENCHMARKS.md
    python benchmarks/spectrum_hf.py --render docs/spectrum_hf.json --docs BENCHMARKS.md   # docs only, no training

The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CUES = ("good", "not")
FILLERS = "the movie plot was acting film story really quite cast".split()
VOCAB = SPECIAL + list(CUES) + FILLERS


@dataclass(frozen=True)
class Setup:
    """One study's sizes (``FULL`` is the pre-registered run; the tests use a tiny one)."""

    words: int = 32
    train_size: int = 256
    test_size: int = 400
    steps: int = 400
    tracked: tuple[int, ...] = (0, 100, 200, 400)
    probes: int = 16
    forwards: int = 2000
    hidden: int = 32
    learning_rate: float = 3e-3
    noise: tuple[float, ...] = (0.0, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    simple_max: int = 3
    complex_min: int = 6
    resamples: int = 2000


FULL = Setup()
PREREGISTERED = {
    "statistic": "mean over seeds of [complex share(last tracked step) - complex share(step 0)], noise 0.3 minus noise 0",
    "share": "band share of the salient strength averaged over the probes (spectrum/complex_share)",
    "bands": {"simple_max": FULL.simple_max, "complex_min": FULL.complex_min},
    "interval": "95% percentile bootstrap over seeds (paired) and probes (the same indices at both steps and levels)",
    "shows_if": "the interval's lower end is above 0",
    "secondary": "the same for the simple share (expected below 0); per-level changes; end shares; flipped vs kept probes",
}


# ----------------------------------------------------------------------------- task and model


def write_vocabulary(folder: Path) -> Path:
    """Write ``VOCAB`` one token a line (``vocab.txt``, the WordPiece format) and return its path."""
    path = Path(folder) / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def build_tokenizer(folder: Path) -> Any:
    """A fast BERT tokenizer over the vocabulary written to ``folder``: ``[CLS] w1 ... wN [SEP]``."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(str(write_vocabulary(folder)), do_lower_case=False)


def prompt(rng: random.Random, words: int) -> tuple[list[str], int]:
    """``words`` filler words, "good" put in with probability 0.6 and "not" with 0.4 (distinct
    slots); label 1 iff "good" is there and "not" is not."""
    text = rng.choices(FILLERS, k=words)
    for cue, slot, chance in zip(CUES, rng.sample(range(words), 2), (0.6, 0.4)):
        if rng.random() < chance:
            text[slot] = cue
    return text, int("good" in text and "not" not in text)


def flipped_items(size: int, noise: float, seed: int) -> set[int]:
    """The training items whose label is flipped: ``round(noise * size)`` of them, seeded."""
    return set(random.Random(1000 + seed).sample(range(size), round(noise * size)))


def encode(tokenizer: Any, prompts: list[tuple[list[str], int]], flipped: set[int] = frozenset()) -> list[dict]:
    """Trainer items: token ids, attention mask and the label (flipped for the items in ``flipped``)."""
    items = []
    for i, (text, label) in enumerate(prompts):
        item = dict(tokenizer(" ".join(text)))
        item["labels"] = 1 - label if i in flipped else label
        items.append(item)
    return items


def build_model(setup: Setup, seed: int) -> torch.nn.Module:
    """A tiny ``BertForSequenceClassification`` (2 layers, random init from ``seed``)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=setup.hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * setup.hidden,
        max_position_embeddings=setup.words + 2,
        num_labels=2,
        pad_token_id=VOCAB.index("[PAD]"),
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


# ----------------------------------------------------------------------------- one run


def train_run(setup: Setup, noise: float, seed: int, folder: Path) -> dict[str, Any]:
    """Train one model with the callback; read back the sampled spectrum of every tracked step.

    Returns:
        ``{"noise", "seed", "steps": [...], "strength": [[B, n + 1] per step], "overall":
        [{band: (value, low, high)} per step], "flipped_probes": [B] bool (probe order: by
        training item), "accuracy": {...}, "train_seconds", "track_seconds", "forwards"}``.
    """
    from transformers import Trainer, TrainingArguments

    from concept_tracker import OutputConfig, ReadingsConfig, TokenPlayers, at_steps
    from concept_tracker.integrations.transformers import ConceptTrackerCallback
    from concept_tracker.store import SPECTRUM_DIR, load_spectrum

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    rng = random.Random(seed)
    prompts = [prompt(rng, setup.words) for _ in range(setup.train_size)]
    flipped = flipped_items(setup.train_size, noise, seed)
    train = encode(tokenizer, prompts, flipped)
    test_rng = random.Random(10_000 + seed)
    test = encode(tokenizer, [prompt(test_rng, setup.words) for _ in range(setup.test_size)])
    readings = ReadingsConfig(spectrum=setup.forwards, simple_max=setup.simple_max, complex_min=setup.complex_min)
    callback = ConceptTrackerCallback(
        TokenPlayers(n=setup.words),
        probe_dataset=train[: setup.probes],
        num_probe=setup.probes,
        schedule=at_steps(list(setup.tracked)),
        log_dir=folder / "concepts",
        readings=readings,
        output=OutputConfig(figures=False),
    )
    args = TrainingArguments(
        output_dir=str(folder / "out"),
        max_steps=setup.steps,
        per_device_train_batch_size=32,
        learning_rate=setup.learning_rate,
        warmup_steps=setup.steps // 20,
        logging_steps=max(1, setup.steps // 4),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=build_model(setup, seed), args=args, train_dataset=train, processing_class=tokenizer, callbacks=[callback]
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    ids = callback.tracker.state_dict()["probe"]["ids"]
    order = torch.argsort(torch.as_tensor(ids))  # probes by training item: the same in every run of a seed

    steps, strength, overall, forwards, track_seconds = [], [], [], 0, 0.0
    for path in sorted((folder / "concepts" / SPECTRUM_DIR).glob("step_*.safetensors")):
        tensors, meta = load_spectrum(path)
        steps.append(meta["step"])
        strength.append(tensors["strength"][order].tolist())
        overall.append({k: list(v) for k, v in meta["overall"].items()})
        forwards = meta["forwards"]
    track_seconds = _tracked_seconds(folder / "concepts")

    def accuracy(items: list[dict], keep: list[int] | None = None) -> float:
        predicted = torch.as_tensor(trainer.predict(items).predictions).argmax(-1)
        labels = torch.tensor([item["labels"] for item in items])
        right = (predicted == labels).float()
        return float(right.mean() if keep is None else right[keep].mean())

    kept = [i for i in range(setup.train_size) if i not in flipped]
    return {
        "noise": noise,
        "seed": seed,
        "steps": steps,
        "strength": strength,
        "overall": overall,
        "flipped_probes": [int(ids[i]) in flipped for i in order.tolist()],
        "accuracy": {
            "train_labels": accuracy(train),
            "flipped_labels": accuracy([train[i] for i in sorted(flipped)]) if flipped else None,
            "kept_labels": accuracy([train[i] for i in kept]),
            "clean_test": accuracy(test),
        },
        "forwards_per_step": forwards,
        "run_seconds": wall,
        "track_seconds": track_seconds,
    }


def _tracked_seconds(log_dir: Path) -> float:
    """Sum of ``perf/seconds`` over the tracked steps (the training stall of the tracking)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from concept_tracker.writers import tags

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return (
        float(sum(e.value for e in acc.Scalars(tags.PERF_SECONDS)))
        if tags.PERF_SECONDS in acc.Tags()["scalars"]
        else 0.0
    )


# ----------------------------------------------------------------------------- the statistic


def band_strength(strength: Tensor, simple_max: int, complex_min: int) -> Tensor:
    """Salient strength per band.

    Args:
        strength: [..., n + 1] salient strength per order (index 0, the empty set, ignored).
    Returns:
        [..., 3] float64 strength of the simple, medium and complex band.
    """
    s = strength.to(torch.float64)
    return torch.stack(
        [
            s[..., 1 : simple_max + 1].sum(-1),
            s[..., simple_max + 1 : complex_min].sum(-1),
            s[..., complex_min:].sum(-1),
        ],
        -1,
    )


def mean_shares(bands: Tensor) -> Tensor:
    """Band shares of the probe-mean strength (what ``spectrum/{band}_share`` logs).

    Args:
        bands: [..., B, 3] band strength per probe (:func:`band_strength`).
    Returns:
        [..., 3] simple, medium and complex share of ``bands.mean(-2)``.
    """
    mean = bands.mean(-2)
    return mean / mean.sum(-1, keepdim=True)


def shift_statistics(runs: list[dict], setup: Setup, seed: int = 0) -> dict[str, Any]:
    """The pre-registered statistic, its interval and the secondary figures.

    Args:
        runs: :func:`train_run` records, one per (noise, seed), every seed at every noise
            level of ``setup.noise`` (first: clean, last: noisy), probes in the same order.
    Returns:
        ``{"primary": {"complex": [value, low, high], "simple": [...], "shows": bool},
        "levels": {noise: {"complex_change", "simple_change", "end_complex", "end_simple"}},
        "flipped_vs_kept": {...}}``; changes are the last tracked step minus the first.
    """
    levels, seeds = list(setup.noise), sorted({r["seed"] for r in runs})
    by = {(r["noise"], r["seed"]): torch.tensor(r["strength"], dtype=torch.float64) for r in runs}
    # [level, seed, first/last step, probe, band]
    data = band_strength(
        torch.stack([torch.stack([by[(lv, s)][[0, -1]] for s in seeds]) for lv in levels]),
        setup.simple_max,
        setup.complex_min,
    )
    num_seeds, probes = data.shape[1], data.shape[3]
    gen = torch.Generator().manual_seed(seed)
    pick_seed = torch.randint(0, num_seeds, (setup.resamples, num_seeds), generator=gen)
    pick_probe = torch.randint(0, probes, (setup.resamples, num_seeds, probes), generator=gen)
    # [R, level, seed, step, probe, band]: seeds resampled as pairs, probes within each seed
    # (the same indices at both steps and both levels).
    boot = data[
        torch.arange(len(levels))[None, :, None, None, None],
        pick_seed[:, None, :, None, None],
        torch.arange(2)[None, None, None, :, None],
        pick_probe[:, None, :, None, :],
    ]
    shares, boot_shares = mean_shares(data), mean_shares(boot)  # [level, seed, step, 3], [R, ...]
    point_change = (shares[..., 1, :] - shares[..., 0, :]).mean(1)  # [level, 3]
    boot_change = (boot_shares[..., 1, :] - boot_shares[..., 0, :]).mean(2)  # [R, level, 3]
    point_end, boot_end = shares[..., 1, :].mean(1), boot_shares[..., 1, :].mean(2)

    def interval(point: Tensor, draws: Tensor) -> list[float]:
        low, high = torch.quantile(draws, torch.tensor([0.025, 0.975], dtype=torch.float64))
        return [float(point), float(low), float(high)]

    diff = point_change[-1] - point_change[0]
    boot_diff = boot_change[:, -1] - boot_change[:, 0]
    primary: dict[str, Any] = {
        "complex": interval(diff[2], boot_diff[:, 2]),
        "simple": interval(diff[0], boot_diff[:, 0]),
    }
    primary["shows"] = primary["complex"][1] > 0.0
    per_level = {
        str(lv): {
            "complex_change": interval(point_change[i, 2], boot_change[:, i, 2]),
            "simple_change": interval(point_change[i, 0], boot_change[:, i, 0]),
            "end_complex": interval(point_end[i, 2], boot_end[:, i, 2]),
            "end_simple": interval(point_end[i, 0], boot_end[:, i, 0]),
        }
        for i, lv in enumerate(levels)
    }
    return {
        "primary": primary,
        "levels": per_level,
        "flipped_vs_kept": flipped_vs_kept(runs, setup, levels[-1]),
        "order_shares": order_shares(runs, setup),
    }


PROFILE_ORDERS = 6
"""Orders shown one by one in the (exploratory) order profile; higher ones are pooled."""


def order_shares(runs: list[dict], setup: Setup) -> dict[str, dict[str, list[float]]]:
    """Exploratory, not pre-registered: the share of the probe-mean salient strength at orders
    1, ..., ``PROFILE_ORDERS - 1`` and at ``PROFILE_ORDERS`` and above, at the first and the last
    tracked step, averaged over the seeds of each noise level.

    Returns:
        ``{noise: {"first": [PROFILE_ORDERS shares], "last": [...]}}``.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for lv in setup.noise:
        strength = torch.tensor([r["strength"] for r in runs if r["noise"] == lv], dtype=torch.float64)
        mean = strength.mean(-2)[..., 1:]  # [seed, step, n]: probe-mean strength per order >= 1
        parts = torch.cat([mean[..., : PROFILE_ORDERS - 1], mean[..., PROFILE_ORDERS - 1 :].sum(-1, keepdim=True)], -1)
        shares = (parts / parts.sum(-1, keepdim=True)).mean(0)
        out[str(lv)] = {"first": shares[0].tolist(), "last": shares[-1].tolist()}
    return out


def flipped_vs_kept(runs: list[dict], setup: Setup, noise: float) -> dict[str, Any]:
    """End-of-training complex share of the probe-mean strength over the flipped and over the
    kept probes of the noisy runs (pooled over seeds), with their counts."""
    flipped, kept = [], []
    for r in runs:
        if r["noise"] != noise:
            continue
        last = torch.tensor(r["strength"][-1], dtype=torch.float64)
        mask = torch.tensor(r["flipped_probes"])
        flipped.append(last[mask])
        kept.append(last[~mask])
    out: dict[str, Any] = {}
    for name, parts in (("flipped", flipped), ("kept", kept)):
        pooled = band_strength(torch.cat(parts), setup.simple_max, setup.complex_min)
        share = float(mean_shares(pooled)[2]) if len(pooled) else float("nan")
        out[name] = {"probes": len(pooled), "complex_share": share}
    return out


# ----------------------------------------------------------------------------- docs


def markdown_block(results: dict[str, Any]) -> str:
    """The figures of the docs section, from the results JSON (nothing typed by hand)."""
    s = results["setup"]
    st = results["stats"]
    fmt = lambda v: f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"  # noqa: E731
    lines = [
        f"n = {s['words']} players (every word of the prompt), {s['probes']} probes, "
        f"{s['forwards']:,} forwards per probe sample ({results['runs'][0]['forwards_per_step']:,} per tracked step; "
        f"exact: 2**{s['words']} per probe), bands simple <= {s['simple_max']}, complex >= {s['complex_min']}; "
        f"tracked steps {', '.join(map(str, s['tracked']))} of {s['steps']}; seeds {', '.join(map(str, s['seeds']))}.",
        "",
        "| label noise | complex share, end - step 0 | simple share, end - step 0 | complex share at the end "
        "| simple share at the end | train acc. (flipped labels) | clean test acc. |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv, row in st["levels"].items():
        runs = [r for r in results["runs"] if str(r["noise"]) == lv]
        flipped = [r["accuracy"]["flipped_labels"] for r in runs if r["accuracy"]["flipped_labels"] is not None]
        memo = f"{sum(flipped) / len(flipped):.2f}" if flipped else "-"
        train_acc = sum(r["accuracy"]["train_labels"] for r in runs) / len(runs)
        test_acc = sum(r["accuracy"]["clean_test"] for r in runs) / len(runs)
        lines.append(
            f"| {float(lv):.1f} | {fmt(row['complex_change'])} | {fmt(row['simple_change'])} | "
            f"{fmt(row['end_complex'])} | {fmt(row['end_simple'])} | {train_acc:.2f} ({memo}) | {test_acc:.2f} |"
        )
    p = st["primary"]
    fk = st["flipped_vs_kept"]
    lines += [
        "",
        f"{'Pre-registered statistic' if setup_of(results) == FULL else 'The same statistic (not pre-registered here)'}"
        f", the noisy minus the clean change of the complex share: **{fmt(p['complex'])}**; "
        f"the shift {'shows' if p['shows'] else 'does not show'} (it shows iff the interval lies above 0). "
        f"Simple share, the same way: {fmt(p['simple'])}.",
        f"At the end of the noisy runs, the complex share over the {fk['flipped']['probes']} probes with a flipped "
        f"label is {fk['flipped']['complex_share']:.3f}, over the {fk['kept']['probes']} others "
        f"{fk['kept']['complex_share']:.3f}.",
        f"Widest interval the estimator gave one run's complex share at one step (blocks and probes): "
        f"{results['widest_estimator_interval']:.3f}.",
        "The estimator's own 95 % interval of the complex share (blocks and probes, widened by the strength of the "
        "orders no stage saw), mean of its bounds over seeds: "
        + "; ".join(
            f"noise {float(lv):.1f}: step {s['tracked'][0]} [{b[0][0]:.3f}, {b[0][1]:.3f}], "
            f"step {s['tracked'][-1]} [{b[1][0]:.3f}, {b[1][1]:.3f}]"
            for lv, b in estimator_bounds(results).items()
        )
        + ".",
        "",
        "Exploratory (not pre-registered): share of the probe-mean salient strength per order, mean over seeds.",
        "",
        "| label noise | step | "
        + " | ".join(f"order {m}" for m in range(1, PROFILE_ORDERS))
        + f" | orders >= {PROFILE_ORDERS} |",
        "|---|---|" + "---|" * PROFILE_ORDERS,
    ]
    for lv, by_step in st["order_shares"].items():
        for name, step in (("first", s["tracked"][0]), ("last", s["tracked"][-1])):
            lines.append(f"| {float(lv):.1f} | {step} | " + " | ".join(f"{v:.3f}" for v in by_step[name]) + " |")
    lines += [
        "",
        f"Machine: {results['machine']}, {results['threads']} torch thread, `nice -n 5`; "
        f"{results['wall_seconds'] / 60:.1f} min wall ({results['cpu_seconds'] / 60:.1f} min of CPU) for the "
        f"{len(results['runs'])} runs, the tracked steps {results['track_seconds'] / 60:.1f} min of it; "
        f"load average at the end {results['load']}.",
    ]
    return "\n".join(lines)


def estimator_bounds(results: dict[str, Any]) -> dict[str, list[list[float]]]:
    """Per noise level, the estimator's interval of the complex share (``overall``) at the first
    and the last tracked step, each bound averaged over seeds: ``{noise: [[low, high], [low, high]]}``."""
    out = {}
    for lv in results["setup"]["noise"]:
        runs = [r for r in results["runs"] if r["noise"] == lv]
        out[str(lv)] = [
            [sum(r["overall"][i]["complex_share"][j] for r in runs) / len(runs) for j in (1, 2)] for i in (0, -1)
        ]
    return out


BLOCK = "spectrum_hf"


def replace_block(text: str, block: str, name: str = BLOCK) -> str:
    """``text`` with the content between ``<!-- {name} -->`` and ``<!-- /{name} -->`` replaced by ``block``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"the docs have no {start} ... {end} block to fill.")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{start}\n{block}\n{end}", text, count=1)


# ----------------------------------------------------------------------------- main


def study(setup: Setup, root: Path) -> dict[str, Any]:
    """Every (noise, seed) run of ``setup`` under ``root`` and the statistics."""
    runs = []
    start, cpu = time.perf_counter(), time.process_time()
    for seed in setup.seeds:
        for noise in setup.noise:
            record = train_run(setup, noise, seed, root / f"noise{noise}_seed{seed}")
            runs.append(record)
            print(
                f"noise {noise} seed {seed}: complex share by step "
                + ", ".join(f"{st}: {o['complex_share'][0]:.3f}" for st, o in zip(record["steps"], record["overall"]))
                + f"; accuracy {record['accuracy']}; {record['run_seconds']:.0f} s",
                flush=True,
            )
    widest = max(o["complex_share"][2] - o["complex_share"][1] for r in runs for o in r["overall"])
    return {
        "setup": asdict(setup),
        "preregistered": PREREGISTERED,
        "runs": runs,
        "stats": shift_statistics(runs, setup),
        "widest_estimator_interval": widest,
        "wall_seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "threads": torch.get_num_threads(),
        "track_seconds": sum(r["track_seconds"] for r in runs),
        "machine": f"{os.cpu_count()}-core CPU VM, torch {torch.__version__}, {platform.machine()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def setup_of(results: dict[str, Any]) -> Setup:
    """The :class:`Setup` a results JSON was run with."""
    return Setup(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["setup"].items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here (e.g. docs/spectrum_hf.json)")
    parser.add_argument("--docs", type=Path, help="fill the <!-- spectrum_hf --> block of this file")
    parser.add_argument("--render", type=Path, help="read the runs from this JSON instead of running")
    parser.add_argument("--seeds", type=int, help="fewer seeds than the pre-registered 3 (a trial)")
    parser.add_argument("--forwards", type=int, help="forwards per probe sample instead of the pre-registered 2,000")
    parser.add_argument("--tracked", help="tracked steps instead of the pre-registered ones, e.g. 0,400")
    parser.add_argument("--block", default=BLOCK, help=f"name of the docs block to fill (default {BLOCK})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    # One thread: on a busy 2-core machine each parallel op of a model this small waits for a
    # descheduled second thread (about 20 ms per linear layer at load 10, 50x the op itself).
    torch.set_num_threads(args.threads)
    if args.render is not None:  # the statistics recomputed from the stored runs (seeded: the same figures)
        results = json.loads(args.render.read_text(encoding="utf-8"))
        results["stats"] = shift_statistics(results["runs"], setup_of(results))
    else:
        setup = FULL
        if args.seeds is not None:
            setup = replace(setup, seeds=tuple(range(args.seeds)))
        if args.forwards is not None:
            setup = replace(setup, forwards=args.forwards)
        if args.tracked is not None:
            setup = replace(setup, tracked=tuple(int(t) for t in args.tracked.split(",")))
        with tempfile.TemporaryDirectory() as root:
            results = study(setup, Path(root))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.docs is not None:
        args.docs.write_text(
            replace_block(args.docs.read_text(encoding="utf-8"), markdown_block(results), args.block),
            encoding="utf-8",
        )
    print(markdown_block(results))
    print(json.dumps({k: results[k] for k in ("stats", "wall_seconds", "load")}))


if __name__ == "__main__":
    main()
