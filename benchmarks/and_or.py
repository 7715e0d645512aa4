"""AND-OR decomposition: the library's ADMM solver vs the published SGD vs the exact LP.

    python benchmarks/and_or.py [--device cuda] [--quick] [--threads 2]

For 4 samples of a random ReLU MLP (values on all masked inputs, zero baseline) at n = 8 and
n = 10, measured side by side in one process:

- ``ct``: :func:`concept_tracker.and_or.decompose` with its default settings;
- ``SGD``: the published method, re-implemented here: ``gamma = q = 0``, plain SGD with
  momentum 0.9 on ``(gamma, q)`` for 20,000 iterations, learning rate log-spaced from 1e-5 down
  to 1e-6 (``lr_t = 1e-5 * 10**(-t / (T - 1))``), ``q`` clipped into its box before every
  iteration, loss ``sum |I_and| + sum |I_or|`` summed over samples (so each sample sees its own
  gradient). It runs on the library's butterfly transforms (the research code multiplies by
  dense ``2**n x 2**n`` matrices, which is slower still), with the subgradient autograd would
  give (``sign(0) = 0``);
- ``LP``: the exact optimum from SciPy's HiGHS (``tests/oracles_lp.py``) for n <= ``--lp-max-n``
  (default 8: HiGHS needs minutes per sample at n = 10).

Objectives are reported relative to the LP optimum where there is one, else to the SGD result;
times are wall-clock seconds (CUDA synchronised). A last row times the solver alone on 16
samples at n = 10. ``--quick`` shrinks everything for a smoke test.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from timing import timed  # noqa: E402

from concept_tracker.and_or import AndOrConfig, and_or_objective, decompose  # noqa: E402
from concept_tracker.transforms import and_transform, coalition_matrix, or_transform  # noqa: E402


def mlp_values(n: int, samples: int, seed: int, device: torch.device) -> Tensor:
    """[samples, 2**n] scalar output of a seeded ReLU MLP (n -> 32 -> 32 -> 1) on masked inputs."""
    g = torch.Generator().manual_seed(seed)
    sizes = [n, 32, 32, 1]
    layers = list(zip(sizes, sizes[1:]))
    weights = [torch.randn(o, i, generator=g, dtype=torch.float64) * (1.5 / math.sqrt(i)) for i, o in layers]
    biases = [torch.randn(o, generator=g, dtype=torch.float64) * (1.5 / math.sqrt(i)) for i, o in layers]
    x = torch.randn(samples, n, generator=g, dtype=torch.float64)
    h = (x[:, None, :] * coalition_matrix(n).double()[None]).reshape(-1, n)
    for k, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w.T + b
        if k < len(weights) - 1:
            h = h.relu()
    return h.reshape(samples, 1 << n).to(device)


def and_adjoint(y: Tensor) -> Tensor:
    """``A^T y`` for the AND transform ``A``: superset Moebius sums."""
    return and_transform(y.flip(-1)).flip(-1)


def or_adjoint(y: Tensor) -> Tensor:
    """``O^T y`` for the OR transform ``O`` (including its empty-set row ``I_or(empty) = v(empty)``)."""
    rest = y.clone()
    rest[..., 0] = 0.0
    out = -and_transform(rest.flip(-1))
    out[..., 0] += y[..., 0]
    return out


def published_sgd(
    values: Tensor, iterations: int, lr: float = 1e-5, bound_ratio: float = 0.02
) -> tuple[Tensor, Tensor]:
    """The published momentum-SGD AND-OR solver; returns ([B] objective, [B, 2**n] q)."""
    bound = bound_ratio * (values[:, -1:] - values[:, :1]).abs()
    gamma = torch.zeros_like(values)
    q = torch.zeros_like(values)
    buf_gamma = buf_q = None
    rates = lr * 10.0 ** (-torch.arange(iterations, dtype=torch.float64) / max(iterations - 1, 1))
    for t in range(iterations):
        q = torch.maximum(torch.minimum(q, bound), -bound)
        half = 0.5 * (values + q)
        i_and = and_transform(half + gamma)
        i_or = or_transform(half - gamma)
        if t == iterations - 1:
            break
        g_and = and_adjoint(torch.sign(i_and))
        g_or = or_adjoint(torch.sign(i_or))
        grad_gamma = g_and - g_or
        grad_q = 0.5 * (g_and + g_or)
        # torch.optim.SGD(momentum=0.9): the buffer starts at the first gradient.
        buf_gamma = grad_gamma if buf_gamma is None else 0.9 * buf_gamma + grad_gamma
        buf_q = grad_q if buf_q is None else 0.9 * buf_q + grad_q
        rate = rates[t].item()
        gamma = gamma - rate * buf_gamma
        q = q - rate * buf_q
    return and_or_objective(i_and, i_or), q


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"


def fmt(values: Tensor) -> str:
    return "/".join(f"{x:.3f}" for x in values.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and 2,000 SGD iterations")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--lp-max-n", type=int, default=8, help="largest n solved exactly by HiGHS (default 8)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = (6, 8) if args.quick else (8, 10)
    samples = 2 if args.quick else 4
    sgd_iterations = 2_000 if args.quick else 20_000
    big = (8, 16) if args.quick else (10, 16)

    print(f"device: {machine(device)}; torch {torch.__version__}")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"published SGD: {sgd_iterations} iterations; ct: AndOrConfig() defaults\n")
    print(
        "| n | samples | ct / LP | SGD / LP | ct / SGD | ct iters | ct certified gap | ct s | SGD s "
        "| ct time / SGD time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    config = AndOrConfig()
    for n in sizes:
        values = mlp_values(n, samples, seed=n, device=device)
        decompose(values[:1], AndOrConfig(max_iter=20))  # build the cached operators for this n
        t_ct, res = timed(partial(decompose, values, config), device)
        t_sgd, (sgd_obj, _) = timed(partial(published_sgd, values, sgd_iterations), device)
        ct_obj = and_or_objective(res.and_effects, res.or_effects)
        if n <= args.lp_max_n:
            from oracles_lp import lp_and_or

            optimum = torch.tensor([lp_and_or(v.cpu())[0] for v in values], dtype=torch.float64, device=device)
            ct_lp, sgd_lp = fmt(ct_obj / optimum), fmt(sgd_obj / optimum)
        else:
            ct_lp = sgd_lp = "n/a"
        print(
            f"| {n} | {samples} | {ct_lp} | {sgd_lp} | {fmt(ct_obj / sgd_obj)} | {res.iterations} | "
            f"{res.gap.max().item():.3f} | {t_ct:.2f} | {t_sgd:.1f} | {t_ct / t_sgd:.3%} |"
        )

    n, count = big
    values = mlp_values(n, count, seed=100 + n, device=device)
    decompose(values[:1], AndOrConfig(max_iter=20))
    t_ct, res = timed(lambda: decompose(values, config), device)
    print(
        f"\nct alone, n={n}, {count} samples: {t_ct:.2f} s, {res.iterations} iterations, "
        f"largest certified gap {res.gap.max().item():.3f}"
    )


if __name__ == "__main__":
    main()
