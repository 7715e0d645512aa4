"""Value functions against float64 references computed independently with math."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from concept_tracker.values import (
    log_odds,
    log_prob,
    logit,
    model_logits,
    output,
    predicted_targets,
    resolve_value,
)

LOGITS = torch.tensor([[0.3, -1.2, 2.0, 0.0], [1.5, 1.5, -0.5, 4.0], [-3.0, 0.7, 0.1, -0.2]])
TARGETS = torch.tensor([2, 0, 1])


def reference_log_odds(z: list[float], y: int) -> float:
    """log(p / (1 - p)) with p = softmax(z)_y, in Python floats (fine for moderate logits)."""
    exps = [math.exp(v) for v in z]
    p = exps[y] / sum(exps)
    return math.log(p / (1.0 - p))


def reference_log_prob(z: list[float], y: int) -> float:
    return math.log(math.exp(z[y]) / sum(math.exp(v) for v in z))


def test_log_odds_matches_probability_definition():
    got = log_odds(LOGITS, TARGETS)
    expected = [reference_log_odds(z, y) for z, y in zip(LOGITS.double().tolist(), TARGETS.tolist())]
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_log_odds_in_float64_is_exact():
    got = log_odds(LOGITS.double(), TARGETS)
    assert got.dtype == torch.float64
    expected = [reference_log_odds(z, y) for z, y in zip(LOGITS.double().tolist(), TARGETS.tolist())]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_log_odds_is_stable_where_softmax_saturates():
    z = torch.tensor([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]])
    y = torch.tensor([0, 1, 0])
    # p saturates to 1 or 0 in any float type, so log(p/(1-p)) is inf; the exact values are
    # z_y - log(sum_{k != y} exp z_k): 1000 - log(e^-1000 + 1) = 1000 (to double precision),
    # -1000 - 1000 - log(1 + e^-1000) = -2000, and -1000 - 1000 = -2000.
    naive = torch.log(torch.softmax(z, 1)[:, 0] / (1 - torch.softmax(z, 1)[:, 0]))
    assert not torch.isfinite(naive).all()
    got = log_odds(z, y)
    assert torch.isfinite(got).all()
    assert got.tolist() == [1000.0, -2000.0, -2000.0]


@pytest.mark.parametrize("bad", [4, -1])
def test_log_odds_rejects_a_class_outside_the_logits(bad):
    # Row 0's class 4 would be row 1's class 0 in the flattened logits: it must not be read.
    with pytest.raises(ValueError, match="4 logits per row"):
        log_odds(LOGITS, torch.tensor([bad, 0, 1]))


def test_binary_one_logit_is_signed_logit():
    z = torch.tensor([0.5, -2.0, 3.0])
    y = torch.tensor([1, 1, 0])
    # One logit z means p(1) = sigmoid(z): log-odds z for class 1 and -z for class 0.
    expected = []
    for v, t in zip(z.tolist(), y.tolist()):
        p1 = 1 / (1 + math.exp(-v))
        p = p1 if t == 1 else 1 - p1
        expected.append(math.log(p / (1 - p)))
    for shaped in (z, z[:, None]):
        torch.testing.assert_close(log_odds(shaped, y).double(), torch.tensor(expected, dtype=torch.float64))
        torch.testing.assert_close(logit(shaped, y), torch.tensor([0.5, -2.0, -3.0]))
        torch.testing.assert_close(
            log_prob(shaped, y).double(), torch.tensor([math.log(1 / (1 + math.exp(-v))) for v in [0.5, -2.0, -3.0]], dtype=torch.float64)
        )


def test_sequence_logits_use_the_last_position():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 4, generator=g)
    torch.testing.assert_close(log_odds(z, TARGETS), log_odds(z[:, -1], TARGETS), rtol=0, atol=0)
    torch.testing.assert_close(log_odds(z, TARGETS, position=1), log_odds(z[:, 1], TARGETS), rtol=0, atol=0)
    assert not torch.equal(log_odds(z, TARGETS), log_odds(z[:, 0], TARGETS))


def test_logit_and_log_prob():
    rows = LOGITS.double().tolist()
    assert logit(LOGITS, TARGETS).tolist() == [2.0, 1.5, 0.699999988079071]
    expected = [reference_log_prob(z, y) for z, y in zip(rows, TARGETS.tolist())]
    torch.testing.assert_close(log_prob(LOGITS, TARGETS).double(), torch.tensor(expected, dtype=torch.float64))


class WithLogits:
    def __init__(self, logits):
        self.logits = logits


@pytest.mark.parametrize(
    "wrap",
    [lambda z: z, lambda z: (z, "hidden"), lambda z: [z], lambda z: WithLogits(z), lambda z: {"logits": z}, lambda z: SimpleNamespace(logits=z, loss=None)],
    ids=["tensor", "tuple", "list", "attribute", "mapping", "namespace"],
)
def test_output_containers(wrap):
    assert torch.equal(model_logits(wrap(LOGITS)), LOGITS)
    assert torch.equal(log_odds(wrap(LOGITS), TARGETS), log_odds(LOGITS, TARGETS))


def test_half_precision_logits_are_upcast():
    got = log_odds(LOGITS.half(), TARGETS)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, log_odds(LOGITS.half().float(), TARGETS), rtol=0, atol=0)


def test_output_value_and_predictions():
    assert output(torch.tensor([[1.0], [2.0]])).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match='value="output"'):
        output(LOGITS)
    assert predicted_targets(LOGITS).tolist() == [2, 3, 1]
    assert predicted_targets(torch.tensor([[0.2], [-0.1]])).tolist() == [1, 0]


def test_resolve_value():
    assert resolve_value("log_odds") is log_odds
    custom = lambda outputs, target: outputs.sum(1)  # noqa: E731
    assert resolve_value(custom) is custom
    with pytest.raises(ValueError, match="value='odds'"):
        resolve_value("odds")


def test_unreadable_outputs():
    with pytest.raises(ValueError, match="logits"):
        model_logits("not logits")
    with pytest.raises(ValueError, match="shape"):
        model_logits(torch.zeros(2, 3, 4, 5))
