"""Wall-time overhead of tracking: the demo's training with and without a ConceptTracker.

    python benchmarks/overhead.py [--steps 10000] [--batch 64] [--repeats 2] [--variants none,default,budget] [--budget 0.05]
                                  [--device cuda] [--output overhead.md]

The training is the demo's (``concept_tracker.demo``): the MLP 64-256-256-10 on 1,000 digits,
Adam, minibatches of ``--batch`` (default the demo's 64), clean labels, one torch thread; the
tracker is the demo's too (AND-OR interactions of 10 image patches on 32 training and 32
held-out probes, the solver capped at 300 iterations, figures on: drawn at the 1st, 2nd, 4th,
... tracked step and at close; post-processing in the tracker's background worker process), with two
schedules:

- default: ``schedule=None``, the tracker's default ``log_spaced(0, 10000, 20) | every(1000)``;
- budget: the same schedule with ``max_overhead=--budget`` (default 0.05) and ``total_steps=--steps``, so the
  budget plans the tracked steps (first, last, the rest log-spaced) from the measured first one.

The variants train from the same seed and batches, in turn, ``--repeats`` times, rotating the
order so that a slow spell of a shared machine does not always hit the same variant. Reported:
seconds per variant (median over repeats), ratio to the untracked run (median of per-repeat
ratios), tracked steps (first and last marked) and skipped steps. Targets: budget <= 1.07x with
at least 4 tracked steps including the first and the last (issue 14: 20,000 steps, batch 128).
Each run also prints what load does not move much: the CPU seconds of the training process and
of the tracker's background process (its start-up, steps and figures), and for a tracked run
the budget's measured contention (the share of the background CPU time that slowed training).

"Where the time goes" times, after 300 training steps: one training step; the bare forwards of
the 65,536 masked rows of the 64 probes (built beforehand, chunks of 4,096, under
``inference_mode``); the training stall of a tracked step (``tracker.step`` with the background
worker; target <= 1.10x the bare forwards) and the worker's time for it; and a tracked step with
``sync=True`` (everything inline). The results go to ``--output`` as Markdown, with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from timing import sync, timed
from torch import nn

from concept_tracker import BudgetConfig, ConceptTracker, OutputConfig, select_probes
from concept_tracker.demo import DemoConfig, Digits, build_model, demo_players, load_digits_split, solver_config
from concept_tracker.tracker import DEFAULT_SCHEDULE

VARIANTS = ("none", "default", "budget")


def setup(args: argparse.Namespace, data: Digits, device: torch.device) -> tuple:
    """The demo's config, a freshly seeded model and optimizer, the minibatch generator and the
    training data on ``device``: every run starts from the same state."""
    demo = DemoConfig(kind=args.kind)
    torch.manual_seed(args.seed)
    model = build_model(demo.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=demo.lr)
    batches = torch.Generator().manual_seed(args.seed + 1)
    return demo, model, optimizer, batches, data.train_x.to(device), data.train_y.to(device)


def train(variant: str, args: argparse.Namespace, data: Digits, device: torch.device, log_dir: Path) -> dict:
    """One training run of ``args.steps`` optimizer steps; returns wall seconds and tracker counts."""
    demo, model, optimizer, batches, x, y = setup(args, data, device)
    tracker = None
    if variant != "none":
        budget = variant == "budget"
        tracker = demo_tracker(args, demo, data, log_dir, BudgetConfig(
            max_overhead=args.budget if budget else None, total_steps=args.steps if budget else None))
    sync(device)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    for step in range(args.steps + 1):
        if tracker is not None:
            tracker.step(model, step, last=step == args.steps)
        if step == args.steps:
            break
        index = torch.randint(0, len(y), (args.batch,), generator=batches).to(device)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if tracker is not None:
        tracker.close()  # timed: it waits for the background worker
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    steps = tracker.state_dict()["trajectory"]["steps"] if tracker is not None else []
    scheduled = sum(DEFAULT_SCHEDULE(s) or s == args.steps for s in range(args.steps + 1)) if tracker else 0
    contention = tracker._timing.contention if tracker is not None else None
    return {"seconds": seconds, "tracked": steps, "skipped": scheduled - len(steps), "cpu": cpu, "child_cpu": child,
            "contention": contention}


def demo_tracker(args: argparse.Namespace, demo: DemoConfig, data: Digits, log_dir: Path, budget: BudgetConfig) -> ConceptTracker:
    """The demo's tracker: 10 image patches, ``args.probes`` training and held-out probes."""
    probes = select_probes(data.train_x, args.probes, labels=data.train_y, seed=args.seed)
    heldout = select_probes(data.test_x, args.probes, labels=data.test_y, seed=args.seed)
    return ConceptTracker(
        demo_players(data.train_x), probes, heldout, log_dir=log_dir, schedule=None,
        kind=solver_config(demo) or args.kind, output=OutputConfig(figures=not args.no_figures), budget=budget,
        strict=True,
    )


def step_costs(args: argparse.Namespace, data: Digits, device: torch.device, log_dir: Path) -> list[tuple[str, float]]:
    """Where the time goes, after 300 training steps: one training step, the bare forwards of the
    probes' masked rows, and per tracked step (the 2nd to 5th, taking turns with the bare
    forwards) the training stall with the background worker, the worker's time (the child's
    seconds for the step's job), and the stall
    with ``sync=True``; medians."""
    demo, model, optimizer, batches, x, y = setup(args, data, device)

    def train_steps(count: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(count):
            index = torch.randint(0, len(y), (args.batch,), generator=batches).to(device)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return (time.perf_counter() - start) / count

    train_steps(300)
    probes = select_probes(data.train_x, args.probes, labels=data.train_y, seed=args.seed)
    heldout = select_probes(data.test_x, args.probes, labels=data.test_y, seed=args.seed)
    players = demo_players(data.train_x)
    samples = torch.cat([probes.inputs, heldout.inputs]).to(device)
    players.prepare(samples)
    masker = players.batch_masker(list(samples))
    total, chunk = len(samples) << players.n, 4096
    masked = [masker(start, min(start + chunk, total)).clone() for start in range(0, total, chunk)]

    def forwards() -> None:
        with torch.inference_mode():
            for part in masked:
                model(part)

    trackers = {mode: demo_tracker(args, demo, data, log_dir / mode, BudgetConfig(sync=mode == "sync"))
                for mode in ("worker", "sync")}
    for tracker in trackers.values():
        tracker.step(model, 0)  # the first step pays one-off costs (writer, fonts, cold solver)
        tracker.summaries(wait=True)
    times: dict[str, list[float]] = {"forwards": [], "worker": [], "stall": [], "sync": []}
    for step in (1, 2, 3, 4):
        times["forwards"].append(timed(forwards, device)[0])
        times["stall"].append(timed(lambda step=step: trackers["worker"].step(model, step), device)[0])
        trackers["worker"].summaries(wait=True)
        times["worker"].append(trackers["worker"]._timing.worker_cost or 0.0)
        times["sync"].append(timed(lambda step=step: trackers["sync"].step(model, step), device)[0])
    for tracker in trackers.values():
        tracker.close()
    rows = 2 * args.probes << players.n
    return [
        (f"one training step (batch {args.batch})", train_steps(200)),
        (f"bare forwards of the {rows:,} masked rows", statistics.median(times["forwards"])),
        (f"tracked step, kind={args.kind}: training stall (background worker)", statistics.median(times["stall"])),
        ("  its background work (decomposition, summary, store, writes)", statistics.median(times["worker"])),
        (f"tracked step, kind={args.kind}, sync=True: training stall", statistics.median(times["sync"])),
    ]


def machine(device: torch.device) -> str:
    """CPU model and cores (and the GPU when used), torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10000, help="training steps per run (default 10000, the default schedule's span)")
    parser.add_argument("--batch", type=int, default=DemoConfig().batch_size, help="training minibatch size (default: the demo's)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of none,default,budget (none is always run)")
    parser.add_argument("--no-costs", action="store_true", help="skip the 'where the time goes' table")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the variants (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--kind", default="and_or", choices=("and", "or", "and_or"), help="interaction kind (default and_or, as the demo)")
    parser.add_argument("--probes", type=int, default=32, help="training and held-out probes each (default 32, as the demo)")
    parser.add_argument("--no-figures", action="store_true", help="track without the matplotlib figures")
    parser.add_argument("--threads", type=int, default=DemoConfig().threads, help="torch intra-op threads (default: the demo's)")
    parser.add_argument("--budget", type=float, default=0.05, help="max_overhead of the budget variant (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the results as Markdown to this file")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1.")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    data = load_digits_split(DemoConfig().train_size, args.seed)

    variants = ["none"] + [v for v in VARIANTS[1:] if v in args.variants.split(",")]
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        costs = [] if args.no_costs else step_costs(args, data, device, Path(tmp) / "costs")
        if costs:
            print("\n".join(f"{label}: {seconds:.4f} s" for label, seconds in costs), flush=True)
        # The budget variant warns once when its plan cuts the schedule; the table shows the steps.
        warnings.simplefilter("ignore", UserWarning)
        for r in range(args.repeats):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                result = train(variant, args, data, device, Path(tmp) / f"{variant}_{r}")
                results[variant].append(result)
                contention = "" if result["contention"] is None else f", contention {result['contention']:.2f}"
                print(f"repeat {r + 1}/{args.repeats} {variant:>7}: {result['seconds']:.1f} s, "
                      f"tracked {result['tracked']}, {result['skipped']} skipped; CPU: training process "
                      f"{result['cpu']:.1f} s, background process {result['child_cpu']:.1f} s{contention}; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)

    rows = []
    for variant in variants:
        runs = results[variant]
        ratios = [run["seconds"] / base["seconds"] for run, base in zip(runs, results["none"])]
        rows.append((variant, statistics.median(r["seconds"] for r in runs), statistics.median(ratios), ratios,
                     runs[-1]["tracked"], runs[-1]["skipped"]))
    targets = {"none": "", "default": "", "budget": "<= 1.07, >= 4 tracked incl. first and last"}
    lines = [
        "| variant | seconds (median) | ratio to untracked (median) | per repeat | target | tracked steps (last run) | skipped steps |",
        "|---|---:|---:|---|---|---|---:|",
    ]
    lines += [
        f"| {name} | {seconds:.1f} | {ratio:.3f} | {', '.join(f'{r:.3f}' for r in ratios)} | {targets[name]} | "
        f"{len(tracked)}: {tracked if len(tracked) <= 12 else str(tracked[:6])[:-1] + ', ..., ' + str(tracked[-3:])[1:]} | {skipped} |"
        for name, seconds, ratio, ratios, tracked, skipped in rows
    ]
    header = (
        f"Machine: {machine(device)}, device {device}.\n"
        f"Training: the demo's MLP on digits, {args.steps} steps, batch {args.batch}. Tracker: kind={args.kind}, "
        f"{args.probes}+{args.probes} probes, n=10, figures {'off' if args.no_figures else 'on'}, "
        f"default schedule {DEFAULT_SCHEDULE!r}; budget = max_overhead={args.budget}, total_steps={args.steps}. "
        f"{args.repeats} interleaved repeats. Load average (1 min) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores): other work on a shared machine slows every "
        "variant unevenly.\n"
    )
    if costs:
        train_step, forwards = costs[0][1], costs[1][1]
        lines += [
            "",
            "Where the time goes (after 300 training steps; medians over the 2nd-5th tracked steps):",
            "",
            "| what | seconds | training steps | x bare forwards |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {label} | {seconds:.4f} | {seconds / train_step:,.0f} | {seconds / forwards:.2f} |"
            for label, seconds in costs
        ]
    table = header + "\n" + "\n".join(lines)
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n")
        print(f"\nWrote {args.output}")


if __name__ == "__main__":
    main()
