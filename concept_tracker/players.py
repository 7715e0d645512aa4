"""Players: how a sample is split into input variables and how a coalition masks it.

A player kind turns one sample plus a bool coalition matrix ``[M, n]`` (row = coalition,
column ``i`` set iff player ``i`` is kept) into ``M`` model inputs: the players in the
coalition keep their values, the others take their baseline value. Parts of the input that
belong to no player ("background") keep their original values unless stated otherwise.

Tensor players (tabular, image patches, feature masks) share one mechanism: a *player map*
with the sample's shape (broadcastable) holding the player id of every element, ``-1`` for
background. Masking many samples is then one ``torch.lerp`` (``torch.where`` for integer or
non-finite inputs) per block of rows, over a coalition-to-element weight map built once.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from .checks import check_num_players
from .transforms import coalition_matrix
from .values import IGNORE_INDEX

Sample = Any
"""One sample: a Tensor without the batch dimension, or a mapping of such tensors (HF style)."""

Baselines = str | float | Tensor


# Largest per-call weight map (2**n coalitions x elements per sample) that _MapPlayers keeps.
_WEIGHT_CACHE_ELEMENTS = 1 << 22


def _pieces(start: int, stop: int, per: int) -> list[tuple[int, int, int]]:
    """Rows ``[start, stop)`` of a grid with ``per`` coalitions per sample as (sample, first
    coalition, stop coalition) pieces."""
    out = []
    while start < stop:
        b, s = divmod(start, per)
        e = min(per, s + stop - start)
        out.append((b, s, e))
        start += e - s
    return out


def concat_inputs(parts: list[Any]) -> Any:
    """Model inputs (Tensors or dicts of Tensors) joined along the row dimension."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], Tensor):
        return torch.cat(parts, 0)
    return {k: torch.cat([p[k] for p in parts], 0) for k in parts[0]}


def _device_of(sample: Sample) -> torch.device:
    if isinstance(sample, Tensor):
        return sample.device
    return next(v.device for v in sample.values() if isinstance(v, Tensor))


def _check_coalitions(coalitions: Tensor, n: int) -> None:
    if coalitions.dtype != torch.bool or coalitions.dim() != 2 or coalitions.shape[1] != n:
        raise ValueError(
            f"coalitions must be a bool tensor [M, {n}]; got {coalitions.dtype} {tuple(coalitions.shape)}."
        )


class Players:
    """Base of every player kind.

    Attributes:
        aligned: True when player ``i`` means the same thing in every sample (needed by metrics
            that compare samples, such as train-test similarity).
    """

    aligned: bool = True

    @property
    def n(self) -> int:
        """Number of players."""
        raise NotImplementedError

    @property
    def baseline_description(self) -> str | None:
        """What masked players become, in words, for stored metadata and reports; None when
        the player kind does not say."""
        return None

    def prepare(self, inputs: Any) -> None:
        """Called once with the whole batch before masking (e.g. to bind the input width or
        compute "mean" baselines when :meth:`fit` was not called). Default: nothing."""

    def mask(self, sample: Sample, coalitions: Tensor) -> Any:
        """Masked model inputs for one sample.

        Args:
            sample: one sample (no batch dimension), already on the model's device.
            coalitions: [M, n] bool; column ``i`` set iff player ``i`` is kept.
        Returns:
            ``M`` model inputs batched like the original input (Tensor [M, ...] or a dict).
        """
        raise NotImplementedError

    def masker(self, sample: Sample) -> Callable[[Tensor], Any]:
        """:meth:`mask` bound to one sample: ``masker(sample)(coalitions) == mask(sample, coalitions)``.

        The engine calls it once per sample, then once per chunk of coalitions, so a player kind
        can do its per-sample work (player map, baselines, word grouping) once instead of per
        chunk. Default: call :meth:`mask` every time.
        """
        return lambda coalitions: self.mask(sample, coalitions)

    def batch_masker(self, samples: Sequence[Sample]) -> Callable[[int, int], Any]:
        """Masked inputs for a range of rows of the (sample, coalition) grid of ``samples``.

        Row ``r`` is sample ``r // 2**n`` under the coalition with bitmask ``r % 2**n``, so
        ``batch_masker(samples)(start, stop)`` equals the concatenation of
        ``masker(samples[b])(coalitions[s:e])`` over the pieces of ``[start, stop)``. The
        engine builds its blocks of chunks with it. The result may share memory with the
        result of the next call (tensor players reuse one buffer), so use it before asking for
        more rows. Default: one :meth:`masker` call per piece.
        """
        maskers = [self.masker(sample) for sample in samples]
        per = 1 << self.n
        coalitions: list[Tensor] = []

        def rows(start: int, stop: int) -> Any:
            if not coalitions:
                coalitions.append(coalition_matrix(self.n, _device_of(samples[0])))
            parts = [maskers[b](coalitions[0][s:e]) for b, s, e in _pieces(start, stop, per)]
            return concat_inputs(parts)

        return rows

    def names(self, sample: Sample) -> list[str]:
        """The ``n`` player names for this sample (feature names, patch ids, words)."""
        return [f"p{i}" for i in range(self.n)]

    def model_forward(self, model: Any) -> Any:
        """What the engine calls on the masked inputs in place of ``model`` (same call
        convention). Default: the model itself; a player kind whose masked inputs the model
        cannot take as they are (masked embeddings) wraps it."""
        return model

    def model_inputs(self, sample: Sample) -> Any:
        """One sample as the model takes it, batched to one row (for the unmasked forward)."""
        if isinstance(sample, Mapping):
            return {k: v[None] for k, v in sample.items()}
        return sample[None]


class _MapPlayers(Players):
    """Players defined by a player map over the sample's elements and a baseline tensor."""

    def __init__(self, baselines: Baselines, background_keep: bool = True) -> None:
        if isinstance(baselines, str) and baselines not in ("zero", "mean"):
            raise ValueError(
                f"baselines={baselines!r}; use 'zero', 'mean', a float or a tensor with the shape of one sample."
            )
        if not isinstance(baselines, (str, float, int, Tensor)):
            raise ValueError(
                f"baselines has type {type(baselines).__name__}; use 'zero', 'mean', a float or "
                "a tensor with the shape of one sample."
            )
        self.baselines = baselines
        self._mean: Tensor | None = None
        self._mean_source = ""
        # Who chose the data of a "mean" baseline: "user" (fit), "data" (fit_mean_baseline, the
        # library's fit on training data) or "inputs" (prepare, on the first batch analysed);
        # and the tracker that claimed a library-chosen mean (see claim_baseline).
        self._mean_by = ""
        self._mean_owner: weakref.ref[Any] | None = None
        self._background_keep = background_keep
        self._layouts: dict[tuple[tuple[int, ...], torch.device], tuple[Tensor, bool, tuple[int, ...]]] = {}

    def fit(self, data: Tensor) -> _MapPlayers:
        """Fit the "mean" baseline: the mean sample over ``data`` [N, ...].

        Fit on as much training data as you have: without a fit, the first batch of inputs
        analysed (the probe samples, for a tracker) gives the mean.
        """
        if not isinstance(data, Tensor) or data.dim() < 2:
            raise ValueError("fit(data) needs a tensor [N, ...] of samples to average.")
        self._fit(data, "data", "user")
        self._mean_source = f"fit on {data.shape[0]} samples"
        return self

    def _fit(self, data: Tensor, name: str, by: str) -> None:
        _check_finite_samples(data, name)
        self._mean = data.float().mean(0).to(data.dtype)
        self._mean_by, self._mean_owner = by, None

    def prepare(self, inputs: Any) -> None:
        self._check_tensor(inputs)
        if self.baselines == "mean" and self._mean is None:
            if not isinstance(inputs, Tensor) or inputs.shape[0] < 2:
                raise ValueError(
                    'baselines="mean" needs data: call players.fit(train_data) first, or pass '
                    'a batch of several samples (or choose baselines="zero").'
                )
            self._fit(inputs, 'the inputs (whose mean is the "mean" baseline without a fit)', "inputs")
            self._mean_source = f"{inputs.shape[0]} probe inputs"

    @property
    def baseline_description(self) -> str:
        """``"zero"``, ``"mean (fit on N samples)"``, ``"mean (N probe inputs)"``, ``"mean (not
        fitted yet)"``, ``"constant 0.5"`` or ``"tensor [C, H, W]"``."""
        b = self.baselines
        if isinstance(b, str):
            return "zero" if b == "zero" else f"mean ({self._mean_source or 'not fitted yet'})"
        if isinstance(b, Tensor):
            return f"tensor {list(b.shape)}"
        return f"constant {float(b):g}"

    def player_map(self, sample: Tensor) -> Tensor:
        """[...] int64 player id of each element (broadcastable to ``sample``), -1 = background."""
        raise NotImplementedError

    def baseline(self, sample: Tensor) -> Tensor:
        """Baseline values broadcastable to ``sample``."""
        b = self.baselines
        if isinstance(b, str):
            if b == "zero":
                return torch.zeros((), dtype=sample.dtype, device=sample.device)
            if self._mean is None:
                raise ValueError('baselines="mean" needs data: call players.fit(train_data) first.')
            b = self._mean
        if isinstance(b, (int, float)):
            return torch.tensor(b, dtype=sample.dtype, device=sample.device)
        b = b.to(device=sample.device, dtype=sample.dtype)
        try:
            torch.broadcast_shapes(b.shape, sample.shape)
        except RuntimeError:
            raise ValueError(
                f"baselines has shape {tuple(b.shape)}, which does not broadcast to one sample "
                f"of shape {tuple(sample.shape)}; give one value per input element."
            ) from None
        return b

    def _layout(self, sample: Tensor) -> tuple[Tensor, bool, tuple[int, ...]]:
        """For samples of this shape: the weight column of every element (its player id; ``n``
        for background), whether there is background, and the shape of one row's weights.

        Cached per shape and device: the engine asks once per sample, and the player map of
        every kind depends on the sample's shape only.
        """
        key = (tuple(sample.shape), sample.device)
        if key not in self._layouts:
            pmap = self.player_map(sample).to(sample.device)
            background = pmap < 0
            # The map may have fewer dims than the sample (an [H, W] patch map on [C, H, W]
            # images): singleton dims after the row dim make it broadcast over the sample, not
            # over rows.
            tail = (*(1,) * (sample.dim() - pmap.dim()), *pmap.shape)
            self._layouts[key] = (pmap.masked_fill(background, self.n).reshape(-1), bool(background.any()), tail)
        return self._layouts[key]

    def mask(self, sample: Tensor, coalitions: Tensor) -> Tensor:
        return self.masker(sample)(coalitions)

    def _check_tensor(self, sample: Any) -> None:
        if not isinstance(sample, Tensor):
            keys = f" with keys {sorted(sample)}" if isinstance(sample, Mapping) else ""
            raise ValueError(
                f"{type(self).__name__} masks tensors; got inputs of type "
                f"{type(sample).__name__}{keys}. Use TokenPlayers for dict (Hugging Face) inputs."
            )

    def batch_masker(self, samples: Sequence[Tensor]) -> Callable[[int, int], Tensor]:
        for sample in samples:
            self._check_tensor(sample)
        if len({(tuple(s.shape), s.dtype, s.device) for s in samples}) != 1:
            return super().batch_masker(samples)
        n, per = self.n, 1 << self.n
        x = torch.stack(list(samples))
        idx, background, tail = self._layout(samples[0])
        base = self.baseline(samples[0])
        exact = x.is_floating_point() and bool(torch.isfinite(x).all() & torch.isfinite(base).all())
        dtype = x.dtype if exact else torch.bool
        coalitions = coalition_matrix(n, x.device)

        def weights(first: int, stop: int) -> Tensor:
            """[stop - first, *tail] weight (exact: 0/1 in the sample dtype; else bool) of
            every element under coalitions ``first..stop-1``."""
            columns = coalitions[first:stop].to(dtype)
            if background:  # column n: every background element, kept or not for all rows
                columns = torch.cat([columns, columns.new_full((stop - first, 1), self._background_keep)], 1)
            return columns.index_select(1, idx).view(stop - first, *tail)

        # The weights of every coalition are the same for all samples and chunks: build them
        # once when they are small (an 8x8 image and n = 10: 64k elements), else per range.
        full = weights(0, per) if per * idx.numel() <= _WEIGHT_CACHE_ELEMENTS else None

        def blend(xs: Tensor, w: Tensor, out: Tensor) -> None:
            # lerp(b, x, w) is exactly b at w = 0 and exactly x at w = 1 while x - b is finite,
            # and runs on vectorised float kernels: on CPU it is over ten times faster than
            # torch.where on a broadcast bool mask, the fallback for other samples.
            if exact:
                torch.lerp(base, xs, w, out=out)
            else:
                torch.where(w, xs, base, out=out)

        # One buffer serves every call: with a small MLP on CPU, forwards over a freshly
        # allocated block ran 1-3 ms slower per 16k rows than over reused memory.
        buffer: list[Tensor] = []

        def rows(start: int, stop: int) -> Tensor:
            if not buffer or buffer[0].shape[0] < stop - start:
                buffer[:] = [torch.empty(stop - start, *x.shape[1:], dtype=x.dtype, device=x.device)]
            out = buffer[0][: stop - start]
            row = start
            while row < stop:
                b, s = divmod(row, per)
                whole = (stop - row) // per if s == 0 else 0
                dest = out[row - start :]
                if whole:  # whole samples: one broadcast op over samples x coalitions
                    w = full if full is not None else weights(0, per)
                    blend(x[b : b + whole, None], w[None], dest[: whole * per].view(whole, per, *x.shape[1:]))
                    row += whole * per
                else:
                    e = min(per, s + stop - row)
                    w = full[s:e] if full is not None else weights(s, e)
                    blend(x[b], w, dest[: e - s])
                    row += e - s
            return out

        return rows

    def masker(self, sample: Tensor) -> Callable[[Tensor], Tensor]:
        self._check_tensor(sample)
        n = self.n
        idx, background, tail = self._layout(sample)
        base = self.baseline(sample)
        # lerp(b, x, w) is exactly b at w = 0 and exactly x at w = 1 while x - b is finite, and
        # runs on vectorised float kernels: on CPU it and a float index_select are over ten
        # times faster than bool indexing plus torch.where on a broadcast mask.
        exact = sample.is_floating_point() and bool(torch.isfinite(sample).all() & torch.isfinite(base).all())
        dtype = sample.dtype if exact else torch.bool

        def mask(coalitions: Tensor) -> Tensor:
            _check_coalitions(coalitions, n)
            columns = coalitions.to(device=sample.device, dtype=dtype)
            if background:  # column n: every background element, kept or not for all rows
                columns = torch.cat([columns, columns.new_full((columns.shape[0], 1), self._background_keep)], 1)
            weight = columns.index_select(1, idx).view(coalitions.shape[0], *tail)
            return torch.lerp(base, sample, weight) if exact else torch.where(weight, sample, base)

        return mask


class TabularPlayers(_MapPlayers):
    """Each chosen feature column of a 2-D input ``[B, d]`` is a player.

    Args:
        features: column indices that become players 0..n-1 (at most 20); None = every column.
        baselines: "mean" (per-column mean of the data given to :meth:`fit`, else of the first
            batch analysed),
            "zero", a float, or a tensor ``[d]`` (all columns, even when ``features`` picks fewer).
        names: feature names, either one per input column ``[d]`` or one per player ``[n]``.

    Unchosen columns are background and keep their values.
    """

    def __init__(
        self,
        features: Sequence[int] | None = None,
        baselines: Baselines = "mean",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(baselines)
        if features is not None:
            features = [int(f) for f in features]
            check_num_players(len(features), "features")
            if len(set(features)) != len(features) or min(features) < 0:
                raise ValueError(f"features={features} must be distinct non-negative column indices.")
        self.features = features
        self._names = list(names) if names is not None else None
        self._width: int | None = None

    @property
    def n(self) -> int:
        if self.features is not None:
            return len(self.features)
        if self._width is None:
            raise ValueError("TabularPlayers(features=None) learns n from the data; call prepare(inputs) first.")
        return self._width

    def prepare(self, inputs: Any) -> None:
        if not isinstance(inputs, Tensor) or inputs.dim() != 2:
            raise ValueError(
                f"TabularPlayers needs 2-D inputs [B, d]; got "
                f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}."
            )
        d = inputs.shape[1]
        if self.features is None:
            check_num_players(d, "features=None (every column)")
        elif max(self.features) >= d:
            raise ValueError(f"features={self.features} names a column >= d={d}, the input width.")
        self._width = d
        super().prepare(inputs)

    def player_map(self, sample: Tensor) -> Tensor:
        d = sample.shape[-1]
        pmap = torch.full((d,), -1, dtype=torch.long)
        cols = self.features if self.features is not None else list(range(d))
        pmap[cols] = torch.arange(len(cols))
        return pmap

    def names(self, sample: Sample) -> list[str]:
        cols = self.features if self.features is not None else list(range(self.n))
        if self._names is None:
            return [f"x{c}" for c in cols]
        if len(self._names) == self.n:
            return list(self._names)
        if self._width is not None and len(self._names) == self._width:
            return [self._names[c] for c in cols]
        raise ValueError(f"names has {len(self._names)} entries; give one per column or one per player ({self.n}).")


class ImagePatchPlayers(_MapPlayers):
    """An image ``[C, H, W]`` split into a grid of patches; the selected patches are players.

    Patches are numbered row-major: patch ``p`` is at grid row ``p // cols``, column
    ``p % cols``. Pixel row ``h`` lies in patch row ``h * rows // H`` (columns alike), i.e. patch
    row ``r`` covers pixel rows ``[ceil(r*H/rows), ceil((r+1)*H/rows))``, so ``H`` need not
    divide evenly (H=7, rows=2: pixel rows 0-3 and 4-6).

    ::

        grid=(2, 3)      select=[4, 0, 5] -> players 0, 1, 2 are patches 4, 0, 5
        +---+---+---+
        | 0 | 1 | 2 |
        +---+---+---+
        | 3 | 4 | 5 |
        +---+---+---+

    Args:
        grid: (rows, cols) of the patch grid.
        select: None = every patch (at most 20); a list = those patch ids, in that order, as
            players 0..n-1; an int k = k patches drawn without replacement by
            ``torch.randperm(rows*cols, generator=torch.Generator().manual_seed(seed))[:k]``,
            sorted by patch id (the same patches in every sample).
        baselines: "mean" (mean image of the data given to :meth:`fit`, else of the first
            batch analysed, such as the probe images), "zero", a float, or a tensor
            broadcastable to ``[C, H, W]``.
        background: "keep" (pixels of unselected patches keep their values) or "baseline"
            (they always take the baseline).
        seed: seed of the rule used when ``select`` is an int.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        select: int | Sequence[int] | None = None,
        baselines: Baselines = "mean",
        background: str = "keep",
        seed: int = 0,
    ) -> None:
        if background not in ("keep", "baseline"):
            raise ValueError(f"background={background!r}; use 'keep' or 'baseline'.")
        super().__init__(baselines, background_keep=background == "keep")
        rows, cols = (int(g) for g in grid)
        if rows < 1 or cols < 1:
            raise ValueError(f"grid={grid} must be two positive integers (rows, cols).")
        self.grid = (rows, cols)
        total = rows * cols
        if select is None:
            ids = list(range(total))
            check_num_players(len(ids), f"grid={grid} with select=None (every patch)")
        elif isinstance(select, int):
            if not 1 <= select <= total:
                raise ValueError(f"select={select} must be between 1 and rows*cols={total}.")
            check_num_players(select, f"select={select}")
            perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
            ids = sorted(perm[:select].tolist())
        else:
            ids = [int(p) for p in select]
            check_num_players(len(ids), f"select={list(select)!r}")
            if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= total:
                raise ValueError(f"select={ids} must be distinct patch ids in [0, {total}).")
        self.patches = ids
        self._maps: dict[tuple[int, int], Tensor] = {}

    @property
    def n(self) -> int:
        return len(self.patches)

    def player_map(self, sample: Tensor) -> Tensor:
        if sample.dim() < 2:
            raise ValueError(
                f"ImagePatchPlayers needs images [C, H, W] or [H, W]; got a sample of shape {tuple(sample.shape)}."
            )
        h, w = sample.shape[-2:]
        if (h, w) not in self._maps:
            rows, cols = self.grid
            if h < rows or w < cols:
                raise ValueError(f"grid={self.grid} is finer than the image size {h}x{w}.")
            r = torch.arange(h) * rows // h
            c = torch.arange(w) * cols // w
            patch = r[:, None] * cols + c[None, :]
            lookup = torch.full((rows * cols,), -1, dtype=torch.long)
            lookup[self.patches] = torch.arange(self.n)
            self._maps[(h, w)] = lookup[patch]
        return self._maps[(h, w)]

    def names(self, sample: Sample) -> list[str]:
        return [f"p{p}" for p in self.patches]


class FeatureMaskPlayers(_MapPlayers):
    """Captum-style feature mask: an integer group map over one sample's elements.

    Args:
        feature_mask: int tensor broadcastable to one sample (a leading batch dim of 1, as in
            Captum, is allowed); ids ``0..n-1`` are players (each must occur), ``-1`` is
            background (keeps its values).
        baselines: "mean" (mean sample of the data given to :meth:`fit`, else of the first
            batch analysed), "zero", a float, or a tensor broadcastable to one sample.
        names: optional ``n`` player names.
    """

    def __init__(self, feature_mask: Tensor, baselines: Baselines = "mean", names: Sequence[str] | None = None) -> None:
        super().__init__(baselines)
        if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point():
            raise ValueError("feature_mask must be an integer tensor of player ids (-1 = background).")
        fm = feature_mask.long()
        n = int(fm.max().item()) + 1 if fm.numel() else 0
        check_num_players(n, "feature_mask")
        present = torch.unique(fm[fm >= 0])
        if fm.min() < -1 or present.numel() != n:
            missing = sorted(set(range(n)) - set(present.tolist()))
            raise ValueError(
                f"feature_mask must use ids 0..{n - 1} (each at least once) and -1 for background; "
                f"missing ids {missing}, minimum {int(fm.min())}."
            )
        self.feature_mask = fm
        self._n = n
        self._names = list(names) if names is not None else None
        if self._names is not None and len(self._names) != n:
            raise ValueError(f"names has {len(self._names)} entries; feature_mask defines {n} players.")

    @property
    def n(self) -> int:
        return self._n

    def player_map(self, sample: Tensor) -> Tensor:
        fm = self.feature_mask
        # Captum masks often carry a batch dim of 1 ([1, C, H, W]); samples here have none.
        while fm.dim() > sample.dim() and fm.shape[0] == 1:
            fm = fm[0]
        try:
            fits = torch.broadcast_shapes(fm.shape, sample.shape) == sample.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"feature_mask has shape {tuple(self.feature_mask.shape)}, which does not "
                f"broadcast to one sample of shape {tuple(sample.shape)}."
            )
        return fm

    def names(self, sample: Sample) -> list[str]:
        return list(self._names) if self._names is not None else [f"g{i}" for i in range(self.n)]


STOP_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as into than then so is are was were "
    "be been being am do does did has have had it its this that these those there here i you he "
    "she we they me him her us them my your his our their what which who whom".split()
)
"""The built-in stop words of ``TokenPlayers(stop_words=True)``: English function words."""


class TokenPlayers(Players):
    """Words (or tokens) of Hugging Face style inputs are players.

    A sample is a mapping with ``input_ids`` [T] and optionally ``attention_mask``,
    ``token_type_ids``, ``position_ids``, ``word_ids`` [T] (-1 where the fast tokenizer's
    ``word_ids()`` is None; see :func:`word_ids`) and ``labels`` [T]. Every key but ``word_ids``
    and ``labels`` goes to the model, repeated unchanged for every coalition (``attention_mask``
    included). Special tokens and padding are never players and never masked.

    Causal language models: ``labels`` with the shape of ``input_ids`` mark the answer (the
    positions whose label is not -100, as in supervised fine-tuning batches); answer tokens are
    never players and never masked, so the players are words of the prompt.

    Padding: the masked rows carry exactly the keys of the sample, so the model numbers
    positions as it did for training batches collated the same way. A left-padded batch
    without ``position_ids`` stays so (a Hugging Face causal LM then counts positions from the
    start of the row, padding included, in training as here); no ``position_ids`` are made up.

    Masking a word:

    - by token (``mask_token_id`` given, or a tokenizer with a mask token, as BERT has): the
      word's tokens become that id;
    - by embedding (otherwise, e.g. GPT-2 and Llama tokenizers, which have no mask token): the
      word's input embeddings become ``baselines`` and the model gets ``inputs_embeds``
      instead of ``input_ids`` (the model must have ``get_input_embeddings()`` and take
      ``inputs_embeds``). Cost: one embedding lookup per forward, which the model does anyway,
      plus a ``[rows, T, hidden]`` tensor per chunk; "mean" adds one pass over the vocabulary
      per tracked step. A padding token is never used as a mask: the model never saw it inside
      a text.

    Word grouping (``words=True``): by ``word_ids`` when the sample has them; else, with a
    tokenizer, a token continues the previous word when it starts with ``##`` (WordPiece) or,
    for tokenizers that mark word starts with ``▁``/``Ġ``, when it lacks that mark.

    Args:
        n: number of players per sample; a sample with fewer words raises ValueError.
        select: "first" (the first n candidate words), "random" (n candidate words drawn with a
            generator seeded by ``seed`` and the sample's token ids, so a sample keeps its
            players across steps), or a callable ``f(units: list[list[int]]) -> list[int]``
            that picks n unit indices from the candidate words (each a list of token positions).
        mask_token_id: id of masked tokens; default: the tokenizer's mask token, else masking by
            embedding.
        words: group sub-tokens into words (True) or make each token a player (False).
        skip_special_tokens: keep special tokens out of the players (they are never masked).
        tokenizer: a Hugging Face tokenizer, for the mask token, special ids and player names.
        seed: seed for ``select="random"``.
        stop_words: False (every word is a candidate), True (skip :data:`STOP_WORDS` and words
            without a letter or digit, i.e. punctuation), or your own collection of words to
            skip (punctuation is skipped too). Compared in lower case; needs a tokenizer.
        baselines: embedding of a masked word when masking by embedding: "mean" (mean input
            embedding over the vocabulary), "zero", or a tensor [hidden].

    Token players are chosen per sample, so they are not aligned across samples.
    """

    aligned = False

    def __init__(
        self,
        n: int = 10,
        select: str | Callable[[list[list[int]]], Sequence[int]] = "first",
        mask_token_id: int | None = None,
        words: bool = True,
        skip_special_tokens: bool = True,
        tokenizer: Any = None,
        seed: int = 0,
        stop_words: bool | Collection[str] = False,
        baselines: str | Tensor = "mean",
    ) -> None:
        check_num_players(int(n), f"n={n}")
        if not callable(select) and select not in ("first", "random"):
            raise ValueError(f"select={select!r}; use 'first', 'random' or a callable.")
        if isinstance(stop_words, str) or not isinstance(stop_words, (bool, Collection)):
            raise ValueError(
                f"stop_words={stop_words!r}; use False, True (the built-in list) or a collection "
                "of words such as {'the', 'a'}."
            )
        if not (isinstance(baselines, Tensor) and baselines.dim() == 1) and baselines not in ("mean", "zero"):
            raise ValueError(f"baselines={baselines!r}; use 'mean', 'zero' or a tensor [hidden] (one embedding).")
        self._n = int(n)
        self.select: Any = select  # "first", "random" or a callable
        self._mask_token_id = mask_token_id
        self.words = words
        self.skip_special_tokens = skip_special_tokens
        self.tokenizer = tokenizer
        self.seed = seed
        if stop_words is True:
            stop_words = STOP_WORDS
        self.stop_words = frozenset(w.lower() for w in stop_words) if stop_words is not False else None
        self.baselines = baselines
        self._mean_embedding: tuple[tuple[int, int, int], Tensor] | None = None

    @property
    def n(self) -> int:
        return self._n

    @property
    def baseline_description(self) -> str:
        """``"mask token 103"`` when masking by token, else ``"embedding: mean over the
        vocabulary"``, ``"embedding: zero"`` or ``"embedding: tensor [hidden]"``."""
        token = self.mask_token_id
        if token is not None:
            return f"mask token {token}"
        if isinstance(self.baselines, Tensor):
            return f"embedding: tensor {list(self.baselines.shape)}"
        return "embedding: zero" if self.baselines == "zero" else "embedding: mean over the vocabulary"

    @property
    def mask_token_id(self) -> int | None:
        """The id that masked tokens take, or None when words are masked by embedding."""
        if self._mask_token_id is not None:
            return int(self._mask_token_id)
        value = getattr(self.tokenizer, "mask_token_id", None) if self.tokenizer is not None else None
        return None if value is None else int(value)

    def _special(self, ids: Tensor) -> Tensor:
        if self.tokenizer is None or not self.skip_special_tokens:
            return torch.zeros_like(ids, dtype=torch.bool)
        special = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), device=ids.device)
        return torch.isin(ids, special)

    def _word_ids(self, sample: Mapping[str, Tensor]) -> list[int]:
        ids = sample["input_ids"]
        if "word_ids" in sample:
            return [int(w) for w in sample["word_ids"].tolist()]
        if not self.words or self.tokenizer is None:
            return list(range(ids.shape[0]))
        # A tokenizer answers None for an id outside its vocabulary: such a token is a word of its own.
        tokens = [t or "" for t in self.tokenizer.convert_ids_to_tokens(ids.tolist())]
        marked = any(t.startswith(("▁", "Ġ")) for t in tokens)
        word, out = -1, []
        for t in tokens:
            starts = t.startswith(("▁", "Ġ")) if marked else not t.startswith("##")
            if starts or not t or word < 0:
                word += 1
            out.append(word)
        return out

    @staticmethod
    def answer_mask(sample: Mapping[str, Tensor]) -> Tensor | None:
        """[T] bool: the answer's positions (``labels`` != -100), or None without answer labels."""
        labels = sample.get("labels")
        if not isinstance(labels, Tensor) or labels.shape != sample["input_ids"].shape:
            return None
        return labels != IGNORE_INDEX

    def units(self, sample: Mapping[str, Tensor]) -> list[list[int]]:
        """Candidate players of a sample: lists of token positions, in text order (answer
        tokens, special tokens, padding and, with ``stop_words``, stop words and punctuation
        left out)."""
        ids = sample["input_ids"]
        allowed = ~self._special(ids)
        if "attention_mask" in sample:
            allowed &= sample["attention_mask"].bool()
        answer = self.answer_mask(sample)
        if answer is not None:
            allowed &= ~answer.to(ids.device)
        wids = self._word_ids(sample)
        if "word_ids" in sample and self.skip_special_tokens:
            allowed &= torch.tensor([w >= 0 for w in wids], device=ids.device)
        allowed_list = allowed.tolist()
        groups: dict[int, list[int]] = {}
        for pos, (w, ok) in enumerate(zip(wids, allowed_list)):
            if ok:
                groups.setdefault(w if self.words else pos, []).append(pos)
        units = list(groups.values())
        if self.stop_words is not None:
            if self.tokenizer is None:
                raise ValueError("stop_words needs the words' text: pass tokenizer= to TokenPlayers.")
            units = [u for u in units if _content_word(self._text(ids.tolist(), u), self.stop_words)]
        return units

    def chosen(self, sample: Mapping[str, Tensor]) -> list[list[int]]:
        """The n chosen players of a sample (token positions of each)."""
        units = self.units(sample)
        if len(units) < self.n:
            kind = "words" if self.words else "tokens"
            skipped = " (stop words and punctuation skipped)" if self.stop_words is not None else ""
            raise ValueError(
                f"a sample has only {len(units)} {kind}{skipped} that can be players, fewer than "
                f"n={self.n}; choose a smaller n or longer probe texts."
            )
        if self.select == "first":
            picked = list(range(self.n))
        elif self.select == "random":
            digest = hashlib.sha256(bytes(str(sample["input_ids"].tolist()), "utf8")).digest()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int.from_bytes(digest[:6], "little"))
            picked = sorted(torch.randperm(len(units), generator=g)[: self.n].tolist())
        else:
            picked = [int(i) for i in self.select(units)]
            if len(picked) != self.n or len(set(picked)) != self.n or not all(0 <= i < len(units) for i in picked):
                raise ValueError(
                    f"select returned {picked}; it must pick n={self.n} distinct indices into the {len(units)} words."
                )
        return [units[i] for i in picked]

    def _check_sample(self, sample: Any) -> None:
        if not isinstance(sample, Mapping) or "input_ids" not in sample:
            raise ValueError("TokenPlayers needs dict inputs with 'input_ids' (Hugging Face style).")

    def _model_keys(self, sample: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The sample's model inputs: its own keys but ``word_ids`` and ``labels`` (the model
        would compute a loss on every masked row). Nothing is added: the model must see the
        position convention of its training batches."""
        return {k: v for k, v in sample.items() if k not in ("word_ids", "labels")}

    def mask(self, sample: Mapping[str, Tensor], coalitions: Tensor) -> dict[str, Tensor]:
        return self.masker(sample)(coalitions)

    def masker(self, sample: Mapping[str, Tensor]) -> Callable[[Tensor], dict[str, Tensor]]:
        self._check_sample(sample)
        n = self.n
        ids = sample["input_ids"]
        pmap = torch.full_like(ids, n, dtype=torch.long)
        for player, positions in enumerate(self.chosen(sample)):
            pmap[positions] = player
        token = self.mask_token_id
        # Masking by embedding: a masked token's id becomes -1, which model_forward turns into
        # the baseline embedding. No real token has a negative id.
        masked_ids = torch.full_like(ids, _EMBEDDING_MASK if token is None else token)
        rest = self._model_keys(sample)

        def mask(coalitions: Tensor) -> dict[str, Tensor]:
            _check_coalitions(coalitions, n)
            m = coalitions.shape[0]
            ext = torch.cat([coalitions.to(ids.device), torch.ones(m, 1, dtype=torch.bool, device=ids.device)], 1)
            keep = ext[:, pmap]
            out = {k: v[None].expand(m, *v.shape) for k, v in rest.items()}
            out["input_ids"] = torch.where(keep, ids, masked_ids)
            return out

        return mask

    def model_forward(self, model: Any) -> Any:
        if self.mask_token_id is not None:
            return model
        embed = _input_embeddings(model)

        def forward(**inputs: Tensor) -> Any:
            ids = inputs.pop("input_ids")
            masked = ids == _EMBEDDING_MASK
            if not bool(masked.any()):
                return model(input_ids=ids, **inputs)
            vectors = embed(ids.clamp(min=0))
            base = self._baseline_embedding(embed, vectors)
            return model(inputs_embeds=torch.where(masked[..., None], base, vectors), **inputs)

        return forward

    def _baseline_embedding(self, embed: nn.Module, like: Tensor) -> Tensor:
        """[hidden] embedding of a masked token, in the dtype and device of ``like``."""
        if isinstance(self.baselines, Tensor):
            base = self.baselines
            if base.shape[0] != like.shape[-1]:
                raise ValueError(
                    f"baselines has {base.shape[0]} entries; the model's input embeddings have "
                    f"{like.shape[-1]}. Pass one embedding vector [hidden]."
                )
        elif self.baselines == "zero":
            base = like.new_zeros(like.shape[-1])
        else:
            base = self._vocabulary_mean(embed)
        return base.to(device=like.device, dtype=like.dtype)

    def _vocabulary_mean(self, embed: nn.Module) -> Tensor:
        """Mean output of the embedding module over the vocabulary (a module that scales its
        output, as some do, is averaged as the model sees it). Cached until the weights change."""
        weight = cast(Tensor, embed.weight)
        key = (id(embed), weight.data_ptr(), weight._version)
        if self._mean_embedding is None or self._mean_embedding[0] != key:
            total = torch.zeros(weight.shape[1], dtype=torch.float64, device=weight.device)
            vocab = weight.shape[0]
            for start in range(0, vocab, 4096):  # bounded memory for large vocabularies
                ids = torch.arange(start, min(vocab, start + 4096), device=weight.device)
                total += embed(ids).double().sum(0)
            self._mean_embedding = (key, (total / vocab).to(weight.dtype))
        return self._mean_embedding[1]

    def model_inputs(self, sample: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self._check_sample(sample)
        return {k: v[None] for k, v in self._model_keys(sample).items()}

    def _text(self, ids: list[int], positions: list[int]) -> str:
        """The text of the word at ``positions`` (sub-tokens joined, word-start marks dropped)."""
        tokens = self.tokenizer.convert_ids_to_tokens([ids[p] for p in positions])
        pieces = [t or f"[{ids[p]}]" for t, p in zip(tokens, positions)]
        return "".join(p.removeprefix("##").lstrip("▁Ġ") if i else p.lstrip("▁Ġ") for i, p in enumerate(pieces))

    def names(self, sample: Mapping[str, Tensor]) -> list[str]:
        self._check_sample(sample)
        chosen = self.chosen(sample)
        if self.tokenizer is None:
            return [f"t{positions[0]}" for positions in chosen]
        ids = sample["input_ids"].tolist()
        return [self._text(ids, positions) for positions in chosen]


_EMBEDDING_MASK = -1


def _content_word(text: str, stop_words: frozenset[str]) -> bool:
    """Whether a word is a candidate player: it has a letter or digit and is no stop word."""
    return any(c.isalnum() for c in text) and text.lower() not in stop_words


def _input_embeddings(model: Any) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    embed = get() if callable(get) else None
    if not isinstance(embed, nn.Module) or not isinstance(getattr(embed, "weight", None), Tensor):
        raise ValueError(
            f"TokenPlayers masks words by their input embeddings when there is no mask token, but "
            f"{type(model).__name__} has no get_input_embeddings(); pass mask_token_id= (an id "
            "the model knows as 'unknown') to mask by token instead."
        )
    return embed


def word_ids(encoding: Any) -> Tensor:
    """``word_ids`` of a fast tokenizer's batch encoding as a tensor ``[B, T]`` (-1 for None),
    ready to add to the inputs as ``inputs["word_ids"]`` for :class:`TokenPlayers`."""
    batch = encoding["input_ids"].shape[0] if hasattr(encoding["input_ids"], "shape") else len(encoding["input_ids"])
    rows = [[-1 if w is None else w for w in encoding.word_ids(b)] for b in range(batch)]
    return torch.tensor(rows, dtype=torch.long)


def _check_finite_samples(data: Tensor, name: str) -> None:
    """Raise naming the first sample of ``data`` [N, ...] that holds a NaN or inf (its mean
    would be NaN or inf, and so every masked input of every sample)."""
    if not data.is_floating_point():
        return
    bad = ~torch.isfinite(data.reshape(data.shape[0], -1)).all(1)
    if bool(bad.any()):
        rows = bad.nonzero().reshape(-1).tolist()
        value = data[rows[0]][~torch.isfinite(data[rows[0]])][0].item()
        raise ValueError(
            f"{name} hold {value} in sample {rows[0]}"
            + (f" (and in samples {rows[1:6]})" if rows[1:] else "")
            + '; a "mean" baseline over them would be non-finite for every sample. Drop or fix those samples, '
            'or choose baselines="zero".'
        )


def mean_unfitted(players: Players) -> bool:
    """True when the players use a "mean" baseline that has no data for a new tracker yet:
    never fitted, or fitted by the library for an earlier tracker (a :meth:`_MapPlayers.fit`
    by the user is kept for every tracker)."""
    if not isinstance(players, _MapPlayers) or not (isinstance(players.baselines, str) and players.baselines == "mean"):
        return False
    return players._mean is None or (players._mean_by != "user" and players._mean_owner is not None)


def claim_baseline(players: Players, owner: object, probe_inputs: Any) -> None:
    """Give the tracker ``owner`` a "mean" baseline of its own (a no-op for other baselines).

    A mean the user fitted (``players.fit(train_x)``) is kept: that is how several trackers
    share one baseline. A mean the library chose for this tracker (fitted on its training data
    just before, see :func:`fit_mean_baseline`) is claimed as it is. Any other library-chosen
    mean (the inputs of an earlier ``compute_interactions`` call, or another tracker's data)
    is replaced by the mean of ``probe_inputs``, with a warning when that changes it.

    Args:
        players: the tracker's players, prepared on ``probe_inputs`` already.
        owner: the tracker.
        probe_inputs: [B, ...] the tracker's probe inputs (fewer than 2 samples, or dict
            inputs: the mean there is is kept).
    """
    if not isinstance(players, _MapPlayers) or players._mean is None or players._mean_by == "user":
        return
    mine = players._mean_owner is not None and players._mean_owner() is owner
    averageable = isinstance(probe_inputs, Tensor) and probe_inputs.shape[0] >= 2  # else keep what there is
    if averageable and not mine and (players._mean_by == "inputs" or players._mean_owner is not None):
        before, source = players._mean, players._mean_source
        players._mean = None
        players.prepare(probe_inputs)
        if not torch.equal(before, cast(Tensor, players._mean)):
            warnings.warn(
                f'{type(players).__name__}: these players\' "mean" baseline came from other data (mean of '
                f"{source}, an earlier tracker or compute_interactions call); this tracker takes the mean of its "
                f"{players._mean_source} instead. To share one baseline, fit the players once on training data: "
                "players.fit(train_x).",
                stacklevel=3,
            )
    players._mean_owner = weakref.ref(owner)


def fit_mean_baseline(players: Players, data: Any) -> bool:
    """Fit the players' "mean" baseline on ``data`` when they use one and are not fitted yet
    (or were fitted by the library for an earlier tracker: see :func:`claim_baseline`).

    The tracker and the framework callbacks call it with a training sample larger than the
    probe set: the mean of a few probes is a noisy baseline. Players fitted by the user keep
    their fit; players without a "mean" baseline are left alone.

    Args:
        players: any players.
        data: [N, ...] samples in the players' input format (N >= 2), or anything else (then
            nothing is fitted: the probe inputs give the mean at the first tracked step).
    Returns:
        True when the baseline was fitted on ``data``.
    """
    if not mean_unfitted(players) or not isinstance(players, _MapPlayers):
        return False
    if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 2:
        return False
    players._fit(data, "the training data", "data")
    players._mean_source = f"fit on {data.shape[0]} samples"
    return True
