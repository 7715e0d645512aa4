"""compute_interactions against planted answers and against forwards masked by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from models import VOCAB, Max, NaNAt, Noisy, Product, Sum, cnn, mlp, tiny_bert, wordpiece_tokenizer
from oracles import brute_and, brute_and_matching, brute_or, brute_or_matching, popcount

import concept_tracker as ct
from concept_tracker.players import Players


def keep_matrix(n: int) -> torch.Tensor:
    """[2**n, n] bool, row s = bits of s, written out without the library's helper."""
    return torch.tensor([[bool(s >> i & 1) for i in range(n)] for s in range(1 << n)])


def reference_log_odds(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of the target class, in float64 (the logits here are moderate)."""
    p = torch.softmax(logits.double(), dim=-1).gather(-1, targets[..., None])[..., 0]
    return torch.log(p) - torch.log1p(-p)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- planted models

# Dyadic inputs: every sum and product below is exact in float32.
XP = torch.tensor([[1.5, -2.25, 3.0, 0.5], [0.75, 4.0, -1.0, 2.0]])


def zero_baseline_players() -> ct.TabularPlayers:
    return ct.TabularPlayers(baselines="zero")


def test_product_has_only_the_pair():
    res = ct.compute_interactions(Product(), XP, zero_baseline_players(), value="output")
    expected = torch.zeros(2, 16, dtype=torch.float64)
    expected[:, 0b0011] = (XP[:, 0] * XP[:, 1]).double()
    assert torch.equal(res.and_effects, expected)
    assert res.or_effects is None and res.kind == "and" and res.n == 4 and res.targets is None


def test_sum_has_only_singletons():
    res = ct.compute_interactions(Sum(), XP, zero_baseline_players(), value="output")
    expected = torch.zeros(2, 16, dtype=torch.float64)
    expected[:, 0b0001] = XP[:, 0].double()
    expected[:, 0b0010] = XP[:, 1].double()
    assert torch.equal(res.and_effects, expected)


def test_max_is_one_or_interaction():
    x = torch.ones(2, 3)
    res = ct.compute_interactions(Max(), x, zero_baseline_players(), value="output", kind="or")
    expected = torch.zeros(2, 8, dtype=torch.float64)
    expected[:, 0b011] = 1.0
    assert torch.equal(res.or_effects, expected)
    assert res.and_effects is None and res.kind == "or"
    # The same game seen through AND needs three terms.
    res_and = ct.compute_interactions(Max(), x, zero_baseline_players(), value="output")
    assert res_and.and_effects[0].tolist() == [0.0, 1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- real models vs hand masking


@pytest.fixture(scope="module")
def mlp_case():
    model = mlp(d_in=6, hidden=16, classes=3, seed=1)
    x = torch.randn(4, 6, generator=gen(1))
    res = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="mean"))
    return model, x, res


def test_mlp_values_and_effects_match_brute_force(mlp_case):
    model, x, res = mlp_case
    keep = keep_matrix(6)
    rows = torch.where(keep[None], x[:, None, :], x.mean(0))  # [4, 64, 6]
    with torch.no_grad():
        targets = model(x).argmax(1)
        v = reference_log_odds(model(rows), targets[:, None].expand(4, 64))
    assert torch.equal(res.targets, targets)
    torch.testing.assert_close(res.outputs, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.and_effects, brute_and(res.outputs), rtol=0, atol=1e-10)
    torch.testing.assert_close(res.and_effects, brute_and(v), rtol=0, atol=1e-4)
    assert res.orders.tolist() == [popcount(s) for s in range(64)]
    assert res.player_names == [[f"x{i}" for i in range(6)]] * 4


def test_universal_matching_on_model_outputs(mlp_case):
    _, _, res = mlp_case
    torch.testing.assert_close(ct.and_inverse(res.and_effects), res.outputs, rtol=0, atol=1e-10)
    torch.testing.assert_close(brute_and_matching(res.and_effects), res.outputs, rtol=0, atol=1e-10)


def test_or_on_model_outputs(mlp_case):
    model, x, res = mlp_case
    res_or = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="mean"), kind="or")
    assert torch.equal(res_or.outputs, res.outputs)
    torch.testing.assert_close(res_or.or_effects, brute_or(res.outputs), rtol=0, atol=1e-10)
    torch.testing.assert_close(brute_or_matching(res_or.or_effects), res.outputs, rtol=0, atol=1e-10)


def test_cnn_on_image_patches_matches_brute_force():
    model = cnn(classes=10, seed=2)
    x = torch.rand(3, 1, 8, 8, generator=gen(2))
    res = ct.compute_interactions(model, x, ct.ImagePatchPlayers(grid=(2, 3)), batch_size=20)
    # Patch of pixel (h, w) on an 8x8 image with a 2x3 grid: rows 0-3 | 4-7, cols 0-2 | 3-5 | 6-7.
    patch = torch.tensor([[(h // 4) * 3 + (0 if w < 3 else 1 if w < 6 else 2) for w in range(8)] for h in range(8)])
    keep = keep_matrix(6)[:, patch]  # [64, 8, 8]
    # The default baseline is the mean image of the batch analysed.
    rows = torch.where(keep[None, :, None], x[:, None], x.mean(0))  # [3, 64, 1, 8, 8]
    with torch.no_grad():
        targets = model(x).argmax(1)
        v = reference_log_odds(model(rows.reshape(-1, 1, 8, 8)).reshape(3, 64, 10), targets[:, None].expand(3, 64))
    assert torch.equal(res.targets, targets)
    torch.testing.assert_close(res.outputs, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.and_effects, brute_and(res.outputs), rtol=0, atol=1e-10)
    torch.testing.assert_close(ct.and_inverse(res.and_effects), res.outputs, rtol=0, atol=1e-10)


def test_explicit_targets(mlp_case):
    model, x, res = mlp_case
    players = ct.TabularPlayers(baselines="mean")
    targets = torch.tensor([2, 0, 1, 1])
    res_t = ct.compute_interactions(model, x, players, target=targets)
    assert torch.equal(res_t.targets, targets)
    with torch.no_grad():
        full = reference_log_odds(model(x), targets)
    torch.testing.assert_close(res_t.outputs[:, -1], full, rtol=1e-5, atol=1e-5)
    res_int = ct.compute_interactions(model, x, players, target=1)
    assert res_int.targets.tolist() == [1, 1, 1, 1]
    assert torch.equal(res_int.outputs[2], res_t.outputs[2])  # sample 2 has target 1 in both


# ---------------------------------------------------------------- Hugging Face dict inputs

TEXTS = ["the cat is unhappy playing", "a dog runs very sad today ."]
WORDS = [[[1], [2], [3], [4, 5]], [[1], [2], [3, 4], [5]]]  # the first 4 words' token positions


@pytest.fixture(scope="module")
def bert_case():
    tok = wordpiece_tokenizer()
    enc = tok(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=True)
    return tiny_bert(classes=2, seed=3), tok, enc


@pytest.mark.parametrize("with_word_ids", [True, False], ids=["word_ids", "heuristic"])
def test_bert_dict_inputs_match_hand_masking(bert_case, with_word_ids):
    model, tok, enc = bert_case
    inputs = dict(enc)
    if with_word_ids:
        inputs["word_ids"] = ct.word_ids(enc)  # must not reach the model
    res = ct.compute_interactions(model, inputs, ct.TokenPlayers(n=4, tokenizer=tok), batch_size=10)
    mask_id = VOCAB.index("[MASK]")
    with torch.no_grad():
        targets = model(**enc).logits.argmax(1)
        v = torch.empty(2, 16, dtype=torch.float64)
        for b in range(2):
            ids = enc["input_ids"][b].repeat(16, 1)
            for s in range(16):
                for player in range(4):
                    if not s >> player & 1:
                        ids[s, WORDS[b][player]] = mask_id
            logits = model(
                input_ids=ids,
                attention_mask=enc["attention_mask"][b].repeat(16, 1),
                token_type_ids=enc["token_type_ids"][b].repeat(16, 1),
            ).logits
            v[b] = reference_log_odds(logits, targets[b].expand(16))
    assert torch.equal(res.targets, targets)
    torch.testing.assert_close(res.outputs, v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.and_effects, brute_and(res.outputs), rtol=0, atol=1e-10)
    assert res.player_names == [["the", "cat", "is", "unhappy"], ["a", "dog", "runs", "very"]]
    assert res.aligned is False
    assert res.and_effects[:, 1:].abs().max() > 1e-3  # the masks matter: a real test


# ---------------------------------------------------------------- chunking and side effects


def test_chunk_size_does_not_change_results():
    model = mlp(d_in=5, classes=4, seed=4)
    x = torch.randn(3, 5, generator=gen(4))
    players = ct.TabularPlayers(baselines="zero")
    results = [ct.compute_interactions(model, x, players, batch_size=bs) for bs in (1, 7, None)]
    for res in results[1:]:
        # Rows are independent in the model, but BLAS may block a 1-row and a 96-row product
        # differently, so allow float32 rounding in v and its sums in the effects.
        torch.testing.assert_close(res.outputs, results[0].outputs, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(res.and_effects, results[0].and_effects, rtol=1e-5, atol=1e-5)


def test_chunks_spanning_samples_put_values_in_place():
    # Sum's values are exact, so any misplaced row shows as an exact mismatch.
    x = torch.tensor([[1.0, 2.0, 0.0], [4.0, 8.0, 0.0], [16.0, 32.0, 0.0]])
    for bs in (1, 3, 5, 7, 24, 100):
        res = ct.compute_interactions(Sum(), x, zero_baseline_players(), value="output", batch_size=bs)
        for b in range(3):
            expected = [x[b, 0].item() * (s & 1) + x[b, 1].item() * (s >> 1 & 1) for s in range(8)]
            assert res.outputs[b].tolist() == expected, (bs, b)


def seed_all() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def rng_states() -> tuple:
    """Comparable snapshots of the torch CPU, numpy and ``random`` generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return torch.get_rng_state().tolist(), (kind, keys.tolist(), pos, has_gauss, gauss), random.getstate()


def test_training_flags_grad_mode_and_rng_are_restored():
    model = Noisy(d_in=4, classes=3)
    model.train()
    model.frozen.eval()
    flags = [m.training for m in model.modules()]
    assert True in flags and False in flags
    x = torch.randn(2, 4, generator=gen(5))

    # A plain forward advances all three generators, so an engine that did not restore them
    # would fail the checks below.
    seed_all()
    seeded = rng_states()
    with torch.no_grad():
        model(x)
    assert all(a != b for a, b in zip(rng_states(), seeded))

    for grad_mode in (True, False):
        seed_all()
        with torch.set_grad_enabled(grad_mode):
            res = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero"))
            assert torch.is_grad_enabled() is grad_mode
        assert rng_states() == seeded
        assert [m.training for m in model.modules()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert not res.outputs.requires_grad and not res.and_effects.requires_grad

    # Dropout was off during the call: the result equals an eval-mode model's.
    model.eval()
    res_eval = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero"))
    assert torch.equal(res.outputs, res_eval.outputs)


def qat_model() -> torch.nn.Module:
    """A quantization-aware MLP 4 -> 8 -> 3 (``prepare_qat``, x86 defaults): its fake-quant
    modules observe every forward's ranges, in eval mode too."""
    import torch.ao.quantization as tq

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        tq.QuantStub(), torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), tq.DeQuantStub()
    )
    model.qconfig = tq.get_default_qat_qconfig("x86")
    return tq.prepare_qat(model.train())


def qat_training(tmp_path, track: bool) -> dict[str, torch.Tensor]:
    """Four SGD steps of :func:`qat_model`, tracked before each one (observers meet the masked
    inputs before any training forward, and between training forwards)."""
    model = qat_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4, generator=gen(1)), torch.randint(0, 3, (32,), generator=gen(2))
    players = ct.TabularPlayers(baselines="zero")
    output = ct.OutputConfig(figures=False)
    tracker = ct.ConceptTracker(players, (x[:4], y[:4]), log_dir=tmp_path, schedule=ct.every(1), output=output)
    for step in range(4):
        if track:
            assert tracker.step(model, step) is not None
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tracker.close()
    return model.state_dict()


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")  # torch's own x86 defaults
def test_quantization_observers_do_not_learn_from_masked_inputs(tmp_path):
    plain, tracked = qat_training(tmp_path / "plain", False), qat_training(tmp_path / "tracked", True)
    observed = [k for k in plain if "min_val" in k or "scale" in k]
    assert len(observed) >= 8  # the model does observe ranges
    assert plain.keys() == tracked.keys()
    assert [k for k in plain if not torch.equal(plain[k], tracked[k])] == []


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning")  # torch's own x86 defaults
def test_fake_quantization_uses_the_ranges_training_left_and_keeps_them():
    import torch.ao.quantization as tq

    model = qat_model()
    x = torch.randn(6, 4, generator=gen(3))
    model(x * 10)  # training's ranges: wide
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero"), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    enabled = [m.observer_enabled.item() for m in model.modules() if isinstance(m, tq.FakeQuantizeBase)]
    assert enabled and all(e == 1 for e in enabled)  # switched back on
    # The unmasked value is the eval-mode model's output under those ranges, observers off.
    model.eval()
    model.apply(tq.disable_observer)
    with torch.no_grad():
        expected = reference_log_odds(model(x), torch.zeros(6, dtype=torch.long))
    assert torch.allclose(res.outputs[:, -1], expected, atol=1e-4)


def test_user_forward_hooks_see_every_masked_forward():
    """Documented: the library cannot tell a user's hook from the model; a stateful hook runs on
    the masked rows as well (``B * 2**n`` of them, plus ``B`` unmasked rows for the targets)."""
    model, rows_seen, outside = mlp(d_in=4), [], []

    def hook(module, args, out) -> None:
        # The documented way for a stateful hook to skip the masked forwards.
        (rows_seen if torch.is_inference_mode_enabled() else outside).append(args[0].shape[0])

    model.register_forward_hook(hook)
    x = torch.randn(3, 4, generator=gen(4))
    ct.compute_interactions(model, x, ct.TabularPlayers(baselines="zero"))
    assert sum(rows_seen) == 3 * 2**4 + 3 and outside == []
    model(x)  # a training forward is not under inference mode
    assert outside == [3]


def test_nan_value_names_sample_and_coalition():
    x = torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, 3.0]])  # sample 0 never hits the NaN
    for bs in (3, None):
        with pytest.raises(ValueError, match=r"sample 1, coalition 5\b"):
            ct.compute_interactions(NaNAt(), x, zero_baseline_players(), value="output", batch_size=bs)


class FirstTwoColumns(Players):
    """A user-written player kind that implements only ``mask``: columns 0 and 1, zero baseline."""

    @property
    def n(self) -> int:
        return 2

    def mask(self, sample, coalitions):
        keep = torch.ones(coalitions.shape[0], sample.shape[0], dtype=torch.bool)
        keep[:, :2] = coalitions
        return torch.where(keep, sample, 0.0)


def test_player_kind_with_only_mask_works(mlp_case):
    model, x, _ = mlp_case
    custom = ct.compute_interactions(model, x, FirstTwoColumns())
    builtin = ct.compute_interactions(model, x, ct.TabularPlayers(features=[0, 1], baselines="zero"))
    assert torch.equal(custom.outputs, builtin.outputs)


# ---------------------------------------------------------------- argument errors


class ManyPlayers(Players):
    """21 players on any tensor: only for the engine's own n check."""

    @property
    def n(self) -> int:
        return 21

    def mask(self, sample, coalitions):
        raise AssertionError("the engine must reject n=21 before masking")


def test_argument_errors(mlp_case):
    model, x, _ = mlp_case
    players = ct.TabularPlayers(baselines="mean")
    with pytest.raises(ValueError, match="n=21.*order_spectrum"):
        ct.compute_interactions(model, x, ManyPlayers())
    with pytest.raises(ValueError, match="n=21.*order_spectrum"):
        ct.compute_interactions(mlp(d_in=21), torch.randn(2, 21), players)
    with pytest.raises(ValueError, match="target has 3 entries for 4 samples"):
        ct.compute_interactions(model, x, players, target=[0, 1, 2])
    with pytest.raises(ValueError, match="kind='both'"):
        ct.compute_interactions(model, x, players, kind="both")
    with pytest.raises(ValueError, match="value='odds'"):
        ct.compute_interactions(model, x, players, value="odds")
    with pytest.raises(ValueError, match="batch_size=0"):
        ct.compute_interactions(model, x, players, batch_size=0)
    with pytest.raises(ValueError, match="players"):
        ct.compute_interactions(model, x, "tabular")


# ---------------------------------------------------------------- AND-OR (another module)

def test_and_or_matches_values_up_to_bounded_noise(mlp_case):
    model, x, _ = mlp_case
    players = ct.TabularPlayers(features=[0, 2, 3, 5], baselines="mean")
    res = ct.compute_interactions(model, x[:2], players, kind="and_or")
    assert res.kind == "and_or" and res.gamma is not None and res.q is not None
    # SPEC §4: v(T) + q(T) = sum_{S ⊆ T} I_and(S) + I_or(∅) + sum_{S ≠ ∅, S ∩ T ≠ ∅} I_or(S).
    rebuilt = brute_and_matching(res.and_effects) + brute_or_matching(res.or_effects)
    torch.testing.assert_close(rebuilt, res.outputs + res.q, rtol=0, atol=1e-6)
    bound = 0.02 * (res.outputs[:, -1] - res.outputs[:, 0]).abs()
    assert (res.q.abs() <= bound[:, None] + 1e-9).all()


def test_value_with_one_number_for_all_rows_is_rejected():
    model = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="one scalar per row"):
        ct.compute_interactions(model, torch.randn(2, 4), ct.TabularPlayers(baselines="zero"), value=lambda out, t: out.sum())


# ---------------------------------------------------------------- out of memory (simulated, runs on CPU)


class OutOfMemoryAbove(torch.nn.Module):
    """Raises ``torch.OutOfMemoryError`` (what CUDA raises) for chunks of more than ``limit`` rows."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit, self.chunks = model, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.chunks.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("simulated")
        return self.model(x)


def test_out_of_memory_halves_the_chunk_and_warns_once():
    x = torch.randn(4, 6, generator=gen(0), dtype=torch.float64)
    players = zero_baseline_players()
    reference = ct.compute_interactions(mlp().double(), x, players, batch_size=25)
    flaky = OutOfMemoryAbove(mlp().double(), limit=30)
    with pytest.warns(UserWarning, match="out of memory") as caught:
        res = ct.compute_interactions(flaky, x, players, target=reference.targets, batch_size=100)
    assert [str(w.message) for w in caught] == ["CUDA out of memory in compute_interactions; retrying with batch_size=50."]
    # 100 -> 50 -> 25 rows, then every chunk at 25 (256 rows = 10 * 25 + 6).
    assert flaky.chunks == [100, 50, *[25] * 10, 6]
    torch.testing.assert_close(res.outputs, reference.outputs, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.and_effects, reference.and_effects, rtol=0, atol=1e-12)


def test_out_of_memory_on_single_rows_is_raised():
    flaky = OutOfMemoryAbove(mlp().double(), limit=0)
    with pytest.raises(torch.OutOfMemoryError), pytest.warns(UserWarning, match="batch_size=1"):
        ct.compute_interactions(flaky, torch.randn(1, 6, dtype=torch.float64), zero_baseline_players(), target=0, batch_size=2)
