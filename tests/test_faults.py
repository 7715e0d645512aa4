"""Fault injection: the mistakes and faults a new user meets, each failing at once with a message
that names the parameter and the fix, or losing nothing.

Two groups, as found when the tracker was tried as a new user would: faults that lost or mixed
tracking data, and mistakes that failed late (mid-training) or unclearly.
"""

from __future__ import annotations

import datetime
import errno
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import concept_tracker as ct
from concept_tracker import report, rundir
from concept_tracker import store as storage
from concept_tracker.players import TabularPlayers
from concept_tracker.schedules import at_steps, every
from concept_tracker.store import list_steps, load_step, step_path
from concept_tracker.tracker import ConceptTracker
from concept_tracker.writers import tags

D, CLASSES = 4, 3
NO_FIGURES = ct.OutputConfig(figures=False)


def data(rows: int = 5, width: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))


def model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, CLASSES)).to(dtype)


def tracker(log_dir, x=None, y=None, players=None, **options) -> ConceptTracker:
    x = data() if x is None else x
    y = torch.arange(x.shape[0]) % CLASSES if y is None else y
    options.setdefault("schedule", every(1))
    options.setdefault("output", NO_FIGURES)
    return ConceptTracker(players or TabularPlayers(), (x, y), log_dir=log_dir, **options)


def close_reports_the_failed_first_step(t: ConceptTracker) -> None:
    with pytest.warns(UserWarning, match=r"0 steps tracked of 1 scheduled, 0 skipped \(max_overhead\), 1 failed"):
        t.close()


def scalar_steps(log_dir, tag: str = tags.PERF_SECONDS) -> list[int]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def recorded(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in record]


# ---------------------------------------------------------------------- loses or mixes data


def test_numpy_integer_steps_are_tracked_and_stored(tmp_path):
    with tracker(tmp_path) as t:
        for s in np.arange(3):
            assert t.step(model(), s) is not None
    assert list_steps(tmp_path) == [0, 1, 2] and scalar_steps(tmp_path) == [0, 1, 2]


def test_two_live_trackers_on_one_log_dir_are_refused(tmp_path):
    first = tracker(tmp_path)
    first.step(model(), 0)
    second = tracker(tmp_path)
    with pytest.raises(ValueError, match=r"in use by another ConceptTracker \(this process\).*new_run_dir"):
        second.step(model(), 0)
    first.close()
    assert list_steps(tmp_path) == [0] and not (tmp_path / rundir.LOCK_NAME).exists()


def test_a_tracker_in_another_live_process_holds_the_lock(tmp_path):
    code = (
        "import os, sys, json, socket; "
        f"open({str(tmp_path / rundir.LOCK_NAME)!r}, 'w').write(json.dumps("
        "{'host': socket.gethostname(), 'pid': os.getpid()})); sys.stdout.write('ready\\n'); sys.stdout.flush(); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(ValueError, match=f"in use by another ConceptTracker \\(process {holder.pid} "):
            tracker(tmp_path).step(model(), 0)
    finally:
        holder.communicate("")
    # Its process is gone now: the stale lock is taken over.
    with tracker(tmp_path) as t:
        assert t.step(model(), 0) is not None
    assert list_steps(tmp_path) == [0]


def test_a_half_written_lock_is_taken_over_once_old(tmp_path):
    lock = tmp_path / rundir.LOCK_NAME
    lock.write_text("")  # a process killed between creating and writing its lock
    os.utime(lock, (0, 0))
    with tracker(tmp_path) as t:
        assert t.step(model(), 0) is not None
    assert not lock.exists()


def test_a_rerun_into_an_old_log_dir_is_refused_unless_resumed(tmp_path):
    with tracker(tmp_path) as t:
        t.step(model(), 0)
        t.save(tmp_path / "state.safetensors")
    again = tracker(tmp_path)
    with pytest.raises(ValueError, match=r"already holds a run \(stored steps 0\).*new_run_dir.*load"):
        again.step(model(), 1)
    with tracker(tmp_path) as resumed:
        resumed.load(tmp_path / "state.safetensors")
        assert resumed.step(model(), 1) is not None
    assert list_steps(tmp_path) == [0, 1]
    # One run, resumed: the report reads it.
    assert report.summarize_run(tmp_path).steps == [0, 1]


def test_new_run_dir_gives_each_launch_its_own_folder_even_in_one_second(tmp_path, monkeypatch):
    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 7, 9, 30, 0)

    monkeypatch.setattr(rundir, "datetime", Frozen)
    first, second = ct.new_run_dir(tmp_path), ct.new_run_dir(tmp_path)
    # Two launches in the same second: the folder is taken when named, so the second gets its own.
    assert first != second and os.path.dirname(first) == os.path.dirname(second) == str(tmp_path)
    assert os.listdir(first) == [] and os.listdir(second) == []
    for log_dir in (first, second):
        with tracker(log_dir) as t:
            assert t.step(model(), 0) is not None
    assert os.path.basename(second) == os.path.basename(first) + "_2"


def test_a_rerun_into_the_folder_of_a_store_false_run_is_refused(tmp_path):
    with tracker(tmp_path, output=ct.OutputConfig(store=False, figures=False)) as t:
        t.step(model(), 0)
        t.step(model(), 1)
        state = t.state_dict()
    again = tracker(tmp_path)
    with pytest.raises(ValueError, match=r"already holds a run \(run [0-9a-f]+, no stored interactions\).*new_run_dir"):
        again.step(model(), 5)
    recorded(again.close)
    assert scalar_steps(tmp_path) == [0, 1] and list_steps(tmp_path) == []
    with tracker(tmp_path, output=ct.OutputConfig(store=False, figures=False)) as resumed:  # the same run, resumed, goes on
        resumed.load_state_dict(state)
        assert resumed.step(model(), 2) is not None
    assert scalar_steps(tmp_path) == [0, 1, 2]


@pytest.mark.parametrize("store", [True, False])
def test_the_state_of_run_a_is_refused_in_the_folder_of_run_b(tmp_path, store):
    with tracker(tmp_path / "a") as t:
        t.step(model(), 0)
        state = t.state_dict()
    with tracker(tmp_path / "b", output=ct.OutputConfig(store=store, figures=False)) as b:
        b.step(model(), 3)
    with pytest.raises(ValueError, match=f"state is of run {state['run']} but log_dir=.*b' holds run [0-9a-f]+"):
        tracker(tmp_path / "b").load_state_dict(state)
    assert scalar_steps(tmp_path / "b") == [3] and list_steps(tmp_path / "b") == ([3] if store else [])


def test_load_in_the_middle_of_a_run_is_refused(tmp_path):
    with tracker(tmp_path) as t:
        t.step(model(), 0)
        early = t.state_dict()
        t.step(model(), 1)
        with pytest.raises(ValueError, match=r"load.* before the first step\(\).*step 1"):
            t.load_state_dict(early)
        assert t.step(model(), 2) is not None  # not rewound: the run goes on
    assert list_steps(tmp_path) == [0, 1, 2]
    assert report.summarize_run(tmp_path).steps == [0, 1, 2]


def test_a_state_older_than_the_stored_steps_trims_them_with_one_message(tmp_path):
    """A resume from an earlier checkpoint: the steps stored after that state was saved belong
    to a timeline that training abandons; they go, with one warning, so that the stored history
    and the tracker's history agree."""
    t = tracker(tmp_path)
    for s in (0, 1):
        t.step(model(), s)
    state = t.state_dict()
    for s in (2, 3):
        t.step(model(), s)
    t.close()
    spectra = [storage.spectrum_path(tmp_path, s) for s in (1, 3)]  # sampled spectra are trimmed too
    for path in spectra:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"spectrum")
    other = nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, CLASSES))
    resumed = tracker(tmp_path)
    resumed.load_state_dict(state)
    messages = recorded(lambda: [resumed.step(other, 2), resumed.close()])
    trimmed = [m for m in messages if "removed" in m]
    assert len(trimmed) == 1 and "steps 2, 3" in trimmed[0] and "step 1" in trimmed[0]
    assert list_steps(tmp_path) == [0, 1, 2] and spectra[0].exists() and not spectra[1].exists()
    want = ct.compute_interactions(other, data(), TabularPlayers(), target=torch.arange(5) % CLASSES)
    assert torch.allclose(load_step(step_path(tmp_path, 2))[0].outputs, want.outputs)
    spectra[0].unlink()  # placeholder bytes: the report reads (and checks) real spectrum files
    assert report.summarize_run(tmp_path).steps == [0, 1, 2]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(players=TabularPlayers()), r"baseline: saved 'zero', now 'mean \(5 probe inputs\)'"),
        (dict(readings=ct.ReadingsConfig(simple_max=2)), r"simple_max: saved None, now 2"),
        (dict(readings=ct.ReadingsConfig(complex_min=2)), r"complex_min: saved None, now 2"),
    ],
)
def test_resume_with_another_baseline_or_band_is_refused_at_load(tmp_path, change, match):
    with tracker(tmp_path / "a", players=TabularPlayers(baselines="zero")) as t:
        t.step(model(), 0)
        state = t.state_dict()
    options = {"players": TabularPlayers(baselines="zero"), **change}
    with pytest.raises(ValueError, match=match):
        tracker(tmp_path / "a", **options).load_state_dict(state)


def test_a_refused_folder_warns_once_not_at_every_step(tmp_path):
    with tracker(tmp_path) as t:
        t.step(model(), 0)
    again = tracker(tmp_path)
    with pytest.raises(ValueError, match="already holds a run"):
        again.step(model(), 1)
    messages = recorded(lambda: [again.step(model(), s) for s in (2, 3, 4)] + [again.close()])
    assert len(messages) == 1 and "Nothing was tracked" in messages[0]
    assert list_steps(tmp_path) == [0]


def test_report_refuses_interleaved_runs(tmp_path):
    for name in ("a", "b"):
        with tracker(tmp_path / name) as t:
            t.step(model(), 0 if name == "a" else 1)
    os.replace(step_path(tmp_path / "b", 1), step_path(tmp_path / "a", 1))
    with pytest.raises(ValueError, match=r"holds interleaved runs: .*step_00000000.* and .*step_00000001"):
        report.summarize_run(tmp_path / "a")


def test_a_storage_failure_keeps_the_scalars(tmp_path, monkeypatch):
    t = tracker(tmp_path)
    t.step(model(), 0)
    t.summaries(wait=True)  # step 0 finished and stored before the disk fills

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "save_step", full_disk)
    messages = recorded(lambda: [t.step(model(), s) for s in (1, 2)] + [t.close()])
    assert sum("could not track step 1: OSError" in m for m in messages) == 1
    assert any("1 steps tracked of 3 scheduled, 0 skipped (max_overhead), 2 failed" in m for m in messages)
    assert list_steps(tmp_path) == [0] and scalar_steps(tmp_path) == [0, 1, 2]


def test_close_on_a_full_disk_warns_once_releases_the_lock_and_keeps_the_stored_steps(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    t = tracker(tmp_path)
    t.step(model(), 0)
    t.summaries(wait=True)  # step 0 stored before the disk fills
    kept = step_path(tmp_path, 0).read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    for name in ("add_scalar", "add_histogram", "add_text", "add_custom_scalars", "flush", "close"):
        monkeypatch.setattr(SummaryWriter, name, full_disk)
    monkeypatch.setattr(storage, "save_step", full_disk)
    messages = recorded(lambda: [t.step(model(), s) for s in (1, 2)] + [t.close()])
    # One warning for the event file (not one per tag), one for the stored steps, the step counts.
    assert len([m for m in messages if "TensorBoard" in m and "No space left" in m]) == 1
    assert len([m for m in messages if "could not track step 1: OSError" in m]) == 1
    assert len(messages) == 3 and "1 steps tracked of 3 scheduled" in messages[-1]
    assert not (tmp_path / rundir.LOCK_NAME).exists()
    assert list_steps(tmp_path) == [0] and step_path(tmp_path, 0).read_bytes() == kept


def test_a_tensorboard_failure_keeps_the_stored_interactions(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise OSError("event file unwritable")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    with tracker(tmp_path) as t:
        recorded(lambda: [t.step(model(), s) for s in range(3)])
    assert list_steps(tmp_path) == [0, 1, 2]


def test_resume_with_other_players_or_n_is_refused(tmp_path):
    with tracker(tmp_path / "a") as t:
        t.step(model(), 0)
        state = t.state_dict()
    other = ConceptTracker(TabularPlayers(features=[0, 1, 2]), data(), log_dir=tmp_path / "b", output=NO_FIGURES)
    with pytest.raises(
        ValueError, match=r"another run \(n: saved 4, now 3; player_names: saved \['x0', 'x1', 'x2', 'x3'\], now"
    ):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"value: saved 'log_odds', now 'logit'"):
        tracker(tmp_path / "c", value="logit").load_state_dict(state)
    with pytest.raises(ValueError, match=r"probe_inputs: saved '[0-9a-f]+', now '[0-9a-f]+'"):
        tracker(tmp_path / "d", x=data(seed=1)).load_state_dict(state)


def test_flipped_bytes_in_a_stored_step_are_detected(tmp_path):
    # Stale temporary files of killed saves: tests/test_store.py (they are swept once per process).
    with tracker(tmp_path) as t:
        t.step(model(), 0)
    path = step_path(tmp_path, 0)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        load_step(path)


# ---------------------------------------------------------------------- fails late or unclearly


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda p: ConceptTracker(TabularPlayers(features=[0, 9]), data(), log_dir=p),
            r"features=\[0, 9\] names a column",
        ),
        (lambda p: ConceptTracker(TabularPlayers(), data(0), log_dir=p), "probes holds no samples"),
        (
            lambda p: ConceptTracker(TabularPlayers(baselines=torch.zeros(3)), data(), log_dir=p),
            r"cannot mask probes .*baselines has shape \(3,\)",
        ),
        (lambda p: tracker(p, budget=ct.BudgetConfig(batch_size=0)), r"batch_size=0 must be an int >= 1"),
        (lambda p: tracker(p, readings=ct.ReadingsConfig(simple_max=9)), r"simple_max=9 must lie in \[0, n=4\]"),
        (lambda p: tracker(p, readings=ct.ReadingsConfig(complex_min=7)), r"complex_min=7 must lie in"),
        (
            lambda p: tracker(p, heldout=ct.ProbeSet(data(width=D + 1))),
            r"heldout_inputs has samples of shape \(5,\) but probe_inputs has \(4,\)",
        ),
        (lambda p: tracker(p, y=["cat", "dog", "cat", "dog", "cat"]), "probes labels=.*holds strings"),
        (
            lambda p: tracker(p, y=[0.9, 1.6, 2.7, 0.2, 1.0]),
            r"probes labels has dtype torch.float32 \(first values \[0.9, 1.6, 2.7, 0.2\]\); pass integer",
        ),
        (lambda p: tracker(p, y=[0, 1]), "probes labels has 2 entries for 5 samples"),
        (lambda p: tracker(p, y=[0, 1, 2, -1, 0]), "probes labels holds the class -1"),
    ],
    ids=[
        "missing-column",
        "empty-probes",
        "baselines-shape",
        "batch-size",
        "simple-max",
        "complex-min",
        "heldout-width",
        "string-targets",
        "float-targets",
        "target-count",
        "negative-class",
    ],
)
def test_mistakes_fail_at_construction(tmp_path, build, match):
    with pytest.raises(ValueError, match=match):
        build(tmp_path)


def test_log_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ValueError, match=r"log_dir=.*file.* is a file; pass a directory"):
        tracker(afile / "run")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(ValueError, match=r"log_dir=.*new.* is not writable .*pass a directory you can write to"):
        tracker(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_out_of_range_classes_fail_at_the_first_step(tmp_path):
    t = tracker(tmp_path, y=[0, 1, 5, 0, 1])
    with pytest.raises(ValueError, match=r"classes 0..5, but the model gives 3 logits per row; pass classes in 0..2"):
        t.step(model(), 0)
    close_reports_the_failed_first_step(t)


class BatchMean(nn.Module):
    """Returns one row for the whole batch: would be broadcast into every masked row."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = model()

    def forward(self, x):
        return self.inner(x).mean(0, keepdim=True)


class Transposed(BatchMean):
    def forward(self, x):
        return self.inner(x).T


@pytest.mark.parametrize("bad", [BatchMean, Transposed])
def test_outputs_must_keep_one_row_per_input(tmp_path, bad):
    t = tracker(tmp_path, budget=ct.BudgetConfig(batch_size=4))
    with pytest.raises(
        ValueError, match=r"returned outputs of shape \((1|3), (3|4)\) for a batch of 4 inputs; expected \[4, ...\]"
    ):
        t.step(bad(), 0)
    close_reports_the_failed_first_step(t)
    assert list_steps(tmp_path) == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_probes_are_cast_to_the_model_dtype(tmp_path, dtype):
    x = data()
    res = ct.compute_interactions(model(dtype), x, TabularPlayers(), target=torch.arange(5) % CLASSES)
    want = ct.compute_interactions(model(dtype), x.to(dtype), TabularPlayers(), target=torch.arange(5) % CLASSES)
    assert torch.equal(res.outputs, want.outputs)
    with tracker(tmp_path) as t:
        assert t.step(model(dtype), 0) is not None


def test_a_model_of_mixed_dtypes_fails_clearly(tmp_path):
    mixed = model()
    mixed[2].double()
    t = tracker(tmp_path)
    with pytest.raises(ValueError, match=r"forward failed on inputs of dtype torch.float32 .*model.to\(dtype\)"):
        t.step(mixed, 0)
    close_reports_the_failed_first_step(t)


def test_distinct_failures_each_warn_once_and_close_reports(tmp_path):
    t = tracker(tmp_path)
    t.step(model(), 0)
    errors = iter([ValueError("first problem"), ValueError("second problem"), ValueError("first problem")])

    def failing(*args, **kwargs):
        raise next(errors)

    t._track = failing  # a fault inside the tracked step
    messages = recorded(lambda: [t.step(model(), s) for s in (1, 2, 3)] + [t.close()])
    problems = [m for m in messages if "could not track step" in m]
    assert len(problems) == 2 and "first problem" in problems[0] and "second problem" in problems[1]
    assert any("1 steps tracked of 4 scheduled, 0 skipped (max_overhead), 3 failed." in m for m in messages)


def test_nothing_tracked_is_reported_loudly(tmp_path):
    t = tracker(tmp_path, schedule=at_steps([100]))
    messages = recorded(lambda: [t.step(model(), s) for s in range(3)] + [t.close()])
    assert any("0 steps tracked of 0 scheduled" in m and "Nothing was tracked" in m for m in messages)


def test_a_restarted_step_counter_warns_once(tmp_path):
    t = tracker(tmp_path)
    messages = recorded(lambda: [t.step(model(), s) for s in (0, 1, 2, 0, 1, 0)])
    t.close()
    backwards = [m for m in messages if "went backwards" in m]
    assert len(backwards) == 1 and "got step 0 after step 2" in backwards[0]
    assert list_steps(tmp_path) == [0, 1, 2]


def test_step_after_close_raises(tmp_path):
    t = tracker(tmp_path)
    t.step(model(), 0)
    t.close()
    with pytest.raises(RuntimeError, match=r"step\(\) called after close\(\)"):
        t.step(model(), 1)
    assert len([f for f in os.listdir(tmp_path) if f.startswith("events.out")]) == 1


def test_probes_are_copied_at_construction(tmp_path):
    x, y = data(), torch.arange(5) % CLASSES
    kept = x.clone()
    t = tracker(tmp_path, x=x, y=y)
    x.add_(100.0)
    y.fill_(2)
    with t:
        t.step(model(), 0)
    res, _ = load_step(step_path(tmp_path, 0))
    want = ct.compute_interactions(model(), kept, TabularPlayers(), target=torch.arange(5) % CLASSES)
    assert torch.equal(res.outputs, want.outputs) and res.targets.tolist() == [0, 1, 2, 0, 1]
