"""Shared fixtures of the test suite.

- ``module_workdir``: a fresh current directory in which a test writes an importable module
  (a model factory for ``concept-tracker analyze --model-factory``); ``sys.path`` and
  ``sys.modules`` are restored afterwards.
- ``logged``: reads the scalars a TensorBoard folder holds, ``{tag: {step: value}}``.
- ``torch_threads``: ``set(k)`` sets torch's intra-op thread count for the test; the session's
  count comes back afterwards.

Marker ``slow`` (registered in pyproject.toml): the subprocess runs of the scripts in
examples/. The suite runs them (CI runs everything); ``pytest -m "not slow"`` leaves them out.

Trackers built in this process finish their steps inline (as ``BudgetConfig(sync=True)``
does), unless the test is marked ``worker_process``: starting the background process costs
about 3 s of CPU per tracker, which across hundreds of trackers would take the suite past its
time on two cores. The tests marked ``worker_process`` and tests/test_worker.py check the
process path, and that it gives the same readings as the inline one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@pytest.fixture(autouse=True)
def inline_worker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trackers of unmarked tests run their background jobs inline (see the module docstring)."""
    import concept_tracker.tracker as tracker_module

    if request.node.get_closest_marker("worker_process") is None:
        from concept_tracker.worker import Worker

        monkeypatch.setattr(tracker_module, "Worker", lambda inline=False: Worker(inline=True))
    else:  # the process path, whether or not this machine leaves a core idle (worker.child_pays)
        monkeypatch.setattr(tracker_module, "child_pays", lambda device: True)


@pytest.fixture
def module_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Path]:
    """``write(name, source)`` writes ``<tmp_path>/<name>.py`` into the current directory
    (``tmp_path``) and returns that directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # what a test or the CLI adds goes with it

    def write(name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return tmp_path

    return write


@pytest.fixture
def logged() -> Callable[[Path | str], dict[str, dict[int, float]]]:
    """``read(log_dir)``: every scalar of the TensorBoard event files in ``log_dir``."""

    def read(log_dir: Path | str) -> dict[str, dict[int, float]]:
        acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
        acc.Reload()
        return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}

    return read


@pytest.fixture
def torch_threads() -> Iterator[Callable[[int], None]]:
    """``set(k)``: the test runs with ``k`` intra-op threads; the session's count comes back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
