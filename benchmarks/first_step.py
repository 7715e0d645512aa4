"""The first tracked step's cost to training, and the background start-up, through the public API
only (so the same script times an older checkout: run it with that checkout's Python).

    python benchmarks/first_step.py [--kind and_or] [--probes 32] [--no-figures] [--repeats 3]

The demo's MLP after 100 Adam steps, the demo's tracker (10 image patches, ``--probes`` training
and held-out probes, the demo's solver settings), schedule ``at_steps([0, 20])``, figures on.
Timed, medians over ``--repeats`` fresh trackers: the training stall of tracked step 0 (the call
``tracker.step(model, 0)``); the time until step 0 is finished in the background
(``tracker.summaries(wait=True)`` right after it: the background start-up plus the step's
post-processing); the stall of tracked step 20, after 20 training steps; and ``close()``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import concept_tracker
from concept_tracker import ConceptTracker, at_steps, select_probes
from concept_tracker.demo import DemoConfig, build_model, demo_players, load_digits_split, solver_config


def one_run(args: argparse.Namespace, log_dir: Path) -> dict[str, float]:
    demo = DemoConfig(kind=args.kind)
    data = load_digits_split(demo.train_size, 0)
    torch.manual_seed(0)
    model = build_model(demo.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=demo.lr)
    batches = torch.Generator().manual_seed(1)

    def train(steps: int) -> None:
        for _ in range(steps):
            index = torch.randint(0, len(data.train_y), (demo.batch_size,), generator=batches)
            loss = nn.functional.cross_entropy(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    train(100)
    probes = select_probes(data.train_x, args.probes, labels=data.train_y, seed=0)
    heldout = select_probes(data.test_x, args.probes, labels=data.test_y, seed=0)
    tracker = ConceptTracker(
        demo_players(data.train_x), probes.inputs, probes.labels,
        heldout_inputs=heldout.inputs, heldout_targets=heldout.labels, log_dir=log_dir,
        schedule=at_steps([0, 20]), kind=args.kind, and_or=solver_config(demo), figures=not args.no_figures,
    )
    out = {}
    start = time.perf_counter()
    tracker.step(model, 0)
    out["stall of tracked step 0"] = time.perf_counter() - start
    tracker.summaries(wait=True)
    out["step 0 finished (from its start)"] = time.perf_counter() - start
    for step in range(1, 20):
        train(1)
        tracker.step(model, step)
    train(1)
    start = time.perf_counter()
    tracker.step(model, 20)
    out["stall of tracked step 20"] = time.perf_counter() - start
    start = time.perf_counter()
    tracker.close()
    out["close()"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="and_or", choices=("and", "or", "and_or"))
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(DemoConfig().threads)
    load = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for r in range(args.repeats):
            runs.append(one_run(args, Path(tmp) / str(r)))
    print(f"concept_tracker from {Path(concept_tracker.__file__).parent}, kind={args.kind}, "
          f"{args.probes}+{args.probes} probes, figures {'off' if args.no_figures else 'on'}, "
          f"{args.repeats} repeats, load average {load:.1f} -> {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    for label in runs[0]:
        values = [run[label] for run in runs]
        print(f"| {label} | {statistics.median(values):.2f} s | {', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
