"""Track the concepts a small CNN learns on scikit-learn's bundled digits, in a plain loop.

Each 8x8 digit is split into a 2 x 5 grid of patches: n = 10 players, 1,024 coalitions per
probe image. At the scheduled steps the tracker masks patches to the mean training image
(the recommended "mean" baseline, fitted on the training set), computes the AND
interactions of 16 training and 16 held-out probe digits, and logs them next to the losses:

    python examples/plain_loop.py              # 2,000 steps
    python examples/plain_loop.py --steps 20   # smoke test
    tensorboard --logdir runs/plain_loop

Nothing is downloaded: ``load_digits`` ships with scikit-learn.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from concept_tracker import ConceptTracker, ImagePatchPlayers, every, log_spaced, new_run_dir, select_probes


def load_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as [N, 1, 8, 8] floats in [0, 1] and int64 labels, split 75 / 25."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(labels))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(32 * 4 * 4, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    parser.add_argument("--log-dir", default=None, help="default: a fresh runs/plain_loop/<date>_<host>")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.log_dir = args.log_dir or new_run_dir("runs/plain_loop")  # one folder per run
    if args.steps < 1:
        parser.error(f"--steps={args.steps} must be at least 1.")

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    # Fixed probe sets, stratified by class; held-out probes give generalization/* scalars.
    probes = select_probes(x_train, 16, labels=y_train, seed=args.seed)
    heldout = select_probes(x_test, 16, labels=y_test, seed=args.seed)
    # One event file for the losses and the concepts, so TensorBoard shows them side by side.
    writer = SummaryWriter(args.log_dir)
    # A masked patch takes the mean training image: a zero (black) patch is an input the
    # model never saw, and conclusions can differ between the two baselines.
    players = ImagePatchPlayers(grid=(2, 5), baselines="mean").fit(x_train)
    tracker = ConceptTracker(
        players,
        probes.inputs,
        probes.labels,
        heldout_inputs=heldout.inputs,
        heldout_targets=heldout.labels,
        log_dir=args.log_dir,
        # Dense early, where concepts change fastest, plus a regular beat for the long tail.
        schedule=log_spaced(0, args.steps - 1, 12) | every(max(1, args.steps // 4)),
        kind="and",
        writer=writer,
        probe_ids=probes.ids,
        heldout_ids=heldout.ids,
    )

    batches = torch.Generator().manual_seed(args.seed)
    with tracker:
        for step in range(args.steps):
            model.train()
            index = torch.randint(0, len(y_train), (64,), generator=batches)
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            writer.add_scalar("train/loss", loss.item(), step)

            if tracker.step(model, step) is not None:
                model.eval()
                with torch.no_grad():
                    logits = model(x_test)
                    test_loss = nn.functional.cross_entropy(logits, y_test).item()
                    accuracy = (logits.argmax(-1) == y_test).float().mean().item()
                model.train()
                writer.add_scalar("eval/loss", test_loss, step)
                writer.add_scalar("eval/accuracy", accuracy, step)
                print(f"step {step:5d}  train loss {loss.item():.3f}  test loss {test_loss:.3f}  acc {accuracy:.3f}")
        tracker.save(f"{args.log_dir}/tracker_state.safetensors")
    writer.close()
    print(f"TensorBoard logs and raw interactions in {args.log_dir}; run: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
