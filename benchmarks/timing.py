"""Wall-clock timing shared by the benchmark scripts (they import it as ``timing``: a script's
own folder is on ``sys.path``). On CUDA every timed region starts and ends synchronised, so
queued kernels count where they run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """Seconds one call of ``fn`` takes, and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def best_time(fn: Callable[[], T], repeats: int, device: torch.device) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        seconds, out = timed(fn, device)
        best = min(best, seconds)
    return best, out


def race(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds after one warm-up each, the
    functions taking turns in every round so that a change in machine load hits all alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn, device)[0])
    return best
