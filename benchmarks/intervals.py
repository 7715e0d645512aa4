"""Cost of the bootstrap intervals on a tracked step, measured side by side with and without.

The demo's setting: the MLP 64-256-256-10 (briefly trained on the digits), the inkiest 10 of
16 image patches as players (n = 10), 32 training + 32 held-out probes. Two trackers track the
same model at alternating steps; one has the intervals switched off (the summary's
``interval_scalars`` replaced by a no-op), so the difference is what they add to a tracked
step. Figures are off in both (they cost the same either way). Under machine load that
difference is noisy (the AND-OR solver's time varies more than the intervals take), so the
intervals are also timed alone, on the last tracked step's stored interactions.

    python benchmarks/intervals.py [--kind and] [--kind and_or] [--repeats 5] [--threads 1]

The last line printed is JSON: best-of-repeats seconds per tracked step, per kind and variant.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any
from unittest import mock

import torch
from timing import best_time, race

from concept_tracker import summary
from concept_tracker.demo import DemoConfig, build_model, demo_players, load_digits_split, solver_config
from concept_tracker.probes import ProbeSet, select_probes
from concept_tracker.schedules import every
from concept_tracker.store import load_step, step_path
from concept_tracker.tracker import ConceptTracker


def measure(
    kind: str, model: torch.nn.Module, data: Any, probes: ProbeSet, heldout: ProbeSet, repeats: int
) -> dict[str, float]:
    """Best seconds per tracked step with and without intervals (interleaved), their
    difference, and the intervals alone on the last tracked step's interactions."""
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as root:
        trackers = {
            variant: ConceptTracker(
                demo_players(data.train_x),
                probes.inputs,
                probes.labels,
                heldout_inputs=heldout.inputs,
                heldout_targets=heldout.labels,
                log_dir=f"{root}/{variant}",
                schedule=every(1),
                kind=kind,
                and_or=solver_config(DemoConfig(kind=kind)),
                figures=False,
                store=variant == "with intervals",
                strict=True,
            )
            for variant in ("with intervals", "without intervals")
        }
        steps = {variant: iter(range(10**6)) for variant in trackers}

        def tracked(variant: str) -> None:
            tracker = trackers[variant]
            if variant == "without intervals":
                with mock.patch.object(summary, "interval_scalars", lambda *a, **k: {}):
                    tracker.step(model, next(steps[variant]))
            else:
                tracker.step(model, next(steps[variant]))

        seconds = race({v: (lambda v=v: tracked(v)) for v in trackers}, repeats, cpu)
        tracker = trackers["with intervals"]
        last = tracker._steps.trajectory.steps[-1]
        res = load_step(step_path(tracker.log_dir, last))[0]
        held = load_step(step_path(tracker.log_dir, last, "heldout"))[0]
        alone = best_time(lambda: summary.interval_scalars(res, tracker._steps.trajectory, held), repeats, cpu)[0]
        for t in trackers.values():
            t.close()
    seconds["intervals"] = seconds["with intervals"] - seconds["without intervals"]
    seconds["intervals alone"] = alone
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", action="append", choices=("and", "and_or"), help="kinds to measure (default both)")
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_digits_split(1000, seed=0)
    model = build_model(256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):  # a little training, so that concepts are not those of random weights
        index = torch.randint(0, 1000, (64,))
        loss = torch.nn.functional.cross_entropy(model(data.train_x[index]), data.train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probes = select_probes(data.train_x, args.probes, labels=data.train_y, seed=0)
    heldout = select_probes(data.test_x, args.probes, labels=data.test_y, seed=0)
    results: dict[str, dict[str, float]] = {}
    for kind in args.kind or ["and", "and_or"]:
        seconds = measure(kind, model, data, probes, heldout, args.repeats)
        results[kind] = seconds
        print(f"kind={kind} B={args.probes}+{args.probes} n=10 threads={args.threads}")
        for name, value in seconds.items():
            print(f"  {name:20s} {1000 * value:8.1f} ms")
        print(
            f"  intervals add {seconds['intervals'] / seconds['without intervals']:.0%} to a tracked step (difference)"
        )
        print(f"  intervals alone: {seconds['intervals alone'] / seconds['without intervals']:.0%} of a tracked step")
    print(json.dumps({"probes": args.probes, "n": 10, "threads": args.threads, "seconds": results}))


if __name__ == "__main__":
    main()
