"""Evidence study: do concept-tracker's readings predict the generalization gap, and do they
predict it better than published generalization measures?

A zoo of MLPs is trained on two datasets bundled with scikit-learn (8x8 digits, an image set;
breast cancer, a tabular set) over a full factorial grid of seven two-level hyperparameter axes:
width, depth, training-set size, dropout, learning rate, training length and label noise.
For every model we measure the generalization gap on clean labels (test loss - train loss, and
test error) and, on the same model in the same run:

- our readings, with the library's defaults (``kind="and"``, ``ratio=0.05``, default bands,
  the mean baseline fitted on the model's training set, the default schedule for the tracked
  run): simple share (the high-order share share_H is 1 - simple share, so it ranks models
  identically and is not listed twice), complex ratio (= complex share), train-test similarity
  of the simple and complex bands, concepts per sample, complex-band detour ratio, the shift of
  share_H since initialisation, and the fraction of training after the phase boundary;
- baselines: WeightWatcher's mean alpha, and from Jiang et al. (ICLR 2020) the output margin
  (10th percentile), the spectral-norm product, the path norm and PAC-Bayes flatness.

Every measure is oriented *a priori* so that larger should mean a larger gap (table ORIENTATION
below, fixed before any run). We report Kendall's tau of each measure against the gap, overall
(per dataset, then averaged over the two datasets) and granulated per axis as Jiang et al.
define it, with 95% percentile bootstrap intervals, and for the label-noise runs whether the
phase boundary comes before the eval-train loss gap starts to grow.

    python benchmarks/evidence.py --quick       # 64 models (a seeded quarter of the grid)
    python benchmarks/evidence.py               # the full grid: 256 models

The last line printed is JSON: ``{"models": N, "tau": {...}, "ours": [...], "baselines": [...]}``.
Needs ``pip install -e '.[bench]'`` (scikit-learn, scipy, weightwatcher). Without weightwatcher
the study runs and says that its alpha is missing.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # One BLAS thread: on a loaded machine a multi-threaded BLAS spin-waits (a 256x256 SVD in
    # WeightWatcher took 1 s instead of 10 ms with two busy cores). Set before numpy loads, and
    # only when run as a script, so importing this module (the tests do) changes nothing.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import io
import itertools
import json
import logging
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

import concept_tracker as ct
from concept_tracker.demo import corrupt_labels, ink_patches

AXES: dict[str, tuple] = {
    "width": (32, 256),
    "depth": (1, 3),
    "train_size": ("small", "large"),
    "dropout": (0.0, 0.3),
    "lr": (1e-3, 1e-2),
    "steps": (250, 1000),
    "label_noise": (0.0, 0.3),
}
"""Two levels per axis; every model is one point of the full factorial grid (per dataset)."""

TRAIN_SIZES = {"digits": {"small": 200, "large": 800}, "breast_cancer": {"small": 80, "large": 320}}
"""Training-set sizes per dataset; the test set is the same for every model of a dataset."""

BATCH_SIZE = 32
PROBES = 32
"""Probe samples per split (training and held-out), as the tracker's documentation suggests."""
INIT_SEED = 0
DATA_SEED = 0

ORIENTATION: dict[str, tuple[int, str]] = {
    # ours: (sign, why); sign * reading is the oriented measure (larger = larger gap predicted)
    "simple_share": (-1, "simple concepts generalize: more simple share, smaller gap"),
    "complex_ratio": (+1, "complex concepts tend not to generalize"),
    "tts_simple": (-1, "train-test similarity of simple-band concepts: higher, smaller gap"),
    "tts_complex": (-1, "train-test similarity of complex-band concepts: higher, smaller gap"),
    "concepts": (+1, "more salient concepts per sample: less sparse, more memorised"),
    "detour_complex": (+1, "complex concepts learned along a longer detour"),
    "high_share_shift": (+1, "high-order share gained since initialisation (controls for architecture)"),
    "after_boundary": (+1, "fraction of training after the phase boundary (0 when none)"),
    # baselines
    "ww_alpha": (+1, "WeightWatcher: smaller mean alpha, better-trained layers"),
    "margin": (-1, "Jiang et al.: 10th-percentile output margin on the training set; larger, smaller gap"),
    "spectral": (+1, "Jiang et al.: log product of the layers' spectral norms"),
    "path_norm": (+1, "Jiang et al.: log path norm"),
    "flatness": (+1, "Jiang et al. PAC-Bayes flatness: 1/sigma^2 (as -log sigma), sigma the largest "
                     "weight-noise scale raising training error by at most 0.1"),
}
OURS = ["simple_share", "complex_ratio", "tts_simple", "tts_complex", "concepts",
        "detour_complex", "high_share_shift", "after_boundary"]
BASELINES = ["ww_alpha", "margin", "spectral", "path_norm", "flatness"]


# ---------------------------------------------------------------------------------------------
# data and models


@dataclass
class Split:
    """Training pool and fixed test set of one dataset; inputs as the model takes them."""

    name: str
    pool_x: Tensor
    pool_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: int


def load_split(name: str) -> Split:
    """A seeded split: the test set is fixed; training sets are prefixes of the pool (so the
    small set is a subset of the large one)."""
    from sklearn import datasets

    if name == "digits":
        raw = datasets.load_digits()
        x = torch.tensor(raw.images, dtype=torch.float32)[:, None] / 16.0
    else:
        raw = datasets.load_breast_cancer()
        x = torch.tensor(raw.data, dtype=torch.float32)
    pool = max(TRAIN_SIZES[name].values())
    y = torch.tensor(raw.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(DATA_SEED))
    x, y = x[order], y[order]
    if name == "breast_cancer":  # standardise with the pool's statistics
        mu, sd = x[:pool].mean(0), x[:pool].std(0)
        x = (x - mu) / sd
    return Split(name, x[:pool], y[:pool], x[pool:], y[pool:], int(y.max()) + 1)


def build_mlp(inputs: int, classes: int, width: int, depth: int, dropout: float) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width`` units, dropout after each."""
    layers: list[nn.Module] = [nn.Flatten()]
    size = inputs
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
        size = width
    layers.append(nn.Linear(size, classes))
    return nn.Sequential(*layers)


def make_players(split: Split, train_x: Tensor) -> ct.Players:
    """Digits: the 10 inkiest of a 4x4 grid of 2x2 patches; breast cancer: the 10 "mean ..."
    features (columns 0-9). Both with the mean baseline of the model's training set."""
    if split.name == "digits":
        return ct.ImagePatchPlayers(grid=(4, 4), select=ink_patches(train_x), baselines="mean").fit(train_x)
    return ct.TabularPlayers(features=range(10), baselines="mean").fit(train_x)


@torch.no_grad()
def loss_and_error(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and 0-1 error in eval mode."""
    was = model.training
    model.eval()
    logits = model(x)
    model.train(was)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) != y).double().mean().item()


# ---------------------------------------------------------------------------------------------
# our readings


def band_mean(per_order: Tensor, band: tuple[int, ...]) -> float:
    """Mean over the band's orders of a per-order reading [n + 1]."""
    return float(per_order[list(band)].mean()) if band else math.nan


# ---------------------------------------------------------------------------------------------
# baselines


def linears(model: nn.Module) -> list[nn.Linear]:
    """The model's linear layers in order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def ww_alpha(model: nn.Module) -> float:
    """Mean power-law alpha over the layers WeightWatcher analyses (its defaults); NaN when the
    package is missing or its fit fails."""
    try:
        import weightwatcher
    except ImportError:
        return math.nan
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            watcher = weightwatcher.WeightWatcher(model=model)
            details = watcher.analyze()
        alphas = details["alpha"].to_numpy(dtype=float)
        alphas = alphas[np.isfinite(alphas)]
        return float(alphas.mean()) if alphas.size else math.nan
    except Exception:  # a failed fit on a tiny layer: reported as missing, never fatal
        return math.nan


@torch.no_grad()
def margin_10(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """10th percentile over training samples of ``z_y - max_{k != y} z_k``."""
    model.eval()
    z = model(x)
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return float(torch.quantile(true - other, 0.1))


@torch.no_grad()
def log_spectral_product(model: nn.Module) -> float:
    """Sum over layers of log of the largest singular value of the weight matrix."""
    return float(sum(torch.log(torch.linalg.matrix_norm(m.weight, ord=2)) for m in linears(model)))


@torch.no_grad()
def log_path_norm(model: nn.Module) -> float:
    """log of sum over outputs of the network with every weight and bias squared, applied to an
    all-ones input (the sum over input-output paths of squared weight products)."""
    layers = linears(model)
    v = torch.ones(layers[0].in_features, dtype=torch.float64)
    for m in layers:
        v = m.weight.double().square() @ v + m.bias.double().square()
    return float(torch.log(v.sum()))


@torch.no_grad()
def log_flatness(model: nn.Module, x: Tensor, y: Tensor, bound: float = 0.1, draws: int = 8,
                 iters: int = 12) -> float:
    """-log sigma for the largest sigma of isotropic Gaussian weight noise whose mean training
    error rises by at most ``bound`` (bisection on log sigma over [1e-4, 10]; common random
    numbers across sigma, seeded)."""
    model.eval()
    params = [p for p in model.parameters()]
    original = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(0)
    noise = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(draws)]
    base = (model(x).argmax(1) != y).double().mean().item()

    def rise(sigma: float) -> float:
        errors = []
        for eps in noise:
            for p, p0, e in zip(params, original, eps):
                p.copy_(p0 + sigma * e)
            errors.append((model(x).argmax(1) != y).double().mean().item())
        for p, p0 in zip(params, original):
            p.copy_(p0)
        return float(np.mean(errors)) - base

    lo, hi = math.log(1e-4), math.log(10.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if rise(math.exp(mid)) <= bound:
            lo = mid
        else:
            hi = mid
    return -lo


# ---------------------------------------------------------------------------------------------
# one model


@dataclass
class Config:
    dataset: str
    width: int
    depth: int
    train_size: str
    dropout: float
    lr: float
    steps: int
    label_noise: float


def tracked_steps(total: int) -> list[int]:
    """The library's default schedule up to ``total``, plus ``total``."""
    return sorted({t for t in range(total + 1) if ct.DEFAULT_SCHEDULE(t)} | {total})


def train_and_measure(cfg: Config, split: Split) -> dict:
    """Train one model with a tracked run; return its gap, our readings and the baselines."""
    size = TRAIN_SIZES[cfg.dataset][cfg.train_size]
    train_x, clean_y = split.pool_x[:size], split.pool_y[:size]
    train_y = corrupt_labels(clean_y, cfg.label_noise, seed=DATA_SEED + 1, classes=split.classes)
    players = make_players(split, train_x)
    probes = ct.select_probes(train_x, PROBES, clean_y, seed=0)
    heldout = ct.select_probes(split.test_x, PROBES, split.test_y, seed=0)

    torch.manual_seed(INIT_SEED)
    model = build_mlp(train_x[0].numel(), split.classes, cfg.width, cfg.depth, cfg.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = torch.Generator().manual_seed(INIT_SEED + 1)
    schedule = tracked_steps(cfg.steps)
    bands = ct.band_orders(players.n)
    traj = ct.Trajectory()
    train_losses: dict[int, float] = {}
    eval_losses: dict[int, float] = {}
    res = None
    for step in range(cfg.steps + 1):
        if step in schedule:
            res = ct.compute_interactions(model, probes.inputs, players, target=probes.labels)
            traj.append(step, res.and_effects)
            train_losses[step] = loss_and_error(model, train_x, train_y)[0]
            eval_losses[step] = loss_and_error(model, split.test_x, split.test_y)[0]
        if step == cfg.steps:
            break
        index = torch.randint(0, size, (BATCH_SIZE,), generator=batches)
        loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.eval()
    # The gap on clean labels: held-out loss minus the loss on the training samples whose label
    # was left intact (all of them without label noise). The loss on the corrupted samples'
    # true labels would cancel the gap of a model that memorised them.
    intact = train_y == clean_y
    train_loss, _ = loss_and_error(model, train_x[intact], clean_y[intact])
    _, train_err = loss_and_error(model, train_x, clean_y)
    test_loss, test_err = loss_and_error(model, split.test_x, split.test_y)
    held = ct.compute_interactions(model, heldout.inputs, players, target=heldout.labels)
    profile = ct.order_profile(res)
    summary = ct.band_summary(profile)
    tts = ct.train_test_similarity(res, probes.labels, held, heldout.labels)
    boundary, gap_growth = traj.phase_boundary(eval_losses, train_losses)
    shares = traj.high_order_share()[1].tolist()
    readings = {
        "simple_share": float(profile.share[list(bands.simple)].sum()),
        "complex_ratio": summary.complex_ratio,
        "tts_simple": band_mean(tts, bands.simple),
        "tts_complex": band_mean(tts, bands.complex),
        "concepts": summary.num_concepts,
        "detour_complex": float(traj.detour_ratio(bands.complex)),
        "high_share_shift": shares[-1] - shares[0],
        "after_boundary": 0.0 if boundary is None else (cfg.steps - boundary) / cfg.steps,
        "ww_alpha": ww_alpha(model),
        "margin": margin_10(model, train_x, train_y),
        "spectral": log_spectral_product(model),
        "path_norm": log_path_norm(model),
        "flatness": log_flatness(model, train_x, train_y),
    }
    return {
        "config": asdict(cfg),
        "gap_loss": test_loss - train_loss,
        "test_error": test_err,
        "train_error_clean": train_err,
        "readings": readings,
        "phase_boundary": boundary,
        "loss_gap_step": gap_growth,
        "steps": schedule,
        "share_high": shares,
    }


# ---------------------------------------------------------------------------------------------
# statistics


def oriented(models: list[dict], name: str) -> np.ndarray:
    sign = ORIENTATION[name][0]
    return sign * np.array([m["readings"][name] for m in models], dtype=float)


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b over the finite pairs; NaN when undefined (fewer than two, or ties)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    if ok.sum() == 2:  # one pair (a one-axis group): tau-b is the product of the signs
        sign = np.sign(np.diff(x[ok])[0]) * np.sign(np.diff(y[ok])[0])
        return float(sign) if sign != 0 else math.nan
    tau = stats.kendalltau(x[ok], y[ok]).statistic
    return float(tau) if np.isfinite(tau) else math.nan


def overall_tau(models: list[dict], name: str, target: str, datasets: list[str]) -> float:
    """Kendall tau within each dataset, averaged over the datasets."""
    taus = []
    for d in datasets:
        sub = [m for m in models if m["config"]["dataset"] == d]
        taus.append(kendall(oriented(sub, name), np.array([m[target] for m in sub])))
    return float(np.nanmean(taus)) if np.isfinite(taus).any() else math.nan


def axis_groups(models: list[dict], axis: str) -> list[list[int]]:
    """Indices of models grouped by every other setting (dataset included); groups that hold
    more than one value of ``axis``."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(models):
        key = tuple((k, v) for k, v in m["config"].items() if k != axis)
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len({models[i]["config"][axis] for i in g}) > 1]


def group_taus(models: list[dict], groups: list[list[int]], name: str, target: str) -> np.ndarray:
    """Kendall tau within each group of models that differ only in one axis (NaN where the
    measure or the gap ties)."""
    x = oriented(models, name)
    y = np.array([m[target] for m in models])
    return np.array([kendall(x[g], y[g]) for g in groups], dtype=float)


def granulated(taus: np.ndarray, reps: int, seed: int = 0) -> dict:
    """Jiang et al.'s granulated tau (the mean of the per-group taus over the settings of the
    other axes) with a 95% percentile bootstrap interval over the groups."""
    taus = taus[np.isfinite(taus)]
    if taus.size == 0:
        return {"tau": math.nan, "ci": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    boots = taus[rng.integers(0, taus.size, (reps, taus.size))].mean(1)
    return {"tau": float(taus.mean()), "ci": (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))}


def analyse(models: list[dict], reps: int) -> dict:
    datasets = sorted({m["config"]["dataset"] for m in models})
    names = OURS + BASELINES
    by_dataset = {d: [m for m in models if m["config"]["dataset"] == d] for d in datasets}

    out: dict = {"overall": {}, "overall_error": {}, "per_dataset": {}, "granulated": {}, "pairs": {}}
    # resample models within each dataset, so every bootstrap sample keeps both datasets
    rng = np.random.default_rng(1)
    boot_sets = []
    for _ in range(reps):
        sample = []
        for d in datasets:
            group = by_dataset[d]
            sample += [group[i] for i in rng.integers(0, len(group), len(group))]
        boot_sets.append(sample)
    for target, key in (("gap_loss", "overall"), ("test_error", "overall_error")):
        for name in names:
            tau = overall_tau(models, name, target, datasets)
            boots = [overall_tau(s, name, target, datasets) for s in boot_sets]
            boots = [b for b in boots if np.isfinite(b)]
            ci = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))) if boots else (math.nan, math.nan)
            out[key][name] = {"tau": tau, "ci": ci}
    for d in datasets:
        out["per_dataset"][d] = {n: overall_tau(by_dataset[d], n, "gap_loss", [d]) for n in names}
    for axis in AXES:
        groups = axis_groups(models, axis)
        out["pairs"][axis] = len(groups)
        out["granulated"][axis] = {}
        for name in names:
            out["granulated"][axis][name] = granulated(group_taus(models, groups, name, "gap_loss"), reps)
    # best of ours minus best baseline, on the same bootstrap samples
    best_ours = max(OURS, key=lambda n: np.nan_to_num(out["overall"][n]["tau"], nan=-2))
    best_base = max(BASELINES, key=lambda n: np.nan_to_num(out["overall"][n]["tau"], nan=-2))
    diffs = [overall_tau(s, best_ours, "gap_loss", datasets) - overall_tau(s, best_base, "gap_loss", datasets)
             for s in boot_sets]
    diffs = [x for x in diffs if np.isfinite(x)]
    out["best"] = {
        "ours": best_ours, "baseline": best_base,
        "difference": out["overall"][best_ours]["tau"] - out["overall"][best_base]["tau"],
        "ci": (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if diffs else (math.nan, math.nan),
    }
    # phase boundary vs loss-gap growth, label-noise runs
    noisy = [m for m in models if m["config"]["label_noise"] > 0]
    both = [m for m in noisy if m["phase_boundary"] is not None and m["loss_gap_step"] is not None]
    leads = [m["loss_gap_step"] - m["phase_boundary"] for m in both]
    out["phase"] = {
        "noisy_models": len(noisy),
        "boundary_found": sum(m["phase_boundary"] is not None for m in noisy),
        "gap_growth_found": sum(m["loss_gap_step"] is not None for m in noisy),
        "both": len(both),
        "boundary_first": sum(x > 0 for x in leads),
        "same_step": sum(x == 0 for x in leads),
        "boundary_later": sum(x < 0 for x in leads),
        "median_lead_steps": float(np.median(leads)) if leads else math.nan,
        "leads": leads,
    }
    return out


# ---------------------------------------------------------------------------------------------
# output


def fmt(entry: dict) -> str:
    lo, hi = entry["ci"]
    if not np.isfinite(entry["tau"]):
        return "n/a"
    return f"{entry['tau']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def axis_mean(stats_out: dict, name: str) -> float:
    """Jiang et al.'s Psi: the mean of the granulated taus over the axes."""
    taus = [stats_out["granulated"][a][name]["tau"] for a in AXES]
    return float(np.nanmean(taus)) if np.isfinite(taus).any() else math.nan


def table(stats_out: dict) -> str:
    """Overall taus with intervals, per dataset, granulated per axis and their mean."""
    axes = list(AXES)
    datasets = list(stats_out["per_dataset"])
    head = ("| measure | overall tau (gap) | tau (test error) | " + " | ".join(datasets) + " | "
            + " | ".join(axes) + " | mean over axes |")
    rows = [head, "|" + "---|" * (4 + len(datasets) + len(axes))]
    for name in OURS + BASELINES:
        kind = "ours" if name in OURS else "baseline"
        cells = [f"{name} ({kind})", fmt(stats_out["overall"][name]), fmt(stats_out["overall_error"][name])]
        cells += [f"{stats_out['per_dataset'][d][name]:+.2f}" for d in datasets]
        cells += [f"{stats_out['granulated'][a][name]['tau']:+.2f}"
                  if np.isfinite(stats_out["granulated"][a][name]["tau"]) else "n/a" for a in axes]
        cells.append(f"{axis_mean(stats_out, name):+.2f}")
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("| one-axis groups | | | " + " | " * len(datasets)
                + " | ".join(str(stats_out["pairs"][a]) for a in axes) + " | |")
    return "\n".join(rows)


def granulated_table(stats_out: dict) -> str:
    """Granulated taus per axis with their bootstrap intervals (over the one-axis groups)."""
    axes = list(AXES)
    rows = ["| measure | " + " | ".join(axes) + " |", "|" + "---|" * (1 + len(axes))]
    for name in OURS + BASELINES:
        rows.append(f"| {name} | " + " | ".join(fmt(stats_out["granulated"][a][name]) for a in axes) + " |")
    return "\n".join(rows)


def figure(models: list[dict], stats_out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = OURS + BASELINES
    columns = ["overall"] + list(AXES)
    grid = np.array([[stats_out["overall"][n]["tau"]] + [stats_out["granulated"][a][n]["tau"] for a in AXES]
                     for n in names], dtype=float)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1.4, 1]})
    im = ax0.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax0.set_xticks(range(len(columns)), columns, rotation=40, ha="right")
    ax0.set_yticks(range(len(names)), [("" if n in OURS else "[baseline] ") + n for n in names])
    ax0.axhline(len(OURS) - 0.5, color="k", lw=1)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax0.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=7,
                         color="white" if abs(grid[i, j]) > 0.6 else "black")
    ax0.set_title("Kendall tau with the loss gap (oriented: + = predicts the gap)")
    fig.colorbar(im, ax=ax0, fraction=0.03)
    best = [stats_out["best"]["ours"], stats_out["best"]["baseline"]]
    markers = {"digits": "o", "breast_cancer": "s"}
    for name, color in zip(best, ("tab:red", "tab:blue")):
        for d, mk in markers.items():
            sub = [m for m in models if m["config"]["dataset"] == d]
            if not sub:
                continue
            x = oriented(sub, name)
            x = stats.rankdata(x) / len(x)
            ax1.scatter(x, [m["gap_loss"] for m in sub], c=color, marker=mk, s=18, alpha=0.7,
                        label=f"{name} ({d})")
    ax1.set_xlabel("oriented measure, rank within dataset (0-1)")
    ax1.set_ylabel("test loss - train loss (clean labels)")
    ax1.set_yscale("symlog", linthresh=0.1)
    ax1.legend(fontsize=7)
    ax1.set_title("best reading of ours vs best baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid_configs(quick: bool, seed: int = 0) -> list[Config]:
    configs = [Config(d, *values) for d in TRAIN_SIZES for values in itertools.product(*AXES.values())]
    if not quick:
        return configs
    # --quick: a seeded random quarter of each dataset's grid (every axis still varies)
    rng = np.random.default_rng(seed)
    picked = []
    for d in TRAIN_SIZES:
        mine = [c for c in configs if c.dataset == d]
        picked += [mine[i] for i in sorted(rng.choice(len(mine), len(mine) // 4, replace=False))]
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seeded quarter of each dataset's grid (64 models)")
    parser.add_argument("--out", default="runs/evidence", help="folder for results.json and the figure")
    parser.add_argument("--figure", default=None, help="also write the figure here (e.g. docs/evidence.png)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    try:
        import weightwatcher  # noqa: F401
        ww_note = "weightwatcher: installed"
    except ImportError:
        ww_note = "weightwatcher: NOT installed (pip install -e '.[bench]'); ww_alpha is n/a"
    print(ww_note, flush=True)

    configs = grid_configs(args.quick)
    splits = {d: load_split(d) for d in TRAIN_SIZES}
    start = time.perf_counter()
    models = []
    for i, cfg in enumerate(configs):
        t0 = time.perf_counter()
        models.append(train_and_measure(cfg, splits[cfg.dataset]))
        m = models[-1]
        print(f"[{i + 1}/{len(configs)}] {cfg} gap={m['gap_loss']:.3f} test_err={m['test_error']:.3f} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
    train_seconds = time.perf_counter() - start
    result = analyse(models, args.bootstrap)
    total_seconds = time.perf_counter() - start
    ww_missing = sum(not np.isfinite(m["readings"]["ww_alpha"]) for m in models)

    print()
    print(table(result))
    print()
    print(granulated_table(result))
    print()
    best = result["best"]
    print(f"best of ours: {best['ours']} ({result['overall'][best['ours']]['tau']:+.3f}); best baseline: "
          f"{best['baseline']} ({result['overall'][best['baseline']]['tau']:+.3f}); difference "
          f"{best['difference']:+.3f} [{best['ci'][0]:+.3f}, {best['ci'][1]:+.3f}]")
    ph = result["phase"]
    print(f"phase boundary, label-noise runs: {ph['noisy_models']} models, boundary found in "
          f"{ph['boundary_found']}, loss-gap growth found in {ph['gap_growth_found']}, both in {ph['both']}: "
          f"boundary first {ph['boundary_first']}, same step {ph['same_step']}, later {ph['boundary_later']}; "
          f"median lead {ph['median_lead_steps']} steps")
    print(f"ww_alpha missing for {ww_missing} of {len(models)} models")
    print(f"wall time: {train_seconds:.0f}s training and measuring, {total_seconds:.0f}s in all, "
          f"{len(models)} models, torch threads {args.threads}, os.cpu_count() {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    with open(out_dir / "results.json", "w") as f:
        json.dump({"models": models, "stats": result, "seconds": total_seconds, "ww_missing": ww_missing,
                   "orientation": {k: v[0] for k, v in ORIENTATION.items()}}, f, indent=1, default=float)
    figure(models, result, out_dir / "evidence.png")
    if args.figure:
        figure(models, result, Path(args.figure))
    print(json.dumps({
        "models": len(models),
        "tau": {n: round(result["overall"][n]["tau"], 4) for n in OURS + BASELINES},
        "ours": OURS,
        "baselines": BASELINES,
    }))


if __name__ == "__main__":
    sys.exit(main())
