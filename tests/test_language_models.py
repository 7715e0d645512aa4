"""Causal language models: the tracked value is the model's own log p(answer | prompt).

Every reference here is computed directly from the model on the unpadded prompt + answer,
independently of the players, the engine and the value functions.
"""

import pytest
import torch
from models import WORDS, tiny_lm, word_tokenizer
from torch import nn

import concept_tracker as ct
from concept_tracker.language_models import guess_answers, prompt_answer_batch
from concept_tracker.transforms import coalition_matrix
from concept_tracker.values import IGNORE_INDEX, answer_log_prob, log_odds

PROMPTS = ["the cat sat on the mat , red", "a dog is big", "capital of france is"]
ANSWERS = {"single": ["yes", "no", "paris"], "multi": ["yes no", "red blue big", "paris ."]}



@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def direct_log_prob(model, tokenizer, prompt: str, answer: str) -> float:
    """log p(answer | prompt) from one unpadded forward: sum of log softmax(z[t-1])[y_t]."""
    p = tokenizer(prompt)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([p + a])).logits[0].double().log_softmax(-1)
    return sum(float(logp[len(p) + i - 1, tok]) for i, tok in enumerate(a))


def padded_log_prob(model, batch: dict, b: int, **keys) -> float:
    """log p(answer | prompt) of row ``b`` as the model computes it on the padded row itself,
    with the batch's own keys (and ``keys``): the convention of a training batch."""
    inputs = {k: v[b : b + 1] for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        logp = model(**inputs, **keys).logits[0].double().log_softmax(-1)
    labels = batch["labels"][b]
    return sum(float(logp[t - 1, labels[t]]) for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("answers", ["single", "multi"])
def test_full_prompt_value_is_the_models_log_p_answer_under_the_batchs_padding(tokenizer, arch, answers):
    model = tiny_lm(arch)
    unpadded = torch.tensor([direct_log_prob(model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS[answers])])
    players = ct.TokenPlayers(n=3, tokenizer=tokenizer)
    values = {}
    for side in ("right", "left"):
        batch = prompt_answer_batch(tokenizer, PROMPTS, ANSWERS[answers], padding_side=side)
        assert (batch["attention_mask"] == 0).any()  # the probes really are padded
        res = ct.compute_interactions(model, batch, players, value="answer_log_prob")
        own = torch.tensor([padded_log_prob(model, batch, b) for b in range(len(PROMPTS))]).double()
        torch.testing.assert_close(res.outputs[:, -1].cpu(), own, atol=1e-4, rtol=0)
        values[side] = res.outputs
    # Right padding leaves the real tokens' positions alone: the unpadded text's value.
    torch.testing.assert_close(values["right"][:, -1].cpu(), unpadded.double(), atol=1e-4, rtol=0)
    # Left padding without position_ids shifts them, for the model as for training batches
    # collated so; the tracker does not make up other positions. (GPT-2's learned absolute
    # positions see the shift; Llama's rotary embeddings depend on relative positions only.)
    if arch == "gpt2":
        assert (values["left"][:, -1].cpu() - unpadded.double()).abs().max() > 1e-3
    # Batches that carry position_ids (counted from each row's first token) get them on every
    # masked row: left padding then gives every coalition the right-padded value.
    left = prompt_answer_batch(tokenizer, PROMPTS, ANSWERS[answers], padding_side="left")
    left["position_ids"] = (left["attention_mask"].cumsum(1) - 1).clamp(min=0)
    res = ct.compute_interactions(model, left, players, value="answer_log_prob")
    torch.testing.assert_close(res.outputs, values["right"], atol=1e-4, rtol=0)


def test_answer_tokens_are_never_players_nor_masked(tokenizer):
    batch = prompt_answer_batch(tokenizer, PROMPTS[:1], ["red blue"], padding_side="left")
    sample = {k: v[0] for k, v in batch.items()}
    answer = (sample["labels"] != IGNORE_INDEX).nonzero().reshape(-1).tolist()
    players = ct.TokenPlayers(n=8, tokenizer=tokenizer, mask_token_id=0)
    # The prompt has 8 words; the 2 answer words are no candidates, so n=9 is too many.
    assert [p for unit in players.units(sample) for p in unit] == [p for p in range(len(sample["input_ids"])) if p not in answer and sample["attention_mask"][p]]
    with pytest.raises(ValueError, match="only 8 words"):
        ct.TokenPlayers(n=9, tokenizer=tokenizer).chosen(sample)
    masked = players.mask(sample, coalition_matrix(8))
    assert "labels" not in masked  # the model gets no labels (no loss on every row)
    assert (masked["input_ids"][:, answer] == sample["input_ids"][answer]).all()
    assert (masked["input_ids"][0, sample["attention_mask"].bool()][:-2] == 0).all()  # empty coalition


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_masked_words_take_the_mean_input_embedding(tokenizer, arch):
    """A tokenizer without mask token: the masked word's embedding is the vocabulary mean
    (not <pad>); checked against a forward with inputs_embeds built by hand."""
    model = tiny_lm(arch)
    batch = prompt_answer_batch(tokenizer, PROMPTS[1:2], ["red blue"])
    sample = {k: v[0] for k, v in batch.items()}
    players = ct.TokenPlayers(n=4, tokenizer=tokenizer)
    assert players.mask_token_id is None
    res = ct.compute_interactions(model, batch, players, value="answer_log_prob")
    coalition = 0b1010  # keep "dog" and "big", mask "a" and "is"
    embeds = model.get_input_embeddings().weight.detach()
    rows = embeds[sample["input_ids"]].clone()
    for position in (players.chosen(sample)[0] + players.chosen(sample)[2]):
        rows[position] = embeds.mean(0)
    with torch.no_grad():
        out = model(inputs_embeds=rows[None], attention_mask=sample["attention_mask"][None])
    expected = answer_log_prob(out, sample["labels"][None])
    torch.testing.assert_close(res.outputs[0, coalition].float(), expected[0], atol=1e-4, rtol=0)
    pad = torch.full_like(sample["input_ids"], tokenizer.pad_token_id)
    keep = ct.TokenPlayers(n=4, tokenizer=tokenizer, mask_token_id=tokenizer.pad_token_id)
    assert torch.equal(keep.mask(sample, coalition_matrix(4))["input_ids"][0][:4], pad[:4])  # mask_token_id= keeps token masking
    zero = ct.compute_interactions(model, batch, ct.TokenPlayers(n=4, tokenizer=tokenizer, baselines="zero"), value="answer_log_prob")
    assert not torch.allclose(zero.outputs[0, :-1], res.outputs[0, :-1])  # the baseline is used
    torch.testing.assert_close(zero.outputs[0, -1], res.outputs[0, -1])


def test_log_odds_of_a_single_token_answer(tokenizer):
    model = tiny_lm("gpt2")
    batch = prompt_answer_batch(tokenizer, PROMPTS, ANSWERS["single"], padding_side="left")
    batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)  # as without padding
    res = ct.compute_interactions(model, batch, ct.TokenPlayers(n=3, tokenizer=tokenizer), value="log_odds")
    for b, (p, a) in enumerate(zip(PROMPTS, ANSWERS["single"])):
        ids = tokenizer(p)["input_ids"]
        with torch.no_grad():
            z = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        y = tokenizer(a, add_special_tokens=False)["input_ids"][0]
        expected = z[y] - torch.logsumexp(torch.cat([z[:y], z[y + 1 :]]), 0)
        torch.testing.assert_close(res.outputs[b, -1].cpu(), expected, atol=1e-4, rtol=0)
    multi = prompt_answer_batch(tokenizer, PROMPTS, ANSWERS["multi"])
    with pytest.raises(ValueError, match="answer_log_prob"):
        ct.compute_interactions(model, multi, ct.TokenPlayers(n=3, tokenizer=tokenizer), value="log_odds")


def test_explicit_answer_labels_equal_labels_in_the_inputs(tokenizer):
    model = tiny_lm("llama")
    batch = prompt_answer_batch(tokenizer, PROMPTS, ANSWERS["multi"])
    players = ct.TokenPlayers(n=3, tokenizer=tokenizer)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    given = ct.compute_interactions(model, inputs, players, target=batch["labels"], value="answer_log_prob")
    read = ct.compute_interactions(model, batch, players, value="answer_log_prob")
    torch.testing.assert_close(given.outputs, read.outputs)
    with pytest.raises(ValueError, match="needs the answer"):
        ct.compute_interactions(model, inputs, players, value="answer_log_prob")
    with pytest.raises(ValueError, match="must match"):
        ct.compute_interactions(model, inputs, players, target=batch["labels"][:, 1:], value="answer_log_prob")


class RuleLM(nn.Module):
    """Planted causal LM over :data:`WORDS`: at every position the logit of "yes" is
    ``4 * [cat in the input] * [red in the input]``, every other logit 0. So
    ``v(S) = log softmax(...)_yes`` depends on S only through ``cat AND red``: the Harsanyi
    interactions are zero except I({cat, red}) = v(N) - v(empty) (and I(empty))."""

    def __init__(self):
        super().__init__()
        self.ids = {w: i for i, w in enumerate(WORDS)}

    def forward(self, input_ids, attention_mask=None, **kwargs):
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        has = lambda w: ((input_ids == self.ids[w]) & real).any(1)  # noqa: E731
        logits = torch.zeros(*input_ids.shape, len(WORDS))
        logits[..., self.ids["yes"]] = 4.0 * (has("cat") & has("red")).float()[:, None]
        return (logits,)


def test_planted_rule_is_the_salient_and_of_its_two_words(tokenizer):
    batch = prompt_answer_batch(tokenizer, ["the cat sat on the red mat"], ["yes"], padding_side="left")
    players = ct.TokenPlayers(n=6, tokenizer=tokenizer, mask_token_id=0)
    res = ct.compute_interactions(RuleLM(), batch, players, value="answer_log_prob")
    names = res.player_names[0]
    assert names == ["the", "cat", "sat", "on", "the", "red"]
    pair = (1 << names.index("cat")) | (1 << names.index("red"))
    effects = res.and_effects[0]
    ratio = 0.05
    salient = [s for s in range(1, 1 << 6) if effects[s].abs() > ratio * effects[1:].abs().max()]
    assert salient == [pair]
    v = res.outputs[0]
    torch.testing.assert_close(effects[pair], v[-1] - v[0])


def test_stop_words_and_random_selection(tokenizer):
    batch = prompt_answer_batch(tokenizer, ["the cat sat on the mat , red"], ["yes"])
    sample = {k: v[0] for k, v in batch.items()}
    content = ct.TokenPlayers(n=4, tokenizer=tokenizer, stop_words=True)
    assert content.names(sample) == ["cat", "sat", "mat", "red"]  # "the", "on" and "," skipped
    own = ct.TokenPlayers(n=4, tokenizer=tokenizer, stop_words={"cat", "SAT"})
    assert own.names(sample) == ["the", "on", "the", "mat"]
    drawn = ct.TokenPlayers(n=2, tokenizer=tokenizer, stop_words=True, select="random", seed=3)
    names = drawn.names(sample)
    assert set(names) <= {"cat", "sat", "mat", "red"} and names == drawn.names(sample)
    seen = {tuple(ct.TokenPlayers(n=2, tokenizer=tokenizer, stop_words=True, select="random", seed=s).names(sample)) for s in range(12)}
    assert len(seen) > 1  # the seed matters
    with pytest.raises(ValueError, match="stop_words"):
        ct.TokenPlayers(n=2, stop_words="english")
    with pytest.raises(ValueError, match="tokenizer"):
        ct.TokenPlayers(n=2, stop_words=True).chosen(sample)
    with pytest.raises(ValueError, match="baselines"):
        ct.TokenPlayers(n=2, baselines="pad")


def test_guessed_answers():
    ids = torch.tensor([[5, 6, 7, 1], [1, 5, 6, 7], [5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    sft = torch.tensor([[-100, -100, 7, -100], [-100, -100, 6, 7], [5, 6, 7, 8]])
    labels, guessed = guess_answers(ids, mask, sft)
    assert guessed == 1  # the third probe's labels cover every token: a language-modelling batch
    assert labels.tolist() == [[-100, -100, 7, -100], [-100, -100, 6, 7], [-100, -100, -100, 8]]
    labels, guessed = guess_answers(ids, mask, None)
    assert guessed == 3 and labels.tolist() == [[-100, -100, 7, -100], [-100, -100, -100, 7], [-100, -100, -100, 8]]


def test_answer_log_prob_by_hand():
    """Three positions, vocabulary 2: hand-computed log-probabilities."""
    z = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    expected = torch.log(torch.tensor(0.5)) + (1.0 - torch.logsumexp(torch.tensor([1.0, 0.0]), 0))
    torch.testing.assert_close(answer_log_prob(z, labels), expected[None])
    torch.testing.assert_close(log_odds(z, torch.tensor([[-100, 1, -100]])), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="position 0"):
        answer_log_prob(z, torch.tensor([[1, 1, 0]]))


# ------------------------------------------------------------------ the Trainer callback

SFT_PROMPTS = [f"{a} {b} is" for a in ("the cat", "a dog", "the mat") for b in ("red", "blue", "big", "small")]


def sft_items(tokenizer) -> list[dict]:
    """Prompt + answer rows in the supervised fine-tuning layout (-100 on the prompt)."""
    items = []
    for i, prompt in enumerate(SFT_PROMPTS):
        answer = "yes ." if i % 2 else "no"
        row = prompt_answer_batch(tokenizer, [prompt], [answer])
        items.append({k: v[0].tolist() for k, v in row.items()})
    return items


def padding_collator(side: str, pad_id: int):
    def collate(items):
        width = max(len(item["input_ids"]) for item in items)
        out = {k: [] for k in ("input_ids", "attention_mask", "labels")}
        for item in items:
            fill = width - len(item["input_ids"])
            for key, value in (("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE_INDEX)):
                row = item[key]
                out[key].append(row + [value] * fill if side == "right" else [value] * fill + row)
        return {k: torch.tensor(v) for k, v in out.items()}

    return collate


def train_lm(tmp_path, tokenizer, items, side="right", **args):
    import warnings

    from transformers import Trainer, TrainingArguments

    from concept_tracker.integrations.transformers import ConceptTrackerCallback

    model = tiny_lm("gpt2").train()
    callback = ConceptTrackerCallback(ct.TokenPlayers(n=3), num_probe=6, schedule=ct.at_steps([2]), output=ct.OutputConfig(figures=False))
    options = dict(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to="none", use_cpu=True, seed=0, disable_tqdm=True, save_strategy="no", logging_steps=2,
    )
    options.update(args)
    trainer = Trainer(
        model=model, args=TrainingArguments(**options), train_dataset=items,
        data_collator=padding_collator(side, tokenizer.pad_token_id), processing_class=tokenizer, callbacks=[callback],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    ours = [str(w.message) for w in caught if "Concept" in str(w.message)]
    return model.eval(), callback, ours


@pytest.mark.parametrize("side", ["right", "left"])
def test_callback_tracks_log_p_answer_of_sft_batches_with_no_settings(tmp_path, tokenizer, side):
    from concept_tracker.store import list_steps, load_step, step_path

    items = sft_items(tokenizer)
    model, callback, warned = train_lm(tmp_path, tokenizer, items, side)
    assert warned == []  # nothing was guessed
    tracker = callback.tracker
    assert tracker.value == "answer_log_prob"
    assert list_steps(tracker.log_dir) == [0, 2, 4]
    res, meta = load_step(step_path(tracker.log_dir, 4))
    ids = meta["probe_ids"]
    # The model's own log p(answer | prompt) on the probes as the training collator batches them
    # (a left-padding collator passes no position_ids: positions count the padding, in training
    # as in the tracked forwards).
    batch = padding_collator(side, tokenizer.pad_token_id)([items[i] for i in ids])
    trained = torch.tensor([padded_log_prob(model, batch, b) for b in range(len(ids))], dtype=torch.float64)
    unpadded = []
    for i in ids:
        prompt = SFT_PROMPTS[i]
        unpadded.append(direct_log_prob(model, tokenizer, prompt, "yes ." if i % 2 else "no"))
        assert res.player_names[ids.index(i)] == prompt.split()[:3]  # prompt words, never the answer
    torch.testing.assert_close(res.outputs[:, -1], trained, atol=1e-4, rtol=0)
    unpadded_t = torch.tensor(unpadded, dtype=torch.float64)
    if side == "right":
        torch.testing.assert_close(trained, unpadded_t, atol=1e-4, rtol=0)
    else:  # positions made up from the attention mask would explain another function
        assert (trained - unpadded_t).abs().max() > 1e-2


def test_callback_says_once_when_it_guesses_the_answer(tmp_path, tokenizer):
    items = [{**item, "labels": list(item["input_ids"])} for item in sft_items(tokenizer)]  # language-modelling labels
    model, callback, warned = train_lm(tmp_path, tokenizer, items)
    assert len(warned) == 1 and "6 of 6 probes" in warned[0] and "last token" in warned[0]
    from concept_tracker.store import load_step, step_path

    res, meta = load_step(step_path(callback.tracker.log_dir, 4))
    i = meta["probe_ids"][0]
    words = (SFT_PROMPTS[i] + (" yes ." if i % 2 else " no")).split()
    expected = direct_log_prob(model, tokenizer, " ".join(words[:-1]), words[-1])
    torch.testing.assert_close(res.outputs[0, -1].item(), expected, atol=1e-4, rtol=0)
