"""Matplotlib figures of concepts: order profile, order x step heat map, trajectories.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, so no global figure
registry and no GUI backend) and returns it; rendering and writing are the caller's job
(``writers.render``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..interactions import Interactions, concept_label
from ..metrics.profile import Bands, OrderProfile
from ..transforms import orders as coalition_orders


def strongest_series(
    history: Tensor, band: Sequence[int], kinds: Sequence[str], names: Sequence[str], count: int = 3
) -> dict[str, Tensor]:
    """The ``count`` strongest concepts of a band at the last step, for :func:`trajectory_figure`.

    Args:
        history: [T, K, 2**n] effects of one sample at T tracked steps, K kinds.
        band: the orders to choose from (empty: no concepts).
        kinds: the K kind names; the label carries the kind when K > 1.
        names: the sample's n player names.
    Returns:
        ``{label: [T] effects}``, strongest at the last step first.
    """
    n = history.shape[-1].bit_length() - 1
    orders = coalition_orders(n)
    in_band = torch.isin(orders, torch.tensor(list(band), dtype=orders.dtype))
    latest = history[-1].abs() * in_band  # [K, 2**n]
    picked = latest.reshape(-1).topk(min(count, int(in_band.sum()) * len(kinds))).indices
    series = {}
    for flat in picked.tolist():
        k, s = divmod(flat, 1 << n)
        prefix = f"{kinds[k].upper()} " if len(kinds) > 1 else ""
        # A copy: a view would carry all of `history` to the renderer process.
        series[prefix + concept_label(s, names)] = history[:, k, s].clone()
    return series


def trajectory_series(
    history: Tensor, res: Interactions, bands: Bands, sample: Any, count: int = 3
) -> tuple[dict[str, Tensor], dict[str, Tensor], str]:
    """The strongest simple and complex concepts of probe sample 0 and the title, for
    :func:`trajectory_figure`.

    Args:
        history: [T, K, 2**n] effects of probe sample 0 at T tracked steps, K kinds.
        res: the last tracked step's interactions (player names, kinds, targets).
        bands: the simple and complex orders.
        sample: the id of probe sample 0, for the title.
        count: concepts per band.
    """
    title = f"probe sample {sample}"
    if res.targets is not None and res.targets.dim() == 1:  # not the answer labels [B, T] of a causal LM
        title += f", target class {int(res.targets[0])}"
    names = res.player_names[0]
    simple = strongest_series(history, bands.simple, res.effect_kinds, names, count)
    complex_ = strongest_series(history, bands.complex, res.effect_kinds, names, count)
    return simple, complex_, title


def order_profile_figure(profile: OrderProfile, title: str) -> Figure:
    """Bars of the positive and negative salient strength of each order.

    Args:
        profile: per-order statistics (``positive`` and ``negative`` [n + 1]; order 0 is not
            drawn).
        title: figure title.
    """
    orders = np.arange(1, profile.n + 1)
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.bar(orders, profile.positive[1:].cpu().numpy(), color="tab:red", label="positive A+(m)")
    ax.bar(orders, profile.negative[1:].cpu().numpy(), color="tab:blue", label="negative A-(m)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(orders)
    ax.set_xlabel("order m = |S|")
    ax.set_ylabel("salient strength per sample")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)
    return fig


def order_heatmap_figure(
    steps: Sequence[int], shares: Tensor, simple_max: int | None = None, boundary: float | None = None
) -> Figure:
    """Order x step heat map of each order's share of the salient strength, with the phase
    boundary marked.

    A white line separates the simple band from the orders above it, whose summed share is
    share_H(t); a dashed line marks the phase boundary, the step where share_H(t) is lowest
    before a sustained rise.

    Args:
        steps: the T tracked steps (columns, evenly spaced whatever the step gaps).
        shares: [T, n + 1] share per order at each step (order 0 is not drawn).
        simple_max: last order of the simple band (None: ``n // 3``).
        boundary: the phase boundary step (one of ``steps``), or None when none is found yet.
    """
    data = shares[:, 1:].cpu().numpy().T
    n = data.shape[0]
    simple_max = n // 3 if simple_max is None else simple_max
    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(
        data, aspect="auto", origin="lower", cmap="viridis", vmin=0.0, extent=(-0.5, len(steps) - 0.5, 0.5, n + 0.5)
    )
    ax.axhline(simple_max + 0.5, color="white", linewidth=1.0)
    title = "share of salient strength by order"
    if boundary is not None and int(boundary) in steps:
        ax.axvline(list(steps).index(int(boundary)), color="white", linestyle="--", linewidth=1.2)
        title += f"; phase boundary at step {int(boundary)}"
    ticks = np.unique(np.linspace(0, len(steps) - 1, num=min(len(steps), 8)).round().astype(int))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(steps[i]) for i in ticks], rotation=45, fontsize="small")
    ax.set_yticks(np.arange(1, n + 1))
    ax.set_xlabel("tracked step")
    ax.set_ylabel("order m")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label="share")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.22, top=0.9)
    return fig


def trajectory_figure(
    steps: Sequence[int],
    simple: dict[str, Tensor],
    complex_: dict[str, Tensor],
    title: str,
) -> Figure:
    """Effects of a few concepts over the tracked steps, simple and complex side by side.

    Args:
        steps: the T tracked steps (x axis).
        simple: ``{label: [T] effects}`` of the strongest simple concepts.
        complex_: ``{label: [T] effects}`` of the strongest complex concepts.
        title: figure title (which sample, which kind).
    """
    fig = Figure(figsize=(10, 3.5), dpi=100)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, band, series in ((axes[0], "simple", simple), (axes[1], "complex", complex_)):
        for label, values in series.items():
            ax.plot(list(steps), values.cpu().numpy(), marker="o", markersize=3, label=label)
        ax.axhline(0.0, color="black", linewidth=0.8)
        # Schedules are usually log-spaced: a symlog axis keeps the early steps apart.
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_title(f"strongest {band} concepts")
        ax.set_xlabel("step")
        if series:
            ax.legend(loc="upper left", fontsize="x-small")
    axes[0].set_ylabel("I(S)")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.82, wspace=0.2)
    return fig
