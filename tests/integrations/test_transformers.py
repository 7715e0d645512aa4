"""ConceptTrackerCallback in real Hugging Face Trainer runs (CPU, tiny BERT, no downloads).

The task: a sentence is positive iff it contains ("good" or "great") and not "not", a logical
rule over words, so AND/OR concepts between word players are what the model has to learn.
"""

import ast
import math
import os
import pathlib
import random
import re
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from concept_tracker import OutputConfig, TabularPlayers, TokenPlayers, report
from concept_tracker.integrations._common import unwrap
from concept_tracker.integrations.transformers import STATE_DIR, STATE_FILE, ConceptTrackerCallback
from concept_tracker.metrics.phase import overfit_stop_step
from concept_tracker.schedules import at_steps, every
from concept_tracker.store import list_steps, load_step
from concept_tracker.summary import StepSummary
from concept_tracker.writers import tags

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CUES = ["good", "great", "not"]
FILLERS = ["the", "movie", "film", "was", "is", "really", "very", "plot", "acting", "story", "quite", "and"]
N_WORDS = 6
N_PLAYERS = 6
NO_FIGURES = OutputConfig(figures=False)


def make_tokenizer() -> BertTokenizer:
    vocab = {word: i for i, word in enumerate(SPECIALS + CUES + FILLERS)}
    return BertTokenizer(vocab=vocab)  # a fast (tokenizers-backed) WordPiece tokenizer


def sentence(rng: random.Random) -> tuple[str, int]:
    words = rng.choices(FILLERS, k=N_WORDS)
    for cue in CUES:
        if rng.random() < 0.45:
            words[rng.randrange(N_WORDS)] = cue
    label = int(("good" in words or "great" in words) and "not" not in words)
    return " ".join(words), label


def make_dataset(tokenizer, size: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for _ in range(size):
        text, label = sentence(rng)
        items.append({**tokenizer(text), "label": label})
    return items


def make_model(tokenizer) -> nn.Module:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def training_args(output_dir, **overrides) -> TrainingArguments:
    options = dict(
        output_dir=str(output_dir),
        max_steps=8,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        learning_rate=5e-3,
        logging_steps=1,
        save_steps=4,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    options.update(overrides)
    return TrainingArguments(**options)


class LogRecorder(TrainerCallback):
    """A stand-in reporter that runs after the concept callback."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def concepts_dir(root, under: str = "runs/concepts"):
    """The one run folder the callback made under ``root / under``: ``<Mon><DD>_<HH>-<MM>-<SS>_<host>``,
    one per launch, as the Trainer names its own TensorBoard folders."""
    runs = sorted((root / under).iterdir())
    assert len(runs) == 1 and re.fullmatch(r"[A-Z][a-z]{2}\d{2}_\d{2}-\d{2}-\d{2}_.+", runs[0].name), runs
    return runs[0]


def scalar_steps(log_dir) -> dict[str, list[int]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def scalar_values(log_dir, tag) -> dict[int, float]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def run(output_dir, resume=None, stop_at=None, **callback_options):
    """The tracked reference run; ``stop_at``: stop training there, just after a checkpoint."""
    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    callback = ConceptTrackerCallback(
        TokenPlayers(n=N_PLAYERS), num_probe=6, schedule=at_steps([3]), **callback_options
    )
    recorder = LogRecorder()
    trainer = Trainer(
        model=model,
        args=training_args(output_dir, **({} if stop_at is None else {"save_steps": stop_at})),
        train_dataset=make_dataset(tokenizer, 96, seed=1),
        processing_class=tokenizer,
        callbacks=[callback, recorder] + ([] if stop_at is None else [StopAt(stop_at)]),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback, recorder


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    trainer, callback, recorder = run(out)
    return out, trainer, callback, recorder


def test_callback_writes_spec_tags_at_first_scheduled_and_last_step(unbroken):
    out, trainer, _, _ = unbroken
    steps = scalar_steps(concepts_dir(out))
    expected = tags.spec_scalar_tags(N_PLAYERS, ["and"], generalization=False)
    assert expected and set(expected) <= set(steps)
    for tag in expected:
        assert steps[tag] == [0, 3, 8], tag
    assert trainer.state.global_step == 8


def test_model_ends_in_train_mode_without_grads_from_tracking(unbroken):
    _, trainer, _, _ = unbroken
    assert trainer.model.training
    assert all(m.training for m in trainer.model.modules())


def test_headline_scalars_join_the_trainer_logs(unbroken):
    out, trainer, _, recorder = unbroken
    key = tags.summary("complex_ratio")
    # A log takes the readings finished by then (it never waits for them); the rest join
    # log_history at train end: each tracked step's readings (0, 3 and 8) once.
    entries = [entry for entry in trainer.state.log_history if key in entry]
    assert len(entries) == 3 and all(tags.band_detour_ratio("complex") in entry for entry in entries)
    logged = scalar_values(concepts_dir(out), key)
    assert sorted(entry[key] for entry in entries) == pytest.approx(sorted(logged[step] for step in (0, 3, 8)))
    assert all(log[key] in [entry[key] for entry in entries] for log in recorder.logs if key in log)


def test_the_run_length_reaches_the_tracker_budget(unbroken):
    _, trainer, callback, _ = unbroken
    assert callback.tracker._timing.total_steps == trainer.state.max_steps == 8


def test_checkpoints_hold_the_tracker_state(unbroken):
    out, _, _, _ = unbroken
    for step in (4, 8):
        assert (out / f"checkpoint-{step}" / STATE_DIR / STATE_FILE).is_file()


def test_a_resumed_run_is_one_run_and_report_reads_what_was_logged(unbroken, tmp_path):
    """Stopped after its checkpoint at step 3 and resumed from it, the run keeps one concept
    folder, and the report on it gives the sign flips and detour ratios that were logged, as
    an uninterrupted run logged them."""
    out, _, _, _ = unbroken
    run(tmp_path, stop_at=3)
    trainer, callback, _ = run(tmp_path, resume=True)  # finds <output_dir>/checkpoint-3
    assert trainer.state.global_step == 8
    folder = concepts_dir(tmp_path)  # one folder for both launches
    assert callback.tracker.log_dir == str(folder) and list_steps(folder) == [0, 3, 8]
    summary = report.summarize_run(folder)
    reported = {
        tags.SIGN_FLIPS: summary.sign_flips,
        tags.band_detour_ratio("simple"): summary.detour_simple,
        tags.band_detour_ratio("complex"): summary.detour_complex,
    }
    for tag, value in reported.items():
        logged, reference = scalar_values(folder, tag)[8], scalar_values(concepts_dir(out), tag)[8]
        assert np.float32(value) == np.float32(logged) or (math.isnan(value) and math.isnan(logged)), tag
        assert logged == pytest.approx(reference, rel=1e-4, abs=1e-6, nan_ok=True), tag
    assert summary.sign_flips > 0  # the flips before the checkpoint count too


def test_a_checkpoint_copied_elsewhere_continues_the_dynamics_in_a_new_folder(unbroken, tmp_path):
    out, _, _, _ = unbroken
    shutil.copytree(out / "checkpoint-4", tmp_path / "checkpoint-4")
    with pytest.warns(UserWarning, match="concept folder .*runs/concepts/.* is gone"):
        trainer, _, _ = run(tmp_path, resume=True)  # finds <output_dir>/checkpoint-4
    assert trainer.state.global_step == 8

    resumed = scalar_steps(concepts_dir(tmp_path))
    assert resumed[tags.summary("complex_ratio")] == [8]  # nothing before the checkpoint again
    # Detour ratios and sign flips at step 8 need the path through steps 0 and 3.
    for tag in (tags.band_detour_ratio("simple"), tags.detour_ratio(1), tags.SIGN_FLIPS):
        a = scalar_values(concepts_dir(out), tag)[8]
        b = scalar_values(concepts_dir(tmp_path), tag)[8]
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), tag
    a, _ = load_step(concepts_dir(out) / "interactions" / "step_00000008.safetensors")
    b, _ = load_step(concepts_dir(tmp_path) / "interactions" / "step_00000008.safetensors")
    torch.testing.assert_close(a.outputs, b.outputs, rtol=1e-4, atol=1e-5)


def test_resume_without_saved_state_warns_and_goes_on(unbroken, tmp_path):
    out, _, _, _ = unbroken
    shutil.copytree(out / "checkpoint-4", tmp_path / "checkpoint-4")
    shutil.rmtree(tmp_path / "checkpoint-4" / STATE_DIR)
    with pytest.warns(UserWarning, match="dynamics restart"):
        trainer, _, _ = run(tmp_path, resume=True)
    assert trainer.state.global_step == 8


def test_defaults_probes_tokenizer_schedule_and_log_dir(tmp_path, monkeypatch):
    """The defaults, from the objects a Trainer hands its callbacks (no training)."""
    tokenizer = make_tokenizer()
    data = make_dataset(tokenizer, 64, seed=2)
    loader = torch.utils.data.DataLoader(data, collate_fn=transformers.DataCollatorWithPadding(tokenizer))
    args = training_args(tmp_path, eval_strategy="steps", eval_steps=300)
    state = TrainerState(max_steps=1000, eval_steps=300)
    players = TokenPlayers(n=N_PLAYERS)

    callback = ConceptTrackerCallback(players, num_probe=8)
    callback.on_train_begin(
        args, state, TrainerControl(), model=make_model(tokenizer), train_dataloader=loader, processing_class=tokenizer
    )
    tracker = callback.tracker
    assert players.tokenizer is tokenizer
    assert tracker.log_dir == str(concepts_dir(tmp_path))  # <output_dir>/runs/concepts/<date>_<host>
    fired = [t for t in range(1001) if tracker.schedule(t)]
    assert {0, 1, 300, 600, 900, 1000} <= set(fired) and len(fired) < 40
    state_dict = tracker.state_dict()
    targets = state_dict["probe"]["targets"]
    assert targets.tolist().count(1) == round(8 * sum(d["label"] for d in data) / len(data))  # stratified
    assert set(state_dict["probe"]["inputs"]) == {"input_ids", "token_type_ids", "attention_mask"}
    callback.on_train_end(args, state, TrainerControl(), model=make_model(tokenizer))

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    callback = ConceptTrackerCallback(TokenPlayers(n=N_PLAYERS), num_probe=4, schedule=every(50))
    callback.on_train_begin(
        args, state, TrainerControl(), model=make_model(tokenizer), train_dataloader=loader, processing_class=tokenizer
    )
    assert callback.tracker.log_dir == str(concepts_dir(tmp_path, "tb/concepts"))
    assert [t for t in range(1001) if callback.tracker.schedule(t)] == list(range(0, 1001, 50))
    callback.on_train_end(args, state, TrainerControl(), model=make_model(tokenizer))


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="players"):
        ConceptTrackerCallback("words")
    with pytest.raises(ValueError, match="num_probe"):
        ConceptTrackerCallback(TokenPlayers(), num_probe=0)
    with pytest.raises(ValueError, match="patience"):
        ConceptTrackerCallback(TokenPlayers(), patience=-1)
    with pytest.raises(ValueError, match="unknown tracker option"):
        ConceptTrackerCallback(TokenPlayers(), probe_size=3)


def test_tracker_keywords_pass_through_the_callback():
    """``strict`` and ``value`` are ConceptTracker's own keywords: taken as given, with no
    deprecation warning; configs are built and kept."""
    from concept_tracker import BudgetConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback = ConceptTrackerCallback(
            TokenPlayers(), strict=True, value="log_prob", kind="and", budget=BudgetConfig(max_overhead=0.1)
        )
    options = callback.tracker_options
    assert options["strict"] is True and options["value"] == "log_prob" and options["kind"] == "and"
    assert options["budget"].max_overhead == 0.1

def test_compiled_models_are_tracked_through_their_original_module():
    model = nn.Linear(2, 2)
    assert unwrap(torch.compile(model)) is model
    assert unwrap(model) is model


class Planted(nn.Module):
    """z = x0 + a * x0 x1 x2 x3 as the log-odds of class 1: on all-ones probes with zero
    baselines the AND effects are I({0}) = 1 and I({0,1,2,3}) = a, so ``a`` is the
    high-order strength H(t) and the test sets it step by step."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(8.0))

    def forward(self, x, labels=None):
        z = x[:, 0] + self.a * x.prod(1)
        out = {"logits": torch.stack([-z / 2, z / 2], 1)}
        if labels is not None:
            out["loss"] = self.a * 0.0  # the Trainer needs a loss; the test moves `a` itself
        return out


class Plan(TrainerCallback):
    """Sets ``a`` after each optimizer step: H falls, bottoms out at step 3, then rises."""

    plan = [8.0, 4.0, 2.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.a.fill_(self.plan[state.global_step])


@pytest.mark.parametrize("mode", [True, "warn"])
def test_stop_on_overfit_fires_where_the_online_replay_says(tmp_path, caplog, mode):
    """The callback stops (or, with "warn", only warns once) at the step that
    ``overfit_stop_step`` gives on the logged high-order shares: the replay is the callback."""
    transformers.utils.logging.enable_propagation()  # so that caplog sees the reason to stop
    data = [{"x": torch.ones(4), "labels": 1} for _ in range(8)]
    callback = ConceptTrackerCallback(
        TabularPlayers(baselines="zero"), num_probe=2, schedule=every(1), stop_on_overfit=mode, patience=1
    )
    trainer = Trainer(
        model=Planted(),
        args=training_args(tmp_path, max_steps=12, gradient_accumulation_steps=1, save_strategy="no"),
        train_dataset=data,
        callbacks=[Plan(), callback],
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # tracking itself must not fail
            trainer.train()
    finally:
        transformers.utils.logging.disable_propagation()
    folder = concepts_dir(tmp_path)
    boundary = scalar_values(folder, tags.PHASE_BOUNDARY)
    assert set(boundary.values()) == {3.0}
    shares = scalar_values(folder, tags.HIGH_ORDER_SHARE)
    steps = sorted(shares)
    assert [shares[t] for t in steps[:5]] == pytest.approx([8 / 9, 0.8, 2 / 3, 0.5, 2 / 3])  # a / (1 + a)
    fired = overfit_stop_step(steps, [shares[t] for t in steps], patience=1)
    assert fired == min(boundary) + 1  # patience=1: one more tracked step
    if mode is True:
        assert trainer.state.global_step == fired < 12
        assert f"stops training at step {fired}" in caplog.text
    else:
        assert trainer.state.global_step == 12
        assert caplog.text.count("ConceptTrackerCallback warns") == 1 and f"warns at step {fired}" in caplog.text
    assert "bottomed out at step 3" in caplog.text


def test_stop_on_overfit_rejects_other_values():
    with pytest.raises(ValueError, match="stop_on_overfit='yes'"):
        ConceptTrackerCallback(TabularPlayers(), stop_on_overfit="yes")


def test_core_never_imports_integrations_or_frameworks():
    """No import of an integration anywhere in the core, and no framework at module level.

    The one exception is a lazy ``import transformers`` inside the CLI's ``analyze`` command,
    which loads ``save_pretrained`` folders and needs the ``hf`` extra only when asked to.
    """
    frameworks = ("transformers", "lightning", "pytorch_lightning", "accelerate")
    core = pathlib.Path(__file__).parents[2] / "concept_tracker"
    for path in core.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")] + [alias.name for alias in node.names]
            else:
                continue
            lazy_cli = path.name == "cli.py" and id(node) not in top_level
            for name in names:
                assert "integrations" not in name, (path.name, name)
                assert lazy_cli or name.split(".")[0] not in frameworks, (path.name, name)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step


def test_a_run_stopped_early_still_tracks_its_last_step(tmp_path):
    data = [{"x": torch.ones(4), "labels": 1} for _ in range(8)]
    callback = ConceptTrackerCallback(TabularPlayers(baselines="zero"), num_probe=2, schedule=at_steps([3]))
    trainer = Trainer(
        model=Planted(),
        args=training_args(tmp_path, max_steps=12, gradient_accumulation_steps=1, save_strategy="no"),
        train_dataset=data,
        callbacks=[StopAt(5), callback],
    )
    trainer.train()
    assert trainer.state.global_step == 5
    assert scalar_steps(concepts_dir(tmp_path))[tags.summary("num_concepts")] == [0, 3, 5]


class Release(TrainerCallback):
    """Creates ``path`` when training ends (listed before the concept callback, it runs first)."""

    def __init__(self, path):
        self.path = path

    def on_train_end(self, args, state, control, **kwargs):
        self.path.touch()


@pytest.mark.worker_process
def test_a_log_never_waits_for_the_worker_and_every_tracked_step_reaches_the_history(tmp_path, monkeypatch):
    """The worker's steps are held until training ends: every log goes by without their
    readings (none waited for them), and at train end each tracked step's readings join
    log_history, once each, with the values the event file holds."""
    from concept_tracker import worker

    release = tmp_path / "release"
    tests = str(pathlib.Path(__file__).resolve().parents[1])  # the child imports the stand-in job there
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("CONCEPT_TRACKER_TEST_RELEASE", str(release))
    monkeypatch.setitem(worker.JOBS, "finish_step", ("failing_jobs", "finish_step_held"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen)
    data = [{"x": x[i], "labels": int(x[i, 0] > 0)} for i in range(16)]
    callback = ConceptTrackerCallback(TabularPlayers(), num_probe=4, schedule=at_steps([3]), output=NO_FIGURES)
    recorder = LogRecorder()
    trainer = Trainer(
        model=TabularModel(),
        args=training_args(tmp_path, max_steps=6, gradient_accumulation_steps=1, save_strategy="no"),
        train_dataset=data,
        callbacks=[Release(release), callback, recorder],
    )
    trainer.train()
    key = tags.summary("complex_ratio")
    assert len(recorder.logs) == 7 and not any(key in log for log in recorder.logs)
    entries = [entry for entry in trainer.state.log_history if key in entry]
    assert [entry["step"] for entry in entries] == [0, 3, 6]
    logged = scalar_values(concepts_dir(tmp_path), key)
    assert [entry[key] for entry in entries] == pytest.approx([logged[step] for step in (0, 3, 6)])


def test_concepts_sit_beside_the_trainers_scalars_and_report_reads_the_eval_loss(tmp_path, monkeypatch, capsys):
    """With TensorBoard reporting (and nothing else set) the concept run is the folder of the
    Trainer's own TensorBoard callback, so one TensorBoard run and `concept-tracker report`
    hold both the losses and the concepts."""
    from concept_tracker import cli

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    tokenizer = make_tokenizer()
    callback = ConceptTrackerCallback(TokenPlayers(n=N_PLAYERS), num_probe=4, schedule=at_steps([4]), output=NO_FIGURES)
    trainer = Trainer(
        model=make_model(tokenizer),
        args=training_args(
            tmp_path, report_to=["tensorboard"], eval_strategy="steps", eval_steps=4, save_strategy="no"
        ),
        train_dataset=make_dataset(tokenizer, 64, seed=1),
        eval_dataset=make_dataset(tokenizer, 16, seed=2),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    log_dir = pathlib.Path(callback.tracker.log_dir)
    assert log_dir.parent == tmp_path / "runs" and log_dir.name != "concepts"  # runs/<date>_<host>
    steps = scalar_steps(log_dir)
    assert steps["eval/loss"] == [4, 8] and steps[tags.summary("complex_ratio")] == [0, 4, 8]
    assert cli.main(["report", str(log_dir)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("eval loss"))
    last = [e for e in trainer.state.log_history if "eval_loss" in e][-1]["eval_loss"]
    assert float(row.split()[-1]) == pytest.approx(last, abs=1e-3)

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    callback = ConceptTrackerCallback(TokenPlayers(n=N_PLAYERS), num_probe=4, schedule=at_steps([0]), output=NO_FIGURES)
    trainer = Trainer(
        model=make_model(tokenizer),
        args=training_args(tmp_path / "b", report_to=["tensorboard"], max_steps=1, save_strategy="no"),
        train_dataset=make_dataset(tokenizer, 16, seed=1),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    assert callback.tracker.log_dir == str(tmp_path / "tb")  # the Trainer's folder itself
    losses = scalar_steps(tmp_path / "tb")["train/loss"]
    assert losses and len(losses) == len(set(losses))  # written once, by the Trainer


def test_stop_message_gives_the_loss_gap_step_from_unaligned_logs():
    """The Trainer logs train and eval losses at different steps: each evaluation is paired with
    the last training loss before it, and the gap's valley (step 50) is found."""
    callback = ConceptTrackerCallback(TabularPlayers())
    gap = [0.5, 0.4, 0.3, 0.2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    for i, g in enumerate(gap):
        step = 10 * (i + 1)
        train = 1.0 - 0.01 * i
        callback.on_log(None, SimpleNamespace(global_step=step - 3, log_history=[]), None, logs={"loss": train})
        callback.on_log(None, SimpleNamespace(global_step=step, log_history=[]), None, logs={"eval_loss": train + g})
    assert callback._loss_gap_step() == 50
    assert ConceptTrackerCallback(TabularPlayers())._loss_gap_step() is None


class TabularModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 2)

    def forward(self, x, labels=None):
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def test_mean_baseline_is_fitted_on_the_training_set_and_losses_reach_the_report(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=gen)
    data = [{"x": x[i], "labels": int(x[i, 0] > 0)} for i in range(40)]
    players = TabularPlayers()  # "mean" by default
    callback = ConceptTrackerCallback(players, num_probe=4, schedule=at_steps([1]))
    trainer = Trainer(
        model=TabularModel(),
        args=training_args(tmp_path, max_steps=3, save_strategy="no", eval_strategy="steps", eval_steps=1),
        train_dataset=data,
        eval_dataset=data[:8],
        callbacks=[callback],
    )
    trainer.train()
    torch.testing.assert_close(players._mean, x.mean(0))  # the training set's 40 rows, not the 4 probes
    _, meta = load_step(concepts_dir(tmp_path) / "interactions" / "step_00000001.safetensors")
    assert meta["baseline"] == "mean (fit on 40 samples)"
    # The Trainer's losses are written beside the concepts, where the report reads them.
    run = report.summarize_run(concepts_dir(tmp_path))
    for split, key in (("train", "loss"), ("eval", "eval_loss")):
        series = dict(run.scalars[f"{split}/loss"])
        assert sorted(series) == [1, 2, 3]
        for step, value in series.items():
            logged = next(e[key] for e in trainer.state.log_history if e["step"] == step and key in e)
            assert value == pytest.approx(logged)


class Augmenting(torch.utils.data.Dataset):
    """Tabular items with noise drawn from the global RNG at every read, as a random
    augmentation draws it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + 0.1 * torch.rand(4), "labels": int(self.y[i])}


def test_probes_drawn_from_an_augmenting_dataset_leave_training_bitwise_identical(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=gen)
    data = Augmenting(x, (x[:, 0] > 0).long())

    def train(name, callbacks):
        model = TabularModel()
        args = training_args(tmp_path / name, max_steps=4, gradient_accumulation_steps=1, save_strategy="no")
        Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()
        return model

    plain = train("plain", [])
    players = TabularPlayers(baselines="zero")  # nothing to fit: only the probe draw reads the dataset
    tracked = train("tracked", [ConceptTrackerCallback(players, num_probe=4, schedule=at_steps([2]), output=NO_FIGURES)])
    for (name, a), (_, b) in zip(plain.state_dict().items(), tracked.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_second_launch_into_a_used_folder_warns_once(tmp_path):
    run(tmp_path / "first", log_dir=tmp_path / "concepts")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run(tmp_path / "second", log_dir=tmp_path / "concepts")
    used = [str(w.message) for w in record if "already holds a run" in str(w.message)]
    assert len(used) == 1, used
    assert list_steps(tmp_path / "concepts") == [0, 3, 8]  # the first launch's run, untouched


class LateReadings:
    """Stands in for the tracker: the readings of step t arrive only once step t + 1 has been
    reached, whatever ``summaries`` is asked to wait for; it records each ``wait``."""

    def __init__(self, shares: list[float]):
        self.shares, self.reached, self.given, self.waits = shares, -1, 0, []

    def summaries(self, wait: bool = False) -> list[StepSummary]:
        self.waits.append(wait)
        arrived = range(self.given, self.reached)
        self.given = max(self.given, self.reached)
        return [StepSummary(step=t, scalars={tags.HIGH_ORDER_SHARE: self.shares[t]}) for t in arrived]


def test_stop_on_overfit_decides_on_the_readings_arrived_without_waiting():
    """With each step's readings one step late, the callback never waits for them and stops
    one step after the replay on the full series fires: at the first step whose arrived
    readings make the rule fire."""
    shares = [a / (1 + a) for a in Plan.plan]
    fired = overfit_stop_step(list(range(len(shares))), shares, patience=1)
    assert fired is not None and fired + 1 < len(shares)
    callback = ConceptTrackerCallback(TabularPlayers(), stop_on_overfit=True, patience=1)
    callback.tracker = late = LateReadings(shares)
    decisions = {}
    for step in range(len(shares)):
        late.reached = step
        decisions[step] = callback._overfitting(step)
    assert [step for step, stop in decisions.items() if stop] == [fired + 1]
    assert late.waits and not any(late.waits)
