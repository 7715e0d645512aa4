"""The interaction engine: masked forwards over every coalition, then the transforms.

``compute_interactions`` enumerates the ``2**n`` coalitions of every sample, builds masked
inputs in chunks of rows, runs the model without gradients and in eval mode, reads one value per
row and turns the values into AND / OR interactions. The model, its training flags, grad mode and
every RNG are left exactly as they were.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checks import check_int, check_kind, check_players
from .distributed import all_gather, broadcast_from_main, collective_device, rank, world_size
from .interactions import Interactions
from .language_models import answer_labels
from .players import Players, concat_inputs
from .transforms import MAX_PLAYERS, and_transform, or_transform
from .values import ValueFn, needs_target, predicted_targets, resolve_value, value_name

Inputs = Any
"""A batch: a Tensor [B, ...] or a mapping of tensors [B, ...] (Hugging Face style)."""

# Rows per chunk on CPU are sized so one chunk holds about this many input elements.
_CPU_CHUNK_ELEMENTS = 1 << 19
# Masked rows built by one op, and model outputs valued by one call, hold at most about this
# many elements (more when one chunk alone is larger).
_BLOCK_ELEMENTS = 1 << 19
_MAX_AUTO_ROWS = 4096
# Float64 copies of the [B, 2**n] tensors alive at once (values, effects, transform scratch).
_RESULT_COPIES = 6


def _freeze_observers(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Stop the quantization observers of ``model`` from learning from the block that follows.

    Fake-quantization modules (quantization-aware training, ``torch.ao.quantization.prepare_qat``)
    and observers (``prepare``) update their statistics at every forward, in eval mode too, so
    masked inputs would move the ranges that training quantizes with. Fake quantization is
    switched to its current ranges (observer disabled), and every buffer of these modules is
    saved, to be put back bitwise by the caller.

    Returns:
        ``(buffer, saved copy)`` pairs; empty for a model without quantization modules.
    """
    try:
        from torch.ao.quantization import FakeQuantizeBase
        from torch.ao.quantization.observer import ObserverBase
    except ImportError:  # a torch build without eager-mode quantization has no such modules
        return []
    saved: list[tuple[Tensor, Tensor]] = []
    for module in model.modules():
        if isinstance(module, (FakeQuantizeBase, ObserverBase)):
            saved.extend((b, b.detach().clone()) for b in module.buffers(recurse=False))
            if isinstance(module, FakeQuantizeBase):
                module.disable_observer()
    return saved


def _restore_buffers(saved: list[tuple[Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for buffer, copy in saved:
            if buffer.shape != copy.shape:  # per-channel observers size their ranges at the first forward
                buffer.resize_(copy.shape)
            buffer.copy_(copy)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run a block in eval mode and restore everything training depends on afterwards.

    Restores every module's ``training`` flag, grad mode, the RNG states of torch (CPU and
    every initialised CUDA device), numpy and ``random``, and the state of quantization
    observers (frozen during the block, see :func:`_freeze_observers`), so that tracking leaves
    no trace on the run it observes. Forward hooks the user registered do run on every masked
    forward: a stateful hook sees the masked inputs.
    """
    flags = [(m, m.training) for m in model.modules()]
    observers = _freeze_observers(model)
    grad_mode = torch.is_grad_enabled()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    np_rng = np.random.get_state()
    py_rng = random.getstate()
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag
        _restore_buffers(observers)
        torch.set_grad_enabled(grad_mode)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)


def progress_bar_open() -> bool:
    """Whether a tqdm progress bar is open in this process (any tqdm class: they share one
    registry of open bars), e.g. the Hugging Face Trainer's or Lightning's."""
    from tqdm import tqdm

    return len(getattr(tqdm, "_instances", ())) > 0


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def batch_size_of(inputs: Inputs) -> int:
    """Number of samples ``B`` in a batch (Tensor [B, ...] or mapping of [B, ...] tensors)."""
    if isinstance(inputs, Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs is a scalar; pass a batch [B, ...] of samples.")
        return inputs.shape[0]
    if isinstance(inputs, Mapping):
        sizes = {k: v.shape[0] for k, v in inputs.items() if isinstance(v, Tensor)}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"inputs must hold tensors with one common batch dimension; got sizes {sizes}.")
        return next(iter(sizes.values()))
    raise ValueError(
        f"inputs has type {type(inputs).__name__}; pass a Tensor [B, ...] or a dict of tensors "
        "[B, ...] (Hugging Face style)."
    )


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    """The batch with every tensor on ``device`` (non-tensor entries of a mapping dropped)."""
    if isinstance(inputs, Tensor):
        return inputs.to(device)
    return {k: v.to(device) for k, v in inputs.items() if isinstance(v, Tensor)}


def to_model_dtype(inputs: Inputs, model: nn.Module) -> Inputs:
    """Floating-point inputs cast to the model's floating dtype (float32 probes for a float64 or
    bfloat16 model) when all its floating parameters share one; integer inputs (token ids) and
    models of mixed precision are left as they are."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        return inputs
    dtype = dtypes.pop()

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    return cast(inputs) if isinstance(inputs, Tensor) else {k: cast(v) for k, v in inputs.items()}


def split_samples(inputs: Inputs) -> list[Any]:
    """The batch as a list of samples without the batch dimension."""
    size = batch_size_of(inputs)
    if isinstance(inputs, Tensor):
        return list(inputs.unbind(0))
    return [{k: v[b] for k, v in inputs.items()} for b in range(size)]


def _call(model: nn.Module, batch: Any) -> Any:
    return model(**batch) if isinstance(batch, Mapping) else model(batch)


def _checked_call(model: nn.Module, batch: Any, rows: int) -> Any:
    """:func:`_call` on ``rows`` masked rows, refusing outputs that do not give one row per input
    row: a model that reduces over the batch would otherwise be broadcast into every row."""
    try:
        output = _call(model, batch)
    except RuntimeError as err:
        if "dtype" not in str(err) and "scalar type" not in str(err):
            raise
        parts = [batch] if isinstance(batch, Tensor) else list(batch.values())
        got = sorted({str(t.dtype) for t in parts if isinstance(t, Tensor)})
        raise ValueError(
            f"the model's forward failed on inputs of dtype {', '.join(got)} ({err}); floating inputs are "
            "cast only to a model whose floating parameters share one dtype: make the model and the probe "
            "inputs agree (model.to(dtype) or inputs.to(dtype))."
        ) from err
    z = output if isinstance(output, Tensor) else getattr(output, "logits", None)
    if z is None and isinstance(output, Mapping):
        z = output.get("logits")
    if z is None and isinstance(output, (tuple, list)) and output:
        z = output[0]
    if isinstance(z, Tensor) and (z.dim() == 0 or z.shape[0] != rows):
        raise ValueError(
            f"the model returned outputs of shape {tuple(z.shape)} for a batch of {rows} inputs; expected "
            f"[{rows}, ...], one output row per input row. Make the forward keep the batch dimension "
            "(no mean/sum over dim 0, no squeeze)."
        )
    return output


def _row_elements(sample: Any) -> int:
    if isinstance(sample, Tensor):
        return max(sample.numel(), 1)
    return max(sum(v.numel() for v in sample.values()), 1)


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _auto_rows(model: nn.Module, sample: Any, device: torch.device, total: int) -> int:
    """Rows per chunk: an element budget on CPU; measured peak memory per row on CUDA."""
    if device.type != "cuda":
        return max(1, min(total, _MAX_AUTO_ROWS, _CPU_CHUNK_ELEMENTS // _row_elements(sample)))
    probe_rows = min(total, 16)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        _call(model, _replicate(sample, probe_rows))
    per_row = max((torch.cuda.max_memory_allocated(device) - before) / probe_rows, 1.0)
    free = torch.cuda.mem_get_info(device)[0]
    return max(1, min(total, int(0.5 * free / per_row)))


def _replicate(sample: Any, rows: int) -> Any:
    if isinstance(sample, Tensor):
        return sample[None].expand(rows, *sample.shape)
    return {k: v[None].expand(rows, *v.shape) for k, v in sample.items() if k != "word_ids"}


class NonFiniteValueError(ValueError):
    """A model value that is NaN or inf. The message names the first sample and coalition hit;
    ``warn_key`` is the same whichever they are, so a tracker warns about it once per run even
    when another sample is hit at every step."""

    warn_key = "NonFiniteValueError"


def _check_finite(values: Tensor) -> None:
    """Raise naming the first sample and coalition whose value (in ``values`` [B, 2**n]) is NaN/inf."""
    if torch.isfinite(values).all():
        return
    b, s = (int(i) for i in (~torch.isfinite(values)).nonzero()[0])
    raise NonFiniteValueError(
        f"the model's value is {values[b, s].item()} for sample {b}, coalition {s} (bitmask of "
        "kept players); check the players' baselines (a masked input the model cannot handle) "
        "and the model for NaN/inf outputs."
    )


def _row_targets(targets: Tensor, per: int, start: int, stop: int) -> Tensor:
    """The target of every row ``start..stop-1`` of the (sample, coalition) grid:
    [stop - start] classes, or [stop - start, T] answer labels."""
    first, last = start // per, (stop - 1) // per
    tail = targets.shape[1:]
    if first == last:
        return targets[first].expand(stop - start, *tail)
    spanned = targets[first : last + 1, None].expand(last + 1 - first, per, *tail).reshape(-1, *tail)
    return spanned[start - first * per : stop - first * per]


def _write_values(value_fn: ValueFn, outputs: Any, targets: Tensor | None, dest: Tensor) -> None:
    """``dest[:] = value_fn(outputs, targets)``, checking that there is one value per row."""
    vals = value_fn(outputs, targets)
    if not isinstance(vals, Tensor) or vals.numel() != dest.numel():
        got = tuple(vals.shape) if isinstance(vals, Tensor) else type(vals).__name__
        raise ValueError(
            f"value returned {got} for {dest.numel()} masked rows; a value function must "
            "return one scalar per row, Tensor[M]."
        )
    dest.copy_(vals.reshape(-1))


def _output_buffer(buffers: dict[Any, Tensor], output: Any, rows: int) -> Tensor | None:
    """A reusable [rows, ...] buffer for Tensor outputs like ``output`` whose ``rows`` rows hold
    at most ``_BLOCK_ELEMENTS`` elements; None for other outputs (valued chunk by chunk)."""
    if not isinstance(output, Tensor) or output.dim() == 0 or rows * output[0].numel() > _BLOCK_ELEMENTS:
        return None
    key = (tuple(output.shape[1:]), output.dtype, output.device)
    if key not in buffers or buffers[key].shape[0] < rows:
        buffers[key] = torch.empty(rows, *key[0], dtype=output.dtype, device=output.device)
    return buffers[key]


def _value_block(
    model: Any,
    value_fn: ValueFn,
    inputs: Any,
    targets: Tensor | None,
    dest: Tensor,
    rows: int,
    buffers: dict[Any, Tensor],
) -> None:
    """Fill ``dest`` [size] with the values of the ``size`` masked rows ``inputs``.

    The model runs over chunks of ``rows`` rows. Small Tensor outputs are copied into a reused
    buffer and valued by one call per block: a value function is a handful of small ops whose
    fixed cost per call exceeds a cheap model's forward over a chunk. They are copied rather
    than held until the block ends: with a small MLP on CPU, holding them made the following
    forwards 10-25 % slower (allocator effects). Other outputs (a language model's
    ``[M, T, V]`` logits) are valued chunk by chunk.
    """
    size = dest.shape[0]
    pending: Any = None  # a Tensor buffer once a block of small outputs is being filled
    first_pending = 0

    def flush(stop: int) -> None:
        tgt = None if targets is None else targets[first_pending:stop]
        _write_values(value_fn, pending[: stop - first_pending], tgt, dest[first_pending:stop])

    for first in range(0, size, rows):
        last = min(size, first + rows)
        output = _checked_call(model, _slice_rows(inputs, first, last), last - first)
        buffer = _output_buffer(buffers, output, size)
        if pending is not None and buffer is not pending:
            flush(first)
            pending = None
        if buffer is None:
            _write_values(value_fn, output, None if targets is None else targets[first:last], dest[first:last])
            continue
        if pending is None:
            pending, first_pending = buffer, first
        buffer[first - first_pending : last - first_pending] = output
    if pending is not None:
        flush(size)


def _block_rows(rows: int, row_elements: int, total: int) -> int:
    """Rows masked at once: a whole number of chunks of ``rows`` within ``_BLOCK_ELEMENTS``
    input elements (one op builds them all, and the chunks are views of it), at least one."""
    return min(total, max(1, _BLOCK_ELEMENTS // (rows * row_elements)) * rows)


def _slice_rows(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, Tensor):
        return inputs[start:stop]
    return {k: v[start:stop] for k, v in inputs.items()}


def coalition_values(
    model: nn.Module,
    samples: list[Any],
    players: Players,
    targets: Tensor | None,
    value_fn: ValueFn,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> Tensor:
    """v(S) for every sample and coalition. Call inside :func:`preserved_state`.

    Rows are numbered over the (sample, coalition) grid: row ``r`` is sample ``r // 2**n``
    under coalition ``r % 2**n``. The masked rows of a block of chunks are built at once, the
    model runs over each chunk of ``batch_size`` rows, and the small outputs of a block are
    valued together.

    Args:
        samples: B samples (no batch dimension) on the model's device.
        targets: [B] int64 target per sample, or None for value functions that read none.
        value_fn: ``f(outputs, target[M]) -> Tensor[M]``.
        batch_size: rows per forward; None sizes it from the input size (CPU) or free memory (CUDA).
    Returns:
        [B, 2**n] float64 values on the model's device.
    """
    n = players.n
    device = model_device(model)
    per = 1 << n
    total = len(samples) * per
    rows = batch_size or _auto_rows(model, samples[0], device, total)
    out = torch.empty(len(samples), per, dtype=torch.float64, device=device)
    forward = players.model_forward(model)
    # Blocks run through the rows in order, so each one fills a contiguous range of ``flat``.
    flat = out.view(-1)
    masked = players.batch_masker(samples)
    buffers: dict[Any, Tensor] = {}
    warned = False
    done = 0
    from tqdm.auto import tqdm

    with tqdm(total=total, disable=not show_progress, desc="coalitions", unit="row") as bar:
        while done < total:
            # Restart from the first unfinished row: after an OOM the chunk size changes.
            block = _block_rows(rows, _row_elements(samples[0]), total)
            try:
                for start in range(done, total, block):
                    stop = min(total, start + block)
                    tgt = None if targets is None else _row_targets(targets, per, start, stop)
                    with torch.inference_mode():
                        _value_block(forward, value_fn, masked(start, stop), tgt, flat[start:stop], rows, buffers)
                    done = stop
                    bar.update(stop - start)
            except torch.cuda.OutOfMemoryError as err:
                rows, warned = _halved(rows, err, warned, "compute_interactions"), True
    _check_finite(out)
    return out


def _halved(rows: int, err: torch.cuda.OutOfMemoryError, warned: bool, caller: str) -> int:
    """Rows per forward after a CUDA out-of-memory error: half as many (the error again at one
    row); says so once per call of ``caller``."""
    if rows == 1:
        raise err
    torch.cuda.empty_cache()
    rows = max(1, rows // 2)
    if not warned:
        warnings.warn(f"CUDA out of memory in {caller}; retrying with batch_size={rows}.", stacklevel=4)
    return rows


def sampled_coalition_values(
    model: nn.Module,
    samples: list[Any],
    players: Players,
    targets: Tensor | None,
    value_fn: ValueFn,
    coalitions: Tensor,
    batch_size: int | None = None,
) -> Tensor:
    """v(S) for a chosen set of coalitions of every sample. Call inside :func:`preserved_state`.

    The sampled counterpart of :func:`coalition_values` (same chunking, forward wrapper, value
    buffers and out-of-memory halving), for estimators that evaluate a few coalitions of many
    players instead of all ``2**n``.

    Args:
        samples: B samples (no batch dimension) on the model's device.
        targets: [B] (or [B, T] answer labels) per sample, or None.
        value_fn: ``f(outputs, target[M]) -> Tensor[M]``.
        coalitions: [B, M, n] bool; row ``m`` of sample ``b`` keeps the players set in it.
        batch_size: rows per forward; None sizes it as for :func:`coalition_values`.
    Returns:
        [B, M] float64 values on the model's device.
    """
    device = model_device(model)
    num, per = coalitions.shape[0], coalitions.shape[1]
    out = torch.empty(num, per, dtype=torch.float64, device=device)
    if per == 0:
        return out
    rows = batch_size or _auto_rows(model, samples[0], device, num * per)
    forward = players.model_forward(model)
    buffers: dict[Any, Tensor] = {}
    warned = False
    for b, sample in enumerate(samples):
        masker = players.masker(sample)
        done = 0
        while done < per:
            block = _block_rows(rows, _row_elements(sample), per)
            try:
                for start in range(done, per, block):
                    stop = min(per, start + block)
                    tgt = None if targets is None else targets[b].expand(stop - start, *targets.shape[1:])
                    with torch.inference_mode():
                        masked = masker(coalitions[b, start:stop].to(device))
                        _value_block(forward, value_fn, masked, tgt, out[b, start:stop], rows, buffers)
                    done = stop
            except torch.cuda.OutOfMemoryError as err:
                rows, warned = _halved(rows, err, warned, "order_spectrum"), True
    _check_finite(out)
    return out


def default_targets(model: nn.Module, samples: list[Any], players: Players, batch_size: int | None = None) -> Tensor:
    """The model's predicted class on each unmasked sample. Call inside :func:`preserved_state`.

    The samples go through the model together, ``batch_size`` (None: sized as for
    :func:`coalition_values`) at a time: one forward per sample costs more than the whole
    batch for small models.

    Returns:
        [B] int64.
    """
    device = model_device(model)
    rows = batch_size or _auto_rows(model, samples[0], device, len(samples))
    preds = []
    with torch.inference_mode():
        for start in range(0, len(samples), rows):
            chunk = samples[start : start + rows]
            batch = concat_inputs([players.model_inputs(s) for s in chunk])
            preds.append(predicted_targets(_checked_call(model, batch, len(chunk))))
    return torch.cat(preds).clone()


def _fingerprint(samples: list[Any]) -> float:
    """A cheap checksum of the probe samples, to catch ranks that were given different probes."""
    total = 0.0
    for i, sample in enumerate(samples):
        parts = sample.values() if isinstance(sample, Mapping) else [sample]
        total += (i + 1) * sum(float(t.double().sum()) for t in parts if isinstance(t, Tensor))
    return total


def sharded_coalition_values(
    model: nn.Module,
    samples: list[Any],
    players: Players,
    targets: Tensor | None,
    value_fn: ValueFn,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> Tensor:
    """:func:`coalition_values` with the samples split across ranks.

    Every rank must pass the same ``samples`` and ``targets``. Rank ``r`` values the ``r``-th
    contiguous block of ``ceil(B / world_size)`` samples (the last block padded by repeating the
    last sample), in chunks of the same number of rows on every rank, so every rank runs the
    same number of forwards: models whose forward is a collective (FSDP, DeepSpeed ZeRO-3) stay
    in step. The blocks are all-gathered (equal-size tensors, gloo and nccl alike) and the
    padding trimmed. Call inside :func:`preserved_state` on every rank.

    Rows per chunk: ``batch_size``, or the smallest automatic size over the ranks. A CUDA
    out-of-memory retry halves the chunk on one rank only, which desynchronises collective
    forwards: pass a fixed ``batch_size`` for FSDP / ZeRO-3 models.

    Args:
        samples: B samples (no batch dimension) on the model's device, identical on every rank.
        targets: [B] int64 target per sample (identical on every rank), or None.
        value_fn, batch_size, show_progress: as for ``coalition_values`` (progress on rank 0).
    Returns:
        [B, 2**n] float64 values on the model's device, on every rank.
    Raises:
        ValueError: on every rank, when the ranks hold different probe samples.
        RuntimeError: on every rank, when valuing failed on some rank (that rank re-raises
            its own error).
    """
    num, size, me = len(samples), world_size(), rank()
    device = model_device(model)
    per_rank = -(-num // size)
    block = [min(i, num - 1) for i in range(me * per_rank, (me + 1) * per_rank)]
    mine = [samples[i] for i in block]
    rows = batch_size or _auto_rows(model, mine[0], device, per_rank << players.n)

    # One small gather checks that the ranks agree on the probes and picks a common chunk size.
    local = torch.tensor([num, rows, _fingerprint(samples)], dtype=torch.float64, device=collective_device(device))
    everyone = torch.stack(all_gather(local))
    same_probes = (everyone[:, 0] == num).all() and torch.allclose(
        everyone[:, 2], everyone[0, 2], rtol=1e-9, atol=0.0, equal_nan=True
    )
    if not same_probes:
        raise ValueError(
            f"the ranks hold different probe samples (sample counts {everyone[:, 0].long().tolist()}); "
            "compute_interactions shards the samples across ranks, so every rank must pass the same "
            "inputs: pick probes with the same seed from the full dataset, not from a rank's shard."
        )
    rows = int(everyone[:, 1].min())

    error: Exception | None = None
    try:
        values = coalition_values(
            model, mine, players, None if targets is None else targets[block], value_fn, rows, show_progress and me == 0
        )
    except Exception as err:  # re-raised below, once the other ranks have heard of it
        error = err
        values = torch.zeros(per_rank, 1 << players.n, dtype=torch.float64, device=device)
    # Tell every rank about a failure before the gather, so that no rank waits for a dead one.
    failed = torch.stack(all_gather(torch.tensor([int(error is not None)], device=local.device)))
    if failed.any():
        if isinstance(error, ValueError):
            # The engine numbers the samples within this rank's block.
            raise type(error)(
                f"rank {me} values samples {block} of the batch (sample i below is the i-th of these): {error}"
            ) from error
        if error is not None:
            raise error
        bad = failed.reshape(-1).nonzero().reshape(-1).tolist()
        raise RuntimeError(f"compute_interactions failed on rank(s) {bad}; see their error.")
    return torch.cat(all_gather(values.to(local.device)))[:num].to(device)


def _check_memory(num_samples: int, n: int, device: torch.device) -> None:
    needed = _RESULT_COPIES * 8 * num_samples * (1 << n)
    available = _available_bytes(device)
    if needed > available:
        raise ValueError(
            f"{num_samples} samples x 2**{n} coalitions need about {needed / 2**30:.1f} GiB for "
            f"values and effects, but {device} has {available / 2**30:.1f} GiB free; pass fewer "
            "samples (inputs) or fewer players (n)."
        )


def _resolve_targets(target: Any, num_samples: int, device: torch.device) -> Tensor | None:
    if target is None:
        return None
    t = torch.as_tensor(target, device=device).long()
    if t.dim() == 2 and t.shape[0] == num_samples:  # answer labels [B, T]
        return t
    t = t.reshape(-1)
    if t.numel() == 1:
        return t.expand(num_samples).clone()
    if t.numel() != num_samples:
        raise ValueError(f"target has {t.numel()} entries for {num_samples} samples; give one per sample or one int.")
    return t


def compute_interactions(
    model: nn.Module,
    inputs: Inputs,
    players: Players,
    target: int | Tensor | None = None,
    value: str | ValueFn = "log_odds",
    kind: str = "and",
    batch_size: int | None = None,
    show_progress: bool = False,
    and_or: Any = None,
    warm_start: Interactions | None = None,
) -> Interactions:
    """Interactions between the players of every sample.

    Runs ``B * 2**n`` masked forwards in chunks of ``batch_size`` rows under
    ``torch.inference_mode()`` with the model in eval mode, on the model's device, and restores
    training flags, grad mode and RNG states afterwards. Under ``torch.distributed`` with more
    than one process, call it on every rank with the same inputs: the samples are split across
    the ranks and every rank gets the full result (see
    :func:`sharded_coalition_values`).

    Args:
        model: any ``nn.Module``; called as ``model(x)`` or ``model(**inputs)`` for dict inputs.
        inputs: Tensor [B, ...] or a dict of tensors [B, ...] (Hugging Face style).
        players: how each sample splits into n players and how a coalition masks it.
        target: [B] or one int target class, or [B, T] answer labels of a causal language model
            (see :func:`~concept_tracker.language_models.answer_labels`); None = the inputs'
            answer labels when they hold some, else the model's prediction on each sample.
        value: "log_odds" (default), "logit", "log_prob", "output", "answer_log_prob" (log
            p(answer | prompt) of a causal language model) or ``f(outputs, target)``.
        kind: "and", "or" or "and_or" (sparse AND-OR decomposition, see ``and_or``).
        batch_size: rows per forward; None sizes it automatically. On CUDA out-of-memory the
            chunk is halved and retried (with one warning).
        show_progress: a tqdm bar over the rows.
        and_or: ``AndOrConfig`` for kind "and_or" (None = defaults).
        warm_start: an earlier "and_or" result on the same samples whose gamma and q start the solver.
    Returns:
        :class:`Interactions` with ``outputs`` [B, 2**n] and the effects of ``kind``, on the
        model's device.
    """
    check_kind(kind)
    value_fn = resolve_value(value)
    check_int("batch_size", batch_size, optional=True, unit="rows per forward")
    check_players(players)
    num_samples = batch_size_of(inputs)
    device = model_device(model)
    batch = to_model_dtype(to_device(inputs, device), model)
    players.prepare(batch)
    n = players.n
    if n > MAX_PLAYERS:
        raise ValueError(
            f"players give n={n}; the exact readings evaluate all 2**n coalitions and stop at "
            f"{MAX_PLAYERS} players. Choose fewer players, or estimate the band shares from a set "
            "number of forwards with ct.order_spectrum(..., forwards_per_probe=...)."
        )
    _check_memory(num_samples, n, device)
    targets = _resolve_targets(target, num_samples, device)
    batch, targets = answer_labels(batch, targets, value)
    samples = split_samples(batch)

    with preserved_state(model):
        if targets is None and needs_target(value):
            # Under torch.distributed every rank must run the same number of forwards (FSDP and
            # ZeRO-3 forwards are collective), so the automatic, memory-dependent chunk size gives
            # way to one chunk of all samples there.
            rows = batch_size or (len(samples) if world_size() > 1 else None)
            targets = default_targets(model, samples, players, rows)
        if world_size() > 1:
            # Ranks agree on rank 0's targets, then each values its share of the samples.
            targets = broadcast_from_main(targets)
            outputs = sharded_coalition_values(model, samples, players, targets, value_fn, batch_size, show_progress)
        else:
            outputs = coalition_values(model, samples, players, targets, value_fn, batch_size, show_progress)

    names = [players.names(s) for s in samples]
    common: dict[str, Any] = dict(
        n=n, kind=kind, targets=targets, value=value_name(value), player_names=names, aligned=players.aligned
    )
    if kind == "and":
        return Interactions(outputs=outputs, and_effects=and_transform(outputs), or_effects=None, **common)
    if kind == "or":
        return Interactions(outputs=outputs, and_effects=None, or_effects=or_transform(outputs), **common)
    from .and_or import decompose

    start = None
    if warm_start is not None:
        if warm_start.gamma is None or warm_start.q is None or warm_start.gamma.shape != outputs.shape:
            raise ValueError(
                f"warm_start must be an earlier kind='and_or' result on the same {num_samples} "
                f"samples and n={n} players."
            )
        start = (warm_start.gamma.to(device), warm_start.q.to(device))
    sol = decompose(outputs, and_or, warm_start=start)
    return Interactions(
        outputs=outputs, and_effects=sol.and_effects, or_effects=sol.or_effects, gamma=sol.gamma, q=sol.q, **common
    )
