"""Probe sets: the seeded, stratified draw, the checks at construction and the saved form."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from concept_tracker.players import TabularPlayers, TokenPlayers
from concept_tracker.probes import (
    ProbeSet,
    heldout_set,
    legacy_probes,
    probe_from_state,
    probe_set,
    probe_state,
    select_probes,
)


def test_select_probes_is_stratified_seeded_and_leaves_rng_alone():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    x = torch.arange(100.0)[:, None]
    state = torch.get_rng_state()
    probes = select_probes(x, 20, labels=labels, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.bincount(probes.labels).tolist() == [12, 6, 2]
    assert probes.ids == sorted(probes.ids) and torch.equal(probes.inputs[:, 0].long(), torch.tensor(probes.ids))
    assert select_probes(x, 20, labels=labels, seed=3).ids == probes.ids
    assert select_probes(x, 20, labels=labels, seed=4).ids != probes.ids


def test_select_probes_from_datasets_and_dicts():
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(96) % 3
    probes = select_probes(TensorDataset(x, y), 12, seed=0)
    assert probes.inputs.shape == (12, 6) and torch.equal(probes.labels, y[probes.ids])
    assert torch.bincount(probes.labels, minlength=3).tolist() == [4, 4, 4]
    batch = {"input_ids": torch.arange(40).reshape(10, 4), "attention_mask": torch.ones(10, 4)}
    picked = select_probes(batch, 3, seed=1)
    assert picked.labels is None and torch.equal(picked.inputs["input_ids"], batch["input_ids"][picked.ids])
    with pytest.raises(ValueError, match="k=11"):
        select_probes(batch, 11)


def test_probe_set_normalizes_labels_and_checks_sizes():
    probes = probe_set(ProbeSet(torch.zeros(3, 2), [0, 2, 1], ids=(5, 6, 7)))
    assert probes.labels.dtype == torch.int64 and probes.labels.tolist() == [0, 2, 1] and probes.ids == [5, 6, 7]
    assert probe_set((torch.zeros(3, 2), [0, 2, 1])).labels.tolist() == [0, 2, 1]  # a plain tuple
    alone = probe_set(torch.zeros(3, 2))  # the inputs alone
    assert torch.equal(alone.inputs, probes.inputs) and alone.labels is None and alone.ids is None
    with pytest.raises(ValueError, match="probes labels has 2 entries for 3 samples"):
        probe_set((torch.zeros(3, 2), [0, 1]))
    with pytest.raises(ValueError, match="heldout has 1 ids for 3 samples"):
        probe_set(ProbeSet(torch.zeros(3, 2), None, [0]), "heldout")
    with pytest.raises(ValueError, match="probes: inputs is a scalar"):
        probe_set(torch.tensor(1.0))


def test_heldout_set_needs_aligned_players():
    assert heldout_set(TabularPlayers(), None) is None
    ids = {"input_ids": torch.ones(2, 6, dtype=torch.long)}
    with pytest.raises(ValueError, match="aligned"):
        heldout_set(TokenPlayers(n=3), ids)


def test_legacy_probe_keywords_fold_into_probe_sets():
    x, y = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    legacy = {"probe_ids": [4, 5, 6], "heldout_inputs": x, "heldout_targets": y}
    probes, heldout, moved = legacy_probes(x, y, legacy)  # y: the old positional probe_targets
    assert legacy == {} and len(moved) == 4
    assert probes.inputs is x and probes.labels is y and probes.ids == [4, 5, 6]
    assert heldout.inputs is x and heldout.labels is y and heldout.ids is None
    # A third positional argument of the probes' rank is held-out inputs, not targets.
    assert legacy_probes(x, x, {})[1] is x
    with pytest.raises(ValueError, match="without heldout_inputs"):
        legacy_probes(x, None, {"heldout_targets": y})
    with pytest.raises(ValueError, match="probe_targets repeats"):
        legacy_probes(ProbeSet(x, y), None, {"probe_targets": y})


def test_saved_form_round_trips():
    probes = ProbeSet(torch.arange(6.0).reshape(3, 2), torch.tensor([1, 0, 1]), [4, 8, 9])
    state = probe_state(probes)
    assert set(state) == {"inputs", "targets", "ids"}  # the tracker state format
    back = probe_from_state(state)
    assert (
        torch.equal(back.inputs, probes.inputs) and torch.equal(back.labels, probes.labels) and back.ids == probes.ids
    )
    assert probe_state(None) is None and probe_from_state(None) is None
