"""How the sampled spectrum's budget constants were chosen: a grid on the tuning split only.

The estimator's constants (``concept_tracker/spectrum.py``: LOW_SHARE, TAIL_FACTOR, and in a
first round CANDIDATE_SHARE and MIN_BLOCKS) are scored here on the 13 n = 20 digits MLPs of the tuning split of
``benchmarks/spectrum.py`` (4 probes, 1/100 of the exact forwards, seeds 0-3). The rule:

1. a setting must keep the planted checks: n = 10, 4 * AND(2) + 3 * AND(6) at 512 forwards,
   and n = 64, 4 * AND(2) + 3 * AND(6) at 5,000, both shares within 0.02 of 4/7 and 3/7;
2. among those, the highest mean Spearman (over the seeds) of the simple share against the
   exact one; ties within 0.01 go to the higher worst seed.

The held-out split was scored once before this rule was written down, for an earlier candidate
(PILOT_SHARE 0.1, which fails the n = 10 planted check); its figures took no part in the choice.

Values of all 2**20 coalitions of each model are computed once (``--cache``) and looked up, so a
setting costs no forwards here; ``benchmarks/spectrum.py`` then scores the chosen constants with
real forwards on both splits.

    nice -n 5 python benchmarks/spectrum_tuning.py

The last line printed is JSON with every setting's figures and the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import torch
from scipy.stats import spearmanr
from spectrum import N20_GRID, N64_RULES, PlantedAnds, digits, n20_model, n20_probes, n20_shares
from torch import Tensor

import concept_tracker as ct
from concept_tracker import spectrum as sp
from concept_tracker.engine import coalition_values, preserved_state, split_samples
from concept_tracker.transforms import and_transform
from concept_tracker.values import resolve_value

N = 20
BUDGET = (1 << N) // 100
GRID = {
    "LOW_SHARE": (0.7, 0.5),
    "TAIL_FACTOR": (0.5, 1.0),
}
"""Searched after a first round (same split, same rule) had fixed CANDIDATE_SHARE = 0.15 over 0.5
and MIN_BLOCKS = 12 over 2 (its figures are in BENCHMARKS.md). Not searched: PILOT_SHARE (0.25;
0.1 fails the n = 10 planted check, its pilot of 33 masks is too few to find the order-6 AND)."""


def tuning_tables(cache: Path) -> list[Tensor]:
    """[4, 2**20] values of every coalition for each tuning model (computed once)."""
    x, y = digits()
    players = ct.ImagePatchPlayers(grid=(5, 4), baselines="mean").fit(x)
    probes, target = n20_probes(x, y, "tuning")
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for noise, width, depth in N20_GRID:
        path = cache / f"values_{noise}_{width}_{depth}.pt"
        if not path.exists():
            model = n20_model(x, y, "tuning", noise, width, depth)
            with preserved_state(model):
                players.prepare(probes)
                values = coalition_values(model, split_samples(probes), players, target, resolve_value("log_odds"))
            torch.save(values, path)
        out.append(torch.load(path))
    return out


def lookup(values: Tensor):
    """A value oracle reading a [B, 2**n] table: bool [B, M, n] or a list of [M_b, n] -> values."""
    bits = 1 << torch.arange(values.shape[1].bit_length() - 1)

    def value_of(coalitions):
        if isinstance(coalitions, Tensor):
            return torch.gather(values, 1, (coalitions.long() * bits).sum(-1))
        return [values[i][(c.long() * bits).sum(-1)] for i, c in enumerate(coalitions)]

    return value_of


def planted_ok() -> bool:
    """Both planted checks within 0.02 of 4/7 and 3/7."""
    for model, n, forwards in ((PlantedAnds([0, 3], [1, 2, 5, 6, 8, 9]), 10, 512), (PlantedAnds(*N64_RULES), 64, 5000)):
        out = ct.order_spectrum(
            model,
            torch.ones(3, n),
            ct.TabularPlayers(baselines="zero"),
            value="output",
            forwards_per_probe=forwards,
            simple_max=3,
            complex_min=6,
        )
        if (out.simple_share - 4 / 7).abs().max() > 0.02 or (out.complex_share - 3 / 7).abs().max() > 0.02:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "concept_tracker_spectrum_tuning",
        help="folder for the tuning models' value tables (32 MB each, computed once)",
    )
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tables = tuning_tables(args.cache)
    exact = [n20_shares(sp.exact_strength(and_transform(v), 0.05))[0] for v in tables]
    defaults = {name: getattr(sp, name) for name in GRID}
    rows = []
    for setting in itertools.product(*GRID.values()):
        chosen = dict(zip(GRID, setting))
        for name, value in chosen.items():
            setattr(sp, name, value)
        ok = planted_ok()
        rho = []
        for seed in range(args.seeds):
            got = []
            for values in tables:
                plan = sp.plan_spectrum(N, BUDGET, 11)
                gen = torch.Generator().manual_seed(seed)
                est = sp.estimate_spectrum(lookup(values), values.shape[0], plan, BUDGET, generator=gen, resamples=10)
                got.append(n20_shares(est.strength)[0])
            rho.append(float(spearmanr(exact, got)[0]))
        rows.append({"setting": chosen, "planted_ok": ok, "spearman": rho, "mean": sum(rho) / len(rho)})
        print(
            f"{chosen} planted {'ok' if ok else 'FAIL'}: Spearman {' '.join(f'{r:.3f}' for r in rho)}, "
            f"mean {rows[-1]['mean']:.3f}",
            flush=True,
        )
    for name, value in defaults.items():
        setattr(sp, name, value)
    kept = [r for r in rows if r["planted_ok"]]
    best = max(r["mean"] for r in kept)
    choice = max((r for r in kept if r["mean"] >= best - 0.01), key=lambda r: min(r["spearman"]))
    print(f"chosen: {choice['setting']} (mean {choice['mean']:.3f}); in the code: {defaults}")
    print(json.dumps({"rows": rows, "choice": choice, "code": defaults}))


if __name__ == "__main__":
    main()
