"""The ``concept-tracker`` command: analyze, report and demo, their errors and exit codes.

Checkpoints are state dicts of a tiny MLP written by the tests themselves; the model factory is
a module written next to them. Commands run in-process through ``cli.main`` (one subprocess
check covers the console entry point's exit status).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from models import seeded
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from concept_tracker import (
    ConceptTracker,
    OutputConfig,
    ReadingsConfig,
    TabularPlayers,
    at_steps,
    band_orders,
    cli,
    order_profile,
    report,
)
from concept_tracker.store import list_steps, load_step, step_path, tracked_settings
from concept_tracker.writers import tags

FEATURES, CLASSES = 4, 3
FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    """
)


@pytest.fixture
def workdir(module_workdir):
    """A temporary working directory holding the model factory module ``tiny_factory``."""
    return module_workdir("tiny_factory", FACTORY)


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


def write_checkpoints(folder, steps=(0, 5, 10), suffix=".pt"):
    """State dicts of the factory's model at ``steps``, the weights drifting with the step."""
    folder.mkdir(parents=True, exist_ok=True)
    base = seeded(build, seed=0)
    paths = []
    for step in steps:
        state = {k: v + 0.05 * step * torch.ones_like(v) for k, v in base.state_dict().items()}
        path = folder / f"step_{step:08d}{suffix}"
        if suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
        paths.append(path)
    return paths


def write_data(path, heldout=True):
    gen = torch.Generator().manual_seed(0)
    data = {"inputs": torch.randn(6, FEATURES, generator=gen), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    if heldout:
        data["heldout_inputs"] = torch.randn(6, FEATURES, generator=gen)
        data["heldout_labels"] = torch.tensor([2, 1, 0, 2, 1, 0])
    torch.save(data, path)
    return path


def analyze(workdir, *extra, ckpts="ckpts", log_dir="run"):
    return cli.main(
        ["analyze", str(workdir / ckpts), "--data", str(workdir / "data.pt"), "--players", "tabular",
         "--model-factory", "tiny_factory:build", "--log-dir", str(workdir / log_dir), *extra]
    )


def test_analyze_writes_the_same_output_as_live_tracking(workdir, capsys):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir) == 0
    run = workdir / "run"
    assert list_steps(run) == [0, 5, 10]
    assert list_steps(run, "heldout") == [0, 5, 10]
    scalars = report.read_scalars(run)
    for tag in tags.spec_scalar_tags(FEATURES, ["and"], generalization=True):
        assert [step for step, _ in scalars[tag]] == [0, 5, 10], tag
    out = capsys.readouterr().out
    assert "complex ratio" in out and "tensorboard --logdir" in out


def test_analyze_reads_safetensors_files_hf_folders_and_npz_data(workdir):
    write_checkpoints(workdir / "ckpts", steps=(0, 7), suffix=".safetensors")
    # A save_pretrained-style folder: weights in model.safetensors, step in the folder name.
    folder = workdir / "ckpts" / "checkpoint-20"
    folder.mkdir()
    save_file(seeded(build, seed=1).state_dict(), str(folder / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    np.savez(workdir / "data.npz", inputs=torch.randn(5, FEATURES, generator=gen).numpy())
    code = cli.main(
        ["analyze", str(workdir / "ckpts"), "--data", str(workdir / "data.npz"), "--players", "tabular:0-2",
         "--model-factory", "tiny_factory:build", "--log-dir", str(workdir / "run"), "--baseline", "zero"]
    )
    assert code == 0
    assert list_steps(workdir / "run") == [0, 7, 20]


def test_analyze_refuses_to_overwrite_without_force(workdir, capsys):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir) == 0
    capsys.readouterr()
    write_checkpoints(workdir / "other", steps=(3, 4))
    assert analyze(workdir, ckpts="other") == 2
    err = capsys.readouterr().err
    assert "--force" in err and str(workdir / "run") in err
    assert list_steps(workdir / "run") == [0, 5, 10]
    assert analyze(workdir, "--force", ckpts="other") == 0
    assert list_steps(workdir / "run") == [3, 4]
    assert [s for s, _ in report.read_scalars(workdir / "run")[tags.PERF_SECONDS]] == [3, 4]


def snapshot(folder):
    """Every file under ``folder``: ``{relative path: bytes}``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_analyze_force_on_a_live_run_touches_nothing(workdir, capsys):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    run = workdir / "run"
    live = ConceptTracker(TabularPlayers(), torch.randn(3, FEATURES), log_dir=run, schedule=at_steps([0, 9]),
                          output=OutputConfig(figures=False))
    try:
        live.step(seeded(build, seed=0), 0)
        before = snapshot(run)
        assert analyze(workdir, "--force") == 2
        err = capsys.readouterr().err
        assert "in use by another ConceptTracker" in err and str(run) in err
        assert snapshot(run) == before
        assert sorted(p.name for p in workdir.iterdir()) == ["ckpts", "data.pt", "run", "tiny_factory.py"]
        assert live.step(seeded(build, seed=0), 9) is not None  # the live run goes on
    finally:
        live.close()
    assert list_steps(run) == [0, 9]


@pytest.mark.filterwarnings("ignore:ConceptTracker .* steps tracked of:UserWarning")
@pytest.mark.parametrize("fault", ["another model", "nan weights"])
def test_analyze_force_with_a_bad_second_checkpoint_keeps_the_old_analysis(workdir, capsys, fault):
    """Another model fails when every checkpoint is loaded, before any is analyzed; NaN weights
    pass that check and fail while analyzing: either way the old run stays as it was."""
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir) == 0
    run = workdir / "run"
    before = snapshot(run)
    bad = write_checkpoints(workdir / "other", steps=(3, 4, 8))[1]
    if fault == "another model":
        torch.save(nn.Linear(2, 2).state_dict(), bad)
    else:
        torch.save({k: torch.full_like(v, math.nan) for k, v in torch.load(bad).items()}, bad)
    capsys.readouterr()
    assert analyze(workdir, "--force", ckpts="other") == 2
    err = capsys.readouterr().err
    assert (str(bad) if fault == "another model" else "NaN") in err
    assert snapshot(run) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["ckpts", "data.pt", "other", "run", "tiny_factory.py"]
    assert report.summarize_run(run).steps == [0, 5, 10]


def test_analyze_force_keeps_what_is_not_a_run(workdir):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir) == 0
    (workdir / "run" / "notes.txt").write_text("mine")
    write_checkpoints(workdir / "other", steps=(3, 4))
    assert analyze(workdir, "--force", ckpts="other") == 0
    assert (workdir / "run" / "notes.txt").read_text() == "mine"
    assert list_steps(workdir / "run") == [3, 4] and list_steps(workdir / "run", "heldout") == [3, 4]
    assert len(list((workdir / "run").glob("events.out.tfevents*"))) == 1
    assert sorted(p.name for p in workdir.iterdir()) == ["ckpts", "data.pt", "other", "run", "tiny_factory.py"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_checkpoint_is_named_with_exit_code_2(workdir, capsys, suffix):
    paths = write_checkpoints(workdir / "ckpts", suffix=suffix)
    write_data(workdir / "data.pt")
    paths[1].write_bytes(paths[1].read_bytes()[:40])
    assert analyze(workdir) == 2
    err = capsys.readouterr().err
    assert str(paths[1]) in err and "truncated" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # Checked before any checkpoint is analyzed: nothing was written.
    assert not (workdir / "run").exists()


def test_checkpoint_of_another_model_is_an_input_error(workdir, capsys):
    folder = workdir / "ckpts"
    folder.mkdir()
    torch.save(nn.Linear(3, 3).state_dict(), folder / "step_1.pt")
    write_data(workdir / "data.pt")
    assert analyze(workdir) == 2
    assert "does not fit the --model-factory model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["analyze", "ckpts", "--data", "missing.pt", "--players", "tabular", "--model-factory", "tiny_factory:build"], "missing.pt does not exist"),
        (["analyze", "ckpts", "--data", "data.pt", "--players", "hexagons:3", "--model-factory", "tiny_factory:build"], "unknown kind 'hexagons'"),
        (["analyze", "ckpts", "--data", "data.pt", "--players", "tabular", "--model-factory", "nope:build"], "cannot import 'nope'"),
        (["analyze", "ckpts", "--data", "data.pt", "--players", "tabular"], "no config.json"),
        (["analyze", "data.pt", "--data", "data.pt", "--players", "tabular"], "no step in the name"),
        (["analyze", "ckpts", "--players", "tabular"], "arguments are required: --data"),
        (["report", "nowhere"], "nowhere is not a directory"),
    ],
)
def test_input_errors_give_one_line_and_exit_code_2(workdir, capsys, args, message):
    write_checkpoints(workdir / "ckpts", steps=(1,))
    write_data(workdir / "data.pt")
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_report_summarizes_runs_and_protects_the_html(workdir, capsys):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir, log_dir="a") == 0
    assert analyze(workdir, log_dir="b", ckpts="ckpts") == 0
    capsys.readouterr()
    html = workdir / "out.html"
    assert cli.main(["report", str(workdir / "a"), str(workdir / "b"), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["a", "b"]
    for band in ("simple", "medium", "complex"):
        assert f"train-test similarity, {band}" in out
    page = html.read_text()
    assert page.count("data:image/png;base64,") >= 5 and "<table>" in page
    html.write_text("keep me")
    assert cli.main(["report", str(workdir / "a"), "--html", str(html)]) == 2
    assert "--force" in capsys.readouterr().err and html.read_text() == "keep me"
    assert cli.main(["report", str(workdir / "a"), "--html", str(html), "--force"]) == 0
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_report_names_the_broken_path(workdir, capsys):
    empty = workdir / "empty_run"
    empty.mkdir()
    assert cli.main(["report", str(empty)]) == 2
    assert f"{empty} holds no stored interactions" in capsys.readouterr().err
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir) == 0
    capsys.readouterr()
    broken = workdir / "run" / "interactions" / "step_00000005.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])
    assert cli.main(["report", str(workdir / "run")]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "truncated" in err and len(err.strip().splitlines()) == 1


SETTINGS = ("ratio", "simple_max", "complex_min")


def rewrite_metadata(path, **changes):
    """Rewrite one stored interactions file with metadata entries replaced (None deletes one)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    # Files from before the settings had no checksum either: the first format.
    meta.pop("sha256", None)
    meta["format"] = "concept-tracker/interactions/1"
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file(tensors, str(path), metadata=meta)


def row(out, label, intervals=False):
    """The cells of one row of a printed summary table (columns are 2+ spaces apart); the
    value alone unless ``intervals`` (a cell reads ``value [low, high]``)."""
    line = next(line for line in out.splitlines() if line.startswith(label))
    cells = re.split(r"\s{2,}", line[len(label):].strip())
    return cells if intervals else [cell.split(" [")[0] for cell in cells]


def concepts_per_sample(run, step, ratio):
    """"concepts per sample" of the report at ``step``, recomputed from the stored file."""
    res, _ = load_step(step_path(run, step))
    return f"{float(order_profile(res, ratio).count.sum()):.3f}"


def analyzed_with_ratio_0_1(workdir, capsys):
    """A run analyzed with --ratio 0.1, steps 0, 5, 10; its last-step concept counts differ
    between ratio 0.05 and 0.1 (else the tests below could not tell the ratios apart)."""
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir, "--ratio", "0.1") == 0
    capsys.readouterr()
    run = workdir / "run"
    expected = {ratio: concepts_per_sample(run, 10, ratio) for ratio in (0.05, 0.1)}
    assert expected[0.05] != expected[0.1]
    return run, expected


def test_report_uses_the_ratio_stored_with_the_run(workdir, capsys):
    run, expected = analyzed_with_ratio_0_1(workdir, capsys)
    for split in ("probe", "heldout"):
        for step in (0, 5, 10):
            _, meta = load_step(step_path(run, step, split))
            assert tracked_settings(meta) == {"ratio": 0.1, "simple_max": None, "complex_min": None}
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert row(out, "concepts per sample") == [expected[0.1]]
    assert "do not record" not in out
    assert report.summarize_run(run).ratio == 0.1


def test_report_ratio_option_overrides_the_stored_one(workdir, capsys):
    run, expected = analyzed_with_ratio_0_1(workdir, capsys)
    assert cli.main(["report", str(run), "--ratio", "0.05"]) == 0
    out = capsys.readouterr().out
    assert row(out, "concepts per sample") == [expected[0.05]]
    assert "do not record" not in out


def test_report_of_a_run_stored_without_settings_uses_the_defaults_and_says_so(workdir, capsys):
    run, expected = analyzed_with_ratio_0_1(workdir, capsys)
    for split in ("probe", "heldout"):
        for step in (0, 5, 10):
            rewrite_metadata(step_path(run, step, split), **dict.fromkeys(SETTINGS))
    html = workdir / "old.html"
    assert cli.main(["report", str(run), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert row(out, "concepts per sample") == [expected[0.05]]
    note = ("run: its stored interactions do not record ratio, simple_max, complex_min; the report "
            "used the default ratio=0.05, simple_max=n//3=1, complex_min=n//2+1=3.")
    assert note in out and note in html.read_text()
    # A given ratio is no default: only the bands are named.
    assert cli.main(["report", str(run), "--ratio", "0.1"]) == 0
    out = capsys.readouterr().out
    assert row(out, "concepts per sample") == [expected[0.1]]
    assert "do not record simple_max, complex_min; the report used the default simple_max" in out


def test_report_refuses_a_run_whose_files_disagree_on_the_baseline(workdir, capsys):
    """A run resumed with another baseline (refused at load since; files written before that)."""
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir, "--baseline", "zero") == 0
    rewrite_metadata(step_path(workdir / "run", 10), baseline='"mean (fit on 6 samples)"')
    capsys.readouterr()
    assert cli.main(["report", str(workdir / "run")]) == 2
    err = capsys.readouterr().err
    assert "step_00000010.safetensors was tracked with baseline 'mean (fit on 6 samples)'" in err
    assert "step_00000000.safetensors with baseline 'zero'" in err


def test_report_reads_stored_bands_and_files_without_settings_make_no_claim(tmp_path):
    model = seeded(build, seed=0)
    inputs = torch.randn(4, FEATURES, generator=torch.Generator().manual_seed(0))
    run = tmp_path / "run"
    readings = ReadingsConfig(ratio=0.1, simple_max=2, complex_min=4)
    with ConceptTracker(TabularPlayers(), inputs, log_dir=run, schedule=at_steps([0, 1]), readings=readings,
                        output=OutputConfig(figures=False), strict=True) as tracker:
        for step in (0, 1):
            tracker.step(model, step)
    # A file written without settings (say, before an upgrade) does not contradict the others.
    rewrite_metadata(step_path(run, 0), **dict.fromkeys(SETTINGS))
    summary = report.summarize_run(run)
    assert (summary.ratio, summary.bands, summary.settings_note) == (0.1, band_orders(FEATURES, 2, 4), None)
    assert report.summarize_run(run, readings={"simple_max": 1}).bands == band_orders(FEATURES, 1, 4)
    assert report.summarize_run(run, readings=ReadingsConfig()).bands == band_orders(FEATURES)  # used as is


def test_report_band_options_override_the_stored_cut_offs(tmp_path, capsys):
    model = seeded(build, seed=0)
    inputs = torch.randn(4, FEATURES, generator=torch.Generator().manual_seed(0))
    run = tmp_path / "run"
    with ConceptTracker(TabularPlayers(), inputs, log_dir=run, schedule=at_steps([0]), strict=True,
                        readings=ReadingsConfig(simple_max=2, complex_min=4), output=OutputConfig(figures=False)) as tracker:
        tracker.step(model, 0)
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "simple (orders 1-2) strength" in out and "complex (order 4) strength" in out
    assert cli.main(["report", str(run), "--simple-max", "1", "--complex-min", "3"]) == 0
    out = capsys.readouterr().out
    assert "simple (order 1) strength" in out and "complex (orders 3-4) strength" in out


def test_report_of_runs_with_other_bands_labels_each(tmp_path):
    model = seeded(build, seed=0)
    inputs = torch.randn(4, FEATURES, generator=torch.Generator().manual_seed(0))
    runs = []
    for name, simple_max in (("a", 1), ("b", 2)):
        with ConceptTracker(TabularPlayers(), inputs, log_dir=tmp_path / name, schedule=at_steps([0]), strict=True,
                            readings=ReadingsConfig(simple_max=simple_max), output=OutputConfig(figures=False)) as tracker:
            tracker.step(model, 0)
        runs.append(report.summarize_run(tmp_path / name, name=name))
    labels = [label for label, _ in report.summary_rows(runs)]
    assert "simple (orders differ per run) strength" in labels
    page = report.render_html(runs, pngs={})
    assert "a: simple [1]," in page and "b: simple [1, 2]," in page
    same = report.summary_rows([runs[0], runs[0]])
    assert "simple (order 1) strength" in [label for label, _ in same]


@pytest.mark.parametrize("split, step", [("probe", 5), ("heldout", 10)])
def test_report_refuses_a_run_whose_files_disagree_on_the_settings(workdir, capsys, split, step):
    run, _ = analyzed_with_ratio_0_1(workdir, capsys)
    odd = step_path(run, step, split)
    rewrite_metadata(odd, ratio="0.2")
    with pytest.raises(ValueError, match=f"{re.escape(str(odd))} was tracked with ratio=0.2.*one run directory"):
        report.summarize_run(run)
    # Even with every setting given: the directory mixes two runs.
    assert cli.main(["report", str(run), "--ratio", "0.05"]) == 2
    err = capsys.readouterr().err
    assert str(odd) in err and "ratio=0.1" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name, step",
    [("checkpoint-500", 500), ("step_00000500.pt", 500), ("epoch=3-step=500.ckpt", 500), ("model_7.safetensors", 7)],
)
def test_checkpoint_step_is_the_number_ending_the_name(tmp_path, name, step):
    assert cli.checkpoint_step(tmp_path / name) == step


def test_player_specs():
    players = cli.parse_players("tabular:0-2,5")
    assert players.features == [0, 1, 2, 5]
    patches = cli.parse_players("patches:4x4:1,2,5", baseline="0.5")
    assert patches.grid == (4, 4) and patches.patches == [1, 2, 5] and patches.baselines == 0.5
    assert cli.parse_players("tokens:6", mask_token_id=3).mask_token_id == 3
    for bad, message in [("patches:2by5", "ROWSxCOLS"), ("tabular:a-b", "integers"), ("tokens:x", "number of words")]:
        with pytest.raises(cli.InputError, match=message):
            cli.parse_players(bad)
    with pytest.raises(cli.InputError, match="--mask-token-id applies to tokens"):
        cli.parse_players("tabular", mask_token_id=1)


def test_probe_data_formats(tmp_path):
    ids = torch.arange(12).reshape(3, 4)
    save_file({"inputs.input_ids": ids, "inputs.attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0])},
              str(tmp_path / "text.safetensors"))
    data = cli.load_probe_data(tmp_path / "text.safetensors")
    assert set(data["inputs"]) == {"input_ids", "attention_mask"} and data["heldout_inputs"] is None
    torch.save(torch.zeros(2, 3), tmp_path / "bare.pt")
    assert torch.equal(cli.load_probe_data(tmp_path / "bare.pt")["inputs"], torch.zeros(2, 3))
    torch.save({"x": torch.zeros(2)}, tmp_path / "wrong.pt")
    with pytest.raises(cli.InputError, match="has no 'inputs'"):
        cli.load_probe_data(tmp_path / "wrong.pt")


def test_analyze_hugging_face_folder_with_token_players(tmp_path, capsys):
    import transformers
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2,
    )
    for step in (0, 4):
        torch.manual_seed(step)
        transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "out" / f"checkpoint-{step}")
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 11, 12, 3]])
    save_file({"inputs.input_ids": ids, "inputs.attention_mask": torch.ones_like(ids)}, str(tmp_path / "text.safetensors"))
    code = cli.main(
        ["analyze", str(tmp_path / "out"), "--data", str(tmp_path / "text.safetensors"), "--players", "tokens:4",
         "--mask-token-id", "1", "--log-dir", str(tmp_path / "run")]
    )
    assert code == 0, capsys.readouterr().err
    assert list_steps(tmp_path / "run") == [0, 4]
    # The baseline of token players is named, in the stored files and in the printed table.
    assert load_step(step_path(tmp_path / "run", 4))[1]["baseline"] == "mask token 1"
    assert row(capsys.readouterr().out, "baseline") == ["mask token 1"]


@pytest.mark.parametrize("where", ["labels", "inputs.labels"])
def test_analyze_sft_checkpoints_with_answer_log_prob(tmp_path, capsys, where):
    """Causal LM checkpoints with the answer labels [B, T] in --data: v(N) is the checkpoint's own
    log p(answer | prompt), computed here from one unpadded forward."""
    from models import tiny_lm, word_tokenizer

    from concept_tracker.language_models import prompt_answer_batch

    tokenizer = word_tokenizer()
    prompts, answers = ["the cat sat on the mat", "a dog is big"], ["yes", "red blue"]
    models = {}
    for step in (0, 3):
        models[step] = tiny_lm("gpt2")
        with torch.no_grad():
            for p in models[step].parameters():
                p.add_(0.01 * step)
        models[step].save_pretrained(tmp_path / "out" / f"checkpoint-{step}")
        tokenizer.save_pretrained(tmp_path / "out" / f"checkpoint-{step}")
    batch = prompt_answer_batch(tokenizer, prompts, answers, padding_side="right")
    save_file({f"inputs.{k}": v for k, v in batch.items() if k != "labels"} | {where: batch["labels"]},
              str(tmp_path / "sft.safetensors"))
    argv = ["analyze", str(tmp_path / "out"), "--data", str(tmp_path / "sft.safetensors"), "--players", "tokens:3",
            "--log-dir", str(tmp_path / "run")]
    assert cli.main([*argv, "--value", "answer_log_prob"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for step, model in models.items():
        res, meta = load_step(step_path(tmp_path / "run", step))
        assert meta["value"] == "answer_log_prob" and meta["baseline"] == "embedding: mean over the vocabulary"
        for i, (prompt, answer) in enumerate(zip(prompts, answers)):
            p = tokenizer(prompt)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(input_ids=torch.tensor([p + a])).logits[0].double().log_softmax(-1)
            direct = sum(float(logp[len(p) + j - 1, tok]) for j, tok in enumerate(a))
            assert res.outputs[i, -1].item() == pytest.approx(direct, abs=1e-4)
    assert row(out, "baseline") == ["embedding: mean over the vocabulary"]
    # Answer labels in --data make answer_log_prob the default value.
    assert cli.main([*argv, "--force"]) == 0, capsys.readouterr().err
    assert load_step(step_path(tmp_path / "run", 3))[1]["value"] == "answer_log_prob"


def test_demo_runs_end_to_end_small(tmp_path):
    from concept_tracker.demo import DemoConfig, run_demo

    lines = []
    config = DemoConfig(steps=12, probes=10, tracked_steps=4, evaluations=6, kind="and", figures=False,
                        progress=False, output_dir=str(tmp_path / "demo"))
    clean, noisy = run_demo(config, echo=lines.append)
    text = "\n".join(lines)
    assert "test accuracy" in text and "tensorboard --logdir" in text and "arXiv 2302.13091" in text
    assert clean.steps == noisy.steps and clean.steps[0] == 0 and clean.steps[-1] == 12
    for name in ("band_strength", "complex_ratio", "train_test_similarity", "detour_ratio", "phase_boundary", "loss"):
        assert (tmp_path / "demo" / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "report.html").is_file()
    # The clean-vs-noisy comparison says whether the two runs' intervals overlap.
    line = next(line for line in lines if "final complex ratio" in line)
    overlap = report.intervals_overlap(clean, noisy, tags.summary("complex_ratio"))
    assert overlap is not None and ("intervals overlap" in line) == overlap and ("intervals apart" in line) != overlap
    # A rerun replaces the earlier demo runs instead of mixing two runs in one directory.
    run_demo(config, echo=lines.append)
    assert len(list((tmp_path / "demo" / "clean").glob("events.out.tfevents*"))) == 1


def test_console_script_exit_code_and_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "concept_tracker.cli", "report", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"concept-tracker report: error: {tmp_path / 'missing'} is not a directory; pass a tracker's log_dir."


def test_report_shows_every_interval_as_logged(workdir, capsys):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir, log_dir="a") == 0
    capsys.readouterr()
    html = workdir / "out.html"
    assert cli.main(["report", str(workdir / "a"), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    run = report.summarize_run(workdir / "a")
    page = html.read_text()
    shown = {
        "simple (order 1) strength": tags.summary("simple_strength"),
        "complex ratio (complex share)": tags.summary("complex_ratio"),
        "high-order share (medium + complex)": tags.HIGH_ORDER_SHARE,
        "concepts per sample": tags.summary("num_concepts"),
        "train-test similarity, simple": tags.band_train_test_similarity("simple"),
        "detour ratio, simple": tags.band_detour_ratio("simple"),
    }
    for label, tag in shown.items():
        low, high = run.interval(tag)
        assert low < high, tag  # 6 probes differ: a real interval
        logged = {step: value for step, value in report.read_scalars(workdir / "a")[tags.ci_low(tag)]}
        assert np.float32(logged[10]) == np.float32(low)  # the report shows what was logged
        cell = f"{report._fmt(run.reading(tag))} [{report._fmt(low)}, {report._fmt(high)}]"
        assert row(out, label, intervals=True) == [cell], label
        assert f"<td>{cell}</td>" in page
    assert row(out, "baseline") == ["mean (fit on 6 samples)"]
    assert "baseline mean (fit on 6 samples)" in page


def test_analyze_under_several_baselines_says_whether_orderings_agree(workdir, capsys):
    write_checkpoints(workdir / "ckpts")
    write_data(workdir / "data.pt")
    assert analyze(workdir, "--baselines", "zero,mean,0.5", log_dir="clean") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split("  ")[-1].strip() == "baseline 0.5"
    runs = report.baseline_runs(workdir / "clean")
    assert sorted(runs) == ["0.5", "mean", "zero"]
    stored = {b: load_step(step_path(path, 10))[1]["baseline"] for b, path in runs.items()}
    assert stored == {"zero": "zero", "mean": "mean (fit on 6 samples)", "0.5": "constant 0.5"}
    # The verdict matches the band orderings recomputed from each run.
    summaries = {b: report.summarize_run(path) for b, path in runs.items()}
    orderings = {
        b: sorted(tags.BANDS, key=lambda band: -s.reading(tags.band_strength_tags()[tags.BANDS.index(band)]))
        for b, s in summaries.items()
    }
    agree = len({tuple(o) for o in orderings.values()}) == 1
    line = next(line for line in out.splitlines() if "band ordering by salient strength" in line)
    assert ("agrees across baselines" in line) == agree and ("differs across baselines" in line) != agree
    # Two runs (a second one with other weights) under the same baselines: report compares the
    # ordering of the runs too.
    write_checkpoints(workdir / "other", steps=(0, 5, 10))
    for path in (workdir / "other").iterdir():
        torch.save({k: -v for k, v in torch.load(path).items()}, path)
    assert analyze(workdir, "--baselines", "zero,mean", ckpts="other", log_dir="noisy") == 0
    capsys.readouterr()
    assert cli.main(["report", str(workdir / "clean"), str(workdir / "noisy")]) == 0
    out = capsys.readouterr().out
    assert "Baseline mean:" in out and "Baseline zero:" in out and "Baseline 0.5:" not in out
    assert "run ordering by complex ratio" in out
    ratio = {b: [report.summarize_run(workdir / d / f"baseline-{b}").reading(tags.summary("complex_ratio"))
                 for d in ("clean", "noisy")] for b in ("mean", "zero")}
    first = {b: "clean" if v[0] > v[1] else "noisy" for b, v in ratio.items()}
    line = next(line for line in out.splitlines() if "run ordering by complex ratio" in line)
    assert ("agrees" in line) == (first["mean"] == first["zero"])
    assert cli.main(["analyze", str(workdir / "ckpts"), "--data", "data.pt", "--players", "tabular",
                     "--model-factory", "tiny_factory:build", "--baselines", "zero", "--log-dir", "x"]) == 2
    assert "--baselines='zero'" in capsys.readouterr().err


def test_baseline_agreement_by_hand():
    def run(name, simple, medium, complex_):
        strengths = dict(zip(tags.band_strength_tags(), (simple, medium, complex_)))
        return SimpleNamespace(name=name, reading=lambda tag: strengths.get(tag, 0.0 if "ratio" in tag else math.nan))

    same = report.baseline_agreement({"zero": [run("a", 3, 2, 1)], "mean": [run("a", 5, 1, 0.5)]})
    assert same == ["a: band ordering by salient strength agrees across baselines (simple > medium > complex)"]
    differ = report.baseline_agreement({"zero": [run("a", 3, 2, 1)], "mean": [run("a", 1, 2, 3)]})
    assert differ == [
        "a: band ordering by salient strength differs across baselines "
        "(zero: simple > medium > complex; mean: complex > medium > simple)"
    ]
