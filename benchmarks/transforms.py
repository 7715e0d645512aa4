"""Fast AND transform vs the dense Harsanyi matrix and shapiq's exact Möbius transform.

    python benchmarks/transforms.py [--device cuda] [--batch 8]

For each n, one batch of random values ``[batch, 2**n]`` goes through

- ``ct.and_transform``: the butterfly, ``O(n * 2**n)`` per sample;
- the dense ``2**n x 2**n`` matrix product research code uses (matrix built once, untimed;
  only while it fits in memory);
- shapiq's ``ExactComputer(...).moebius_transform``, ``O(3**n)`` Python loop per sample (game
  evaluated at construction, untimed; it runs on the CPU whatever ``--device`` says).

Times are the best of ``--repeats`` runs (shapiq: one run, it takes seconds), all measured side by
side in one process. The last column is the largest disagreement with the fast transform.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import dense_and_matrix, shapiq_computer, shapiq_to_bitmask  # noqa: E402
from timing import best_time  # noqa: E402

import concept_tracker as ct  # noqa: E402


def dense_fits(n: int, device: torch.device) -> bool:
    # The float64 matrix plus the int8/int32/bool temporaries of its construction.
    need = (8 + 4 + 1 + 1 + 1) * 4**n
    if device.type == "cuda":
        return need < 0.8 * torch.cuda.mem_get_info(device)[0]
    try:
        return need < 0.6 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return n <= 12


def shapiq_time(values: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Total time of shapiq's Möbius transform over the rows of ``values`` (one game per row)."""
    n = values.shape[-1].bit_length() - 1
    total, rows = 0.0, []
    for row in values.cpu():
        computer = shapiq_computer(row)
        start = time.perf_counter()
        moebius = computer.moebius_transform
        total += time.perf_counter() - start
        rows.append(shapiq_to_bitmask(moebius, n))
    return total, torch.stack(rows)


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(a: float | None, b: float) -> str:
    return "-" if a is None else f"{a / b:,.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 12, 14, 16, 20])
    parser.add_argument("--compare-up-to", type=int, default=14, help="largest n for dense and shapiq")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, python {platform.python_version()}")
    print(f"batch of {args.batch} samples, float64; best of {args.repeats} (shapiq: one run)\n")
    header = "| n | fast | dense matrix | shapiq | dense / fast | shapiq / fast | max abs diff |"
    print(header)
    print("|" + "---|" * 7)
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        values = torch.randn(args.batch, 1 << n, generator=g, dtype=torch.float64).to(device)
        fast_s, fast = best_time(partial(ct.and_transform, values), args.repeats, device)
        dense_s = shapiq_s = None
        diffs = []
        if n <= args.compare_up_to and dense_fits(n, device):
            matrix = dense_and_matrix(n, device=device)
            dense_s, dense = best_time(partial(torch.matmul, values, matrix.T), max(1, args.repeats // 2), device)
            diffs.append((dense - fast).abs().max().item())
            del matrix, dense
        if n <= args.compare_up_to:
            shapiq_s, moebius = shapiq_time(values)
            diffs.append((moebius - fast.cpu()).abs().max().item())
        print(
            f"| {n} | {fmt(fast_s)} | {fmt(dense_s)} | {fmt(shapiq_s)} | {ratio(dense_s, fast_s)} | "
            f"{ratio(shapiq_s, fast_s)} | {f'{max(diffs):.1e}' if diffs else '-'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
