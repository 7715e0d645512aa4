"""AND-OR solver on a shared CPU and along a tracked training run.

    python benchmarks/and_or_tracked.py [--quick] [--threads 1] [--lp 2]

Two measurements, each side by side in one process:

1. **Shared CPU.** ``decompose`` on 8 samples at n = 10 (values of a seeded ReLU MLP), median
   of 5 calls, first on a quiet machine, then with two busy-loop Python processes started by
   this script beside it. Both with the library's size-aware threading and with it switched
   off (every op on torch's default thread count, the behaviour before
   :mod:`concept_tracker.threads`). Target: loaded <= 3x quiet.
2. **Tracked run.** The demo's MLP (64 -> 256 -> 256 -> 10, Adam) trains on scikit-learn's
   digits for 1,500 steps; at the demo's 16 log-spaced steps, 32 training + 32 test probes
   (n = 10 patches, 65,536 masked rows) are valued once. Per tracked step, timed in turn: the
   bare forwards of those masked rows (built beforehand, chunks of 4,096 rows, under
   ``inference_mode``) and ``decompose`` on their values, warm-started from the previous
   tracked step as the tracker does. Target: median ratio <= 3. ``--lp k`` solves the first
   ``k`` samples of the last step exactly with HiGHS (minutes per sample at n = 10).

Forwards and solver run on ``--threads`` intra-op threads (default 1, as in the issue's
measurement); the solver picks its own count below that.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import concept_tracker.threads as threads  # noqa: E402
from and_or import machine, mlp_values  # noqa: E402
from concept_tracker.and_or import AndOrConfig, and_or_objective, decompose  # noqa: E402
from timing import timed  # noqa: E402

CPU = torch.device("cpu")


def busy_loop() -> None:
    """Burn one core until killed."""
    while True:
        pass


def median_time(fn, repeats: int) -> float:
    fn()
    return statistics.median(timed(fn, CPU)[0] for _ in range(repeats))


def shared_cpu(repeats: int, samples: int) -> None:
    values = mlp_values(10, samples, seed=7, device=CPU)
    config = AndOrConfig()

    def solve() -> None:
        decompose(values, config)

    per_thread = threads.ELEMENTS_PER_THREAD
    results: dict[tuple[str, str], float] = {}
    for load in ("quiet", "2 busy processes"):
        busy = []
        if load != "quiet":
            ctx = mp.get_context("spawn")
            busy = [ctx.Process(target=busy_loop, daemon=True) for _ in range(2)]
            for p in busy:
                p.start()
            time.sleep(1.0)
        try:
            for mode, elements in (("size-aware", per_thread), ("all threads", 1)):
                threads.ELEMENTS_PER_THREAD = elements
                results[(mode, load)] = median_time(solve, repeats)
        finally:
            threads.ELEMENTS_PER_THREAD = per_thread
            for p in busy:
                p.kill()
                p.join()
    print(f"\n### Shared CPU: decompose, n = 10, {samples} samples, median of {repeats}\n")
    print("| threading | quiet | 2 busy processes | loaded / quiet |")
    print("|---|---|---|---|")
    for mode in ("size-aware", "all threads"):
        quiet, loaded = results[(mode, "quiet")], results[(mode, "2 busy processes")]
        print(f"| {mode} | {quiet:.2f} s | {loaded:.2f} s | {loaded / quiet:.2f} |")


def tracked_run(steps: int, tracked: int, probes: int, lp: int) -> None:
    from concept_tracker import demo
    from concept_tracker.engine import compute_interactions
    from concept_tracker.schedules import log_spaced
    from concept_tracker.probes import select_probes

    data = demo.load_digits_split(1000, seed=0)
    train = select_probes(data.train_x, probes, labels=data.train_y, seed=0)
    test = select_probes(data.test_x, probes, labels=data.test_y, seed=0)
    x, y = torch.cat([train.inputs, test.inputs]), torch.cat([train.labels, test.labels])
    players = demo.demo_players(data.train_x)
    players.prepare(x)
    rows = players.batch_masker(list(x))
    total = len(x) << players.n
    chunk = 4096
    masked = [rows(start, min(start + chunk, total)).clone() for start in range(0, total, chunk)]

    torch.manual_seed(0)
    model = demo.build_model(256)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = torch.Generator().manual_seed(1)
    schedule = log_spaced(0, steps, tracked)

    def forwards() -> None:
        with torch.inference_mode():
            for part in masked:
                model(part)

    config = AndOrConfig()
    previous = None
    table = []
    for step in range(steps + 1):
        if schedule.fires(step):
            values = compute_interactions(model, x, players, target=y, kind="and").outputs.double()
            start = None if previous is None else (previous.gamma, previous.q)
            t_fwd = min(timed(forwards, CPU)[0] for _ in range(3))
            t_solve, previous = timed(lambda: decompose(values, config, warm_start=start), CPU)
            table.append((step, t_fwd, t_solve, previous.iterations, previous.gap.max().item()))
            last_values = values
        if step == steps:
            break
        index = torch.randint(0, len(data.train_y), (64,), generator=batches)
        loss = torch.nn.functional.cross_entropy(model(data.train_x[index]), data.train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"\n### Tracked run: {len(x)} probes, n = {players.n}, AndOrConfig() defaults, warm-started\n")
    print("| step | forwards | decompose | decompose / forwards | iterations | largest certified gap |")
    print("|---|---|---|---|---|---|")
    for step, t_fwd, t_solve, iterations, gap in table:
        print(f"| {step} | {t_fwd:.3f} s | {t_solve:.3f} s | {t_solve / t_fwd:.1f} | {iterations} | {gap:.4f} |")
    ratios = [t_solve / t_fwd for _, t_fwd, t_solve, _, _ in table]
    print(f"\nmedian decompose / forwards: {statistics.median(ratios):.1f} (target <= 3)")
    objective = and_or_objective(previous.and_effects, previous.or_effects)
    print(f"last step: certified gap median {previous.gap.median().item():.4f}, largest {previous.gap.max().item():.4f}")
    if lp:
        from oracles_lp import lp_and_or

        for i in range(lp):
            optimum = lp_and_or(last_values[i])[0]
            print(f"sample {i}: objective / LP optimum = {objective[i].item() / optimum:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training run, fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--lp", type=int, default=0, help="samples of the last step solved exactly (slow)")
    parser.add_argument("--skip-shared", action="store_true", help="only the tracked run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device: {machine(CPU)}; torch {torch.__version__}")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
    if not args.skip_shared:
        # The loaded case needs the caller's default of 2+ threads to show the effect.
        torch.set_num_threads(os.cpu_count() or 1)
        shared_cpu(repeats=3 if args.quick else 5, samples=8)
        torch.set_num_threads(args.threads)
    tracked_run(steps=100 if args.quick else 1500, tracked=6 if args.quick else 16, probes=32, lp=args.lp)
    if hasattr(os, "getloadavg"):
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
