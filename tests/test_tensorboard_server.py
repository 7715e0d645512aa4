"""A tracked run as TensorBoard itself serves it: its own server, read through its HTTP API.

The other tests read event files with TensorBoard's Python loaders; this one checks what a
user sees: the scalars, images, custom-scalars layout and text that the TensorBoard server
(``tensorboard.program``) hands its front end, for a run written by a small ``ConceptTracker``.
The server binds a free port on 127.0.0.1 only and is always shut down.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch
from tensorboard import program
from torch import nn

from concept_tracker import ProbeSet, TabularPlayers, band_summary, order_profile, train_test_similarity
from concept_tracker.schedules import at_steps
from concept_tracker.store import load_step, step_path
from concept_tracker.tracker import ConceptTracker
from concept_tracker.writers import tags

N = 5
STEPS = [0, 1, 3]
RUN = "tracked"


def tiny_run(log_dir) -> None:
    """Four tracked steps' worth of a 5-feature MLP, nudged between steps like an optimizer would."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, N, generator=gen)
    y = (x[:, 0] * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N, 16), nn.Tanh(), nn.Linear(16, 2))
    with ConceptTracker(
        TabularPlayers(baselines="zero"), ProbeSet(x[:8], y[:8]), ProbeSet(x[8:], y[8:]),
        log_dir=log_dir, schedule=at_steps(STEPS), strict=True,
    ) as tracker:
        for step in range(4):
            tracker.step(model, step)
            with torch.no_grad():
                model[0].weight.mul_(1.3).add_(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(get, log_dir)``: ``get(path, **query)`` returns the body the server sends for a route."""
    root = tmp_path_factory.mktemp("tb")
    tiny_run(root / RUN)
    tb = program.TensorBoard()
    # Port 0: the OS picks a free port. Blocking reload: the run is loaded before serving.
    tb.configure(
        argv=[None, "--logdir", str(root), "--host", "127.0.0.1", "--port", "0", "--load_fast", "false",
              "--reload_interval", "0", "--reload_task", "blocking"]
    )
    # launch() keeps no handle to stop its server thread; build the server to shut it down.
    srv = tb._make_server()
    thread = threading.Thread(target=srv.serve_forever, name="TensorBoard-test", daemon=True)
    thread.start()
    base = srv.get_url().rstrip("/")
    assert base.startswith("http://127.0.0.1:")

    def get(path: str, **query) -> bytes:
        url = f"{base}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    try:
        deadline = time.monotonic() + 30
        while True:  # bounded wait until the server answers
            try:
                if RUN in json.loads(get("data/runs")):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("TensorBoard did not serve the run within 30 s")
            time.sleep(0.1)
        yield get, root / RUN
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def scalar_series(get, tag: str) -> dict[int, float]:
    rows = json.loads(get("data/plugin/scalars/scalars", run=RUN, tag=tag))
    return {step: value for _, step, value in rows}


def test_scalars_are_served_with_the_values_of_the_stored_interactions(server):
    get, log_dir = server
    served = json.loads(get("data/plugin/scalars/tags"))[RUN]
    expected = tags.spec_scalar_tags(N, ["and"], generalization=True)
    assert not set(expected) - set(served)
    for step in STEPS:
        probe, _ = load_step(step_path(log_dir, step))
        held, _ = load_step(step_path(log_dir, step, "heldout"))
        summary = band_summary(order_profile(probe, 0.05))
        for stat in tags.SUMMARY_STATS:
            want = getattr(summary, stat)
            got = scalar_series(get, tags.summary(stat))[step]
            assert got == pytest.approx(float(want), rel=1e-6, abs=1e-9), (step, stat)  # float32 in the event file
        similarity = train_test_similarity(probe, probe.targets, held, held.targets)
        for m in range(1, N + 1):
            got = scalar_series(get, tags.train_test_similarity(m))[step]
            assert got == pytest.approx(similarity[m].item(), rel=1e-6, abs=1e-9), (step, m)
    assert sorted(scalar_series(get, tags.PERF_SECONDS)) == STEPS


def test_images_are_pngs_at_the_figure_steps(server):
    get, _ = server
    served = json.loads(get("data/plugin/images/tags"))[RUN]
    figures = [tags.order_profile_figure("and"), tags.HEATMAP_FIGURE, tags.TRAJECTORY_FIGURE]
    assert sorted(served) == sorted(figures)
    for tag in figures:
        entries = json.loads(get("data/plugin/images/images", run=RUN, tag=tag, sample=0))
        assert [e["step"] for e in entries] == STEPS  # the 1st, 2nd and last tracked step
        png = get(f"data/plugin/images/individualImage?{entries[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_custom_layout_charts_match_served_scalars(server):
    get, _ = server
    layout = json.loads(get("data/plugin/custom_scalars/layout"))
    served = set(json.loads(get("data/plugin/scalars/tags"))[RUN])
    titles = [category["title"] for category in layout["category"]]
    assert "generalization" in titles
    charts = [chart for category in layout["category"] for chart in category["chart"]]
    assert charts
    patterns = [p for chart in charts for p in chart.get("multiline", chart.get("margin", {})).get("tag", [])]
    for pattern in patterns:
        if pattern in (tags.PHASE_BOUNDARY, tags.SKIPPED_STEPS):
            continue  # written once a boundary is found / with max_overhead; this run has neither
        assert any(re.search(pattern, tag) for tag in served), pattern
    # Every order of the order profile shows in some chart.
    for m in range(1, N + 1):
        count = tags.concept_order("and", m, "count")
        assert any(re.search(pattern, count) for pattern in patterns), count


def test_top_concepts_text_is_served(server):
    get, _ = server
    tag = f"{tags.TOP_CONCEPTS_TEXT}/text_summary"  # the suffix add_text gives the tag
    assert json.loads(get("data/plugin/text/tags"))[RUN] == [tag]
    entries = json.loads(get("data/plugin/text/text", run=RUN, tag=tag))
    assert [e["step"] for e in entries] == STEPS
    html = entries[-1]["text"]
    assert "<table>" in html and "x0" in html + "".join(e["text"] for e in entries)
