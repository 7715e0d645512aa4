"""Raw interactions and tracker state round-trip through safetensors; bad files fail clearly."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from concept_tracker.interactions import Interactions
from concept_tracker.store import (
    CHECKSUM,
    FORMAT,
    list_steps,
    load_state,
    load_step,
    load_step_metadata,
    save_state,
    save_step,
    step_path,
    stored_baseline,
    tracked_settings,
)


def rewrite_metadata(path, drop=(), **changes):
    """Re-save a stored file with the same tensors, its metadata keys ``drop`` left out and
    ``changes`` set, as a tool that edits files would (the checksum is not recomputed)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = {k: v for k, v in fh.metadata().items() if k not in drop}
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    save_file(tensors, str(path), metadata={**meta, **changes})


def make_result(kind: str, n: int = 3, samples: int = 2) -> Interactions:
    gen = torch.Generator().manual_seed(0)

    def rand() -> torch.Tensor:
        return torch.randn(samples, 1 << n, generator=gen, dtype=torch.float64)

    return Interactions(
        outputs=rand(),
        and_effects=rand() if kind in ("and", "and_or") else None,
        or_effects=rand() if kind in ("or", "and_or") else None,
        gamma=rand() if kind == "and_or" else None,
        q=rand() if kind == "and_or" else None,
        n=n,
        kind=kind,
        targets=torch.tensor([1, 0]),
        value="log_odds",
        player_names=[[f"p{i}" for i in range(n)], ["not", "very", "good"]],
        aligned=False,
    )


@pytest.mark.parametrize("kind", ["and", "or", "and_or"])
def test_step_round_trip(tmp_path, kind):
    res = make_result(kind)
    path = save_step(tmp_path, 42, res, probe_ids=[7, "doc-3"])
    assert path == tmp_path / "interactions" / "step_00000042.safetensors"
    loaded, meta = load_step(path)
    for name in ("outputs", "and_effects", "or_effects", "gamma", "q", "targets"):
        want, got = getattr(res, name), getattr(loaded, name)
        assert (want is None and got is None) or torch.equal(want, got), name
    assert (loaded.n, loaded.kind, loaded.value, loaded.aligned) == (3, kind, "log_odds", False)
    assert loaded.player_names == res.player_names
    assert meta["step"] == 42 and meta["probe_ids"] == [7, "doc-3"] and meta["split"] == "probe"


def test_metadata_is_plain_for_other_readers(tmp_path):
    path = save_step(tmp_path, 3, make_result("and"))
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        assert sorted(fh.keys()) == ["and_effects", "outputs", "targets"]
        assert fh.get_tensor("outputs").shape == (2, 8)
    assert meta["n"] == "3" and meta["kind"] == "and" and meta["step"] == "3"
    assert meta["probe_ids"] == "null"
    assert meta["player_names"] == '[["p0", "p1", "p2"], ["not", "very", "good"]]'


def test_tracked_settings_round_trip(tmp_path):
    path = save_step(tmp_path, 5, make_result("and_or"), ratio=0.1, simple_max=1, complex_min=3)
    _, meta = load_step(path)
    assert tracked_settings(meta) == {"ratio": 0.1, "simple_max": 1, "complex_min": 3}
    assert load_step_metadata(path) == meta
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata()
    # Plain JSON beside the other keys, so any safetensors client can read them.
    assert (raw["ratio"], raw["simple_max"], raw["complex_min"]) == ("0.1", "1", "3")
    assert raw["format"] == FORMAT and raw["step"] == "5" and raw["kind"] == "and_or"


def test_default_bands_are_recorded_as_null_and_a_missing_ratio_as_unknown(tmp_path):
    _, meta = load_step(save_step(tmp_path, 0, make_result("and"), ratio=0.05))
    assert tracked_settings(meta) == {"ratio": 0.05, "simple_max": None, "complex_min": None}
    _, meta = load_step(save_step(tmp_path, 1, make_result("and"), simple_max=1))
    assert meta["ratio"] is None and meta["simple_max"] == 1
    assert tracked_settings(meta) is None


def test_file_without_settings_still_loads(tmp_path):
    """Files written before the settings (and checksums) were stored: the first format, five keys fewer."""
    res = make_result("and")
    path = save_step(tmp_path, 9, res, probe_ids=[1, 2], ratio=0.1)
    dropped = ("ratio", "simple_max", "complex_min", "baseline", "run", CHECKSUM)
    rewrite_metadata(path, drop=dropped, format="concept-tracker/interactions/1")
    loaded, meta = load_step(path)
    assert torch.equal(loaded.and_effects, res.and_effects) and meta["probe_ids"] == [1, 2]
    assert not {"ratio", "simple_max", "complex_min", "baseline"} & set(meta)
    assert tracked_settings(meta) is None and load_step_metadata(path) == meta
    assert stored_baseline(meta) is None


def test_baseline_is_recorded(tmp_path):
    path = save_step(tmp_path, 2, make_result("and"), baseline="mean (fit on 500 samples)")
    _, meta = load_step(path)
    assert stored_baseline(meta) == "mean (fit on 500 samples)"
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["baseline"] == '"mean (fit on 500 samples)"'
    _, meta = load_step(save_step(tmp_path, 3, make_result("and")))
    assert meta["baseline"] is None and stored_baseline(meta) is None


def test_list_steps_per_split(tmp_path):
    res = make_result("and")
    for step in (100, 0, 7):
        save_step(tmp_path, step, res)
    save_step(tmp_path, 7, res, split="heldout")
    (tmp_path / "interactions" / "notes.txt").write_text("not a step")
    assert list_steps(tmp_path) == [0, 7, 100]
    assert list_steps(tmp_path, split="heldout") == [7]
    assert list_steps(tmp_path / "elsewhere") == []
    assert step_path(tmp_path, 7, "heldout") == tmp_path / "interactions" / "heldout" / "step_00000007.safetensors"
    assert not [p for p in (tmp_path / "interactions").iterdir() if p.name.startswith(".")]  # no temp files


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "interactions" / "step_00000001.safetensors"
    with pytest.raises(FileNotFoundError, match="step_00000001"):
        load_step(path)


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_file_names_the_path(tmp_path, keep):
    path = save_step(tmp_path, 1, make_result("and"))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="step_00000001.safetensors is truncated"):
        load_step(path)


def test_foreign_safetensors_file_is_rejected(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="weights.safetensors is a safetensors file but not"):
        load_step(path)
    with pytest.raises(ValueError, match="not a concept-tracker state file"):
        load_state(path)


def test_probe_ids_must_match_samples(tmp_path):
    with pytest.raises(ValueError, match="probe_ids has 3 entries"):
        save_step(tmp_path, 0, make_result("and"), probe_ids=[1, 2, 3])


def test_bad_split_names_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="split='test'"):
        save_step(tmp_path, 0, make_result("and"), split="test")


def test_state_round_trip(tmp_path):
    base = torch.arange(10.0)
    state = {
        "version": 1,
        "probe": {"inputs": {"input_ids": torch.ones(2, 5, dtype=torch.int64)}, "ids": [3, 9], "targets": None},
        "flags": torch.tensor([True, False]),
        "views": [base[:3], base[2:6]],  # overlapping views of one storage
        "nested": [[1.5, "x", None], {"deep": torch.zeros(0, 3, dtype=torch.int8)}],
        "nan": math.nan,
        "pair": (1, 2),
    }
    loaded = load_state(save_state(tmp_path / "ckpt" / "tracker.safetensors", state))
    assert torch.equal(loaded["probe"]["inputs"]["input_ids"], state["probe"]["inputs"]["input_ids"])
    assert loaded["probe"]["ids"] == [3, 9] and loaded["probe"]["targets"] is None
    assert loaded["flags"].dtype == torch.bool and torch.equal(loaded["flags"], state["flags"])
    assert torch.equal(loaded["views"][1], base[2:6])
    assert loaded["nested"][0] == [1.5, "x", None]
    assert loaded["nested"][1]["deep"].shape == (0, 3) and loaded["nested"][1]["deep"].dtype == torch.int8
    assert math.isnan(loaded["nan"]) and loaded["pair"] == [1, 2]


def test_state_rejects_what_json_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"state key state\['a'\]\[3\] is not a string"):
        save_state(tmp_path / "s.safetensors", {"a": {3: 1}})
    with pytest.raises(ValueError, match=r"state entry state\['f'\] is a function"):
        save_state(tmp_path / "s.safetensors", {"f": lambda: 0})


def test_truncated_state_names_the_path(tmp_path):
    path = save_state(tmp_path / "tracker.safetensors", {"t": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="tracker.safetensors is truncated"):
        load_state(path)


# ---------------------------------------------------------------- checksums


def flip_byte(path, offset_from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_tensor_byte_in_a_step_file_names_the_file(tmp_path):
    path = save_step(tmp_path, 1, make_result("and_or"))
    load_step(path)
    flip_byte(path)  # the tensor data sits at the end of a safetensors file
    with pytest.raises(ValueError, match="step_00000001.safetensors is damaged: its sha256 checksum"):
        load_step(path)


def test_flipped_tensor_byte_in_a_state_file_names_the_file(tmp_path):
    path = save_state(tmp_path / "tracker.safetensors", {"t": torch.arange(16.0), "step": 3})
    flip_byte(path, 20)
    with pytest.raises(ValueError, match="tracker.safetensors is damaged"):
        load_state(path)


def test_edited_metadata_fails_the_checksum(tmp_path):
    path = save_step(tmp_path, 2, make_result("and"))
    rewrite_metadata(path, step="3")
    with pytest.raises(ValueError, match="step_00000002.safetensors is damaged"):
        load_step(path)


def test_a_step_file_resaved_without_its_checksum_is_refused(tmp_path):
    path = save_step(tmp_path, 2, make_result("and"), run="a1")
    rewrite_metadata(path, drop=(CHECKSUM,))
    for read in (load_step, load_step_metadata):
        with pytest.raises(ValueError, match=f"step_00000002.safetensors has no {CHECKSUM} checksum"):
            read(path)


@pytest.mark.parametrize("copy", ["step", "split"])
def test_a_step_file_copied_over_another_is_refused(tmp_path, copy):
    """The step and split a file holds are inside it, under its checksum: a byte copy under
    another step's name (or into the other split's folder) is not read as that step."""
    source = save_step(tmp_path, 2, make_result("and"), run="a1")
    target = step_path(tmp_path, 3) if copy == "step" else step_path(tmp_path, 2, "heldout")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    want = "holds step 2" if copy == "step" else "holds the probe split"
    for read in (load_step, load_step_metadata):
        with pytest.raises(ValueError, match=f"{target.name} {want}.*copied"):
            read(target)
    assert load_step(source)[1]["step"] == 2


def test_step_files_carry_their_step_and_run(tmp_path):
    path = save_step(tmp_path, 7, make_result("and"), run="0123abcd")
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata()
    assert raw["step"] == "7" and raw["run"] == '"0123abcd"' and len(raw[CHECKSUM]) == 64


def test_checksum_is_stable_and_state_without_one_still_loads(tmp_path):
    first = save_step(tmp_path / "a", 4, make_result("and"))
    second = save_step(tmp_path / "b", 4, make_result("and"))
    with safe_open(str(first), framework="pt") as fa, safe_open(str(second), framework="pt") as fb:
        assert len(fa.metadata()[CHECKSUM]) == 64 and fa.metadata()[CHECKSUM] == fb.metadata()[CHECKSUM]
    path = tmp_path / "old.safetensors"
    save_file({"t0": torch.ones(3)}, str(path), metadata={"format": "concept-tracker/state/1", "state": '{"x": {"__tensor__": "t0"}}'})
    assert torch.equal(load_state(path)["x"], torch.ones(3))


# ---------------------------------------------------------------- atomic writes


def failing_replace(src, dst):
    raise OSError(28, "No space left on device (simulated)")


def test_failed_rename_leaves_no_step_file_and_no_temp_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        save_step(tmp_path, 6, make_result("and"))
    assert not step_path(tmp_path, 6).exists()
    assert list((tmp_path / "interactions").iterdir()) == []


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    old = make_result("and")
    path = save_step(tmp_path, 6, old)
    before = path.read_bytes()
    new = make_result("and", samples=2)
    new.outputs.add_(1.0)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        save_step(tmp_path, 6, new)
    with pytest.raises(OSError, match="simulated"):
        save_state(tmp_path / "tracker.safetensors", {"x": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before and torch.equal(load_step(path)[0].outputs, old.outputs)
    assert not (tmp_path / "tracker.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "interactions").iterdir()) == [path.name]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def dead_pid() -> int:
    for pid in range(2**22 - 1, 2**21, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    pytest.fail("no unused process id found")


def test_stale_temporary_files_are_removed_by_the_next_save(tmp_path):
    folder = tmp_path / "interactions"
    folder.mkdir()
    past = time.time() - 3600
    stale = [folder / f".step_00000003.safetensors.{os.getpid()}.tmp", folder / f".step_00000004.safetensors.{dead_pid()}.tmp"]
    # A save in flight in another live process, and a file that is not ours at all.
    live = folder / f".step_00000005.safetensors.{os.getppid()}.tmp"
    other = folder / "notes.tmp"
    for path in [*stale, live, other]:
        path.write_bytes(b"x" * 1000)
    for path in [*stale, other]:
        os.utime(path, (past, past))
    save_step(tmp_path, 1, make_result("and"))
    assert sorted(p.name for p in folder.iterdir()) == sorted([live.name, other.name, "step_00000001.safetensors"])
    state_dir = tmp_path / "ckpt"
    state_dir.mkdir()
    leftover = state_dir / f".tracker.safetensors.{os.getpid()}.tmp"
    leftover.write_bytes(b"x")
    os.utime(leftover, (past, past))
    save_state(state_dir / "tracker.safetensors", {"x": 1})
    assert [p.name for p in state_dir.iterdir()] == ["tracker.safetensors"]


# ---------------------------------------------------------------- integer types


def test_numpy_integers_as_steps_ids_and_settings(tmp_path):
    res = make_result("and")
    for step in np.arange(2, 4):
        path = save_step(tmp_path, step, res, probe_ids=list(np.array([7, 9])), ratio=np.float32(0.25), simple_max=np.int64(1))
        assert path == step_path(tmp_path, int(step))
    assert list_steps(tmp_path) == [2, 3]
    _, meta = load_step(step_path(tmp_path, np.int32(3)))
    assert meta["step"] == 3 and meta["probe_ids"] == [7, 9]
    assert tracked_settings(meta) == {"ratio": 0.25, "simple_max": 1, "complex_min": None}
    save_step(tmp_path, torch.tensor(8), res)
    assert list_steps(tmp_path) == [2, 3, 8]
    state = load_state(save_state(tmp_path / "s.safetensors", {"step": np.int64(5), "lr": np.float32(0.5), "ok": np.bool_(True)}))
    assert state == {"step": 5, "lr": 0.5, "ok": True} and type(state["step"]) is int


@pytest.mark.parametrize("step", [-1, 2.0, "3", True, None])
def test_bad_step_names_the_parameter(tmp_path, step):
    with pytest.raises(ValueError, match="step="):
        save_step(tmp_path, step, make_result("and"))


# ---------------------------------------------------------------- sampled spectrum files


def spectrum_file(folder, step: int = 2, run: str | None = "a1"):
    """A sampled order spectrum of 2 samples of a 4-player model, saved at ``step``."""
    import concept_tracker as ct
    from concept_tracker.store import save_spectrum

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    spectrum = ct.order_spectrum(model, x, ct.TabularPlayers(baselines="zero"), forwards_per_probe=12)
    return save_spectrum(folder, step, spectrum, run=run)


def test_spectrum_files_carry_their_step_run_and_checksum(tmp_path):
    from concept_tracker.store import list_spectra, load_spectrum, load_spectrum_metadata

    path = spectrum_file(tmp_path, 7, run="0123abcd")
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata()
    assert raw["step"] == "7" and raw["run"] == "0123abcd" and len(raw[CHECKSUM]) == 64
    tensors, meta = load_spectrum(path)
    assert meta["step"] == 7 and meta["run"] == "0123abcd" and CHECKSUM not in meta
    assert load_spectrum_metadata(path) == meta and tensors["strength"].shape == (2, 5)
    assert load_spectrum(spectrum_file(tmp_path, 8, run=None))[1]["run"] is None
    assert list_spectra(tmp_path) == [7, 8] and list_steps(tmp_path) == []


def test_a_damaged_spectrum_file_names_the_file(tmp_path):
    from concept_tracker.store import load_spectrum

    path = spectrum_file(tmp_path)
    flip_byte(path)
    with pytest.raises(ValueError, match="spectrum/step_00000002.safetensors is damaged: its sha256 checksum"):
        load_spectrum(path)


def test_a_spectrum_file_with_edited_metadata_fails_the_checksum(tmp_path):
    from concept_tracker.store import load_spectrum

    path = spectrum_file(tmp_path)
    rewrite_metadata(path, run="b2")
    with pytest.raises(ValueError, match="step_00000002.safetensors is damaged"):
        load_spectrum(path)


def test_a_truncated_spectrum_file_names_the_file(tmp_path):
    from concept_tracker.store import load_spectrum

    path = spectrum_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="spectrum/step_00000002.safetensors is truncated"):
        load_spectrum(path)


def test_a_spectrum_file_resaved_without_its_checksum_is_refused(tmp_path):
    from concept_tracker.store import load_spectrum, load_spectrum_metadata

    path = spectrum_file(tmp_path)
    rewrite_metadata(path, drop=(CHECKSUM,))
    for read in (load_spectrum, load_spectrum_metadata):
        with pytest.raises(ValueError, match=f"step_00000002.safetensors has no {CHECKSUM} checksum.*Restore it"):
            read(path)


def test_a_spectrum_file_copied_over_another_step_is_refused(tmp_path):
    from concept_tracker.store import load_spectrum, load_spectrum_metadata, spectrum_path

    source = spectrum_file(tmp_path)
    target = spectrum_path(tmp_path, 3)
    target.write_bytes(source.read_bytes())
    for read in (load_spectrum, load_spectrum_metadata):
        with pytest.raises(ValueError, match="step_00000003.safetensors holds the sampled spectrum of step 2.*copied"):
            read(target)
    assert load_spectrum(source)[1]["step"] == 2


def test_files_of_the_other_kind_are_refused_both_ways(tmp_path):
    from concept_tracker.store import load_spectrum, spectrum_path

    step_file = save_step(tmp_path, 2, make_result("and"), run="a1")
    spectrum_path(tmp_path, 2).parent.mkdir(parents=True, exist_ok=True)
    spectrum_path(tmp_path, 2).write_bytes(step_file.read_bytes())
    with pytest.raises(ValueError, match="spectrum/step_00000002.safetensors is not a sampled order spectrum file"):
        load_spectrum(spectrum_path(tmp_path, 2))
    step_file.write_bytes(spectrum_file(tmp_path / "other").read_bytes())
    with pytest.raises(ValueError, match="not a concept-tracker interactions file"):
        load_step(step_file)
