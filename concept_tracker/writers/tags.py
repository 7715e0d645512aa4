"""Every TensorBoard tag the tracker writes, built in one place.

The scalar tags below are a stable contract (``m`` is the order, zero-padded to two digits;
``kind`` is "and" or "or")::

    concepts/{kind}/order_{m:02d}/count | positive | negative
    concepts/summary/simple_strength | complex_strength | complex_ratio | num_concepts
    generalization/order_{m:02d}/train_test_similarity
    dynamics/order_{m:02d}/detour_ratio
    dynamics/simple/detour_ratio
    dynamics/complex/detour_ratio
    dynamics/sign_flips
    perf/seconds

Tags beyond the contract (same families, so TensorBoard groups them with the contract's)::

    concepts/summary/medium_strength          salient strength of the medium band
    concepts/summary/simple_share | medium_share   band strength / salient strength of all
                                               orders (the complex share is complex_ratio)
    generalization/{band}/train_test_similarity   mean over the band's orders (band simple,
                                               medium or complex; with held-out probes)
    dynamics/order_{m:02d}/forgotten           concepts of order m salient once, no longer
    dynamics/forgotten                         the same over all orders
    dynamics/order_{m:02d}/emergence_step      mean emergence step of order-m concepts
    dynamics/{band}/scale_free_detour_ratio    detour ratio of the effects divided, per step and
                                               sample, by sum |I(S)| (band simple or complex)
    dynamics/high_order_strength               H(t), medium + complex strength (absolute;
                                               grows with the output scale, not used for the boundary)
    dynamics/high_order_share                  share_H(t) = H(t) / salient strength of all orders
    dynamics/phase_boundary_step               step where smoothed share_H(t) is lowest before a
                                               sustained rise (once found)
    {tag}_ci_low | {tag}_ci_high               95% percentile bootstrap interval over probe
                                               samples of every averaged reading (INTERVAL_TAGS)
    spectrum/simple_share | medium_share | complex_share   the sampled order spectrum
                                               (``order_spectrum``): share of salient strength
                                               per band averaged over the probes, an estimate
                                               (never written to a concepts/* tag)
    spectrum/forwards                          masked forwards the sampled spectrum ran
    perf/forwards_per_second                   masked rows per second of the engine
    perf/skipped_steps                         scheduled steps skipped for max_overhead
    histograms/{kind}/order_{m:02d}/abs_effect |I(S)| of every S of order m, all probe samples
    figures/{kind}/order_profile               positive / negative strength per order
    figures/order_share_heatmap                order x step share of salient strength
    figures/trajectories                       the strongest simple and complex concepts
    text/top_concepts                          markdown table of the strongest concepts
"""

from __future__ import annotations

from typing import Any

ORDER_STATS = ("count", "positive", "negative")
SUMMARY_STATS = ("simple_strength", "complex_strength", "complex_ratio", "num_concepts")
DETOUR_BANDS = ("simple", "complex")
BANDS = ("simple", "medium", "complex")
SHARE_STATS = ("simple_share", "medium_share")
INTERVAL_LEVEL = 0.95
"""Coverage of the ``{tag}_ci_low`` / ``{tag}_ci_high`` bootstrap intervals."""

SIGN_FLIPS = "dynamics/sign_flips"
PERF_SECONDS = "perf/seconds"

MEDIUM_STRENGTH = "concepts/summary/medium_strength"
FORGOTTEN = "dynamics/forgotten"
HIGH_ORDER_STRENGTH = "dynamics/high_order_strength"
HIGH_ORDER_SHARE = "dynamics/high_order_share"
PHASE_BOUNDARY = "dynamics/phase_boundary_step"
FORWARDS_PER_SECOND = "perf/forwards_per_second"
SKIPPED_STEPS = "perf/skipped_steps"
WORKER_SECONDS = "perf/worker_seconds"
BUDGET_TEXT = "text/overhead_budget"
SPECTRUM_SIMPLE_SHARE = "spectrum/simple_share"
SPECTRUM_MEDIUM_SHARE = "spectrum/medium_share"
SPECTRUM_COMPLEX_SHARE = "spectrum/complex_share"
SPECTRUM_SHARES = (SPECTRUM_SIMPLE_SHARE, SPECTRUM_MEDIUM_SHARE, SPECTRUM_COMPLEX_SHARE)
"""The sampled order spectrum's band shares (with ``_ci_low`` / ``_ci_high``)."""
SPECTRUM_FORWARDS = "spectrum/forwards"
HEATMAP_FIGURE = "figures/order_share_heatmap"
TRAJECTORY_FIGURE = "figures/trajectories"
TOP_CONCEPTS_TEXT = "text/top_concepts"


def _order(m: int) -> str:
    return f"order_{m:02d}"


def concept_order(kind: str, m: int, stat: str) -> str:
    """``concepts/{kind}/order_{m:02d}/{stat}``; stat in count, positive, negative."""
    if kind not in ("and", "or") or stat not in ORDER_STATS:
        raise ValueError(f"kind={kind!r}, stat={stat!r}; use kind 'and'/'or' and stat in {ORDER_STATS}.")
    return f"concepts/{kind}/{_order(m)}/{stat}"


def summary(stat: str) -> str:
    """``concepts/summary/{stat}``."""
    if stat not in SUMMARY_STATS:
        raise ValueError(f"stat={stat!r}; use one of {SUMMARY_STATS}.")
    return f"concepts/summary/{stat}"


def band_strength_tags() -> tuple[str, str, str]:
    """The salient-strength tags of the simple, medium and complex bands."""
    return summary("simple_strength"), MEDIUM_STRENGTH, summary("complex_strength")


def share(stat: str) -> str:
    """``concepts/summary/{stat}``; stat "simple_share" or "medium_share"."""
    if stat not in SHARE_STATS:
        raise ValueError(f"stat={stat!r}; use one of {SHARE_STATS}.")
    return f"concepts/summary/{stat}"


def band_train_test_similarity(band: str) -> str:
    """``generalization/{band}/train_test_similarity``; band "simple", "medium" or "complex"."""
    if band not in BANDS:
        raise ValueError(f"band={band!r}; use one of {BANDS}.")
    return f"generalization/{band}/train_test_similarity"


def ci_low(tag: str) -> str:
    """``{tag}_ci_low``: lower bound of the bootstrap interval of ``tag``."""
    return f"{tag}_ci_low"


def ci_high(tag: str) -> str:
    """``{tag}_ci_high``: upper bound of the bootstrap interval of ``tag``."""
    return f"{tag}_ci_high"


def interval_tags(generalization: bool) -> list[str]:
    """The averaged readings logged with a bootstrap interval: band strengths and shares,
    complex ratio, concepts per sample, high-order share, band detour ratios and (with held-out
    probes) band train-test similarities."""
    out = [*band_strength_tags(), *(share(s) for s in SHARE_STATS), summary("complex_ratio")]
    out += [summary("num_concepts"), HIGH_ORDER_SHARE]
    if generalization:
        out += [band_train_test_similarity(b) for b in BANDS]
    out += [band_detour_ratio(b) for b in DETOUR_BANDS]
    return out


def train_test_similarity(m: int) -> str:
    """``generalization/order_{m:02d}/train_test_similarity``."""
    return f"generalization/{_order(m)}/train_test_similarity"


def detour_ratio(m: int) -> str:
    """``dynamics/order_{m:02d}/detour_ratio``."""
    return f"dynamics/{_order(m)}/detour_ratio"


def band_detour_ratio(band: str) -> str:
    """``dynamics/{band}/detour_ratio``; band "simple" or "complex"."""
    if band not in DETOUR_BANDS:
        raise ValueError(f"band={band!r}; use one of {DETOUR_BANDS}.")
    return f"dynamics/{band}/detour_ratio"


def band_scale_free_detour_ratio(band: str) -> str:
    """``dynamics/{band}/scale_free_detour_ratio``; band "simple" or "complex"."""
    if band not in DETOUR_BANDS:
        raise ValueError(f"band={band!r}; use one of {DETOUR_BANDS}.")
    return f"dynamics/{band}/scale_free_detour_ratio"


def forgotten(m: int) -> str:
    """``dynamics/order_{m:02d}/forgotten``."""
    return f"dynamics/{_order(m)}/forgotten"


def emergence_step(m: int) -> str:
    """``dynamics/order_{m:02d}/emergence_step``."""
    return f"dynamics/{_order(m)}/emergence_step"


def abs_effect_histogram(kind: str, m: int) -> str:
    """``histograms/{kind}/order_{m:02d}/abs_effect``."""
    return f"histograms/{kind}/{_order(m)}/abs_effect"


def order_profile_figure(kind: str) -> str:
    """``figures/{kind}/order_profile``."""
    return f"figures/{kind}/order_profile"


def spec_scalar_tags(n: int, kinds: list[str], generalization: bool) -> list[str]:
    """Every contract scalar tag (module docstring) written at each tracked step.

    Args:
        n: number of players (orders 1..n).
        kinds: effect kinds present, ["and"], ["or"] or ["and", "or"].
        generalization: True when held-out probes with aligned players are tracked.
    """
    orders = range(1, n + 1)
    tags = [concept_order(k, m, s) for k in kinds for m in orders for s in ORDER_STATS]
    tags += [summary(s) for s in SUMMARY_STATS]
    if generalization:
        tags += [train_test_similarity(m) for m in orders]
    tags += [detour_ratio(m) for m in orders]
    tags += [band_detour_ratio(b) for b in DETOUR_BANDS]
    tags += [SIGN_FLIPS, PERF_SECONDS]
    return tags


def custom_layout(kinds: list[str], generalization: bool, budget: bool = False) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout (``SummaryWriter.add_custom_scalars``) grouping the charts.

    Each chart overlays every order (tags are matched as regular expressions). The "skipped
    steps" chart is there only with ``budget`` (a tracker with ``max_overhead``): without one no
    step is skipped and the chart would stay empty.

    Returns:
        ``{category: {chart title: ["Multiline", [tag regex, ...]]}}``; the intervals category
        holds ``["Margin", [tag, tag_ci_low, tag_ci_high]]`` charts.
    """
    layout: dict[str, dict[str, list[Any]]] = {}
    for kind in kinds:
        layout[f"concepts ({kind.upper()})"] = {
            f"salient {stat} by order": ["Multiline", [rf"concepts/{kind}/order_\d+/{stat}"]] for stat in ORDER_STATS
        }
    layout["concepts (summary)"] = {
        "strength by band": [
            "Multiline",
            list(band_strength_tags()),
        ],
        "complex ratio": ["Multiline", [summary("complex_ratio")]],
        "concepts per sample": ["Multiline", [summary("num_concepts")]],
    }
    if generalization:
        layout["generalization"] = {
            "train-test similarity by order": [
                "Multiline",
                [r"generalization/order_\d+/train_test_similarity"],
            ]
        }
    layout["dynamics"] = {
        "detour ratio by order": ["Multiline", [r"dynamics/order_\d+/detour_ratio"]],
        "detour ratio by band": ["Multiline", [band_detour_ratio(b) for b in DETOUR_BANDS]],
        "scale-free detour ratio by band": ["Multiline", [band_scale_free_detour_ratio(b) for b in DETOUR_BANDS]],
        "sign flips and forgotten concepts": ["Multiline", [SIGN_FLIPS, FORGOTTEN]],
        "emergence step by order": ["Multiline", [r"dynamics/order_\d+/emergence_step"]],
        "high-order strength (absolute)": ["Multiline", [HIGH_ORDER_STRENGTH]],
        "high-order share": ["Multiline", [HIGH_ORDER_SHARE]],
        "phase boundary step (share valley)": ["Multiline", [PHASE_BOUNDARY]],
    }
    # Margin charts draw the value with its interval as a band: [value, lower, upper].
    layout[f"intervals ({INTERVAL_LEVEL:.0%} bootstrap)"] = {
        tag: ["Margin", [tag, ci_low(tag), ci_high(tag)]] for tag in interval_tags(generalization)
    }
    layout["perf"] = {
        "seconds per tracked step": ["Multiline", [PERF_SECONDS]],
        "forwards per second": ["Multiline", [FORWARDS_PER_SECOND]],
    }
    if budget:
        layout["perf"]["skipped steps"] = ["Multiline", [SKIPPED_STEPS]]
    return layout


def spectrum_layout() -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars category of the sampled order spectrum: one margin chart per band."""
    return {
        "spectrum (sampled)": {
            f"{tag.split('/')[1]} (95% interval)": ["Margin", [tag, ci_low(tag), ci_high(tag)]]
            for tag in SPECTRUM_SHARES
        }
    }
