"""The over-fitting early warning, replayed online, against early stopping on held-out loss.

``ConceptTrackerCallback(stop_on_overfit=...)`` decides at every tracked step from the tracked
steps seen so far, with :func:`concept_tracker.metrics.phase.overfit_stop_step`. This script
trains small MLPs with and without label noise, records at each tracked step (the callback's
default schedule, ``log_spaced(0, steps, 20)``) the high-order share of the training probes,
the loss on the held-out probes and the error on a clean test set, and then replays three
policies on the same records:

- ``concept``: :func:`overfit_stop_step` (the callback's code) with ``patience`` 2;
- ``val_loss``: early stopping on the held-out probes' loss with the same patience and
  schedule: stop at the first tracked step where the loss has not improved on its best for
  ``patience + 1`` consecutive tracked steps (the concept rule also needs its signal on
  ``patience + 1`` consecutive steps);
- ``none``: train to the end.

Each policy's model is the model at its stop step (no restoring of a best checkpoint). The
concept rule's ``min_rise`` is chosen on a tuning half of the runs (even seeds) and scored on
the other half (odd seeds).

Runs: scikit-learn's digits (the demo's MLP and players), breast cancer and wine (players:
their first 10 feature columns), each with 30% of training and held-out labels replaced by a
random class, and clean. The held-out probes carry the same label noise as the training set
(a user has no clean labels); the test set is clean.

Beside the early warning, the script measures whether the complex-band detour ratio follows
the output's scale, for the plain ratio and its scale-free variant
(:func:`concept_tracker.metrics.dynamics.scale_free_detour_ratio`).

    python benchmarks/early_warning.py [--out benchmarks/early_warning.json] [--seeds 12]

The last printed line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import concept_tracker as ct
from concept_tracker.demo import build_model, corrupt_labels, demo_players
from concept_tracker.metrics.dynamics import Trajectory, detour_ratio, scale_free_detour_ratio
from concept_tracker.metrics.phase import MIN_RISE, overfit_stop_step
from concept_tracker.probes import select_probes

PATIENCE = 2
"""The callback's default patience."""
NUM_PROBE = 16
"""The callback's default number of probes per dataset (training and held-out)."""
TRACKED = 20
"""The callback's default schedule: ``log_spaced(0, max_steps, 20)``."""
NOISE = 0.3
MIN_RISE_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)
"""Candidates for the concept rule's minimum rise (share units)."""
DEFAULT_OUT = Path(__file__).with_name("early_warning.json")


@dataclass(frozen=True)
class Task:
    """One dataset's split and training settings."""

    name: str
    train: int
    heldout_pool: int
    steps: int
    lr: float
    batch: int
    width: int


TASKS = {
    "digits": Task("digits", train=1000, heldout_pool=297, steps=1500, lr=2e-3, batch=64, width=128),
    "breast_cancer": Task("breast_cancer", train=300, heldout_pool=119, steps=1500, lr=2e-3, batch=32, width=128),
    "wine": Task("wine", train=90, heldout_pool=38, steps=1500, lr=2e-3, batch=16, width=64),
}


def load(task: Task, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(train_x, train_y, held_x, held_y, test_x, test_y)``, shuffled with ``seed``; tabular
    features standardized with the training statistics."""
    from sklearn import datasets

    if task.name == "digits":
        raw = datasets.load_digits()
        x = torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16.0
    else:
        raw = datasets.load_breast_cancer() if task.name == "breast_cancer" else datasets.load_wine()
        x = torch.tensor(raw.data, dtype=torch.float32)
    y = torch.tensor(raw.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    a, b = task.train, task.train + task.heldout_pool
    if task.name != "digits":
        mean, std = x[:a].mean(0), x[:a].std(0).clamp_min(1e-6)
        x = (x - mean) / std
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


def model_and_players(task: Task, train_x: Tensor, classes: int) -> tuple[nn.Module, ct.Players]:
    if task.name == "digits":
        return build_model(task.width), demo_players(train_x)
    d, w = train_x.shape[1], task.width
    model = nn.Sequential(nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, classes))
    players = ct.TabularPlayers(features=list(range(10)), baselines="mean")
    players.fit(train_x)
    return model, players


@torch.no_grad()
def _loss_error(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    logits = model(x)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) != y).double().mean().item()


def train_run(task: Task, noise: float, seed: int, temperature_check: bool) -> dict:
    """Train one model and record, at each tracked step: high-order share of the training
    probes, held-out probe loss, clean test error, output scale; plus the effect series."""
    train_x, clean_y, held_x, held_clean, test_x, test_y = load(task, seed)
    classes = int(clean_y.max()) + 1
    train_y = corrupt_labels(clean_y, noise, seed, classes) if noise else clean_y
    held_y = corrupt_labels(held_clean, noise, seed + 10_000, classes) if noise else held_clean
    torch.manual_seed(seed)
    model, players = model_and_players(task, train_x, classes)
    probe = select_probes(train_x, NUM_PROBE, train_y, seed=seed)
    held = select_probes(held_x, NUM_PROBE, held_y, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=task.lr)
    batches = torch.Generator().manual_seed(seed + 1)
    schedule = ct.log_spaced(0, task.steps, TRACKED)
    traj = Trajectory()
    rec: dict[str, list] = {k: [] for k in ("steps", "share", "val_loss", "test_error", "train_loss", "scale")}
    series, hot = [], []
    for step in range(task.steps + 1):
        if schedule(step) or step == task.steps:
            model.eval()
            res = ct.compute_interactions(model, probe.inputs, players, target=probe.labels)
            traj.append(step, res.and_effects)
            series.append(res.and_effects)
            rec["steps"].append(step)
            rec["share"].append(float(traj.high_order_share()[1][-1]))
            rec["val_loss"].append(_loss_error(model, held.inputs, held.labels)[0])
            rec["test_error"].append(_loss_error(model, test_x, test_y)[1])
            rec["train_loss"].append(_loss_error(model, train_x, train_y)[0])
            rec["scale"].append(float((res.outputs[:, -1] - res.outputs[:, 0]).abs().mean()))
            if temperature_check:  # the same model with its logits scaled by a growing factor
                factor = 10.0 ** (len(hot) / (TRACKED - 1))
                scaled = nn.Sequential(model, _Scale(factor))
                hot.append(ct.compute_interactions(scaled, probe.inputs, players, target=probe.labels).and_effects)
            model.train()
        if step == task.steps:
            break
        index = torch.randint(0, len(train_y), (task.batch,), generator=batches)
        loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    effects = torch.stack(series)  # [T, B, 2**n]
    bands = traj.bands
    assert bands is not None
    rec["detour_complex"] = float(traj.detour_ratio(bands.complex))
    rec["scale_free_detour_complex"] = float(scale_free_detour_ratio(effects, bands.complex))
    if temperature_check:
        scaled_effects = torch.stack(hot)
        rec["temperature"] = {
            "plain": [rec["detour_complex"], float(detour_ratio(scaled_effects, bands.complex))],
            "scale_free": [
                rec["scale_free_detour_complex"],
                float(scale_free_detour_ratio(scaled_effects, bands.complex)),
            ],
        }
    return rec


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def val_loss_stop_step(steps: list[int], losses: list[float], patience: int) -> int | None:
    """First tracked step at which the held-out loss has not improved on its best for
    ``patience + 1`` consecutive tracked steps, or None."""
    best, waited = math.inf, 0
    for step, loss in zip(steps, losses):
        if loss < best:
            best, waited = loss, 0
        else:
            waited += 1
            if waited > patience:
                return step
    return None


def outcome(rec: dict, stop: int | None) -> dict:
    """Test error at the stop step, its change against training to the end, steps saved."""
    steps, errors = rec["steps"], rec["test_error"]
    at = steps.index(stop) if stop is not None else len(steps) - 1
    return {
        "stop": stop,
        "test_error": errors[at],
        "delta": errors[at] - errors[-1],
        "saved": (steps[-1] - steps[at]) / steps[-1],
    }


def policies(rec: dict, min_rise: float) -> dict[str, dict]:
    steps = rec["steps"]
    return {
        "concept": outcome(rec, overfit_stop_step(steps, rec["share"], patience=PATIENCE, min_rise=min_rise)),
        "val_loss": outcome(rec, val_loss_stop_step(steps, rec["val_loss"], PATIENCE)),
        "none": outcome(rec, None),
    }


def group_summary(runs: list[dict], min_rise: float) -> dict[str, dict]:
    """Per policy over ``runs``: mean and median test error, mean change against no stopping,
    runs where stopping raised / lowered the test error, stops, mean fraction of steps saved."""
    out = {}
    for name in ("concept", "val_loss", "none"):
        res = [policies(r, min_rise)[name] for r in runs]
        out[name] = {
            "runs": len(res),
            "test_error_mean": statistics.fmean(x["test_error"] for x in res),
            "test_error_median": statistics.median(x["test_error"] for x in res),
            "delta_mean": statistics.fmean(x["delta"] for x in res),
            "worse": sum(x["delta"] > 0 for x in res),
            "better": sum(x["delta"] < 0 for x in res),
            "stops": sum(x["stop"] is not None for x in res),
            "saved_mean": statistics.fmean(x["saved"] for x in res),
        }
    return out


def tune(runs: list[dict]) -> float:
    """The minimum rise with the lowest mean change in test error against no stopping,
    noisy and clean runs weighted equally. Ties go to the largest candidate, the more
    conservative alarm (a first run broke ties toward the smallest, which chose 0)."""

    def cost(m: float) -> float:
        parts = []
        for noisy in (True, False):
            group = [r for r in runs if (r["noise"] > 0) == noisy]
            parts.append(statistics.fmean(policies(r, m)["concept"]["delta"] for r in group))
        return statistics.fmean(parts)

    return min(MIN_RISE_GRID, key=lambda m: (round(cost(m), 12), -m))


def kendall_tau(a: list[float], b: list[float]) -> float:
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    score = sum(math.copysign(1, (a[i] - a[j]) * (b[i] - b[j])) for i, j in pairs if (a[i] - a[j]) * (b[i] - b[j]))
    return score / len(pairs) if pairs else math.nan


POLICY_NAMES = {
    "concept": "concept rule (`stop_on_overfit`)",
    "val_loss": "early stopping on held-out probe loss",
    "none": "no stopping",
}


def markdown(results: dict) -> str:
    """The tables of docs/evidence.md ("The early warning, tested online") from a results file."""
    lines = []
    for split, title in (("score", "Scoring half (odd seeds)"), ("all", "All runs")):
        tab = results[split]
        lines += [
            f"{title}, min_rise = {results['min_rise']}:",
            "",
            "| runs | policy | mean test error | median | change vs no stopping | worse / better | stops | steps saved |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for group in ("noisy", "clean"):
            for policy, label in POLICY_NAMES.items():
                r = tab[group][policy]
                lines.append(
                    f"| {group} ({r['runs']}) | {label} | {r['test_error_mean']:.3f} | {r['test_error_median']:.3f} "
                    f"| {r['delta_mean']:+.3f} | {r['worse']} / {r['better']} | {r['stops']} | {r['saved_mean']:.0%} |"
                )
        lines.append("")
    lines += [
        "Concept rule by minimum rise (tuning half | scoring half): mean change in test error against "
        "no stopping, and stops, on noisy and on clean runs:",
        "",
        "| min_rise | noisy, tuning | clean, tuning | noisy, scoring | clean, scoring |",
        "|---|---|---|---|---|",
    ]
    for m in results["min_rise_grid"]:
        cells = []
        for split in ("tune", "score"):
            for group in ("noisy", "clean"):
                r = results[split]["by_min_rise"][str(m)][group]
                cells.append(f"{r['delta_mean']:+.4f}, {r['stops']} of {r['runs']}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"By dataset, all runs, min_rise = {results['min_rise']}: mean test error, stops, and the concept rule "
        "against held-out-loss early stopping run by run (lower / higher / equal test error):",
        "",
        "| dataset | labels | runs | concept rule | held-out loss | no stopping | stops (concept, held-out loss) "
        "| concept vs held-out loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in results["runs"]):
        for group in ("noisy", "clean"):
            runs = [r for r in results["runs"] if r["dataset"] == dataset and (r["noise"] > 0) == (group == "noisy")]
            outs = [policies(r, results["min_rise"]) for r in runs]
            mean = {p: statistics.fmean(o[p]["test_error"] for o in outs) for p in POLICY_NAMES}
            stops = {p: sum(o[p]["stop"] is not None for o in outs) for p in ("concept", "val_loss")}
            diff = [o["concept"]["test_error"] - o["val_loss"]["test_error"] for o in outs]
            paired = f"{sum(x < 0 for x in diff)} / {sum(x > 0 for x in diff)} / {sum(x == 0 for x in diff)}"
            lines.append(
                f"| {dataset} | {group} | {len(runs)} | {mean['concept']:.3f} | {mean['val_loss']:.3f} "
                f"| {mean['none']:.3f} | {stops['concept']}, {stops['val_loss']} | {paired} |"
            )
    d = results["detour"]
    lines += [
        "",
        "| complex-band detour ratio | Kendall τ with the output's growth over the run | change under a 10-fold logit growth (per run) |",
        "|---|---|---|",
    ]
    for key, label in (("plain", "plain (`dynamics/complex/detour_ratio`)"), ("scale_free", "scale-free")):
        tau = d["tau_plain_vs_scale_growth" if key == "plain" else "tau_scale_free_vs_scale_growth"]
        changes = ", ".join(f"{after / before - 1:+.0%}" for before, after in (t[key] for t in d["temperature_runs"]))
        lines.append(f"| {label} | {tau:+.2f} | {changes} |")
    m = results["machine"]
    lines += [
        "",
        f"{len(results['runs'])} runs in {m['seconds'] / 60:.0f} minutes on {m['cpus']} shared CPU cores "
        f"(torch {m['torch']}, one thread, load average {m['load_average']:.1f} at the end).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON")
    parser.add_argument("--seeds", type=int, default=10, help="digits seeds per noise level")
    parser.add_argument("--tabular-seeds", type=int, default=5, help="breast cancer and wine seeds per noise level")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    runs = []
    plan = [("digits", s) for s in range(args.seeds)]
    plan += [(name, s) for name in ("breast_cancer", "wine") for s in range(args.tabular_seeds)]
    for name, seed in plan:
        for noise in (NOISE, 0.0):
            rec = train_run(TASKS[name], noise, seed, temperature_check=name == "digits" and seed < 2)
            rec.update(dataset=name, noise=noise, seed=seed, split="tune" if seed % 2 == 0 else "score")
            runs.append(rec)
            print(
                f"{name:13s} noise={noise:.1f} seed={seed:2d} end error {rec['test_error'][-1]:.3f} "
                f"concept stop {policies(rec, MIN_RISE)['concept']['stop']} "
                f"val-loss stop {policies(rec, MIN_RISE)['val_loss']['stop']}",
                flush=True,
            )
    chosen = tune([r for r in runs if r["split"] == "tune"])
    results: dict = {"min_rise": chosen, "min_rise_grid": list(MIN_RISE_GRID), "patience": PATIENCE}
    for split in ("score", "tune", "all"):
        chosen_runs = [r for r in runs if split == "all" or r["split"] == split]
        results[split] = {
            group: group_summary([r for r in chosen_runs if (r["noise"] > 0) == (group == "noisy")], chosen)
            for group in ("noisy", "clean")
        }
        results[split]["by_min_rise"] = {
            str(m): {
                group: group_summary([r for r in chosen_runs if (r["noise"] > 0) == (group == "noisy")], m)["concept"]
                for group in ("noisy", "clean")
            }
            for m in MIN_RISE_GRID
        }
    growth = [math.log(r["scale"][-1] / r["scale"][0]) for r in runs]
    results["detour"] = {
        "tau_plain_vs_scale_growth": kendall_tau(growth, [r["detour_complex"] for r in runs]),
        "tau_scale_free_vs_scale_growth": kendall_tau(growth, [r["scale_free_detour_complex"] for r in runs]),
        "temperature_runs": [r["temperature"] for r in runs if "temperature" in r],
    }
    results["runs"] = [
        {k: r[k] for k in ("dataset", "noise", "seed", "split", "steps", "share", "val_loss", "test_error")}
        for r in runs
    ]
    seconds = time.perf_counter() - start
    results["machine"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "seconds": round(seconds, 1),
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    score = results["score"]
    summary = {
        "runs": len(runs),
        "min_rise": chosen,
        "noisy": {p: round(score["noisy"][p]["test_error_mean"], 4) for p in ("concept", "val_loss", "none")},
        "clean": {p: round(score["clean"][p]["test_error_mean"], 4) for p in ("concept", "val_loss", "none")},
        "clean_stops": {p: score["clean"][p]["stops"] for p in ("concept", "val_loss")},
        "seconds": round(seconds, 1),
    }
    print(markdown(results))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
