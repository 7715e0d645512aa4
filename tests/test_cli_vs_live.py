"""The command line against live tracking and against its own stored data, black-box.

``concept-tracker analyze`` must give what a ``ConceptTracker`` stepping through the same
checkpoints during training gives, and ``concept-tracker report --html`` must show every run
it is given with that run's own numbers. Only public entry points are used: ``cli.main``
with command-line arguments, the files it writes, and the library's public functions as the
independent reference.
"""

from __future__ import annotations

import math
import sys
import textwrap
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

from concept_tracker import (
    ConceptTracker,
    OutputConfig,
    ProbeSet,
    TabularPlayers,
    at_steps,
    band_summary,
    cli,
    order_profile,
    train_test_similarity,
)
from concept_tracker.store import list_steps, load_step, step_path

FEATURES, CLASSES, STEPS = 5, 3, (0, 4, 9)
FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
    """
)


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 12), nn.Tanh(), nn.Linear(12, CLASSES))


@pytest.fixture
def workdir(module_workdir):
    """A working directory holding the model factory module ``cli_live_factory``."""
    path = module_workdir("cli_live_factory", FACTORY)
    sys.path.insert(0, str(path))
    return path


def checkpoints(folder, seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """State dicts at ``STEPS`` of a model whose weights drift with the step, saved as ``step_*.pt``."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    base = build().state_dict()
    states = {}
    for step in STEPS:
        gen = torch.Generator().manual_seed(1000 + step)
        states[step] = {k: v * (1 + 0.1 * step) + 0.2 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        torch.save(states[step], folder / f"step_{step:08d}.pt")
    return states


def probe_data(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs and labels with labels that are not the model's predictions (so targets matter)."""
    gen = torch.Generator().manual_seed(seed)
    data = {
        "inputs": torch.randn(7, FEATURES, generator=gen),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0]),
        "heldout_inputs": torch.randn(6, FEATURES, generator=gen),
        "heldout_labels": torch.tensor([2, 1, 0, 2, 1, 0]),
    }
    torch.save(data, path)
    return data


def test_analyze_equals_a_live_tracker_on_the_same_checkpoints(workdir, logged):
    states = checkpoints(workdir / "ckpts")
    data = probe_data(workdir / "probes.pt")
    code = cli.main(
        ["analyze", str(workdir / "ckpts"), "--data", str(workdir / "probes.pt"), "--players", "tabular",
         "--baseline", "zero", "--model-factory", "cli_live_factory:build", "--log-dir", str(workdir / "cli"),
         "--device", "cpu"]
    )
    assert code == 0

    model = build()
    with ConceptTracker(
        TabularPlayers(baselines="zero"), ProbeSet(data["inputs"], data["labels"]),
        ProbeSet(data["heldout_inputs"], data["heldout_labels"]), log_dir=workdir / "live", schedule=at_steps(STEPS),
        output=OutputConfig(figures=False), strict=True,
    ) as tracker:
        for step in range(STEPS[-1] + 1):  # a training loop: the tracker sees every step
            if step in states:
                model.load_state_dict(states[step])
            tracker.step(model, step)

    for split, labels in (("probe", data["labels"]), ("heldout", data["heldout_labels"])):
        assert list_steps(workdir / "cli", split) == list_steps(workdir / "live", split) == list(STEPS)
        for step in STEPS:
            got, got_meta = load_step(step_path(workdir / "cli", step, split))
            want, want_meta = load_step(step_path(workdir / "live", step, split))
            assert torch.equal(got.targets, labels) and torch.equal(want.targets, labels), (split, step)
            for key in ("n", "kind", "value", "aligned", "player_names"):
                assert got_meta[key] == want_meta[key], key
            # Same model, rows and batch shapes: equal up to float32 rounding at most.
            torch.testing.assert_close(got.outputs, want.outputs, rtol=0, atol=1e-5)
            torch.testing.assert_close(got.and_effects, want.and_effects, rtol=0, atol=1e-5 * (1 << FEATURES))

    cli_scalars, live_scalars = logged(workdir / "cli"), logged(workdir / "live")
    compared = [tag for tag in live_scalars if not tag.startswith("perf/")]
    assert "generalization/order_01/train_test_similarity" in compared and "dynamics/sign_flips" in compared
    assert set(compared) <= set(cli_scalars)
    for tag in compared:
        assert sorted(cli_scalars[tag]) == sorted(live_scalars[tag]), tag
        for step, value in live_scalars[tag].items():
            other = cli_scalars[tag][step]
            assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, rel=1e-5, abs=1e-6), (tag, step)


class Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of cell texts (header and data cells alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tracked_run(log_dir, seed: int) -> None:
    """A run written by a live tracker (no figures, to stay quick) through the checkpoints of ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x, held = torch.randn(7, FEATURES, generator=gen), torch.randn(6, FEATURES, generator=gen)
    torch.manual_seed(seed)
    model = build()
    with ConceptTracker(
        TabularPlayers(baselines="zero"), (x, torch.tensor([0, 1, 2, 0, 1, 2, 0])),
        (held, torch.tensor([2, 1, 0, 2, 1, 0])), log_dir=log_dir, schedule=at_steps(STEPS),
        output=OutputConfig(figures=False), strict=True,
    ) as tracker:
        for step in range(STEPS[-1] + 1):
            tracker.step(model, step)
            with torch.no_grad():
                model[0].weight.mul_(1.1).add_(0.05 * seed)


def test_report_html_shows_every_run_with_its_own_numbers(workdir):
    names = ["first", "second", "third"]
    for seed, name in enumerate(names):
        tracked_run(workdir / "runs" / name, seed)
    html = workdir / "report.html"
    assert cli.main(["report", *(str(workdir / "runs" / name) for name in names), "--html", str(html)]) == 0

    page = Tables()
    page.feed(html.read_text())
    summary = next(t for t in page.tables if any(row and row[0].startswith("complex ratio") for row in t))
    by_order = next(t for t in page.tables if t[0] and t[0][0] == "order")
    assert summary[0][1:] == names
    assert [row[0] for row in by_order[1:]] == names
    rows = {row[0].split(" (")[0]: row[1:] for row in summary}
    for column, name in enumerate(names):
        last = STEPS[-1]
        probe, _ = load_step(step_path(workdir / "runs" / name, last))
        held, _ = load_step(step_path(workdir / "runs" / name, last, "heldout"))
        reading = band_summary(order_profile(probe, 0.05))
        # A cell reads "value [low, high]": the reading, then its bootstrap interval.
        assert float(rows["complex ratio"][column].split()[0]) == pytest.approx(reading.complex_ratio, abs=5e-4), name
        assert float(rows["concepts per sample"][column].split()[0]) == pytest.approx(reading.num_concepts, abs=5e-4), name
        assert rows["last tracked step"][column] == str(last)
        similarity = train_test_similarity(probe, probe.targets, held, held.targets)
        shown = [float(v) for v in by_order[1 + column][1:]]
        assert shown == pytest.approx(similarity[1:].tolist(), abs=5e-3), name
    # The runs differ, so a report repeating one run's numbers cannot pass the checks above.
    assert len({cell.split()[0] for cell in rows["complex ratio"]}) == len(names)
