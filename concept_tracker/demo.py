"""``concept-tracker demo``: the same network trained on clean and on noisy labels, tracked.

An MLP learns scikit-learn's bundled 8x8 digits (no download) twice from the same
initialisation and the same minibatch order: once on the true labels, once with a fraction of
the training labels replaced by random classes. A :class:`~concept_tracker.ConceptTracker`
computes AND-OR interactions between 10 image patches on a fixed probe set (training samples)
and on held-out test samples at log-spaced steps. Afterwards the runs are read back from disk
(:mod:`concept_tracker.report`) and compared with what arXiv 2302.13091 predicts: the noisy
run should encode more complex and fewer simple concepts, learn simple concepts more slowly,
concepts should generalize less as their order grows, and complex concepts should detour more.

scikit-learn is imported only here, and only when the demo runs, so the library itself does
not depend on it (``pip install 'concept-tracker[demo]'``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from . import report
from .config import OutputConfig
from .players import ImagePatchPlayers
from .probes import ProbeSet, select_probes
from .schedules import log_spaced
from .tracker import ConceptTracker
from .writers import tags

PATCH_GRID = (4, 4)
"""The 8x8 digits are cut into a 4x4 grid of 2x2-pixel patches ..."""
NUM_PLAYERS = 10
"""... of which the 10 with the most ink on average are the players (2**10 coalitions)."""


@dataclass
class DemoConfig:
    """Settings of the demo (defaults: the run described in the README).

    Attributes:
        steps: optimizer steps per run (minibatches of ``batch_size``).
        label_noise: fraction of training labels replaced by a uniformly random class in the
            noisy run (a replaced label can hit the true class by chance).
        seed: seed of the data split, the label noise, the initialisation and the batch order.
        output_dir: runs go to ``<output_dir>/clean`` and ``<output_dir>/noisy``; figures and
            ``report.html`` to ``<output_dir>``.
        width: hidden units of each of the MLP's two hidden layers.
        lr: Adam learning rate.
        batch_size: training minibatch size.
        train_size: digits used for training (the other 1797 - train_size are the test set).
        probes: probe samples per split (training and held-out), stratified by class.
        tracked_steps: number of log-spaced tracked steps from 0 to ``steps``.
        evaluations: number of evenly spaced steps at which train and test loss are logged.
        kind: interaction kind tracked ("and_or" as in the papers; "and" is faster).
        and_or_iterations: iteration cap of the AND-OR solver (with a 5% gap tolerance). Its
            default of 1,000 iterations would triple the demo's run time; on this model 300
            reach an objective within about 2% of 1,000.
        figures: draw the tracker's TensorBoard figures (in its figure worker process, at the
            1st, 2nd, 4th, 8th, ... tracked step and at the end).
        threads: torch intra-op threads while the demo runs (restored afterwards). Its tensors
            are small, so one thread is about as fast as two, and it does not stall when
            another process holds the second core (two threads then ran up to 20x slower).
        progress: show a tqdm bar per run.
    """

    steps: int = 1500
    label_noise: float = 0.3
    seed: int = 0
    output_dir: str = "runs/demo"
    width: int = 256
    lr: float = 2e-3
    batch_size: int = 64
    train_size: int = 1000
    probes: int = 32
    tracked_steps: int = 16
    evaluations: int = 60
    kind: str = "and_or"
    and_or_iterations: int = 300
    figures: bool = True
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 10:
            raise ValueError(f"steps={self.steps!r} must be an int >= 10.")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"label_noise={self.label_noise!r} must be a fraction in [0, 1], e.g. 0.3.")
        if not 100 <= self.train_size <= 1697:
            raise ValueError(f"train_size={self.train_size!r} must leave 100 or more of the 1797 digits for testing.")


class Digits(NamedTuple):
    """The digits split: images [N, 1, 8, 8] in [0, 1] and int64 labels [N]."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def load_digits_split(train_size: int, seed: int) -> Digits:
    """scikit-learn's bundled digits, shuffled with ``seed`` and split into train and test.

    Raises:
        ImportError: with the install command, when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "the demo trains on scikit-learn's bundled digits; install it with "
            "pip install 'concept-tracker[demo]' (or pip install scikit-learn)."
        ) from err
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = order[:train_size], order[train_size:]
    return Digits(x[train], y[train], x[test], y[test])


def corrupt_labels(labels: Tensor, fraction: float, seed: int, classes: int = 10) -> Tensor:
    """A copy of ``labels`` in which a random ``fraction`` of entries is replaced by a uniformly
    random class (drawn with its own generator, so the global RNG is untouched)."""
    gen = torch.Generator().manual_seed(seed)
    out = labels.clone()
    hit = torch.rand(len(labels), generator=gen) < fraction
    out[hit] = torch.randint(0, classes, (int(hit.sum()),), generator=gen)
    return out


def build_model(width: int) -> nn.Module:
    """MLP 64 -> width -> width -> 10 on flattened 8x8 images."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    )


def ink_patches(images: Tensor, grid: tuple[int, int] = PATCH_GRID, k: int = NUM_PLAYERS) -> list[int]:
    """Ids of the ``k`` patches of ``grid`` with the most mean ink over ``images`` [N, 1, H, W],
    ascending. Patches that are blank in most digits would be players with no effect."""
    rows, cols = grid
    h, w = images.shape[-2:]
    ink = images.mean(0).reshape(rows, h // rows, cols, w // cols).sum((1, 3)).reshape(-1)
    return sorted(ink.topk(k).indices.tolist())


def demo_players(train_x: Tensor) -> ImagePatchPlayers:
    """The demo's players: the inkiest 10 of a 4x4 grid of 2x2 patches. A masked patch takes
    the pixels of the mean training image; the other patches keep their pixels.

    The mean baseline matters here: with a zero (black) baseline the clean and noisy runs of
    the default settings ended with about the same complex ratio in our tuning runs (clean
    slightly higher), while with the mean baseline the noisy run's was clearly higher.
    """
    players = ImagePatchPlayers(grid=PATCH_GRID, select=ink_patches(train_x), baselines="mean")
    players.fit(train_x)
    return players


def solver_config(config: DemoConfig) -> Any:
    """The demo's ``AndOrConfig`` (None unless ``config.kind`` is "and_or")."""
    if config.kind != "and_or":
        return None
    from .and_or import AndOrConfig

    return AndOrConfig(max_iter=config.and_or_iterations, tol=0.05)


@torch.no_grad()
def _evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    logits = model(x)
    model.train(was_training)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def train_run(
    config: DemoConfig,
    data: Digits,
    train_labels: Tensor,
    log_dir: Path,
    probes: ProbeSet,
    heldout: ProbeSet,
    desc: str,
) -> None:
    """Train one model with the tracker attached; log losses and accuracies (``loss/train``,
    ``loss/eval``, ``accuracy/train``, ``accuracy/test``) to the tracker's event file.

    Steps count optimizer updates: ``tracker.step(model, t)`` sees the model after ``t``
    updates, so step 0 is the initialisation.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    model = build_model(config.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Both runs draw the same minibatch indices; only the labels differ.
    batches = torch.Generator().manual_seed(config.seed + 1)
    players = demo_players(data.train_x)
    writer = SummaryWriter(str(log_dir))
    tracker = ConceptTracker(
        players,
        probes,
        heldout,
        log_dir=log_dir,
        schedule=log_spaced(0, config.steps, config.tracked_steps),
        kind=solver_config(config) or config.kind,
        output=OutputConfig(writer=writer, figures=config.figures),
        strict=True,
    )
    spacing = max(1, config.steps // config.evaluations)
    evaluate_at = set(range(0, config.steps + 1, spacing)) | {config.steps}
    with tqdm(total=config.steps, desc=desc, unit="step", disable=not config.progress) as bar:
        for step in range(config.steps + 1):
            if step in evaluate_at:
                train_loss, train_acc = _evaluate(model, data.train_x, train_labels)
                test_loss, test_acc = _evaluate(model, data.test_x, data.test_y)
                for tag, value in (
                    ("loss/train", train_loss),
                    ("loss/eval", test_loss),
                    ("accuracy/train", train_acc),
                    ("accuracy/test", test_acc),
                ):
                    writer.add_scalar(tag, value, step)
                bar.set_postfix(train_loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.3f}")
            tracker.step(model, step)
            if step == config.steps:
                break
            index = torch.randint(0, len(train_labels), (config.batch_size,), generator=batches)
            loss = nn.functional.cross_entropy(model(data.train_x[index]), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
    tracker.close()
    writer.close()


def _clear_run_dir(path: Path, force: bool) -> None:
    """Remove an earlier demo run at ``path``; anything that is not a run needs ``force``."""
    if not path.exists():
        return
    is_run = (path / "interactions").is_dir() or any(p.name.startswith("events.out.tfevents") for p in path.iterdir())
    if not (is_run or force):
        raise FileExistsError(
            f"{path} exists and is not an earlier demo run; pass --force to replace it or choose another --output-dir."
        )
    shutil.rmtree(path)


@dataclass
class Check:
    """One prediction of the paper and whether this demo run bore it out."""

    claim: str
    held: bool
    evidence: str


def _versus(
    left: tuple[str, report.RunSummary, str], right: tuple[str, report.RunSummary, str], step: int | None = None
) -> str:
    """Two readings with their 95% intervals and whether the intervals overlap: ``(label,
    run, tag)`` each, at ``step`` (default each run's last tracked step)."""
    parts = []
    for label, run, tag in (left, right):
        low, high = run.interval(tag, step)
        parts.append(f"{label} {run.reading(tag, step):.3f} [{low:.3f}, {high:.3f}]")
    (_, a, tag_a), (_, b, tag_b) = left, right
    (low_a, high_a), (low_b, high_b) = a.interval(tag_a, step), b.interval(tag_b, step)
    if any(math.isnan(x) for x in (low_a, high_a, low_b, high_b)):
        verdict = "no interval"
    elif low_a <= high_b and low_b <= high_a:
        verdict = "intervals overlap: not a clear difference"
    else:
        verdict = "intervals apart"
    return f"{', '.join(parts)}; {verdict}"


def paper_checks(clean: report.RunSummary, noisy: report.RunSummary) -> list[Check]:
    """Compare the two runs with the predictions of arXiv 2302.13091.

    A prediction "held" when the readings are in the predicted order; the evidence gives each
    reading with its 95% bootstrap interval over the probe samples and says whether the two
    intervals overlap (overlapping intervals: the probes do not show a clear difference).
    """
    ratio, share = tags.summary("complex_ratio"), tags.share("simple_share")
    simple = tags.summary("simple_strength")
    early = clean.early_step  # both runs are tracked at the same steps
    checks = [
        Check(
            "noisy labels -> more complex concepts (final complex ratio)",
            noisy.reading(ratio) > clean.reading(ratio),
            _versus(("clean", clean, ratio), ("noisy", noisy, ratio)),
        ),
        Check(
            "noisy labels -> fewer simple concepts (final simple share of strength)",
            noisy.reading(share) < clean.reading(share),
            _versus(("clean", clean, share), ("noisy", noisy, share)),
        ),
        Check(
            f"clean labels -> simple concepts learned faster (simple strength at step {clean.early_step})",
            clean.early_simple_strength > noisy.early_simple_strength,
            _versus(("clean", clean, simple), ("noisy", noisy, simple), early),
        ),
    ]
    for r in (clean, noisy):
        similarity = {band: tags.band_train_test_similarity(band) for band in tags.BANDS}
        checks.append(
            Check(
                f"{r.name}: train-test similarity falls with order (simple > complex band)",
                r.reading(similarity["simple"]) > r.reading(similarity["complex"]),
                f"medium {r.reading(similarity['medium']):.3f}; "
                + _versus(("simple", r, similarity["simple"]), ("complex", r, similarity["complex"])),
            )
        )
    for r in (clean, noisy):
        detour = {band: tags.band_detour_ratio(band) for band in tags.DETOUR_BANDS}
        checks.append(
            Check(
                f"{r.name}: complex concepts take the longer detour (detour ratio complex > simple)",
                r.reading(detour["complex"]) > r.reading(detour["simple"]),
                _versus(("simple", r, detour["simple"]), ("complex", r, detour["complex"])),
            )
        )
    return checks


DOCS_START = "<!-- demo-numbers:start: generated by `make docs-numbers` from docs/demo_results.json; do not edit -->"
DOCS_END = "<!-- demo-numbers:end -->"
"""The markers around the README block that ``make docs-numbers`` rewrites."""

DOCS_FIGURES = {
    "train_test_similarity": "Train-test similarity of concepts by order, clean vs noisy",
    "order_profile": "Salient strength per order at the last step, clean vs noisy",
    "phase_boundary": "Share of medium + complex strength with its 95% interval, the phase boundary, the "
    "loss-gap step and absolute H(t)",
}
"""Report figures the README shows, as ``docs/demo_<name>.png``, with their alt texts."""


def demo_results(config: DemoConfig, summaries: list[report.RunSummary]) -> dict[str, Any]:
    """What the README shows of a demo run, as JSON-able text: the settings, the summary and
    similarity tables and the checks, each cell formatted as the demo prints it.

    Args:
        config: the settings the runs were made with.
        summaries: the clean and the noisy run, as :func:`run_demo` returns them.
    """
    clean, noisy = summaries
    data = load_digits_split(config.train_size, config.seed)
    changed = int((corrupt_labels(data.train_y, config.label_noise, config.seed) != data.train_y).sum())
    settings = ("seed", "steps", "label_noise", "width", "train_size", "probes", "tracked_steps", "kind")
    similarity = {
        r.name: [] if r.train_test is None else [f"{v:.2f}" for v in r.train_test.tolist()[1:]] for r in summaries
    }
    return {
        "settings": {name: getattr(config, name) for name in settings},
        "labels_changed": changed,
        "runs": [r.name for r in summaries],
        "summary": [[label, cells] for label, cells in report.summary_rows(summaries)],
        "similarity": similarity,
        "checks": [[check.claim, check.held, check.evidence] for check in paper_checks(clean, noisy)],
    }


def docs_block(results: dict[str, Any]) -> str:
    """The README's demo block (between :data:`DOCS_START` and :data:`DOCS_END`, markers
    excluded) rendered from :func:`demo_results`."""
    s, runs = results["settings"], results["runs"]
    lines = [
        f"`concept-tracker demo --seed {s['seed']}` (what `make demo` runs): an MLP 64-{s['width']}-{s['width']}-10 "
        f"on {s['train_size']:,} digits for {s['steps']:,} Adam steps, trained twice. The noisy run randomizes "
        f"{s['label_noise']:.0%} of the training labels ({results['labels_changed']} labels actually changed). "
        f"Interactions (kind `{s['kind']}`) of {NUM_PLAYERS} image patches (the {NUM_PLAYERS} inkiest of a "
        f"{PATCH_GRID[0]} × {PATCH_GRID[1]} grid, masked to the mean training image) are computed on {s['probes']} "
        f"training and {s['probes']} test probes at {s['tracked_steps']} log-spaced steps. Each averaged reading "
        "is at the last tracked step unless the row says otherwise, with its 95% bootstrap interval over the "
        "probes in brackets:",
        "",
        "| | " + " | ".join(runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in results["summary"]]
    orders = max(len(v) for v in results["similarity"].values())
    lines += [
        "",
        "Train–test similarity by order (last tracked step):",
        "",
        "| order | " + " | ".join(str(m) for m in range(1, orders + 1)) + " |",
        "|---|" + "---|" * orders,
    ]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in results["similarity"].items()]
    lines += ["", "What arXiv 2302.13091 predicts, and what this run showed:", ""]
    lines += [f"- **{'yes' if held else 'no'}**: {claim}: {evidence}" for claim, held, evidence in results["checks"]]
    lines += [""] + [f"![{alt}](docs/demo_{name}.png)" for name, alt in DOCS_FIGURES.items()]
    timing = results.get("timing")
    if timing:
        lines += [
            "",
            f"This run took {timing['wall_seconds']} s wall on {timing['cpus']} CPU cores at load average "
            f"{timing['load_average']} (the load of other processes slows it down).",
        ]
    return "\n".join(lines)


def replace_docs_block(text: str, block: str) -> str:
    """``text`` (the README) with the part between the demo markers replaced by ``block``.

    Raises:
        ValueError: when the markers are missing or out of order.
    """
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start < 0 or end < start:
        raise ValueError(f"the README lacks the demo block markers {DOCS_START!r} ... {DOCS_END!r}.")
    return text[: start + len(DOCS_START)] + "\n" + block + "\n" + text[end:]


def run_demo(config: DemoConfig, force: bool = False, echo: Callable[[str], None] = print) -> list[report.RunSummary]:
    """Train, track and compare the clean and noisy runs; print the comparison, write the
    figures (PNG) and ``report.html`` to ``config.output_dir``.

    Args:
        config: demo settings.
        force: replace non-run content found where the run directories go.
        echo: where the text output goes.
    Returns:
        The clean and noisy :class:`~concept_tracker.report.RunSummary`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config, force, echo)
    finally:
        torch.set_num_threads(threads)


def _run(config: DemoConfig, force: bool, echo: Callable[[str], None]) -> list[report.RunSummary]:
    data = load_digits_split(config.train_size, config.seed)
    noisy_labels = corrupt_labels(data.train_y, config.label_noise, config.seed)
    changed = int((noisy_labels != data.train_y).sum())
    # Same probe samples and targets (true labels) in both runs: only training differs.
    probes = select_probes(data.train_x, config.probes, labels=data.train_y, seed=config.seed)
    heldout = select_probes(data.test_x, config.probes, labels=data.test_y, seed=config.seed)
    output = Path(config.output_dir)
    runs = {"clean": data.train_y, "noisy": noisy_labels}
    for name in runs:
        _clear_run_dir(output / name, force)

    echo(
        f"Training an MLP (64-{config.width}-{config.width}-10) on {config.train_size} digits for "
        f"{config.steps} steps, twice: clean labels, and {config.label_noise:.0%} of labels "
        f"randomized ({changed} actually changed). Tracking {config.kind} interactions of "
        f"{NUM_PLAYERS} patches on {config.probes} training + {config.probes} test probes at "
        f"{config.tracked_steps} log-spaced steps."
    )
    for name, labels in runs.items():
        train_run(config, data, labels, output / name, probes, heldout, desc=name)

    summaries = [report.summarize_run(output / name, name=name) for name in runs]
    clean, noisy = summaries
    echo("")
    echo(report.summary_table(summaries))
    echo("")
    echo("Train-test similarity of concepts by order (last tracked step):")
    echo(report.similarity_table(summaries))
    echo("")
    echo("What arXiv 2302.13091 predicts, and what this run showed:")
    for check in paper_checks(clean, noisy):
        echo(f"  [{'yes' if check.held else 'NO '}] {check.claim}: {check.evidence}")
    for r in summaries:
        echo(
            f"  [info] {r.name}: phase boundary (valley of the high-order share) at step "
            f"{r.phase_boundary}; eval-train loss gap starts growing at step {r.loss_gap_step}"
        )
    pngs = report.report_pngs(summaries)
    figures = report.save_figures(pngs, output)
    html = report.write_html(summaries, output / "report.html", "concept-tracker demo: clean vs noisy labels", pngs)
    echo("")
    echo(f"Figures: {', '.join(str(p) for p in figures)}")
    echo(f"Report:  {html}")
    echo(f"Compare the runs in TensorBoard:  tensorboard --logdir {output}   then open http://localhost:6006")
    return summaries
