"""Size-aware CPU threading for the library's tensor work.

The transforms and the AND-OR solver run long chains of small, memory-bound tensor ops. On a
CPU, torch splits every op above a few tens of thousands of elements over all its intra-op
threads and waits at the end of the op for the slowest one. When another process holds one of
the cores (DataLoader workers, a second job on a shared machine), that wait is a scheduler time
slice, and a chain of thousands of such ops runs several times slower than on one thread. On a
quiet machine these ops gain little from a second thread anyway: they are limited by memory
bandwidth. So small problems run on one thread, and larger ones get one thread per
:data:`ELEMENTS_PER_THREAD` elements of their working tensor, never more than the caller has set.

:func:`threads_for` sets the count for the duration of a ``with`` block and restores the caller's
setting afterwards, also when the block raises. With torch's OpenMP backend (that of the
standard CPU builds), ``torch.set_num_threads`` changes the setting of the calling thread only
(and the default of threads that start while the block runs), so a block on a worker thread
leaves a training loop on another thread as it was. On a CUDA or other non-CPU device the
block changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["ELEMENTS_PER_THREAD", "spare_cores", "thread_count", "threads_for"]

ELEMENTS_PER_THREAD = 1 << 22
"""Elements of the working tensor (32 MiB of float64) per intra-op thread. Below it one thread
is about as fast as two on a quiet machine and much faster on a busy one (see BENCHMARKS.md)."""


def thread_count(numel: int, available: int) -> int:
    """Threads for a working tensor of ``numel`` elements: one per :data:`ELEMENTS_PER_THREAD`,
    at least 1 and at most ``available``."""
    return max(1, min(available, numel // ELEMENTS_PER_THREAD))


@contextmanager
def threads_for(numel: int, device: torch.device | str | None = None) -> Iterator[int]:
    """Run the block with a torch intra-op thread count chosen from the problem size.

    Args:
        numel: elements of the largest tensor the block works on at once (e.g. ``B * 2**n``
            for a batch of coalition values).
        device: device of that tensor; anything but a CPU leaves the setting alone.
    Yields:
        the number of intra-op threads in effect inside the block.
    """
    caller = torch.get_num_threads()
    if device is not None and torch.device(device).type != "cpu":
        yield caller
        return
    wanted = thread_count(numel, caller)
    if wanted == caller:
        yield caller
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(caller)


def spare_cores() -> int:
    """CPU cores this process may use beyond torch's intra-op threads (0 when it uses them all):
    whether a background thread can run without taking a core from the calling one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, cores - torch.get_num_threads())
