"""Raw interactions and tracker state round-trip through safetensors; bad files fail clearly."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from concept_tracker.interactions import Interactions
from concept_tracker.store import (
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
    """Files written before the settings were stored: same format, three keys fewer."""
    res = make_result("and")
    path = save_step(tmp_path, 9, res, probe_ids=[1, 2], ratio=0.1)
    with safe_open(str(path), framework="pt") as fh:
        raw = {k: v for k, v in fh.metadata().items() if k not in ("ratio", "simple_max", "complex_min", "baseline")}
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    save_file(tensors, str(path), metadata=raw)
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
