"""ConceptTrackerLightningCallback in real Lightning fits on CPU with a tiny module."""

import warnings

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.nn import functional as F

from concept_tracker import TabularPlayers
from concept_tracker.integrations.lightning import ConceptTrackerLightningCallback
from concept_tracker.schedules import at_steps
from concept_tracker.store import list_steps, load_step
from concept_tracker.writers import tags

N = 6


class Tiny(L.LightningModule):
    """A two-layer classifier of 6 features into 2 classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(N, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, N, generator=g)
    y = ((x[:, 0] > 0) & (x[:, 1] > 0)).long()
    return x, y


def fit(root, ckpt_path=None, logger="tb", max_steps=8, players=None):
    x, y = data()
    players = TabularPlayers(baselines="zero") if players is None else players
    callback = ConceptTrackerLightningCallback(players, (x[:4], y[:4]), schedule=at_steps([2]))
    if logger == "tb":
        loggers = TensorBoardLogger(root, name="tb", version=0)
    else:
        loggers = CSVLogger(root, name="csv", version=0)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=loggers,
        callbacks=[callback, ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=4, save_top_k=-1)],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    module = Tiny()
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer, module, callback


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning")
    trainer, module, callback = fit(root)
    return root, trainer, module, callback


def test_writes_into_the_tensorboard_loggers_event_file(unbroken, logged):
    root, trainer, _, callback = unbroken
    assert callback.tracker._timing.total_steps == 8  # the run's length, for max_overhead
    log_dir = root / "tb" / "version_0"
    assert trainer.logger.log_dir == str(log_dir)
    found = logged(log_dir)
    assert "loss" in found  # the module's own metrics share the event file
    for tag in tags.spec_scalar_tags(N, ["and"], generalization=False):
        assert sorted(found[tag]) == [0, 2, 8], tag
    concepts = log_dir / "concepts"
    assert list_steps(concepts) == [0, 2, 8]
    assert not any(p.name.startswith("events.out") for p in concepts.iterdir())


# Resuming from the unbroken run's checkpoint in another folder, on purpose: Lightning says so.
@pytest.mark.filterwarnings("ignore:The dirpath has changed:UserWarning")
def test_state_rides_in_checkpoints_and_resume_continues_the_dynamics(unbroken, tmp_path, logged):
    root, _, _, _ = unbroken
    # Step 4 ends the first epoch (4 batches), so the resumed fit sees the same batches.
    checkpoint = torch.load(root / "ckpt" / "epoch=0-step=4.ckpt", weights_only=True)
    assert checkpoint["callbacks"]["ConceptTrackerLightningCallback"]["cursor"] == 2

    fit(tmp_path, ckpt_path=root / "ckpt" / "epoch=0-step=4.ckpt")
    resumed = logged(tmp_path / "tb" / "version_0")
    reference = logged(root / "tb" / "version_0")
    assert sorted(resumed[tags.summary("complex_ratio")]) == [8]
    for tag in (tags.band_detour_ratio("simple"), tags.detour_ratio(2), tags.SIGN_FLIPS):
        assert resumed[tag][8] == pytest.approx(reference[tag][8], rel=1e-5, abs=1e-7), tag
    a, _ = load_step(root / "tb" / "version_0" / "concepts" / "interactions" / "step_00000008.safetensors")
    b, _ = load_step(tmp_path / "tb" / "version_0" / "concepts" / "interactions" / "step_00000008.safetensors")
    torch.testing.assert_close(a.and_effects, b.and_effects, rtol=1e-5, atol=1e-6)  # float32 model


def test_without_a_tensorboard_logger_it_writes_its_own_event_file(tmp_path, logged):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # tracking itself must not fail
        trainer, module, _ = fit(tmp_path, logger="csv", max_steps=3)
    concepts = tmp_path / "csv" / "version_0" / "concepts"
    assert sorted(logged(concepts)[tags.summary("num_concepts")]) == [0, 2, 3]
    assert module.training


def test_bad_arguments_name_the_parameter():
    x, y = data()
    with pytest.raises(ValueError, match="players"):
        ConceptTrackerLightningCallback(None, x)
    with pytest.raises(ValueError, match="unknown tracker option"):
        ConceptTrackerLightningCallback(TabularPlayers(), x, log_every=3)


def test_mean_baseline_is_fitted_on_the_training_data_without_changing_training(tmp_path):
    x, _ = data()
    players = TabularPlayers()  # "mean" by default
    trainer, module, _ = fit(tmp_path / "a", players=players)
    # The whole training set (64 rows), not the 4 probes.
    torch.testing.assert_close(players._mean, x.mean(0))
    _, meta = load_step(tmp_path / "a" / "tb" / "version_0" / "concepts" / "interactions" / "step_00000002.safetensors")
    assert meta["baseline"] == "mean (fit on 64 samples)"
    _, untracked, _ = fit(tmp_path / "b", players=TabularPlayers(baselines="zero"))
    for a, b in zip(module.parameters(), untracked.parameters()):
        assert torch.equal(a, b)  # fitting on the training data leaves training unchanged
