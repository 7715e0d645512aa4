"""Masked inputs of every player kind against masks built by hand."""

from __future__ import annotations

import random

import pytest
import torch
from models import VOCAB, wordpiece_tokenizer

import concept_tracker as ct
from concept_tracker.transforms import coalition_matrix

MASK_ID = VOCAB.index("[MASK]")


def kept(s: int, player: int) -> bool:
    return bool(s >> player & 1)


# ---------------------------------------------------------------- tabular


X = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [-1.0, 0.5, 7.0, 2.0, -3.0], [4.0, 4.0, 4.0, 4.0, 4.0]])


def expected_tabular(x: torch.Tensor, features: list[int], baseline: list[float]) -> torch.Tensor:
    rows = []
    for s in range(1 << len(features)):
        row = x.tolist()
        for player, col in enumerate(features):
            if not kept(s, player):
                row[col] = baseline[col]
        rows.append(row)
    return torch.tensor(rows)


@pytest.mark.parametrize(
    ("baselines", "per_column"),
    [
        ("zero", [0.0] * 5),
        (2.5, [2.5] * 5),
        (torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]), [10.0, 20.0, 30.0, 40.0, 50.0]),
        ("mean", X.mean(0).tolist()),
    ],
    ids=["zero", "float", "tensor", "mean"],
)
def test_tabular_masks_chosen_columns_only(baselines, per_column):
    features = [3, 1, 4]  # player 0 = column 3, player 1 = column 1, player 2 = column 4
    players = ct.TabularPlayers(features=features, baselines=baselines)
    players.prepare(X)
    assert players.n == 3
    for b in range(3):
        masked = players.mask(X[b], coalition_matrix(3))
        torch.testing.assert_close(masked, expected_tabular(X[b], features, per_column), rtol=0, atol=1e-6)
    # Columns 0 and 2 are background: they keep their values in every row.
    masked = players.mask(X[1], coalition_matrix(3))
    assert (masked[:, [0, 2]] == X[1, [0, 2]]).all()


@pytest.mark.parametrize("cache", [True, False], ids=["weights-once", "weights-per-range"])
@pytest.mark.parametrize("kind", ["float", "int", "inf"])
def test_batch_masker_rows_follow_the_sample_coalition_grid(monkeypatch, cache, kind):
    # Row r of the grid is sample r // 2**n under coalition r % 2**n; ranges may start and end
    # inside a sample and span several.
    if not cache:
        monkeypatch.setattr(ct.players, "_WEIGHT_CACHE_ELEMENTS", 0)
    x = {"float": X, "int": X.long(), "inf": X.clone().index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(float("inf")))}[kind]
    features, baseline = [0, 2, 3], [10.0, 20.0, 30.0, 40.0, 50.0]
    players = ct.TabularPlayers(features=features, baselines=torch.tensor(baseline))
    grid = torch.cat([expected_tabular(sample, features, baseline) for sample in x]).double()
    rows = players.batch_masker(list(x.unbind(0)))
    for start, stop in [(0, 24), (0, 8), (3, 5), (6, 19), (8, 24), (23, 24)]:
        got = rows(start, stop)
        assert got.dtype == x.dtype
        assert torch.equal(got.double(), grid[start:stop]), (start, stop)


def test_non_finite_and_integer_samples_mask_exactly():
    # Both fall outside the float arithmetic path; masking must still be a plain selection.
    players = ct.TabularPlayers(features=[0, 2], baselines="zero")
    x = torch.tensor([float("inf"), 1.0, float("nan"), -0.0])
    masked = players.mask(x, coalition_matrix(2))
    assert masked[:, 1].tolist() == [1.0] * 4 and masked[:, 3].tolist() == [-0.0] * 4
    assert masked[:, 0].tolist() == [0.0, float("inf"), 0.0, float("inf")]
    assert masked[:, 2].isnan().tolist() == [False, False, True, True]
    ints = torch.tensor([7, 8, 9])
    players = ct.TabularPlayers(features=[1], baselines=-1)
    assert players.mask(ints, coalition_matrix(1)).tolist() == [[7, -1, 9], [7, 8, 9]]


def test_tabular_fit_mean_is_used_over_the_batch():
    train = torch.tensor([[0.0, 10.0], [4.0, 30.0]])
    players = ct.TabularPlayers(baselines="mean").fit(train)
    players.prepare(X[:, :2])  # the fitted mean wins over the batch mean
    masked = players.mask(X[0, :2], coalition_matrix(2))
    assert masked.tolist() == [[2.0, 20.0], [1.0, 20.0], [2.0, 2.0], [1.0, 2.0]]


def test_tabular_every_column_and_names():
    players = ct.TabularPlayers(baselines="zero", names=["a", "b", "c", "d", "e"])
    players.prepare(X)
    assert players.n == 5
    assert players.names(X[0]) == ["a", "b", "c", "d", "e"]
    picked = ct.TabularPlayers(features=[4, 0], names=["a", "b", "c", "d", "e"], baselines="zero")
    picked.prepare(X)
    assert picked.names(X[0]) == ["e", "a"]


def test_tabular_too_many_players():
    # Above 20 players only the sampled order spectrum reads them; above 1024 nothing does.
    assert ct.TabularPlayers(features=range(21)).n == 21
    with pytest.raises(ValueError, match="features"):
        ct.TabularPlayers(features=range(1025))
    with pytest.raises(ValueError, match="features"):
        ct.TabularPlayers(baselines="zero").prepare(torch.zeros(2, 1025))


def test_tabular_bad_inputs():
    with pytest.raises(ValueError, match="features"):
        ct.TabularPlayers(features=[0, 9], baselines="zero").prepare(X)
    with pytest.raises(ValueError, match="baselines"):
        ct.TabularPlayers(baselines="median")
    with pytest.raises(ValueError, match="baselines"):
        players = ct.TabularPlayers(features=[0], baselines=torch.zeros(3))
        players.prepare(X)
        players.mask(X[0], coalition_matrix(1))


# ---------------------------------------------------------------- image patches


def patch_of_pixel(h: int, w: int, height: int, width: int, rows: int, cols: int) -> int:
    """Row-major patch id of a pixel, from the boundaries ceil(r * H / rows) written out."""
    row_starts = [-(-r * height // rows) for r in range(rows)]
    col_starts = [-(-c * width // cols) for c in range(cols)]
    r = max(i for i, start in enumerate(row_starts) if start <= h)
    c = max(i for i, start in enumerate(col_starts) if start <= w)
    return r * cols + c


def expected_image(image, grid, patches, baseline, background_keep=True):
    """Every coalition's masked image, pixel by pixel. ``baseline`` broadcasts to the image."""
    channels, height, width = image.shape
    base = torch.as_tensor(baseline, dtype=image.dtype).expand_as(image)
    out = []
    for s in range(1 << len(patches)):
        img = image.clone()
        for h in range(height):
            for w in range(width):
                p = patch_of_pixel(h, w, height, width, *grid)
                keep = kept(s, patches.index(p)) if p in patches else background_keep
                if not keep:
                    img[:, h, w] = base[:, h, w]
        out.append(img)
    return torch.stack(out)


def image(channels: int, height: int, width: int) -> torch.Tensor:
    # Distinct non-zero pixel values, so any misplaced pixel shows.
    return torch.arange(1, channels * height * width + 1, dtype=torch.float32).reshape(channels, height, width)


def test_patch_boundaries_of_uneven_image():
    players = ct.ImagePatchPlayers(grid=(2, 3))
    pmap = players.player_map(image(1, 7, 5))
    # H=7, rows=2: pixel rows 0-3 | 4-6; W=5, cols=3: pixel cols 0-1 | 2-3 | 4.
    assert pmap.tolist() == [[0, 0, 1, 1, 2]] * 4 + [[3, 3, 4, 4, 5]] * 3


@pytest.mark.parametrize("shape", [(1, 4, 6), (1, 7, 5), (3, 7, 5)], ids=["1x4x6", "1x7x5", "3x7x5"])
def test_every_patch_masks_its_pixels(shape):
    x = image(*shape)
    players = ct.ImagePatchPlayers(grid=(2, 3), baselines="zero")
    masked = players.mask(x, coalition_matrix(6))
    assert masked.shape == (64, *shape)
    assert torch.equal(masked, expected_image(x, (2, 3), list(range(6)), 0.0))


def test_selected_patches_follow_list_order_and_background_keeps():
    x = image(1, 4, 6)
    players = ct.ImagePatchPlayers(grid=(2, 3), select=[4, 0, 5], baselines=-1.0)
    assert players.n == 3 and players.patches == [4, 0, 5]
    assert players.names(x) == ["p4", "p0", "p5"]
    masked = players.mask(x, coalition_matrix(3))
    assert torch.equal(masked, expected_image(x, (2, 3), [4, 0, 5], -1.0))
    # Coalition {player 0} keeps patch 4 (rows 2-3, cols 2-3) and masks patches 0 and 5.
    one = masked[1, 0]
    assert torch.equal(one[2:4, 2:4], x[0, 2:4, 2:4])
    assert (one[0:2, 0:2] == -1).all() and (one[2:4, 4:6] == -1).all()
    assert torch.equal(one[0:2, 2:6], x[0, 0:2, 2:6])  # patches 1 and 2: background


def test_background_baseline_masks_unselected_patches():
    x = image(1, 4, 6)
    players = ct.ImagePatchPlayers(grid=(2, 3), select=[1, 3], baselines="zero", background="baseline")
    masked = players.mask(x, coalition_matrix(2))
    assert torch.equal(masked, expected_image(x, (2, 3), [1, 3], 0.0, background_keep=False))
    # Full coalition: only patches 1 and 3 survive.
    assert (masked[-1] != 0).sum().item() == 8


def test_image_baselines_tensor_and_mean():
    x = image(3, 4, 6)
    per_channel = torch.tensor([5.0, 6.0, 7.0])[:, None, None]
    players = ct.ImagePatchPlayers(grid=(2, 3), select=[0, 4], baselines=per_channel)
    assert torch.equal(players.mask(x, coalition_matrix(2)), expected_image(x, (2, 3), [0, 4], per_channel))
    full = torch.randn(3, 4, 6)
    players = ct.ImagePatchPlayers(grid=(2, 3), select=[0, 4], baselines=full)
    assert torch.equal(players.mask(x, coalition_matrix(2)), expected_image(x, (2, 3), [0, 4], full))
    batch = torch.stack([x, 3 * x])
    players = ct.ImagePatchPlayers(grid=(2, 3), select=[2], baselines="mean")
    players.prepare(batch)
    assert torch.equal(players.mask(x, coalition_matrix(1)), expected_image(x, (2, 3), [2], 2 * x))


def test_select_int_follows_the_documented_seeded_rule():
    state = torch.get_rng_state()
    a = ct.ImagePatchPlayers(grid=(4, 5), select=6, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not used
    rule = sorted(torch.randperm(20, generator=torch.Generator().manual_seed(7))[:6].tolist())
    assert a.patches == rule
    assert ct.ImagePatchPlayers(grid=(4, 5), select=6, seed=7).patches == rule
    assert len(set(a.patches)) == 6 and all(0 <= p < 20 for p in a.patches)
    assert ct.ImagePatchPlayers(grid=(4, 5), select=6, seed=8).patches != rule


def test_image_too_many_players_and_bad_select():
    assert ct.ImagePatchPlayers(grid=(8, 8)).n == 64  # the sampled order spectrum reads them
    with pytest.raises(ValueError, match="select=None"):
        ct.ImagePatchPlayers(grid=(33, 32))
    with pytest.raises(ValueError, match="select=26"):
        ct.ImagePatchPlayers(grid=(5, 5), select=26)
    with pytest.raises(ValueError, match="select"):
        ct.ImagePatchPlayers(grid=(2, 3), select=[0, 6])
    with pytest.raises(ValueError, match="grid"):
        ct.ImagePatchPlayers(grid=(5, 5), select=2).player_map(image(1, 4, 4))


# ---------------------------------------------------------------- feature masks


def test_feature_mask_groups_and_background():
    x = image(1, 2, 4)[0]  # [2, 4]
    fm = torch.tensor([[0, 0, 1, -1], [2, 1, 1, -1]])
    players = ct.FeatureMaskPlayers(fm, baselines=-5.0)
    assert players.n == 3
    masked = players.mask(x, coalition_matrix(3))
    for s in range(8):
        expected = x.clone()
        for (h, w), g in zip([(h, w) for h in range(2) for w in range(4)], fm.reshape(-1).tolist()):
            if g >= 0 and not kept(s, g):
                expected[h, w] = -5.0
        assert torch.equal(masked[s], expected), s
    assert torch.equal(masked[:, :, 3], x[:, 3].expand(8, 2))  # background column


def test_feature_mask_broadcasts_over_channels_and_drops_a_batch_dim():
    x = image(3, 2, 2)
    fm = torch.tensor([[0, 1], [1, -1]])
    for mask in (fm, fm[None], fm[None, None]):
        masked = ct.FeatureMaskPlayers(mask, baselines="zero").mask(x, coalition_matrix(2))
        assert masked.shape == (4, 3, 2, 2)
        assert (masked[1][:, 0, 0] == x[:, 0, 0]).all() and (masked[1][:, 0, 1] == 0).all()
        assert (masked[0][:, 1, 1] == x[:, 1, 1]).all()


def test_feature_mask_errors():
    with pytest.raises(ValueError, match=r"missing ids \[1\]"):
        ct.FeatureMaskPlayers(torch.tensor([0, 2, -1]))
    with pytest.raises(ValueError, match="integer"):
        ct.FeatureMaskPlayers(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="feature_mask"):
        ct.FeatureMaskPlayers(torch.arange(1025))
    with pytest.raises(ValueError, match="broadcast"):
        ct.FeatureMaskPlayers(torch.tensor([0, 1, 1])).mask(torch.zeros(4), coalition_matrix(2))


# ---------------------------------------------------------------- tokens

TEXTS = ["the cat is unhappy playing", "a dog runs very sad today ."]
# Token positions of each word: position 0 is [CLS], [SEP] follows the words, then the first
# text has one [PAD].
WORDS = [
    [[1], [2], [3], [4, 5], [6, 7]],  # the | cat | is | un ##happy | play ##ing
    [[1], [2], [3, 4], [5], [6], [7], [8]],  # a | dog | run ##s | very | sad | today | .
]


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece_tokenizer()


@pytest.fixture(scope="module")
def encoding(tokenizer):
    return tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=True)


def samples(encoding, with_word_ids: bool) -> list[dict[str, torch.Tensor]]:
    inputs = dict(encoding)
    if with_word_ids:
        inputs["word_ids"] = ct.word_ids(encoding)
    return [{k: v[b] for k, v in inputs.items()} for b in range(len(TEXTS))]


def test_tokenizer_splits_words_into_sub_tokens(tokenizer, encoding):
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "the", "cat", "is", "un", "##happy", "play", "##ing", "[SEP]", "[PAD]"]
    assert ct.word_ids(encoding)[0].tolist() == [-1, 0, 1, 2, 3, 3, 4, 4, -1, -1]
    assert encoding["attention_mask"][0, -1] == 0


@pytest.mark.parametrize("with_word_ids", [True, False], ids=["word_ids", "heuristic"])
@pytest.mark.parametrize("b", [0, 1])
def test_words_mask_together_and_specials_never(tokenizer, encoding, with_word_ids, b):
    n = 5
    players = ct.TokenPlayers(n=n, tokenizer=tokenizer)
    sample = samples(encoding, with_word_ids)[b]
    assert players.chosen(sample) == WORDS[b][:n]
    masked = players.mask(sample, coalition_matrix(n))
    ids = sample["input_ids"]
    assert set(masked) == {"input_ids", "attention_mask", "token_type_ids"}  # word_ids not passed
    for s in range(1 << n):
        expected = ids.clone()
        for player in range(n):
            if not kept(s, player):
                expected[WORDS[b][player]] = MASK_ID
        assert torch.equal(masked["input_ids"][s], expected), s
    assert torch.equal(masked["attention_mask"], sample["attention_mask"].expand(1 << n, -1))
    assert torch.equal(masked["token_type_ids"], sample["token_type_ids"].expand(1 << n, -1))
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert (masked["input_ids"][:, special] == ids[special]).all()


def test_token_names_join_sub_tokens(tokenizer, encoding):
    players = ct.TokenPlayers(n=5, tokenizer=tokenizer)
    assert players.names(samples(encoding, True)[0]) == ["the", "cat", "is", "unhappy", "playing"]


def test_tokens_as_players(tokenizer, encoding):
    players = ct.TokenPlayers(n=5, words=False, tokenizer=tokenizer)
    sample = samples(encoding, False)[0]
    assert players.chosen(sample) == [[1], [2], [3], [4], [5]]
    masked = players.mask(sample, coalition_matrix(5))
    # Coalition {0, 1, 2, 4} masks "un" but keeps "##happy".
    assert masked["input_ids"][0b10111].tolist() == [2, 5, 7, 9, MASK_ID, 13, 15, 16, 3, 0]


def test_random_select_is_seeded_per_sample(tokenizer, encoding):
    sample = samples(encoding, True)[1]
    state = (torch.get_rng_state(), random.getstate())
    a = ct.TokenPlayers(n=3, select="random", tokenizer=tokenizer, seed=1).chosen(sample)
    assert (torch.equal(torch.get_rng_state(), state[0]), random.getstate() == state[1]) == (True, True)
    assert a == ct.TokenPlayers(n=3, select="random", tokenizer=tokenizer, seed=1).chosen(sample)
    assert len(a) == 3 and all(w in WORDS[1] for w in a)
    assert a == sorted(a)  # text order


def test_callable_select_and_explicit_mask_id(tokenizer, encoding):
    players = ct.TokenPlayers(n=2, select=lambda units: [4, 1], mask_token_id=0, tokenizer=tokenizer)
    sample = samples(encoding, True)[0]
    assert players.chosen(sample) == [[6, 7], [2]]
    masked = players.mask(sample, coalition_matrix(2))
    assert masked["input_ids"][1].tolist() == [2, 5, 0, 9, 12, 13, 15, 16, 3, 0]


def test_token_errors(tokenizer, encoding):
    with pytest.raises(ValueError, match="n=1025"):
        ct.TokenPlayers(n=1025)
    players = ct.TokenPlayers(n=6, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="only 5 words.*fewer than n=6"):
        players.mask(samples(encoding, True)[0], coalition_matrix(6))
    with pytest.raises(ValueError, match="select"):
        ct.TokenPlayers(n=2, select="last")
    with pytest.raises(ValueError, match="input_ids"):
        ct.TokenPlayers(n=2).mask(torch.zeros(5), coalition_matrix(2))
    with pytest.raises(ValueError, match="coalitions"):
        ct.TokenPlayers(n=2, tokenizer=tokenizer).mask(samples(encoding, True)[0], coalition_matrix(3))


def test_token_ids_unknown_to_the_tokenizer_are_words_of_their_own():
    class Vocab:
        all_special_ids = [0]
        mask_token_id = 1

        def convert_ids_to_tokens(self, ids):
            return [{2: "good", 3: "##ness"}.get(i) for i in ids]

    players = ct.TokenPlayers(n=3, tokenizer=Vocab())
    sample = {"input_ids": torch.tensor([0, 2, 3, 99, 98]), "attention_mask": torch.ones(5, dtype=torch.long)}
    assert players.chosen(sample) == [[1, 2], [3], [4]]
    assert players.names(sample) == ["goodness", "[99]", "[98]"]


def test_mean_is_the_default_baseline_and_says_where_it_came_from():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 4, 6, generator=gen)
    fitted = ct.ImagePatchPlayers(grid=(2, 3))
    assert fitted.baselines == "mean" and fitted.baseline_description == "mean (not fitted yet)"
    fitted.fit(images)
    assert fitted.baseline_description == "mean (fit on 5 samples)"
    # Without fit(), the first batch analysed gives the mean; a later batch does not refit.
    probed = ct.ImagePatchPlayers(grid=(2, 3))
    probed.prepare(images[:3])
    probed.prepare(images[3:])
    assert probed.baseline_description == "mean (3 probe inputs)"
    masked = probed.mask(images[4], coalition_matrix(6))
    assert torch.equal(masked[0], images[:3].mean(0))  # empty coalition: every patch is the mean
    assert torch.equal(masked[-1], images[4])
    mask_players = ct.FeatureMaskPlayers(torch.tensor([[0, 1], [1, -1]]))
    assert mask_players.baselines == "mean"
    tabular = ct.TabularPlayers()
    assert tabular.baselines == "mean"
    with pytest.raises(ValueError, match='baselines="zero"'):
        tabular.prepare(torch.ones(1, 3))
    assert ct.TabularPlayers(baselines="zero").baseline_description == "zero"
    assert ct.TabularPlayers(baselines=0.5).baseline_description == "constant 0.5"
    assert ct.TabularPlayers(baselines=torch.zeros(3)).baseline_description == "tensor [3]"
