"""Cost of the bootstrap intervals on one tracked step's data, beside the readings themselves.

The intervals depend on the shapes of the effects only, so the data are random effects of the
tracker's shapes: B probe and B held-out samples, kind "and_or" (two effect rows per sample),
n players, 10 classes, and a trajectory of a few steps for the detour ratio.

    python benchmarks/bootstrap.py [--samples 32] [--n 10] [--resamples 1000] [--threads 1]

The last line printed is JSON with the best-of-repeats seconds of each part.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import best_time

from concept_tracker import order_profile
from concept_tracker.dynamics import Trajectory
from concept_tracker.interactions import Interactions
from concept_tracker.metrics import band_summary, train_test_similarity
from concept_tracker.metrics.bootstrap import band_intervals, detour_intervals, train_test_similarity_intervals


def fake_interactions(samples: int, n: int, gen: torch.Generator) -> Interactions:
    shape = (samples, 1 << n)
    effects = [torch.randn(shape, generator=gen, dtype=torch.float64) * torch.rand(shape, generator=gen, dtype=torch.float64) ** 3 for _ in range(2)]
    targets = torch.arange(samples) % 10
    return Interactions(torch.zeros(shape, dtype=torch.float64), *effects, n=n, kind="and_or", targets=targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5, help="tracked steps in the trajectory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    train, test = fake_interactions(args.samples, args.n, gen), fake_interactions(args.samples, args.n, gen)
    traj = Trajectory()
    for step in range(args.steps):
        traj.append(step, torch.stack([train.and_effects, train.or_effects], dim=1) * (1 + 0.1 * step))
    path, disp = traj.detour_terms()
    r = args.resamples

    parts = {
        "readings (profile, bands, train-test, detour)": lambda: (
            band_summary(order_profile(train)),
            train_test_similarity(train, None, test, None),
            traj.detour_ratio(),
        ),
        "band_intervals": lambda: band_intervals(train, resamples=r),
        "train_test_similarity_intervals": lambda: train_test_similarity_intervals(train, test, resamples=r),
        "detour_intervals": lambda: detour_intervals(path, disp, resamples=r),
    }
    seconds = {name: best_time(fn, args.repeats, cpu)[0] for name, fn in parts.items()}
    seconds["all intervals"] = sum(v for k, v in seconds.items() if k.endswith("intervals"))
    print(f"B={args.samples} n={args.n} kind=and_or resamples={r} threads={args.threads}")
    for name, value in seconds.items():
        print(f"  {name:48s} {1000 * value:8.1f} ms")
    print(json.dumps({"samples": args.samples, "n": args.n, "resamples": r, "seconds": seconds}))


if __name__ == "__main__":
    main()
