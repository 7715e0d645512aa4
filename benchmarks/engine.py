"""compute_interactions vs its floor: the model's own forward over the same masked rows.

    python benchmarks/engine.py [--device cuda] [--samples 16] [--batch-size 512 4096]

Models take digits-sized images ``[1, 8, 8]`` split by ``ImagePatchPlayers(grid=(2, 5))``
(n = 10, 1024 coalitions per sample). For each model and chunk size:

- engine: ``ct.compute_interactions(model, x, players, kind="and", batch_size=rows)``, all in
  (default targets, masking, forwards, log-odds, transform);
- floor: every masked row built beforehand (untimed), then ``model(rows[i:i + rows])`` over the
  same chunks under ``torch.inference_mode()``: the work no engine can skip.

Times are the best of ``--repeats`` rounds in which engine and floor take turns; ratio =
engine / floor (target <= 1.10). The last column runs the engine with ``value="logit"`` (one
gather instead of the log-odds), to show how much of the gap is the value function. On CPU the engine's automatic chunk for these inputs is 4096 rows.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models import cnn, seeded  # noqa: E402
from timing import race  # noqa: E402

import concept_tracker as ct  # noqa: E402
from concept_tracker.transforms import coalition_matrix  # noqa: E402


def mlp64(classes: int = 10, seed: int = 0) -> nn.Module:
    """Flatten -> 64-128-128-classes ReLU MLP for ``[M, 1, 8, 8]`` images."""
    return seeded(
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, classes)
        ),
        seed,
    )


def floor(model: nn.Module, rows: torch.Tensor, chunk: int) -> None:
    """The model's forwards on the masked ``rows`` ``[R, ...]``, ``chunk`` rows at a time: the
    least any engine has to do."""
    with torch.inference_mode():
        for start in range(0, rows.shape[0], chunk):
            model(rows[start : start + chunk])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.samples, 1, 8, 8, generator=g).to(device)
    players = ct.ImagePatchPlayers(grid=(2, 5)).fit(x)  # the floor masks before any engine call could fit it
    n = players.n
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{args.samples} samples x 2**{n} coalitions = {args.samples << n} rows; best of {args.repeats}\n")
    print("| model | chunk rows | engine | floor | engine / floor | engine (value='logit') / floor |")
    print("|---|---|---|---|---|---|")
    for name, model in (("MLP 64-128-128-10", mlp64()), ("CNN conv8-conv16-fc", cnn())):
        model = model.to(device).eval()
        with torch.inference_mode():
            rows = torch.cat([players.mask(sample, coalition_matrix(n, device)) for sample in x])
        for chunk in args.batch_size:
            engine = partial(ct.compute_interactions, model, x, players, batch_size=chunk)
            fns = {
                "floor": partial(floor, model, rows, chunk),
                "engine": engine,
                "logit": partial(engine, value="logit"),
            }
            t = race(fns, args.repeats, device)
            print(
                f"| {name} | {chunk} | {t['engine'] * 1e3:.1f} ms | {t['floor'] * 1e3:.1f} ms | "
                f"{t['engine'] / t['floor']:.3f} | {t['logit'] / t['floor']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
