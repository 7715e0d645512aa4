"""The engine, the AND-OR solver and the tracker on a CUDA device (skipped without one).

Checks against the CPU path and brute force: float64 models give the same values and
interactions on CUDA as on CPU; a planted AND is recovered; CUDA RNG state, training flags and
grad mode come back untouched; training with the tracker attached leaves bitwise-identical
weights. (Halving a chunk on out-of-memory is tested on CPU in test_engine.py.)
"""

from __future__ import annotations

import pytest
import torch
from models import Product, mlp
from oracles import brute_and, brute_or
from torch import nn

from concept_tracker import compute_interactions
from concept_tracker.and_or import AndOrConfig, and_or_objective, decompose, matching_error
from concept_tracker.players import TabularPlayers
from concept_tracker.schedules import at_steps
from concept_tracker.store import load_step
from concept_tracker.tracker import ConceptTracker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def inputs(samples: int = 5, d: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(samples, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", ["and", "or"])
def test_values_and_effects_match_cpu_and_brute_force(kind):
    x = inputs()
    cpu = mlp().double()
    on_cpu = compute_interactions(cpu, x, TabularPlayers(baselines="zero"), kind=kind)
    on_gpu = compute_interactions(mlp().double().to(CUDA), x, TabularPlayers(baselines="zero"), kind=kind)
    assert on_gpu.outputs.device.type == "cuda"
    torch.testing.assert_close(on_gpu.outputs.cpu(), on_cpu.outputs, rtol=0, atol=1e-10)
    assert torch.equal(on_gpu.targets.cpu(), on_cpu.targets)
    effects = on_gpu.effects(kind).cpu()
    brute = (brute_and if kind == "and" else brute_or)(on_gpu.outputs.cpu())
    torch.testing.assert_close(effects, brute, rtol=0, atol=1e-9)


def test_planted_and_on_cuda():
    x = inputs(samples=3, d=4).to(CUDA)
    res = compute_interactions(Product().to(CUDA), x, TabularPlayers(baselines="zero"), value="output")
    expected = torch.zeros(3, 16, dtype=torch.float64)
    expected[:, 3] = (x[:, 0] * x[:, 1]).cpu()
    torch.testing.assert_close(res.and_effects.cpu(), expected, rtol=0, atol=1e-12)


class DrawsOnDevice(nn.Module):
    """A linear layer that also draws from the RNG of its device on every forward (times 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x)) + 0.0 * torch.rand((), device=x.device)


def test_state_restored_on_cuda():
    model = DrawsOnDevice().to(CUDA)
    model.train()
    x = torch.randn(3, 4).to(CUDA)
    torch.cuda.manual_seed(7)
    before = torch.cuda.get_rng_state()
    torch.set_grad_enabled(True)
    compute_interactions(model, x, TabularPlayers(baselines="zero"))
    assert torch.equal(torch.cuda.get_rng_state(), before)
    model(x)  # the draw moves the state: the check above can fail
    assert not torch.equal(torch.cuda.get_rng_state(), before)
    assert torch.is_grad_enabled() and model.training and model.dropout.training
    assert all(p.grad is None for p in model.parameters())


def test_automatic_chunks_on_cuda():
    x = inputs(samples=6)
    auto = compute_interactions(mlp().double().to(CUDA), x, TabularPlayers(baselines="zero"))
    fixed = compute_interactions(mlp().double().to(CUDA), x, TabularPlayers(baselines="zero"), batch_size=7)
    torch.testing.assert_close(auto.and_effects, fixed.and_effects, rtol=0, atol=1e-10)


def test_and_or_on_cuda_matches_cpu():
    values = compute_interactions(mlp(d_in=8).double(), inputs(samples=4, d=8), TabularPlayers(baselines="zero")).outputs
    config = AndOrConfig(max_iter=400)
    cpu = decompose(values, config)
    gpu = decompose(values.to(CUDA), config)
    assert gpu.and_effects.device.type == "cuda"
    assert matching_error(values.to(CUDA), gpu.and_effects, gpu.or_effects, gpu.q).max() < 1e-12
    objective_cpu = and_or_objective(cpu.and_effects, cpu.or_effects)
    objective_gpu = and_or_objective(gpu.and_effects, gpu.or_effects).cpu()
    torch.testing.assert_close(objective_gpu, objective_cpu, rtol=1e-5, atol=0)


def test_tracker_on_cuda_leaves_training_bitwise_identical(tmp_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen)
    y = (x[:, 0] * x[:, 1] > 0).long()

    def run(tracker: ConceptTracker | None) -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3)).to(CUDA)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        data, labels = x.to(CUDA), y.to(CUDA)
        for step in range(12):
            batch = torch.randint(0, 64, (16,), device=CUDA)
            loss = nn.functional.cross_entropy(model(data[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if tracker is not None:
                tracker.step(model, step)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    plain = run(None)
    with ConceptTracker(
        TabularPlayers(), x[:8], y[:8], heldout_inputs=x[8:16], heldout_targets=y[8:16], log_dir=tmp_path,
        schedule=at_steps([0, 5, 11]), kind="and_or", and_or=AndOrConfig(max_iter=100), figures=False, strict=True,
    ) as tracker:
        tracked = run(tracker)
    for name in plain:
        assert torch.equal(plain[name], tracked[name]), name
    res, meta = load_step(tmp_path / "interactions" / "step_00000011.safetensors")
    assert meta["kind"] == "and_or" and res.outputs.shape == (8, 64) and res.outputs.device.type == "cpu"
    assert matching_error(res.outputs, res.and_effects, res.or_effects, res.q).max() < 1e-12
