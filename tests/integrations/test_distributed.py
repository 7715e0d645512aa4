"""Sharded interaction computation under torch.distributed: two real gloo processes on CPU.

One start of two ranks runs every scenario (process start-up dominates the cost); the ranks
save what they saw and the checks run here, against a single-process computation.
"""

import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from concept_tracker import TabularPlayers, compute_interactions
from concept_tracker.distributed import is_main_process, rank, world_size
from concept_tracker.schedules import at_steps
from concept_tracker.store import list_steps, load_step
from concept_tracker.tracker import ConceptTracker

N_FEATURES = 6
NUM_SAMPLES = 5  # odd, so the last rank's block is padded


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_FEATURES, 16), nn.Tanh(), nn.Linear(16, 3))


def make_inputs() -> torch.Tensor:
    return torch.randn(NUM_SAMPLES, N_FEATURES, generator=torch.Generator().manual_seed(1))


def assert_close_float32(got, single) -> None:
    """Values and AND effects equal up to float32 rounding of the model's rows.

    The ranks run their rows in batches of other shapes than one process does, and BLAS may
    round a 3-row and a 5-row product differently (one float32 ulp per logit). Each value
    gets a few ulps of the largest value; an effect sums ``2**n`` values.
    """
    ulps = 16 * torch.finfo(torch.float32).eps * single.outputs.abs().max().item()
    torch.testing.assert_close(got.outputs, single.outputs, rtol=0, atol=ulps)
    torch.testing.assert_close(got.and_effects, single.and_effects, rtol=0, atol=(1 << N_FEATURES) * ulps)


def nudge(model: nn.Module) -> None:
    """A deterministic stand-in for an optimizer step, identical on every rank."""
    with torch.no_grad():
        model[0].weight.mul_(1.5)


def _worker(rank_id: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank_id, world_size=2)
    try:
        model, x, players = make_model(), make_inputs(), TabularPlayers(baselines="zero")
        seen = {"rank": rank(), "world_size": world_size(), "main": is_main_process()}
        for rows in (None, 7):  # automatic and an odd chunk size that splits samples
            res = compute_interactions(model, x, players, batch_size=rows)
            seen[f"outputs_{rows}"] = res.outputs
            seen[f"targets_{rows}"] = res.targets
            seen[f"and_{rows}"] = res.and_effects

        try:  # every rank must see the mismatch, or the ranks would wait on each other
            compute_interactions(model, x + rank_id, players)
        except ValueError as err:
            seen["mismatch"] = str(err)

        bad = x.clone()
        bad[4, 0] = float("nan")  # sample 4 lies in rank 1's block only
        try:
            compute_interactions(model, bad, players, target=0)
        except (ValueError, RuntimeError) as err:
            seen["failure"] = f"{type(err).__name__}: {err}"

        tracker = ConceptTracker(players, x, log_dir=os.path.join(tmp, f"log{rank_id}"), schedule=at_steps([0, 2]))
        tracker.step(model, 0)
        nudge(model)
        tracker.step(model, 1)
        tracker.step(model, 2)
        tracker.close()
        torch.save(seen, os.path.join(tmp, f"rank{rank_id}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("dist"))
    # fork: the ranks inherit the imported modules instead of importing torch again.
    mp.start_processes(_worker, args=(tmp,), nprocs=2, join=True, start_method="fork")
    return tmp, [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]


def test_ranks_see_the_process_group(two_ranks):
    _, seen = two_ranks
    assert [(s["rank"], s["world_size"], s["main"]) for s in seen] == [(0, 2, True), (1, 2, False)]


@pytest.mark.parametrize("rows", [None, 7])
def test_sharded_values_equal_single_process(two_ranks, rows):
    _, seen = two_ranks
    single = compute_interactions(make_model(), make_inputs(), TabularPlayers(baselines="zero"), batch_size=rows)
    for s in seen:  # gathered to every rank, padding trimmed
        assert_close_float32(SimpleNamespace(outputs=s[f"outputs_{rows}"], and_effects=s[f"and_{rows}"]), single)
        assert torch.equal(s[f"targets_{rows}"], single.targets)


def test_different_probes_on_ranks_raise_on_every_rank(two_ranks):
    _, seen = two_ranks
    for s in seen:
        assert "different probe samples" in s["mismatch"]


def test_a_failing_rank_does_not_hang_the_others(two_ranks):
    _, seen = two_ranks
    assert seen[1]["failure"].startswith("NonFiniteValueError: rank 1 values samples [3, 4, 4] of the batch")
    assert "sample 1," in seen[1]["failure"]  # the 2nd of rank 1's block: sample 4
    assert seen[0]["failure"] == "RuntimeError: compute_interactions failed on rank(s) [1]; see their error."


def test_only_rank_zero_writes_and_stores_single_process_interactions(two_ranks):
    tmp, _ = two_ranks
    assert not os.path.exists(os.path.join(tmp, "log1"))
    log0 = os.path.join(tmp, "log0")
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(log0))
    assert list_steps(log0) == [0, 2]

    model, x, players = make_model(), make_inputs(), TabularPlayers(baselines="zero")
    first = compute_interactions(model, x, players)
    nudge(model)
    # The tracker fixes the targets at its first step; the single-process run does the same.
    later = compute_interactions(model, x, players, target=first.targets)
    for step, single in ((0, first), (2, later)):
        stored, meta = load_step(os.path.join(log0, "interactions", f"step_{step:08d}.safetensors"))
        assert meta["step"] == step
        assert_close_float32(stored, single)


def test_accelerate_example_runs_on_two_processes(tmp_path):
    """The example under torchrun: Accelerate's multi-CPU data parallel plus sharded tracking."""
    example = pathlib.Path(__file__).parents[2] / "examples" / "accelerate_loop.py"
    log_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(example)]
    command += ["--steps", "2", "--grad-accum", "2", "--log-dir", str(log_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "could not track" not in done.stderr
    events = [p for p in log_dir.iterdir() if p.name.startswith("events.out.tfevents")]
    assert len(events) == 1  # rank 0 only
    assert list_steps(log_dir) == [0, 1, 2] and list_steps(log_dir, "heldout") == [0, 1, 2]
