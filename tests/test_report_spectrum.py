"""``report`` (summary, text tables, HTML, CLI) reads the sampled order spectrum a run stored:
beside the exact readings, or alone for a run above the exact limit, and refuses files that do
not belong to the run."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch
from torch import nn

import concept_tracker as ct
from concept_tracker import cli, report
from concept_tracker.config import OutputConfig, ReadingsConfig
from concept_tracker.store import list_spectra, load_spectrum, save_spectrum, spectrum_path
from concept_tracker.writers import tags

STEPS = (0, 5, 10)
QUIET = OutputConfig(figures=False)


def drifting(n: int, step: int) -> nn.Module:
    """A tiny MLP on ``n`` features whose weights drift with ``step`` (a model that trains)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(n, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * step)
    return model


def track(log_dir, n: int, spectrum: int | None, steps=STEPS, probes: int = 4) -> None:
    x = torch.randn(probes, n, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sampled-only notice, checked in test_spectrum.py
        tracker = ct.ConceptTracker(
            ct.TabularPlayers(baselines="zero"),
            ct.ProbeSet(x, torch.arange(probes) % 3),
            log_dir=log_dir,
            schedule=ct.at_steps(list(steps)),
            readings=ReadingsConfig(spectrum=spectrum),
            output=QUIET,
        )
    with tracker:
        for step in steps:
            tracker.step(drifting(n, step), step)


@pytest.fixture(scope="module")
def both_run(tmp_path_factory):
    """A run at n = 6 with the sampled spectrum read beside the exact readings."""
    folder = tmp_path_factory.mktemp("both") / "both"
    track(folder, 6, spectrum=40)
    return folder


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    """A run at n = 18, above the exact limit: the tracker stores the sampled spectrum only."""
    folder = tmp_path_factory.mktemp("sampled") / "wide"
    track(folder, 18, spectrum=60, steps=(0, 4))
    return folder


def test_report_reads_the_sampled_spectrum_beside_the_exact_readings(both_run, logged):
    run = report.summarize_run(both_run)
    assert run.steps == list(STEPS) and run.sampled is not None and run.sampled.steps == list(STEPS)
    scalars = logged(both_run)
    for step in STEPS:
        # every sampled reading as the tracker logged it, the intervals included
        for tag, value in run.sampled.readings[step].items():
            assert tag.startswith("spectrum/")
            assert value == pytest.approx(scalars[tag][step], rel=1e-6), (tag, step)
        # the exact readings hold no estimate
        assert not any(tag.startswith("spectrum/") for tag in run.readings[step])
    value, low, high = run.sampled.share("simple")
    assert low <= value <= high and 0.0 <= value <= 1.0
    assert run.sampled.n == run.n == 6 and run.sampled.bands == run.bands and run.sampled_note is None
    assert run.sampled.forwards_per_probe == 40 and len(run.sampled.forwards) == len(STEPS)


def test_report_text_and_html_label_the_sampled_readings(both_run, tmp_path, capsys):
    html = tmp_path / "report.html"
    assert cli.main(["report", str(both_run), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    exact, sampled = out.split(report.SAMPLED_HEADING)
    run = report.summarize_run(both_run)
    value, low, high = run.sampled.share("complex", STEPS[-1])
    cell = report._fmt_interval(value, (low, high))
    last = next(line for line in sampled.splitlines() if line.split()[:1] == [str(STEPS[-1])])
    assert cell in last  # the last step's row
    assert "simple share (sampled, orders 1-2)" in sampled and "complex share (sampled, orders 4-6)" in sampled
    assert "complex ratio" in exact and "sampled" not in exact  # the exact summary holds no estimate
    page = html.read_text()
    assert report.SAMPLED_HEADING in page and cell in page
    assert 'alt="sampled_spectrum"' in page and 'alt="band_strength"' in page


def test_a_spectrum_only_run_reports(sampled_run, tmp_path, capsys):
    assert list_spectra(sampled_run) == [0, 4]
    run = report.summarize_run(sampled_run)
    assert run.steps == [] and run.final_profile is None and run.sign_flips is None
    assert run.n == 18 and run.sampled is not None and run.sampled.steps == [0, 4]
    assert math.isnan(run.reading(tags.summary("complex_ratio")))
    table = report.summary_table([run])
    assert "no exact readings (n=18 players" in table
    html = tmp_path / "wide.html"
    assert cli.main(["report", str(sampled_run), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    value, low, high = run.sampled.share("simple", 4)
    assert report.SAMPLED_HEADING in out and report._fmt_interval(value, (low, high)) in out
    assert "60 masked forwards per probe sample" in out
    page = html.read_text()
    assert 'alt="sampled_spectrum"' in page and 'alt="band_strength"' not in page


def test_a_spectrum_only_run_says_band_options_do_not_apply_to_it(sampled_run, capsys):
    assert cli.main(["report", str(sampled_run), "--simple-max", "2"]) == 0
    out = capsys.readouterr().out
    assert "keeps the ratio=0.05, simple orders 1-6 and complex orders 10-18 it was tracked with" in out
    assert "simple share (sampled, orders 1-6)" in out


def test_exact_and_sampled_runs_side_by_side(both_run, sampled_run, tmp_path):
    runs = [report.summarize_run(both_run), report.summarize_run(sampled_run)]
    rows = dict(report.summary_rows(runs))
    assert rows["last tracked step"] == ["10", "-"]
    html = report.write_html(runs, tmp_path / "both.html").read_text()
    assert html.count("masked forwards per probe sample") == 2


# ------------------------------------------------------------- files that do not belong


def copy_run(source, dest):
    shutil.copytree(source, dest)
    return dest


def test_a_spectrum_file_of_another_run_is_refused(sampled_run, tmp_path):
    """A byte copy from another run, under the right step name: its run id gives it away."""
    other = tmp_path / "other"
    track(other, 18, spectrum=60, steps=(4,))  # another tracker: another run id
    run = copy_run(sampled_run, tmp_path / "mixed")
    shutil.copyfile(spectrum_path(other, 4), spectrum_path(run, 4))
    with pytest.raises(ValueError, match=r"step_00000004.safetensors does not belong with .*step_00000000.*run="):
        report.summarize_run(run)
    assert cli.main(["report", str(run)]) == 2


def test_a_spectrum_of_another_run_beside_exact_files_is_refused(both_run, sampled_run, tmp_path):
    run = copy_run(both_run, tmp_path / "mixed")
    shutil.rmtree(run / "spectrum")
    (run / "spectrum").mkdir()
    shutil.copyfile(spectrum_path(sampled_run, 0), spectrum_path(run, 0))
    with pytest.raises(ValueError, match=r"spectrum/step_00000000.safetensors holds the sampled spectrum of run"):
        report.summarize_run(run)


def test_a_spectrum_file_copied_to_another_step_is_refused(both_run, tmp_path):
    run = copy_run(both_run, tmp_path / "copied")
    shutil.copyfile(spectrum_path(run, 0), spectrum_path(run, 5))
    with pytest.raises(ValueError, match="step_00000005.safetensors holds the sampled spectrum of step 0"):
        report.summarize_run(run)


def test_spectrum_files_that_disagree_on_their_settings_are_refused(both_run, tmp_path):
    run = copy_run(both_run, tmp_path / "resaved")
    _, meta = load_spectrum(spectrum_path(run, 5))
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    other = ct.order_spectrum(drifting(6, 5), x, ct.TabularPlayers(baselines="zero"), forwards_per_probe=50)
    save_spectrum(run, 5, other, run=meta["run"])
    with pytest.raises(ValueError, match="forwards_per_probe=50 there, 40 in step_00000000"):
        report.summarize_run(run)
