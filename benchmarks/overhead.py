"""Wall-time overhead of tracking: the demo's training with and without a ConceptTracker.

    python benchmarks/overhead.py [--steps 10000] [--repeats 2] [--device cuda] [--output overhead.md]

The training is the demo's (``concept_tracker.demo``): the MLP 64-256-256-10 on 1,000 digits,
Adam, minibatches of 64, clean labels, one torch thread; the tracker is the demo's too (AND-OR
interactions of 10 image patches on 32 training and 32 held-out probes, the solver capped at
300 iterations, figures on: drawn at the 1st, 2nd, 4th, ... tracked step and at close), with
two schedules:

- default: ``schedule=None``, the tracker's default ``log_spaced(0, 10000, 20) | every(1000)``;
- budget: the same schedule with ``max_overhead=0.05``, which skips tracked steps to keep
  tracking under 5% of the wall time.

Three variants (no tracker, default, budget) train from the same seed and batches, in turn,
``--repeats`` times, rotating the order so that a slow spell of a shared machine does not always
hit the same variant. Reported: seconds per variant (median over repeats), ratio to the
untracked run (median of per-repeat ratios), tracked and skipped steps. Targets: default <= 1.10x,
budget <= 1.05x. The results go to ``--output`` as Markdown, with the machine named.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from concept_tracker import ConceptTracker, select_probes
from concept_tracker.demo import DemoConfig, Digits, build_model, demo_players, load_digits_split, solver_config
from concept_tracker.tracker import DEFAULT_SCHEDULE
from timing import sync

VARIANTS = ("none", "default", "budget")
BUDGET = 0.05


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
        probes = select_probes(data.train_x, args.probes, labels=data.train_y, seed=args.seed)
        heldout = select_probes(data.test_x, args.probes, labels=data.test_y, seed=args.seed)
        tracker = ConceptTracker(
            demo_players(data.train_x), probes.inputs, probes.labels,
            heldout_inputs=heldout.inputs, heldout_targets=heldout.labels,
            log_dir=log_dir, schedule=None, kind=args.kind, and_or=solver_config(demo), figures=not args.no_figures,
            max_overhead=BUDGET if variant == "budget" else None, strict=True,
        )
    tracked = 0
    sync(device)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if tracker is not None:
            tracked += tracker.step(model, step)
        if step == args.steps:
            break
        index = torch.randint(0, len(y), (demo.batch_size,), generator=batches).to(device)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if tracker is not None:
        tracker.close()  # timed: it draws the last figures and waits for the renderer
    sync(device)
    seconds = time.perf_counter() - start
    scheduled = sum(DEFAULT_SCHEDULE(s) for s in range(args.steps + 1)) if tracker is not None else 0
    return {"seconds": seconds, "tracked": tracked, "skipped": scheduled - tracked}


def step_costs(args: argparse.Namespace, data: Digits, device: torch.device, log_dir: Path) -> list[tuple[str, float]]:
    """Seconds per tracked step of the demo's model after 300 training steps, with and without
    its figures, for kind "and" and the benchmarked kind, and of one training step: where the
    overhead comes from."""
    demo, model, optimizer, batches, x, y = setup(args, data, device)

    def train_steps(count: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(count):
            index = torch.randint(0, len(y), (demo.batch_size,), generator=batches).to(device)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return (time.perf_counter() - start) / count

    train_steps(300)
    probes = select_probes(data.train_x, args.probes, labels=data.train_y, seed=args.seed)
    heldout = select_probes(data.test_x, args.probes, labels=data.test_y, seed=args.seed)
    rows = [("one training step", train_steps(200))]
    for kind in ("and", args.kind) if args.kind != "and" else ("and",):
        tracker = ConceptTracker(
            demo_players(data.train_x), probes.inputs, probes.labels,
            heldout_inputs=heldout.inputs, heldout_targets=heldout.labels,
            log_dir=log_dir / kind, schedule=None, kind=kind,
            and_or=solver_config(DemoConfig(kind=kind)), figures=not args.no_figures, strict=True,
        )
        tracker.step(model, 0)  # the first step pays one-off costs (writer, fonts, cold solver)
        seconds = {}
        for step in (1, 2, 3, 4):  # the 2nd to 5th tracked steps: figures at the 2nd and 4th
            sync(device)
            start = time.perf_counter()
            tracker.step(model, step)
            sync(device)
            seconds[step] = time.perf_counter() - start
        tracker.close()
        rows.append((f"one tracked step, kind={kind}, without figures", (seconds[2] + seconds[4]) / 2))
        if not args.no_figures:
            rows.append((f"one tracked step, kind={kind}, with figures", (seconds[1] + seconds[3]) / 2))
    return rows


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
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three variants (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--kind", default="and_or", choices=("and", "or", "and_or"), help="interaction kind (default and_or, as the demo)")
    parser.add_argument("--probes", type=int, default=32, help="training and held-out probes each (default 32, as the demo)")
    parser.add_argument("--no-figures", action="store_true", help="track without the matplotlib figures")
    parser.add_argument("--threads", type=int, default=DemoConfig().threads, help="torch intra-op threads (default: the demo's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the results as Markdown to this file")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1.")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    data = load_digits_split(DemoConfig().train_size, args.seed)

    load_before = os.getloadavg()[0]
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        costs = step_costs(args, data, device, Path(tmp) / "costs")
        # The budget variant warns once when it first skips a step; the table reports skips.
        warnings.simplefilter("ignore", UserWarning)
        for r in range(args.repeats):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for variant in order:
                result = train(variant, args, data, device, Path(tmp) / f"{variant}_{r}")
                results[variant].append(result)
                print(f"repeat {r + 1}/{args.repeats} {variant:>7}: {result['seconds']:.1f} s, "
                      f"{result['tracked']} tracked, {result['skipped']} skipped", flush=True)

    rows = []
    for variant in VARIANTS:
        runs = results[variant]
        ratios = [run["seconds"] / base["seconds"] for run, base in zip(runs, results["none"])]
        rows.append((variant, statistics.median(r["seconds"] for r in runs), statistics.median(ratios), ratios,
                     runs[-1]["tracked"], runs[-1]["skipped"]))
    targets = {"none": "", "default": "<= 1.10", "budget": "<= 1.05"}
    lines = [
        "| variant | seconds (median) | ratio to untracked (median) | per repeat | target | tracked steps | skipped steps |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {seconds:.1f} | {ratio:.3f} | {', '.join(f'{r:.3f}' for r in ratios)} | {targets[name]} | {tracked} | {skipped} |"
        for name, seconds, ratio, ratios, tracked, skipped in rows
    ]
    header = (
        f"Machine: {machine(device)}, device {device}.\n"
        f"Training: the demo's MLP on digits, {args.steps} steps, batch 64. Tracker: kind={args.kind}, "
        f"{args.probes}+{args.probes} probes, n=10, figures {'off' if args.no_figures else 'on'}, "
        f"default schedule {DEFAULT_SCHEDULE!r}; budget = max_overhead={BUDGET}. "
        f"{args.repeats} interleaved repeats. Load average (1 min) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after: other work on a shared machine slows every variant unevenly.\n"
    )
    train_step = costs[0][1]
    lines += [
        "",
        "Where the time goes (after 300 training steps; the 2nd-5th tracked steps, figures drawn at the 2nd and 4th):",
        "",
        "| what | seconds | training steps |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {seconds:.4f} | {seconds / train_step:,.0f} |" for label, seconds in costs]
    table = header + "\n" + "\n".join(lines)
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n")
        print(f"\nWrote {args.output}")


if __name__ == "__main__":
    main()
