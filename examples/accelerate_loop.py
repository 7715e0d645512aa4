"""Track the concepts an MLP learns on scikit-learn's bundled digits, in an Accelerate loop.

Every process runs the same script: the training batches are split across processes by
Accelerate, the probe images are split across them by the tracker (each rank values its share
of the coalitions, the values are gathered), and only rank 0 writes to TensorBoard.

    accelerate launch --num_processes 2 --cpu examples/accelerate_loop.py
    torchrun --nproc_per_node 2 examples/accelerate_loop.py
    python examples/accelerate_loop.py --steps 20        # one process, smoke test
    tensorboard --logdir runs/accelerate_loop

Each 8x8 digit is cut into a 4 x 4 grid of 2x2-pixel patches, 10 of which (a seeded choice)
are the players: 1,024 coalitions per probe image. Nothing is downloaded.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from concept_tracker import ConceptTracker, ImagePatchPlayers, log_spaced, new_run_dir, select_probes
from concept_tracker.integrations.accelerate import track_step


def load_data() -> tuple[TensorDataset, TensorDataset]:
    """Digits as [N, 1, 8, 8] floats in [0, 1] with int64 labels; the last 400 are held out."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    return TensorDataset(images[:-400], labels[:-400]), TensorDataset(images[-400:], labels[-400:])


def make_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--log-dir", default=None, help="default: a fresh runs/accelerate_loop/<date>_<host>")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.log_dir = args.log_dir or new_run_dir("runs/accelerate_loop")  # one folder per run
    if args.steps < 1 or args.grad_accum < 1:
        parser.error("--steps and --grad-accum must be at least 1.")

    # cpu=True on a machine without GPUs: under torchrun, Accelerate then runs multi-CPU (gloo)
    # data parallel instead of one independent run per process.
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    train, test = load_data()

    # Every rank draws the same probes (same seed, from the full data, not its shard):
    # the tracker splits them across the ranks itself, and checks that they agree.
    probes = select_probes(train.tensors[0], 16, labels=train.tensors[1], seed=args.seed)
    heldout = select_probes(test.tensors[0], 16, labels=test.tensors[1], seed=args.seed)
    # Masked patches take the mean training image (the recommended baseline; every rank fits
    # it on the same full training set).
    players = ImagePatchPlayers(grid=(4, 4), select=10, baselines="mean", seed=args.seed).fit(train.tensors[0])
    tracker = ConceptTracker(
        players,
        probes.inputs,
        probes.labels,
        heldout_inputs=heldout.inputs,
        heldout_targets=heldout.labels,
        log_dir=args.log_dir,
        schedule=log_spaced(0, args.steps, 15),
        probe_ids=probes.ids,
        heldout_ids=heldout.ids,
    )

    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=32, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    step = 0
    track_step(tracker, accelerator, model, step)  # the initial model
    while step < args.steps:
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = nn.functional.cross_entropy(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
            if track_step(tracker, accelerator, model, step):
                accelerator.print(f"step {step:5d}  loss {loss.item():.3f}  tracked")
            if step == args.steps:
                break

    tracker.close()
    accelerator.print(f"TensorBoard logs and raw interactions in {args.log_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
