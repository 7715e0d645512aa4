"""Every python code block of README.md and docs/*.md runs, on tiny data, so the docs cannot drift.

The blocks of one document run in order in one namespace (a later block may use what an
earlier one defined), in a fresh working directory. New documents under docs/ are picked up
automatically.

A block that is not meant to run (it needs a pretrained model, a real dataset or thousands of
training steps) is preceded by a comment ``<!-- no-run: why -->``; keep those few.

Fixture namespace, what the blocks may use without defining it:

- ``ct`` (``concept_tracker``), ``torch``, ``nn``, ``np``
- images: ``x_train`` ``[64, 1, 8, 8]`` with labels ``y_train`` ``[64]`` (10 classes),
  ``x_test`` ``[32, 1, 8, 8]`` with ``y_test``; ``train_images`` (= ``x_train``),
  ``data`` (= ``x_train``), ``k = 8``
- ``model``: an MLP on those images (``[B, 1, 8, 8] -> [B, 10]`` logits), ``loss_fn``,
  ``optimizer``, ``loader`` (one batch of 32 training images), ``accelerator`` (Accelerate, CPU)
- ``players``: ``ImagePatchPlayers(grid=(2, 2), baselines="zero")`` (n = 4 players), ``n = 4``;
  ``inputs`` (2 images), ``probe_inputs`` / ``probe_x`` (4 images), ``probe_targets`` / ``probe_y``
- ``values`` ``[2, 16]`` float64 coalition values; ``effects``, ``prev_effects``, ``a``, ``b``
  ``[2, 16]`` AND effects; ``train_res`` / ``test_res`` with ``train_targets`` /
  ``test_targets``; ``res_a`` / ``res_b`` (two models, same samples)
- ``sigma = 0.1``, ``draws = 2``, ``epsilon = 0.05``, ``step = 0``, ``global_step = 1000``
  (a step the default schedule tracks), ``eval_losses`` / ``train_losses`` (``{step: loss}``)
- tabular: ``rows_train`` ``[64, 10]``, ``feature_names`` (10 column names)
- text: ``tokenizer`` (a fast WordPiece tokenizer built in code), ``texts`` (2 sentences)
- files: ``runs/demo/clean`` and ``runs/demo/noisy``, two small tracked runs with held-out probes
- in ``docs/language_models.md`` only: ``model`` is a tiny GPT-2 and ``tokenizer`` a word-level
  tokenizer without a mask token (``tests/models.py``)

AND-OR solves left at the default settings are capped at 50 iterations here, for speed.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from models import tiny_lm, word_tokenizer, wordpiece_tokenizer
from torch import nn

import concept_tracker as ct
from concept_tracker import demo

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
NO_RUN = re.compile(r"<!--\s*no-run:\s*(?P<why>\S.*?)\s*-->\s*\Z", re.S)
MAX_NO_RUN = 5


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line of the opening fence, code, no-run reason or None)`` of every python block."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("lang") != "python":
            continue
        before = text[: match.start()].rstrip("\n")
        marker = NO_RUN.search(before.rsplit("\n", 1)[-1] if before else "")
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group("code"), marker.group("why") if marker else None))
    return blocks


def tiny_run(log_dir: Path, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, held = torch.rand(6, 1, 8, 8, generator=gen), torch.rand(6, 1, 8, 8, generator=gen)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))
    with ct.ConceptTracker(
        ct.ImagePatchPlayers(grid=(2, 2), baselines="zero"), (x, labels), (held, labels),
        log_dir=log_dir, schedule=ct.at_steps([0, 1, 2]), output=ct.OutputConfig(figures=False), strict=True,
    ) as tracker:
        for step in range(3):
            tracker.step(model, step)
            with torch.no_grad():
                model[1].weight.mul_(1.2)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs_runs")
    for seed, name in enumerate(("clean", "noisy")):
        tiny_run(root / name, seed)
    return root


def image_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def fixture_namespace() -> dict:
    gen = torch.Generator().manual_seed(0)
    x_train, y_train = torch.rand(64, 1, 8, 8, generator=gen), torch.arange(64) % 10
    x_test, y_test = torch.rand(32, 1, 8, 8, generator=gen), torch.arange(32) % 10
    model = image_model(0)
    players = ct.ImagePatchPlayers(grid=(2, 2), baselines="zero")
    train_res = ct.compute_interactions(model, x_train[:4], players, target=y_train[:4])
    test_res = ct.compute_interactions(model, x_test[:4], players, target=y_test[:4])
    values = train_res.outputs[:2].clone()
    effects = ct.and_transform(values)
    return {
        "ct": ct, "torch": torch, "nn": nn, "np": np,
        "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
        "train_images": x_train, "data": x_train, "k": 8,
        "model": model, "loss_fn": nn.CrossEntropyLoss(),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loader": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train[:32], y_train[:32]), batch_size=32),
        "accelerator": Accelerator(cpu=True),
        "players": players, "n": players.n, "inputs": x_train[:2],
        "probe_inputs": x_train[:4], "probe_targets": y_train[:4], "probe_x": x_train[:4], "probe_y": y_train[:4],
        "values": values, "effects": effects, "prev_effects": ct.and_transform(test_res.outputs[:2]),
        "a": effects[0], "b": ct.and_transform(test_res.outputs[0]),
        "train_res": train_res, "train_targets": y_train[:4], "test_res": test_res, "test_targets": y_test[:4],
        "res_a": train_res, "res_b": ct.compute_interactions(image_model(1), x_train[:4], players, target=y_train[:4]),
        "sigma": 0.1, "draws": 2, "epsilon": 0.05, "step": 0, "global_step": 1000,
        "eval_losses": {0: 2.3, 1: 2.1}, "train_losses": {0: 2.3, 1: 2.0},
        "rows_train": torch.randn(64, 10, generator=gen), "feature_names": [f"f{i}" for i in range(10)],
        "tokenizer": wordpiece_tokenizer(), "texts": ["the cat is very happy today .", "a dog was running ."],
    }


def language_model_namespace() -> dict:
    return {"model": tiny_lm("gpt2"), "tokenizer": word_tokenizer()}


DOC_NAMESPACES = {"language_models.md": language_model_namespace}
"""Documents whose blocks need other fixtures under the common names."""


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(doc, demo_runs, tmp_path, monkeypatch):
    blocks = [(line, code) for line, code, why in python_blocks(doc) if why is None]
    if not blocks:
        return
    monkeypatch.chdir(tmp_path)
    # The numbers are not checked, only that the code runs: AND-OR solves the blocks leave at
    # the default settings stop after 50 iterations (1,000 would dominate the suite's time).
    full_init = ct.AndOrConfig.__init__

    def quick_init(self, *args, max_iter: int = 50, **kwargs) -> None:
        full_init(self, *args, max_iter=max_iter, **kwargs)

    monkeypatch.setattr(ct.AndOrConfig, "__init__", quick_init)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(demo_runs, target_is_directory=True)
    namespace = fixture_namespace()
    namespace.update(DOC_NAMESPACES.get(doc.name, dict)())
    try:
        for line, code in blocks:
            # Padding puts the block's lines at their line numbers in the document's tracebacks.
            compiled = compile("\n" * line + code, str(doc), "exec")
            try:
                exec(compiled, namespace)
            except Exception as err:
                raise AssertionError(f"the python block at {doc.relative_to(ROOT)}:{line} fails: {err!r}") from err
    finally:
        for value in namespace.values():
            if isinstance(value, ct.ConceptTracker):
                value.close()
        AcceleratorState._reset_state(reset_partial_state=True)


def test_blocks_left_out_are_few_and_say_why():
    skipped = [(doc.name, line, why) for doc in DOCS for line, _, why in python_blocks(doc) if why is not None]
    assert len(skipped) <= MAX_NO_RUN, skipped
    assert all(why.strip() for _, _, why in skipped)
    # A marker must sit right above a python block; anywhere else it silently does nothing.
    for doc in DOCS:
        markers = len(re.findall(r"<!--\s*no-run", doc.read_text(encoding="utf-8")))
        assert markers == sum(why is not None for _, _, why in python_blocks(doc)), doc.name


def test_docs_stand_on_their_own():
    """User docs never send readers to the project's internal specification."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for needle in ("SPEC §", "SPEC.md", "../shared"):
            assert needle not in text, (doc.name, needle)


# --------------------------------------------------------------------- TensorBoard tags

TAG_PLACEHOLDERS = (
    (re.compile(r"order_\d\d"), "order_{m:02d}"),
    (re.compile(r"^(concepts|histograms|figures)/(and|or)/"), r"\1/{kind}/"),
    (re.compile(r"^(generalization|dynamics)/(simple|medium|complex)/"), r"\1/{band}/"),
)


def tag_family(tag: str) -> str:
    """A concrete tag written as the docs write its family (``order_03`` -> ``order_{m:02d}``, ...)."""
    for pattern, replacement in TAG_PLACEHOLDERS:
        tag = pattern.sub(replacement, tag)
    return tag


def documented_tags() -> set[str]:
    """The tag column of the table in docs/metrics.md, section "TensorBoard tags"."""
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = text[text.index("## 11. TensorBoard tags") :]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {tag for row in rows for tag in re.findall(r"`([^`]+)`", row.split(" | ")[0])}


def library_tags() -> set[str]:
    """Every tag concept_tracker.writers.tags names: its constants, and its builders called over
    every value they accept."""
    from concept_tracker.writers import tags

    constants = [v for k, v in vars(tags).items() if k.isupper()]
    out = {v for c in constants for v in (c if isinstance(c, tuple) else (c,)) if isinstance(v, str) and "/" in v}
    domains = {"kind": ("and", "or"), "m": (1, 12), "band": tags.BANDS, "tag": ("concepts/summary/complex_ratio",)}
    domains["stat"] = tags.ORDER_STATS + tags.SUMMARY_STATS + tags.SHARE_STATS
    for name, fn in vars(tags).items():
        if not callable(fn) or getattr(fn, "__module__", None) != tags.__name__ or name.startswith("_"):
            continue
        params = list(inspect.signature(fn).parameters)
        if not params or not set(params) <= set(domains):
            continue
        for args in itertools.product(*(domains[p] for p in params)):
            try:
                out.add(fn(*args))
            except ValueError:  # a value this builder refuses (stat "count" for summary(), ...)
                pass
    return out


def written_tags(log_dir: Path) -> set[str]:
    """Every scalar, image, histogram and text tag in the event files of ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    found = acc.Tags()
    texts = {t.removesuffix("/text_summary") for t in found["tensors"] if t.endswith("/text_summary")}
    return set(found["scalars"]) | set(found["images"]) | set(found["histograms"]) | texts


def test_every_tensorboard_tag_is_documented(tmp_path):
    """docs/metrics.md lists every tag the library names (writers/tags.py) or writes (a tracked
    run with every option that adds tags: AND-OR, held-out probes, figures, a budget, the
    sampled order spectrum), and
    lists no tag the library does not write."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, labels = torch.randn(6, 4), torch.arange(6) % 3
    # Under a budget the figures are optional work (drawn once the budget has room for their
    # measured cost), so a second run without one writes them.
    written: set[str] = set()
    for name, budget in (("budget", ct.BudgetConfig(max_overhead=0.9, total_steps=3, sync=True)), ("figures", ct.BudgetConfig(sync=True))):
        with ct.ConceptTracker(
            ct.TabularPlayers(baselines="zero"), (x, labels), (x.flip(0), labels), log_dir=tmp_path / name,
            schedule=ct.every(1), kind="and_or", budget=budget, readings=ct.ReadingsConfig(spectrum=32),
        ) as tracker, warnings.catch_warnings(record=True):  # whether the budget skips a step depends on the load
            warnings.simplefilter("always")
            for step in range(4):
                tracker.step(model, step)
        written |= written_tags(tmp_path / name)
    assert any(t.startswith("figures/") for t in written) and "text/overhead_budget" in written
    assert any(t.startswith("spectrum/") for t in written)
    documented = documented_tags()
    named = written | library_tags()
    intervals = {t for t in named if t.endswith(("_ci_low", "_ci_high"))}
    assert {"{tag}_ci_low", "{tag}_ci_high"} <= documented
    for tag in intervals:  # {tag}_ci_low / _ci_high of a documented reading
        assert tag_family(tag.rsplit("_ci_", 1)[0]) in documented, tag
    families = {tag_family(t) for t in named - intervals}
    assert families - documented == set()
    callback_losses = {"train/loss", "eval/loss"}  # the Hugging Face callback's copies
    assert documented - families - callback_losses - {"{tag}_ci_low", "{tag}_ci_high"} == set()


# ------------------------------------------------------------------- the README's demo block

DEMO_RESULTS = ROOT / "docs" / "demo_results.json"


def readme_demo_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = text.index(demo.DOCS_START) + len(demo.DOCS_START), text.index(demo.DOCS_END)
    return text[start:end].strip("\n")


def test_readme_demo_block_is_rendered_from_the_demo_results():
    """The README's demo tables, checks and figures are written by ``make docs-numbers`` from one
    demo run (docs/demo_results.json); nothing in the block is typed by hand."""
    results = json.loads(DEMO_RESULTS.read_text(encoding="utf-8"))
    assert readme_demo_block() == demo.docs_block(results)
    for name in demo.DOCS_FIGURES:
        assert (ROOT / "docs" / f"demo_{name}.png").is_file()
    # The rows are the demo's own summary rows, one cell per run.
    assert [row[0] for row in results["summary"]][:3] == ["last tracked step", "baseline", "test accuracy"]
    assert all(len(cells) == len(results["runs"]) for _, cells in results["summary"])


def test_docs_block_renders_every_cell_of_the_results():
    results = {
        "settings": {"seed": 3, "steps": 20, "label_noise": 0.5, "width": 8, "train_size": 100, "probes": 4,
                     "tracked_steps": 3, "kind": "and"},
        "labels_changed": 41, "runs": ["clean", "noisy"],
        "summary": [["complex ratio", ["0.125 [0.1, 0.2]", "0.5"]]],
        "similarity": {"clean": ["0.50", "0.25"], "noisy": ["0.40", "0.10"]},
        "checks": [["noisy -> more complex", True, "clean 0.125, noisy 0.5"]],
    }  # fmt: skip
    block = demo.docs_block(results)
    for needle in ("--seed 3", "41 labels", "| complex ratio | 0.125 [0.1, 0.2] | 0.5 |", "| noisy | 0.40 | 0.10 |",
                   "**yes**: noisy -> more complex: clean 0.125, noisy 0.5", "docs/demo_order_profile.png"):
        assert needle in block, needle
    readme = f"intro\n{demo.DOCS_START}\nold\n{demo.DOCS_END}\noutro\n"
    assert demo.replace_docs_block(readme, block) == f"intro\n{demo.DOCS_START}\n{block}\n{demo.DOCS_END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        demo.replace_docs_block("no markers", block)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CONCEPT_TRACKER_SLOW") != "1", reason="reruns the demo; CONCEPT_TRACKER_SLOW=1")
def test_demo_results_are_what_the_demo_gives_at_its_seed(tmp_path):
    """A fresh demo run at the default settings gives the committed results (minutes on 2 cores)."""
    config = demo.DemoConfig(output_dir=str(tmp_path), progress=False, figures=False)
    fresh = demo.demo_results(config, demo.run_demo(config, echo=lambda line: None))
    committed = json.loads(DEMO_RESULTS.read_text(encoding="utf-8"))
    committed.pop("timing", None)
    assert fresh == committed
