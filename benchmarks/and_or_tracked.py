"""AND-OR solver on a shared CPU and along a tracked training run.

    python benchmarks/and_or_tracked.py [--quick] [--threads 1] [--skip-shared]
        [--max-iter 300] [--tol 0.05] [--before REV] [--reference 8] [--lp 2]

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
   ``inference_mode``, best of 3) and ``decompose`` on their values, warm-started from its own
   result at the previous tracked step as the tracker does, with the demo's solver settings
   (``--max-iter`` / ``--tol`` override them). Target (issue 20): median over the tracked steps
   of decompose / forwards <= 3, objective within 1% of the LP optimum.

   ``--before REV`` also runs ``concept_tracker/and_or.py`` as it was at git revision ``REV``
   (same settings, its own warm starts), timed in turn with the current one.
   ``--reference k`` (default 8) solves the first ``k`` samples of every step cold with 3,000
   iterations and a 0.1% tolerance; their objective stands in for the optimum (``obj / ref``),
   and their certified lower bound gives a proven upper bound on the distance to it
   (``obj / lower``). ``--lp k`` solves the first ``k`` samples of the last step exactly with
   HiGHS (minutes per sample at n = 10).

Forwards and solver run on ``--threads`` intra-op threads (default 1, as in the background
worker); the solver picks its own count below that.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from and_or import machine, mlp_values  # noqa: E402
from timing import timed  # noqa: E402

import concept_tracker.threads as threads  # noqa: E402
from concept_tracker import demo  # noqa: E402
from concept_tracker.and_or import AndOrConfig, and_or_objective, decompose  # noqa: E402

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


def load_revision(rev: str) -> ModuleType:
    """``concept_tracker/and_or.py`` as it was at git revision ``rev``, as a module of the package."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{rev}:concept_tracker/and_or.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp())
    path = folder / "and_or_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("concept_tracker.and_or_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ratios(objective: torch.Tensor, reference: torch.Tensor) -> str:
    rel = objective[: len(reference)] / reference
    return f"{rel.median().item():.4f} / {rel.max().item():.4f}"


def tracked_run(
    steps: int, tracked: int, probes: int, settings: dict, before: str | None, reference: int, lp: int
) -> None:
    from concept_tracker.engine import compute_interactions
    from concept_tracker.probes import select_probes
    from concept_tracker.schedules import log_spaced

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

    solvers = {"after": (decompose, AndOrConfig(**settings))}
    if before:
        old = load_revision(before)
        solvers["before"] = (old.decompose, old.AndOrConfig(**settings))
    previous: dict[str, object] = dict.fromkeys(solvers)
    table: list[dict] = []
    last_values = torch.empty(0)
    for step in range(steps + 1):
        if schedule.fires(step):
            values = compute_interactions(model, x, players, target=y, kind="and").outputs.double()
            row: dict = {"step": step, "forwards": min(timed(forwards, CPU)[0] for _ in range(3))}
            for name, (solve, config) in solvers.items():
                res = previous[name]
                start = None if res is None else (res.gamma, res.q)  # type: ignore[attr-defined]
                seconds, res = timed(partial(solve, values, config, warm_start=start), CPU)
                previous[name] = res
                row[name] = (seconds, res.iterations, and_or_objective(res.and_effects, res.or_effects))
            if reference:
                ref = decompose(values[:reference], AndOrConfig(max_iter=3000, tol=0.001))
                row["ref"] = and_or_objective(ref.and_effects, ref.or_effects)
                row["lower"] = row["ref"] * (1 - ref.gap)
            table.append(row)
            last_values = values
        if step == steps:
            break
        index = torch.randint(0, len(data.train_y), (64,), generator=batches)
        loss = torch.nn.functional.cross_entropy(model(data.train_x[index]), data.train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"\n### Tracked run: {len(x)} probes, n = {players.n}, AndOrConfig({settings}), warm-started\n")
    head = "| step | forwards |"
    rule = "|---|---|"
    for name in solvers:
        head += f" {name}: decompose | / forwards | iterations |"
        rule += "---|---|---|"
        if reference:
            head += f" {name}: obj / ref (median / max) | obj / lower (max) |"
            rule += "---|---|"
    print(head)
    print(rule)
    for row in table:
        line = f"| {row['step']} | {row['forwards']:.3f} s |"
        for name in solvers:
            seconds, iterations, objective = row[name]
            line += f" {seconds:.3f} s | {seconds / row['forwards']:.2f} | {iterations} |"
            if reference:
                rel = objective[:reference] / row["lower"]
                line += f" {ratios(objective, row['ref'])} | {rel.max().item():.4f} |"
        print(line)
    print()
    for name in solvers:
        ratio = statistics.median(row[name][0] / row["forwards"] for row in table)
        print(f"{name}: median decompose / forwards {ratio:.2f} (target <= 3)")
        if reference:
            rel = torch.cat([row[name][2][:reference] / row["ref"] for row in table])
            print(
                f"{name}: obj / ref over {len(rel)} sample-steps: median {rel.median().item():.4f}, "
                f"90th percentile {rel.quantile(0.9).item():.4f}, max {rel.max().item():.4f}"
            )
    if lp:
        from oracles_lp import lp_and_or

        for i in range(lp):
            optimum = lp_and_or(last_values[i])[0]
            got = " ".join(f"{name} {row[name][2][i].item() / optimum:.5f}" for name in solvers)
            print(f"last step, sample {i}: objective / LP optimum: {got}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training run, fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--lp", type=int, default=0, help="samples of the last step solved exactly (slow)")
    parser.add_argument("--skip-shared", action="store_true", help="only the tracked run")
    demo_config = demo.solver_config(demo.DemoConfig())
    parser.add_argument("--max-iter", type=int, default=demo_config.max_iter, help="solver cap (default: the demo's)")
    parser.add_argument("--tol", type=float, default=demo_config.tol, help="solver tolerance (default: the demo's)")
    parser.add_argument("--before", default=None, help="git revision whose and_or.py runs beside (e.g. main)")
    parser.add_argument("--reference", type=int, default=8, help="samples per step solved to a reference (0: none)")
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
    tracked_run(
        steps=100 if args.quick else 1500,
        tracked=6 if args.quick else 16,
        probes=32,
        settings={"max_iter": args.max_iter, "tol": args.tol},
        before=args.before,
        reference=args.reference,
        lp=args.lp,
    )
    if hasattr(os, "getloadavg"):
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
