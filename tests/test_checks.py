"""The shared argument checks: each names the parameter, the value received and the fix."""

from __future__ import annotations

import pytest

from concept_tracker.checks import (
    check_band_cutoffs,
    check_fraction,
    check_int,
    check_kind,
    check_players,
    check_schedule,
    check_type,
)
from concept_tracker.players import TabularPlayers
from concept_tracker.schedules import every


def test_valid_values_pass_through():
    players, schedule = TabularPlayers(), every(3)
    assert check_players(players) is players and check_schedule(schedule) is schedule
    assert check_schedule(None) is None and check_kind("and_or") == "and_or"
    assert check_int("n", 3) == 3 and check_int("n", None, optional=True) is None and check_int("n", 0, 0) == 0
    assert check_fraction("f", 0.5) == 0.5 and check_fraction("f", None) is None
    assert check_type("t", None, int, "an int") is None and check_type("t", 4, int, "an int") == 4
    check_band_cutoffs(None, None)
    check_band_cutoffs(0, 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_players("tabular"), "players has type str; pass a concept_tracker player kind"),
        (lambda: check_schedule(10), r"schedule has type int; pass every\(n\)"),
        (lambda: check_kind("xor"), r"kind='xor'; use one of \['and', 'or', 'and_or'\]"),
        (lambda: check_int("batch_size", 0, optional=True), "batch_size=0 must be an int >= 1 or None"),
        (lambda: check_int("num_probe", True), "num_probe=True must be an int >= 1"),
        (lambda: check_int("patience", -1, 0, unit="tracked steps"), r"patience=-1 must be an int >= 0 \(tracked steps\)"),
        (lambda: check_fraction("max_overhead", 1.0), r"max_overhead=1.0 must be None or a fraction in \(0, 1\)"),
        (lambda: check_fraction("max_overhead", True), "max_overhead=True"),
        (lambda: check_type("writer", "runs", dict, "a dict"), "writer has type str; pass a dict"),
        (lambda: check_band_cutoffs(2, 2), "simple_max=2 is not below complex_min=2"),
        (lambda: check_band_cutoffs(-1, None), "simple_max=-1 must be an int >= 0"),
        (lambda: check_band_cutoffs(None, 1.5), "complex_min=1.5 must be an int >= 1"),
    ],
)
def test_bad_values_name_parameter_value_and_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()
