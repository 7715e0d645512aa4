"""Bad inputs a careful user meets, each failing at setup (or warning once) with a message that
names the parameter, the value and the fix, instead of a silent wrong result."""

from __future__ import annotations

import warnings

import pytest
import torch
from models import NaNAt, mlp, tiny_bert, wordpiece_tokenizer
from torch import nn

import concept_tracker as ct
from concept_tracker.store import list_steps, load_step, step_path


def rows(count: int = 6, width: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def tracker(log_dir, players=None, x=None, y=None, **budget) -> ct.ConceptTracker:
    players = ct.TabularPlayers(baselines="zero") if players is None else players
    x = rows() if x is None else x
    return ct.ConceptTracker(
        players, ct.ProbeSet(x, y), log_dir=log_dir, schedule=ct.every(1),
        output=ct.OutputConfig(figures=False), budget=ct.BudgetConfig(**budget),
    )  # fmt: skip


def messages(record) -> list[str]:
    return [str(w.message) for w in record if "steps tracked of" not in str(w.message)]


# ------------------------------------------------------------------- one-logit models


def test_a_one_logit_model_refuses_classes_other_than_0_and_1(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = rows(2)
    with pytest.raises(ValueError, match=r"classes 7\.\.9.*one logit.*probe_targets"):
        ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero"), target=torch.tensor([7, 9]))
    # The tracker's first step raises (a setup mistake), it does not read 7 and 9 as class 0.
    t = tracker(tmp_path, x=rows(4), y=[7, 9, 7, 9])
    with pytest.raises(ValueError, match="probe_targets"):
        t.step(model, 0)
    with pytest.warns(UserWarning, match="Nothing was tracked"):
        t.close()
    # Classes 0 and 1 read the logit with its sign, as before.
    res = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero"), target=torch.tensor([0, 1]))
    z = model(x)[:, 0].double()
    assert torch.allclose(res.outputs[:, -1], torch.stack([-z[0], z[1]]), atol=1e-6)


# ----------------------------------------------------------------------------- schedules and steps


def test_an_empty_at_steps_is_refused():
    with pytest.raises(ValueError, match=r"steps=\[\].*at least one step"):
        ct.at_steps([])
    assert ct.at_steps([3, 3])(3)


def test_a_0d_tensor_step_is_tracked_and_stored(tmp_path):
    model = mlp(d_in=4)
    with tracker(tmp_path) as t:
        tracked = [t.step(model, torch.tensor(s)) is not None for s in range(3)]
    assert tracked == [True, True, True]
    assert list_steps(tmp_path) == [0, 1, 2]


@pytest.mark.parametrize("bad", [1.0, 2.5, "3", None, True, torch.tensor(1.0)], ids=repr)
def test_a_step_that_is_no_integer_raises_a_typeerror_naming_global_step(tmp_path, bad):
    with tracker(tmp_path) as t, pytest.raises(TypeError, match=r"global_step=.*integer optimizer step"):
        t.step(mlp(d_in=4), bad)


def test_a_negative_step_is_refused(tmp_path):
    with tracker(tmp_path) as t, pytest.raises(ValueError, match="global_step=-1 is negative"):
        t.step(mlp(d_in=4), -1)


# ------------------------------------------------------------------------------ NaN and inf


class NaNOnOneSample(nn.Module):
    """An MLP whose output is NaN on the masked rows of sample ``self.sample`` (rows
    ``sample * 2**n .. (sample + 1) * 2**n - 1`` of a call over all probes)."""

    def __init__(self, per_sample: int) -> None:
        super().__init__()
        self.body = mlp(d_in=4)
        self.per_sample = per_sample
        self.sample: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.sample is not None and x.shape[0] > self.per_sample:  # masked forwards, not the targets
            first = self.sample * self.per_sample
            out = out.clone()
            out[first : first + self.per_sample] = float("nan")
        return out


def test_nan_on_another_sample_at_every_step_warns_once_per_run(tmp_path):
    model = NaNOnOneSample(per_sample=16)
    t = tracker(tmp_path, y=[0, 1, 2, 0, 1, 2], batch_size=10_000)
    t.step(model, 0)  # finite: the first step is tracked
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(1, 6):
            model.sample = step
            assert t.step(model, step) is None
        t.close()
    warned = [m for m in messages(record) if "NonFiniteValueError" in m]
    assert len(warned) == 1 and "sample 1," in warned[0], messages(record)
    assert t._run.tally.failed == 5


def test_an_inf_in_sample_2_is_reported_as_sample_2(tmp_path):
    x = rows()
    x[2, 1] = float("inf")
    # The mean of the probes would be inf for every sample: refused at construction, naming sample 2.
    with pytest.raises(ValueError, match=r"inf in sample 2;.*baselines=\"zero\""):
        tracker(tmp_path, players=ct.TabularPlayers(), x=x)
    with pytest.raises(ValueError, match="in sample 2"):
        ct.TabularPlayers().fit(x)
    # With a finite baseline the engine names the sample whose value is not finite.
    with pytest.raises(ValueError, match="for sample 2, coalition"):
        ct.compute_interactions(nn.Linear(4, 3), x, ct.TabularPlayers(baselines="zero"), target=0)
    # A model that is NaN on some masked inputs: the first sample that hits it is named.
    clean = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="sample 1, coalition 5"):
        ct.compute_interactions(NaNAt(), clean, ct.TabularPlayers(baselines="zero"), value="output")


# -------------------------------------------------------------------------- players


def stored_baseline(log_dir) -> str:
    return load_step(step_path(log_dir, 0))[1]["baseline"]


def test_players_reused_by_a_second_tracker_take_its_own_mean(tmp_path):
    players, model = ct.TabularPlayers(), mlp(d_in=4)
    first_x, second_x = rows(seed=0), rows(seed=1) + 5.0
    with tracker(tmp_path / "a", players=players, x=first_x) as t:
        t.step(model, 0)
    assert torch.allclose(players._mean, first_x.mean(0))
    with pytest.warns(UserWarning, match=r"\"mean\" baseline came from other data.*players\.fit\(train_x\)"):
        second = tracker(tmp_path / "b", players=players, x=second_x)
    with second:
        second.step(model, 0)
    # The second run's masked players take the mean of its own probes, not the first run's.
    assert torch.allclose(players._mean, second_x.mean(0))
    res = ct.compute_interactions(model, second_x, ct.TabularPlayers(baselines=second_x.mean(0)), target=None)
    stored, _ = load_step(step_path(tmp_path / "b", 0))
    assert torch.allclose(stored.outputs, res.outputs.cpu(), atol=1e-5)
    # A tracker rebuilt on the same probes (a resume) keeps the same mean without a word.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker(tmp_path / "c", players=players, x=second_x).close()


def test_a_callback_reusing_players_fits_them_on_the_second_runs_training_data(tmp_path):
    """The framework callbacks fit unfitted players on training items before building their
    tracker (fit_mean_baseline); a mean they fitted for an earlier run counts as unfitted."""
    from concept_tracker.players import fit_mean_baseline, mean_unfitted

    players = ct.TabularPlayers()
    first_train, second_train = rows(40, seed=3), rows(40, seed=4) + 2.0
    assert fit_mean_baseline(players, first_train)
    tracker(tmp_path / "a", players=players).close()
    assert mean_unfitted(players)  # claimed by the first run's tracker
    assert fit_mean_baseline(players, second_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second run's own training data: nothing to warn about
        tracker(tmp_path / "b", players=players, x=rows(seed=5)).close()
    assert torch.allclose(players._mean, second_train.mean(0))
    assert not mean_unfitted(ct.TabularPlayers().fit(first_train))  # a user's fit is never replaced


def test_players_fitted_by_the_user_share_one_mean_across_trackers(tmp_path):
    train = rows(40, seed=3)
    players = ct.TabularPlayers().fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, seed in (("a", 0), ("b", 1)):
            tracker(tmp_path / name, players=players, x=rows(seed=seed)).close()
    assert torch.allclose(players._mean, train.mean(0))
    assert players.baseline_description == "mean (fit on 40 samples)"


def test_image_patch_players_on_text_fail_at_setup(tmp_path):
    text = {"input_ids": torch.randint(5, 20, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long)}
    with pytest.raises(ValueError, match="ImagePatchPlayers cannot mask probes.*TokenPlayers"):
        tracker(tmp_path, players=ct.ImagePatchPlayers(grid=(2, 2)), x=text)


def test_image_patch_players_on_text_stop_the_trainer_before_training(tmp_path):
    """Through the Hugging Face callback the mistake raised inside a warning, and the whole run
    trained untracked."""
    from transformers import Trainer, TrainingArguments

    from concept_tracker.integrations.transformers import ConceptTrackerCallback

    tokenizer = wordpiece_tokenizer()
    texts = ["the cat is very happy today .", "a dog was running .", "the dog is sad .", "a cat was playing ."]
    data = [{**tokenizer(t), "labels": i % 2} for i, t in enumerate(texts * 2)]
    callback = ConceptTrackerCallback(ct.ImagePatchPlayers(grid=(2, 2)), num_probe=4, output=ct.OutputConfig(figures=False))
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model=tiny_bert(), args=args, train_dataset=data, processing_class=tokenizer, callbacks=[callback]
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match="ImagePatchPlayers.*use TokenPlayers"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # not one step trained


# ------------------------------------------------------------------------------ progress bars


@pytest.mark.parametrize("outer_bar", [False, True])
def test_a_slow_step_shows_its_bar_only_when_no_other_bar_is_open(tmp_path, monkeypatch, capsys, outer_bar):
    """Under the Hugging Face Trainer's (or Lightning's, or a loop's) own tqdm bar, a nested
    "coalitions" bar would interleave its lines and escape codes with it."""
    from tqdm.auto import tqdm

    import concept_tracker.tracker as tracker_module

    monkeypatch.setattr(tracker_module, "PROGRESS_AFTER", 0.0)  # every step counts as slow
    bar = tqdm(total=2, desc="training") if outer_bar else None
    with tracker(tmp_path) as t:
        for step in range(2):
            t.step(mlp(d_in=4), step)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    err = capsys.readouterr().err
    assert ("coalitions" in err) is not outer_bar
    assert ("training" in err) is outer_bar


# ------------------------------------------------------------------------------ docs and charts


@pytest.mark.parametrize("max_overhead", [None, 0.5])
def test_the_skipped_steps_chart_is_there_only_with_a_budget(tmp_path, monkeypatch, max_overhead):
    from concept_tracker.writers import tags

    layouts = []
    real = tags.custom_layout
    monkeypatch.setattr(tags, "custom_layout", lambda *args: layouts.append(real(*args)) or layouts[-1])
    with tracker(tmp_path, max_overhead=max_overhead) as t:
        t.step(mlp(d_in=4), 0)
    charts = {title for layout in layouts for title in layout["perf"]}
    assert layouts and ("skipped steps" in charts) is (max_overhead is not None)
    assert "seconds per tracked step" in charts


def test_token_players_say_what_a_masked_word_becomes():
    """Stored with every step and shown by report: no longer "unknown" for token players."""
    tokenizer = wordpiece_tokenizer()
    assert ct.TokenPlayers(tokenizer=tokenizer).baseline_description == f"mask token {tokenizer.mask_token_id}"
    assert ct.TokenPlayers(mask_token_id=7).baseline_description == "mask token 7"
    assert ct.TokenPlayers().baseline_description == "embedding: mean over the vocabulary"
    assert ct.TokenPlayers(baselines="zero").baseline_description == "embedding: zero"
    assert ct.TokenPlayers(baselines=torch.zeros(16)).baseline_description == "embedding: tensor [16]"
