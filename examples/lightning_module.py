"""Track concepts from a Lightning ``Trainer``: a tiny LightningModule on a planted tabular rule.

Eight standard-normal features; the label is 1 exactly when x0 > 0 and x1 > 0 (an AND of two
features), so a model that has learned the rule should show a strong {x0,x1} concept. The first
six features are the players (64 coalitions per sample; masked features take the training
mean). ``ConceptTrackerLightningCallback`` tracks 16 training and 16 held-out probes; the
scalars, histograms and figures go into the ``TensorBoardLogger``'s event file next to the
losses the module logs.

    python examples/lightning_module.py              # 600 steps, well under a minute on a CPU
    python examples/lightning_module.py --steps 20   # smoke test
    tensorboard --logdir runs/lightning_module

Nothing is downloaded.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from concept_tracker import TabularPlayers, select_probes
from concept_tracker.integrations.lightning import ConceptTrackerLightningCallback
from concept_tracker.report import summarize_run, summary_table
from concept_tracker.store import load_step, step_path
from concept_tracker.writers.figures import concept_label

FEATURES = 8


def make_data(size: int, seed: int) -> TensorDataset:
    """Features [size, 8] and labels 1 iff x0 > 0 and x1 > 0."""
    x = torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, ((x[:, 0] > 0) & (x[:, 1] > 0)).long())


class RuleClassifier(L.LightningModule):
    """An MLP 8 -> 32 -> 32 -> 2 trained with Adam; logs train and validation loss."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
    parser.add_argument("--log-dir", default="runs/lightning_module")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be at least 1.")

    L.seed_everything(args.seed, verbose=False)
    train, test = make_data(2000, args.seed), make_data(500, args.seed + 1)
    probes = select_probes(train.tensors[0], 16, labels=train.tensors[1], seed=args.seed)
    heldout = select_probes(test.tensors[0], 16, labels=test.tensors[1], seed=args.seed)
    players = TabularPlayers(features=range(6), baselines="mean").fit(train.tensors[0])
    callback = ConceptTrackerLightningCallback(
        players, probes.inputs, probes.labels, heldout_inputs=heldout.inputs, heldout_targets=heldout.labels,
        kind="and",
    )
    logger = TensorBoardLogger(args.log_dir, name="")  # version_0, version_1, ...: one folder per run
    trainer = L.Trainer(
        max_steps=args.steps, accelerator="cpu", devices=1, logger=logger, callbacks=[callback],
        val_check_interval=max(1, min(args.steps, 63) // 3), check_val_every_n_epoch=None,
        log_every_n_steps=10, enable_checkpointing=False, enable_model_summary=False,
    )
    trainer.fit(
        RuleClassifier(),
        DataLoader(train, batch_size=32, shuffle=True),
        DataLoader(test, batch_size=250),
    )

    # The stored interactions are under <logger.log_dir>/concepts; summarize them.
    run = summarize_run(callback.tracker.log_dir, name="lightning_module")
    print()
    print(summary_table([run]))
    res, _ = load_step(step_path(callback.tracker.log_dir, run.steps[-1]))
    mean_strength = res.and_effects.abs().mean(0)
    mean_strength[0] = 0.0  # v(empty) is an offset, not a concept
    top = mean_strength.topk(3).indices.tolist()
    names = res.player_names[0]
    shown = ", ".join(f"{concept_label(s, names)} {mean_strength[s]:.2f}" for s in top)
    print(f"\nStrongest concepts at the last step (mean |I(S)| over the probes): {shown}")
    print("The planted rule is x0 AND x1: expect {x0}, {x1} and {x0,x1} on top.")
    print(f"TensorBoard: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
