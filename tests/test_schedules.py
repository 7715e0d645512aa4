"""Schedules fire at their documented steps, compose with |, validate and round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from concept_tracker.schedules import Schedule, at_steps, every, log_spaced


def fired(schedule: Schedule, stop: int) -> list[int]:
    return [t for t in range(stop + 1) if schedule(t)]


def test_every_fires_at_multiples_from_zero():
    assert fired(every(4), 13) == [0, 4, 8, 12]
    assert fired(every(1), 3) == [0, 1, 2, 3]
    assert every(5).fires(10) and not every(5).fires(-5)


def test_at_steps_fires_exactly_there():
    schedule = at_steps([9, 2, 2, 0])
    assert schedule.steps == (0, 2, 9)
    assert fired(schedule, 20) == [0, 2, 9]


def test_log_spaced_documented_steps():
    # The example in the log_spaced docstring.
    assert log_spaced(0, 10000, 20).steps == (
        0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100, 167, 278, 464, 774, 1292, 2154, 3594, 5995, 10000
    )


@pytest.mark.parametrize("start, stop, num", [(0, 10000, 20), (1, 500, 7), (10, 10**6, 13), (0, 1, 2)])
def test_log_spaced_is_geometric_dense_early_and_includes_both_ends(start, stop, num):
    steps = log_spaced(start, stop, num).steps
    assert steps[0] == start and steps[-1] == stop
    assert len(steps) == num  # these ranges are wide enough for no duplicates
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))  # gaps never shrink: dense early


def test_log_spaced_deduplicates_short_ranges():
    assert log_spaced(0, 10, 50).steps == tuple(range(11))
    assert log_spaced(5, 5, 3).steps == (5,)
    assert log_spaced(7, 100, 1).steps == (7,)


def test_union_fires_when_any_part_fires():
    schedule = log_spaced(0, 1000, 8) | every(500) | at_steps([7])
    assert fired(schedule, 1000) == [0, 1, 3, 7, 10, 32, 100, 316, 500, 1000]
    assert repr(schedule) == "log_spaced(0, 1000, 8) | every(500) | at_steps([7])"


def test_config_round_trip_through_json():
    schedule = log_spaced(0, 100, 5) | (every(30) | at_steps([4, 77]))
    config = json.loads(json.dumps(schedule.to_config()))
    again = Schedule.from_config(config)
    assert again.to_config() == schedule.to_config()
    assert fired(again, 200) == fired(schedule, 200)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: every(0), "n"),
        (lambda: every(2.5), "n"),
        (lambda: every(True), "n"),
        (lambda: at_steps([3, -1]), r"steps\[1\]"),
        (lambda: log_spaced(-1, 10, 3), "start"),
        (lambda: log_spaced(10, 5, 3), "stop"),
        (lambda: log_spaced(0, 10, 0), "num"),
    ],
)
def test_bad_arguments_name_the_parameter(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_numpy_and_tensor_integers_are_steps():
    schedule = log_spaced(np.int64(0), np.int32(100), np.int64(5)) | every(np.int64(30)) | at_steps(np.array([4, 77]))
    plain = log_spaced(0, 100, 5) | every(30) | at_steps([4, 77])
    assert json.dumps(schedule.to_config()) == json.dumps(plain.to_config())
    assert [int(t) for t in np.arange(201) if schedule(t)] == fired(plain, 200)
    assert [t for t in range(201) if schedule(torch.tensor(t))] == fired(plain, 200)


def test_from_config_rejects_unknown_types():
    with pytest.raises(ValueError, match="config"):
        Schedule.from_config({"type": "weekly"})


def test_or_with_a_non_schedule_is_a_type_error():
    with pytest.raises(TypeError):
        every(2) | 3


def test_a_finite_schedule_knows_its_last_step():
    assert log_spaced(0, 1000, 8).last_step() == 1000
    assert (at_steps([7, 3]) | log_spaced(0, 100, 4)).last_step() == 100
    assert every(5).last_step() is None and (every(5) | at_steps([3])).last_step() is None
