"""Figures rendered in a worker process: same pixels as in-process, and nothing lost when the
worker cannot start, dies, or a figure function fails."""

from __future__ import annotations

import pytest
import torch

from concept_tracker.interactions import Interactions
from concept_tracker.metrics.profile import order_profile
from concept_tracker.transforms import and_transform
from concept_tracker.writers import render
from concept_tracker.writers.render import FigureRenderer


def jobs() -> list[tuple[str, tuple]]:
    values = torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    profile = order_profile(Interactions(outputs=values, and_effects=and_transform(values), or_effects=None, n=4, kind="and"))
    steps = [0, 1, 3, 10]
    series = {"{p1}": torch.tensor([0.0, 1.0, 2.0, 1.5])}
    return [
        ("order_profile_figure", (profile, "AND concepts by order, step 10")),
        ("order_heatmap_figure", (steps, torch.rand(4, 5, generator=torch.Generator().manual_seed(1)))),
        ("trajectory_figure", (steps, series, {"{p0,p2,p3}": torch.tensor([0.0, -1.0, 0.5, 2.0])}, "sample 0")),
    ]


def test_worker_renders_the_same_pixels_as_this_process():
    renderer = FigureRenderer()
    try:
        for i, (name, args) in enumerate(jobs()):
            renderer.submit(i, name, *args)
        done = dict(renderer.wait(timeout=60))
    finally:
        renderer.close()
    assert sorted(done) == [0, 1, 2]
    for i, (name, args) in enumerate(jobs()):
        assert done[i][:4] == b"\x89PNG" and done[i] == render.render(name, args, {}), name


def test_a_worker_that_cannot_start_falls_back_to_this_process(monkeypatch):
    monkeypatch.setattr(render, "_command", lambda: ["/nonexistent/python"])
    renderer = FigureRenderer()
    with pytest.warns(UserWarning, match="could not reach the figure worker"):
        for i, (name, args) in enumerate(jobs()):
            renderer.submit(i, name, *args)
    done = dict(renderer.ready())
    assert sorted(done) == [0, 1, 2] and all(isinstance(png, bytes) for png in done.values())


def test_pending_figures_of_a_dead_worker_are_rendered_here():
    renderer = FigureRenderer()
    name, args = jobs()[1]
    renderer.submit("first", name, *args)
    assert [key for key, _ in renderer.wait(timeout=60)] == ["first"]
    renderer._proc.kill()
    renderer._proc.wait()
    with pytest.warns(UserWarning, match="figure worker"):
        renderer.submit("second", name, *args)
        done = renderer.wait(timeout=60)
    renderer.close()
    assert [key for key, _ in done] == ["second"] and isinstance(done[0][1], bytes)


def test_a_failing_figure_function_comes_back_as_an_error():
    renderer = FigureRenderer()
    try:
        renderer.submit("bad", "order_heatmap_figure", [0, 1], "not a tensor")
        name, args = jobs()[1]
        renderer.submit("good", name, *args)
        done = dict(renderer.wait(timeout=60))
    finally:
        renderer.close()
    assert isinstance(done["bad"], RuntimeError) and "order_heatmap_figure" in str(done["bad"])
    assert isinstance(done["good"], bytes)


def test_an_argument_that_cannot_be_pickled_is_rendered_here():
    class Steps(list):
        """Defined in a function: pickle cannot find it by name."""

    renderer = FigureRenderer()
    name, (steps, shares) = jobs()[1]
    with pytest.warns(UserWarning, match="could not reach the figure worker"):
        renderer.submit("local", name, Steps(steps), shares)
    done = dict(renderer.ready())
    renderer.close()
    assert done["local"] == render.render(name, (steps, shares), {})


def test_busy_while_the_worker_owes_a_figure():
    renderer = FigureRenderer()
    assert not renderer.busy()
    name, args = jobs()[1]
    try:
        renderer.submit("first", name, *args)
        assert renderer.busy()  # the worker is still starting: it imports matplotlib first
        assert [key for key, _ in renderer.wait(timeout=60)] == ["first"]
        assert not renderer.busy()
    finally:
        renderer.close()
