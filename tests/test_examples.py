"""Smoke test of every script in examples/: a few steps each, offline, in a fresh directory.

Each example takes ``--steps`` and writes its runs under a relative ``runs/`` folder, so it
runs as a subprocess (as a user would) in a temporary working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from concept_tracker.store import load_step

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_examples_are_found():
    assert {p.name for p in EXAMPLES} >= {"hf_text_classification.py", "lightning_module.py"}


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_a_few_steps(script, tmp_path):
    # Offline and quiet: nothing may be fetched, and progress bars would only fill the log.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    result = subprocess.run(
        [sys.executable, str(script), "--steps", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    stored = list(tmp_path.glob("runs/**/interactions/step_*.safetensors"))
    assert stored, f"{script.name} stored no interactions under {tmp_path / 'runs'}"
    # The recommended defaults: a mean baseline fitted on training data (not the zero baseline
    # the README warns against, nor the mean of a few probes), or words masked as the model knows.
    baseline = load_step(stored[0])[1]["baseline"]
    assert baseline.startswith(("mean (fit on", "mask token", "embedding: mean")), (script.name, baseline)


@pytest.mark.slow
def test_causal_lm_every_word_reads_the_sampled_spectrum(tmp_path):
    # Every prompt word a player (31): the sampled order spectrum at step 0, half way and the end,
    # at the example's own cost (8 probes x 800 forwards), and no exact interactions.
    from concept_tracker.store import load_spectrum

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    script = next(p for p in EXAMPLES if p.name == "causal_lm_sft.py")
    result = subprocess.run(
        [sys.executable, str(script), "--every-word", "--steps", "4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(tmp_path.glob("runs/**/spectrum/step_*.safetensors"))
    steps = [load_spectrum(p)[1] for p in files]
    assert [m["step"] for m in steps] == [0, 2, 4]
    assert all(m["n"] == 31 and 0 < m["forwards"] <= 8 * 800 for m in steps)
    assert not list(tmp_path.glob("runs/**/interactions/step_*.safetensors"))
    assert result.stdout.count("simple share") == 3
