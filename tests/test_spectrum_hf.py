"""benchmarks/spectrum_hf.py: the label-noise study of the sampled spectrum on a Hugging Face run.

The statistic is checked on hand-built run records whose answer is known, one tiny tracked run
checks the pieces end to end, and the committed results must recompute and match the docs.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import spectrum_hf  # noqa: E402

from concept_tracker.spectrum import band_shares  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETUP = replace(spectrum_hf.FULL, noise=(0.0, 0.3), seeds=(0, 1), resamples=200)
N = 8  # players of the hand-built records


def strength(simple: float, medium: float, complex_: float) -> list[float]:
    """[n + 1] per-order strength with the given band totals (orders 2, 4 and 7; bands 1-3, 4-5, 6-8)."""
    row = [0.0] * (N + 1)
    row[2], row[4], row[7] = simple, medium, complex_
    return row


def record(noise: float, seed: int, first: list[list[float]], last: list[list[float]], flipped=None) -> dict:
    return {
        "noise": noise,
        "seed": seed,
        "strength": [first, last],
        "flipped_probes": flipped or [False] * len(first),
    }


def test_band_shares_of_the_probe_mean_match_the_library():
    x = torch.rand(5, 4, N + 1, dtype=torch.float64)
    bands = spectrum_hf.band_strength(x, 3, 6)
    assert torch.allclose(spectrum_hf.mean_shares(bands), band_shares(x.mean(-2), 3, 6), atol=1e-12)


def test_statistic_on_records_with_a_known_shift():
    # Clean runs keep a complex share of 0.1; noisy ones go from 0.1 to 0.4: the change differs by 0.3
    # at every resample (probes alike), and the simple share falls by 0.3 with it (medium fixed at 0).
    before, clean_end, noisy_end = strength(9, 0, 1), strength(9, 0, 1), strength(6, 0, 4)
    runs = [record(lv, s, [before] * 3, [noisy_end if lv else clean_end] * 3) for s in (0, 1) for lv in (0.0, 0.3)]
    stats = spectrum_hf.shift_statistics(runs, SETUP)
    assert stats["primary"]["complex"] == pytest.approx([0.3, 0.3, 0.3])
    assert stats["primary"]["simple"] == pytest.approx([-0.3, -0.3, -0.3])
    assert stats["primary"]["shows"]
    assert stats["levels"]["0.3"]["end_complex"] == pytest.approx([0.4, 0.4, 0.4])
    assert stats["levels"]["0.0"]["complex_change"] == pytest.approx([0.0, 0.0, 0.0])


def test_seeds_and_probes_are_resampled_in_pairs():
    # Noisy runs identical to the clean ones of their seed: with paired resampling every draw
    # gives exactly 0, however much probes and seeds differ among themselves.
    rng = random.Random(0)
    runs = []
    for s in (0, 1):
        first = [strength(rng.random(), rng.random(), rng.random()) for _ in range(4)]
        last = [strength(rng.random(), rng.random(), rng.random()) for _ in range(4)]
        runs += [record(lv, s, first, last) for lv in (0.0, 0.3)]
    stats = spectrum_hf.shift_statistics(runs, SETUP)
    assert stats["primary"]["complex"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    assert not stats["primary"]["shows"]
    # ... while each level's own change does vary across the resamples.
    low, high = stats["levels"]["0.0"]["complex_change"][1:]
    assert high - low > 0.01


def test_point_estimate_is_the_mean_over_seeds_of_each_runs_change():
    rng = random.Random(1)
    runs = [
        record(lv, s, *[[strength(rng.random(), rng.random(), rng.random()) for _ in range(3)] for _ in range(2)])
        for s in (0, 1)
        for lv in (0.0, 0.3)
    ]

    def complex_change(r: dict) -> float:  # by hand: sums over probes, complex / total
        ends = [[sum(p[i] for p in r["strength"][t]) for i in (2, 4, 7)] for t in (0, 1)]
        return ends[1][2] / sum(ends[1]) - ends[0][2] / sum(ends[0])

    want = sum(complex_change(r) * (1 if r["noise"] else -1) for r in runs) / 2
    stats = spectrum_hf.shift_statistics(runs, SETUP)
    value, low, high = stats["primary"]["complex"]
    assert value == pytest.approx(want, abs=1e-12) and low <= value <= high


def test_flipped_and_kept_probes_are_read_apart():
    runs = [
        record(0.3, 0, [strength(1, 0, 0)] * 2, [strength(1, 0, 3), strength(1, 0, 0)], flipped=[True, False]),
        record(0.0, 0, [strength(1, 0, 0)] * 2, [strength(1, 0, 0)] * 2),
    ]
    out = spectrum_hf.flipped_vs_kept(runs, SETUP, 0.3)
    assert out == {"flipped": {"probes": 1, "complex_share": 0.75}, "kept": {"probes": 1, "complex_share": 0.0}}


def test_task_rule_and_label_noise():
    rng = random.Random(0)
    for _ in range(200):
        words, label = spectrum_hf.prompt(rng, 32)
        assert len(words) == 32 and label == int("good" in words and "not" not in words)
    flipped = spectrum_hf.flipped_items(256, 0.3, seed=2)
    assert len(flipped) == round(0.3 * 256) and flipped == spectrum_hf.flipped_items(256, 0.3, seed=2)
    assert not spectrum_hf.flipped_items(256, 0.0, seed=2)


def test_tiny_tracked_run_reads_the_spectrum_of_every_word(tmp_path, torch_threads):
    torch_threads(1)  # as the benchmark runs: a tiny model's ops wait for a busy second core
    # Every word a player (n = 20 > 16: the sampled spectrum only), two tracked steps.
    tiny = replace(
        SETUP, words=20, train_size=32, test_size=8, steps=2, tracked=(0, 2), probes=12, forwards=120, hidden=16
    )
    with pytest.warns(UserWarning, match="n=20 players, above 16: the tracker reads the sampled order spectrum"):
        run = spectrum_hf.train_run(tiny, 0.5, 0, tmp_path)
    assert run["steps"] == [0, 2]
    assert torch.tensor(run["strength"]).shape == (2, 12, 21)
    assert 0 < run["forwards_per_step"] <= 12 * 120
    # Probes come back in training-item order: the flags are those of the first 12 items.
    flipped = spectrum_hf.flipped_items(32, 0.5, 0)
    assert run["flipped_probes"] == [i in flipped for i in range(12)]
    assert all(0.0 <= a <= 1.0 for a in run["accuracy"].values())
    assert (tmp_path / "vocab.txt").read_text().split() == spectrum_hf.VOCAB


@pytest.mark.parametrize(
    ("name", "block"), [("spectrum_hf.json", "spectrum_hf"), ("spectrum_hf_8000.json", "spectrum_hf_8000")]
)
def test_committed_results_recompute_and_match_the_docs(name, block):
    saved = json.loads((ROOT / "docs" / name).read_text(encoding="utf-8"))
    setup = spectrum_hf.setup_of(saved)
    if block == spectrum_hf.BLOCK:  # the pre-registered run
        assert setup == spectrum_hf.FULL and saved["preregistered"] == spectrum_hf.PREREGISTERED
    else:  # a later run: the same study at another budget
        assert replace(setup, forwards=0, seeds=(), tracked=()) == replace(spectrum_hf.FULL, forwards=0, seeds=(), tracked=())
    assert len(saved["runs"]) == len(setup.noise) * len(setup.seeds)
    assert all(r["steps"] == list(setup.tracked) for r in saved["runs"])
    recomputed = json.loads(json.dumps(spectrum_hf.shift_statistics(saved["runs"], setup)))
    assert _close(recomputed, saved["stats"])
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert spectrum_hf.replace_block(text, spectrum_hf.markdown_block(saved), block) == text, (
        f"BENCHMARKS.md differs from docs/{name}; run "
        f"python benchmarks/spectrum_hf.py --render docs/{name} --docs BENCHMARKS.md --block {block}"
    )


def _close(a, b) -> bool:
    """Nested equality with a float tolerance (the bootstrap reruns on the same seed)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == pytest.approx(b, abs=1e-9, nan_ok=True)
    return a == b
